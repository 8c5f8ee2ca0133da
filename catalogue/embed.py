"""Embedding photos with a submission bundle (any zip ``submission.build`` makes), and the bundle's identity.

The identity is the zip's SHA-256: a catalogue records it and is only searched with embeddings of the same
bundle. The zip is checked like the runtime would (no absolute or parent paths) and unpacked to a temporary
folder; its own plugin modules are importable while it embeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np


DEVICE_HELP = ("where to embed: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N; on CUDA in half "
               "precision, as the bundle's main.py")


def bundle_hash(zip_path) -> str:
    h = hashlib.sha256()
    with open(zip_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def opened_bundle(zip_path):
    """(unpacked folder, manifest) of a bundle zip, its plugin modules importable inside the block."""
    from core.inference import load_manifest
    from submission.check import unsafe_entries

    with tempfile.TemporaryDirectory(prefix="whaleid_bundle_") as tmp, zipfile.ZipFile(zip_path) as zf:
        bad = unsafe_entries(zf)
        if bad:
            raise ValueError(f"{zip_path}: refused: {bad[0]}")
        zf.extractall(tmp)
        sys.path.insert(0, tmp)  # the bundle's own plugin modules
        try:
            yield Path(tmp), load_manifest(Path(tmp))
        finally:
            sys.path.remove(tmp)


def resolve_device(name: str = "auto"):
    """``auto``: the first CUDA GPU when torch sees one, else the CPU; ``cpu``, ``cuda`` or ``cuda:N`` as given, with
    a clear error when CUDA is asked for and there is none."""
    import torch

    name = str(name or "auto")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ValueError(f"--device {name}: not a device (auto, cpu, cuda or cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: torch sees no CUDA device here; use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"--device {name}: whaleid embeds on cpu or cuda")
    return device


def embed_files(zip_path, files: list[str], workers: int | None = None, device="cpu"):
    """(unit embeddings float32 [N, D], ok bool [N]: the file could be read) of ``files`` with the bundle's models,
    on ``device`` (a name for ``resolve_device``, or a torch.device); on CUDA in half precision under autocast, as
    the bundle's ``main.py`` embeds."""
    from core.inference import embed_with_bundle

    device = resolve_device(device) if isinstance(device, str) else device
    with opened_bundle(zip_path) as (bundle, manifest):
        emb, ok = embed_with_bundle(bundle, manifest, files, device, workers)
    return np.asarray(emb, np.float32), np.asarray(ok, bool)
