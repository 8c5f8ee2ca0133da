"""The one place a submission bundle (the zip ``submission.build`` writes) is opened for reading.

``unsafe_entries`` / ``problems``: what the runtime would refuse (a zip from someone else is not trusted:
absolute paths, ``..`` parts, drive letters, backslashes, symbolic links; no ``main.py`` at its root).
``unpack``: extract into a folder, refusing an unsafe zip before anything is written. ``opened``: a temporary
unpacked copy whose plugin modules are the bundle's own inside the block (``own_modules``: the process's copies
of those packages are set aside and come back afterwards, nothing stays bound to the deleted folder), as a
``Bundle``: its manifest, registries
built from the bundle's plugin modules, its models, and ``embed`` (``core.inference``'s embedding, what
``main.py`` runs). ``bundle_hash``: the zip's SHA-256, a bundle's identity (a catalogue records it).

Not shipped in the bundle: ``main.py`` never imports it (the bundle is already unpacked where it runs).
``core`` is the process's own (the same code the bundle carries for ``main.py``); ``submission.check`` runs the
bundle's own copy of everything in a clean process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import stat
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Optional

import numpy as np


class BundleError(ValueError):
    """A bundle zip that cannot be used: unsafe, unreadable, or without its manifest."""


def bundle_hash(zip_path) -> str:
    h = hashlib.sha256()
    with open(zip_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def unsafe_entries(zf: zipfile.ZipFile) -> list:
    """Entries that could write outside the extraction folder or point elsewhere."""
    bad = []
    for info in zf.infolist():
        n = info.filename
        if n.startswith(("/", "\\")) or ".." in Path(n.replace("\\", "/")).parts or ":" in n or "\\" in n:
            bad.append(f"unsafe path in zip: {n}")
        elif stat.S_ISLNK(info.external_attr >> 16):
            bad.append(f"symbolic link in zip: {n}")
    return bad


def zip_problems(zf: zipfile.ZipFile) -> list:
    """What the competition's runtime would refuse: no ``main.py`` at the root, and every unsafe entry."""
    return ([] if "main.py" in zf.namelist() else ["main.py is not at the zip's root"]) + unsafe_entries(zf)


def problems(zip_path) -> list:
    try:
        with zipfile.ZipFile(zip_path) as zf:
            return zip_problems(zf)
    except (OSError, zipfile.BadZipFile) as exc:
        return [f"{zip_path}: not a readable zip: {exc}"]


def made_for(zip_path) -> str:
    """The runtime a bundle was packed for (``submission.build --runtime``, its manifest's ``runtime``): "2022"
    for the competition's, also for bundles packed before it was recorded and for an unreadable zip (which the
    checks then name); "here" for this installation's."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            return str(json.loads(zf.read("manifest.json")).get("runtime", "2022"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return "2022"


def unpack(zip_path, dest) -> list:
    """Extract ``zip_path`` into ``dest``; an unsafe zip raises ``BundleError`` with nothing written. Returns the
    remaining problems (no ``main.py``), which do not stop the extraction."""
    try:
        with zipfile.ZipFile(zip_path) as zf:
            found = zip_problems(zf)
            bad = unsafe_entries(zf)
            if bad:
                raise BundleError(f"{zip_path}: refused: {bad[0]}")
            zf.extractall(dest)
    except (OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{zip_path}: not a readable zip: {exc}") from exc
    return found


class Bundle:
    """An unpacked bundle: ``folder``, ``manifest``; registries, models and embedding from its own files."""

    def __init__(self, folder: Path, zip_path=None):
        self.folder, self.zip_path = Path(folder), zip_path
        path = self.folder / "manifest.json"
        if not path.is_file():
            raise BundleError(f"{zip_path or folder}: no manifest.json; not a whaleid bundle")
        self.manifest = json.loads(path.read_text())
        self._registries: Optional[dict] = None

    @property
    def registries(self) -> dict:
        if self._registries is None:
            from core.inference import bundle_registries

            self._registries = bundle_registries(self.manifest)
            self.foreign = self.foreign_modules()
        return self._registries

    def foreign_modules(self) -> list:
        """The manifest's plugin modules this process holds from outside the bundle's folder (none inside
        ``opened``; a ``Bundle`` made on a folder without it may have some)."""
        root, out = self.folder.resolve(), []
        for name in self.manifest.get("plugins", []):
            mod = sys.modules.get(name)
            where = getattr(mod, "__file__", None)
            if mod is not None and where and root not in Path(where).resolve().parents:
                out.append(name)
        return out

    def model(self, k: int = 0):
        """(model ``k`` in eval mode with its weights, its config)."""
        from core.inference import load_bundle_model

        return load_bundle_model(self.folder, self.manifest["models"][k], self.registries)

    def steps(self):
        from core.retrieval import build_steps

        return build_steps(self.manifest["postprocess"], self.registries["postprocess"])

    def embed(self, files: list, device="cpu", workers: Optional[int] = None):
        """(combined unit embeddings float32 [N, D], ok bool [N]) of ``files`` over every model, as main.py embeds
        (on CUDA in half precision)."""
        import torch

        from core.inference import embed_with_bundle

        device = torch.device(device) if isinstance(device, str) else device
        emb, ok = embed_with_bundle(self.folder, self.manifest, files, device, workers, self.registries)
        return np.asarray(emb, np.float32), np.asarray(ok, bool)


def _tops(manifest: dict) -> set:
    """The top-level names of the bundle's plugin modules, less ``core`` (the process's own, the same code)."""
    return {name.split(".")[0] for name in manifest.get("plugins", [])} - {"core"}


@contextlib.contextmanager
def own_modules(folder: Path, tops: set):
    """Inside the block, the packages and modules named ``tops`` are imported from ``folder`` alone, whatever the
    process imported first; afterwards every module loaded from ``folder`` is forgotten and the process's own are
    back, so no module stays bound to a folder that is about to be deleted. Not for two bundles at once."""
    import importlib

    from core.plugins import builtin_plugins

    def ours(name: str) -> bool:
        return name.split(".")[0] in tops

    saved = {name: mod for name, mod in sys.modules.items() if ours(name)}
    for name in saved:
        del sys.modules[name]
    where = str(folder)
    sys.path.insert(0, where)
    importlib.invalidate_caches()
    builtin_plugins.cache_clear()  # a walk of ``plugins`` inside the block sees the bundle's copy
    try:
        yield
    finally:
        if where in sys.path:
            sys.path.remove(where)
        for name in [n for n in sys.modules if ours(n)]:
            del sys.modules[name]
        sys.modules.update(saved)
        importlib.invalidate_caches()
        builtin_plugins.cache_clear()


@contextlib.contextmanager
def opened(zip_path, prefix: str = "whaleid_bundle_"):
    """A ``Bundle`` unpacked to a temporary folder whose plugin modules are the ones imported inside the block
    (``own_modules``): the bundle's own copies, whether or not the process imported the working tree's first.
    Keep the block as short as the work: while it is open, ``plugins`` is the bundle's (its used plugins only)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        unpack(zip_path, tmp)
        bundle = Bundle(Path(tmp), zip_path)
        with own_modules(Path(tmp), _tops(bundle.manifest)):
            yield bundle
