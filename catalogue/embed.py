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


def embed_files(zip_path, files: list[str], workers: int | None = None):
    """(unit embeddings float32 [N, D], ok bool [N]: the file could be read) of ``files`` with the bundle's models."""
    import torch

    from core.inference import embed_with_bundle

    with opened_bundle(zip_path) as (bundle, manifest):
        emb, ok = embed_with_bundle(bundle, manifest, files, torch.device("cpu"), workers)
    return np.asarray(emb, np.float32), np.asarray(ok, bool)
