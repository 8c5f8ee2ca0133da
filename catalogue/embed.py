"""Embedding photos with a submission bundle (any zip ``submission.build`` makes), and the bundle's identity.

The identity is the zip's SHA-256: a catalogue records it and is only searched with embeddings of the same
bundle. The zip is opened by ``core.bundle`` (checked as the runtime would, unpacked to a temporary folder, its
own plugin modules importable while it embeds).
"""

from __future__ import annotations

from core.bundle import bundle_hash, opened  # noqa: F401  (bundle_hash: a catalogue's model identity)


DEVICE_HELP = ("where to embed: auto (a CUDA GPU when there is one, else the CPU), cpu, cuda or cuda:N; on CUDA in half "
               "precision, as the bundle's main.py")


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
    device = resolve_device(device) if isinstance(device, str) else device
    with opened(zip_path) as bundle:
        return bundle.embed(files, device, workers)
