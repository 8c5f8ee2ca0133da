"""Embedding photos with a submission bundle (any zip ``submission.build`` makes), and the bundle's identity.

The identity is the zip's SHA-256: a catalogue records it and is only searched with embeddings of the same
bundle. The zip is opened by ``core.bundle`` (checked as the runtime would, unpacked to a temporary folder, its
own plugin modules importable while it embeds).
"""

from __future__ import annotations

from core.bundle import bundle_hash, opened  # noqa: F401  (bundle_hash: a catalogue's model identity)


DEVICE_HELP = ("where to embed: auto (every CUDA GPU torch sees, else the CPU), cpu, cuda (every GPU), cuda:N, or a list "
               "such as cuda:0,cuda:2; on CUDA in half precision, as the bundle's main.py; several devices each embed "
               "a contiguous share of the photos at once")


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


def resolve_devices(name: str = "auto") -> list:
    """The devices ``--device`` names: ``auto`` every CUDA GPU torch sees (else the CPU), ``cuda`` every GPU, a
    comma-separated list each of its entries (``resolve_device``), anything else the one device."""
    import torch

    name = str(name or "auto")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return [torch.device(f"cuda:{i}") for i in range(torch.cuda.device_count())]
    return [resolve_device(part.strip()) for part in name.split(",") if part.strip()] or [resolve_device("auto")]


def embed_files(zip_path, files: list[str], workers: int | None = None, device="cpu"):
    """(unit embeddings float32 [N, D], ok bool [N]: the file could be read) of ``files`` with the models of the
    bundle at ``zip_path`` (``embed_opened`` on it, unpacked for this call)."""
    with opened(zip_path) as bundle:
        return embed_opened(bundle, files, workers, device)


def embed_opened(bundle, files: list[str], workers: int | None = None, device="cpu"):
    """``files`` embedded by an opened ``core.bundle.Bundle`` on ``device`` (a name for ``resolve_devices``, or a
    torch.device); on CUDA in half precision under autocast, as the bundle's ``main.py`` embeds. With several
    devices each embeds a contiguous share of ``files`` in a thread of its own (its own copy of the models; CUDA
    work releases the interpreter lock), and the shares are joined in order."""
    devices = resolve_devices(device) if isinstance(device, str) else [device]
    if len(devices) == 1 or len(files) < 2 * len(devices):
        return bundle.embed(files, devices[0], workers)
    import numpy as np
    from concurrent.futures import ThreadPoolExecutor

    bounds = np.linspace(0, len(files), len(devices) + 1).astype(int)
    shares = [files[a:b] for a, b in zip(bounds[:-1], bounds[1:])]
    bundle.registries  # built once, before the threads share them
    with ThreadPoolExecutor(len(devices)) as pool:
        parts = list(pool.map(lambda job: bundle.embed(job[0], job[1], workers), zip(shares, devices)))
    return np.concatenate([e for e, _ in parts]), np.concatenate([ok for _, ok in parts])
