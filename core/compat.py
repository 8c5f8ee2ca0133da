"""What differs between the torch of the 2022 runtime (1.8) and today's, in one place.

Mixed precision: ``torch.autocast`` arrived in torch 1.10; torch 1.8 has ``torch.cuda.amp.autocast``
(float16 on CUDA only) and no CPU autocast. ``autocast`` picks what the installed torch offers, so
inference and the loss plugins run on both stacks.
"""

from __future__ import annotations

import contextlib
import logging

import torch

log = logging.getLogger(__name__)
_warned = set()


def autocast(device_type: str, dtype: torch.dtype | None = None, enabled: bool = True):
    """A mixed-precision context for ``device_type`` ("cuda", "cpu", ...), or a no-op where the installed
    torch cannot do it (then the code runs in float32, with one log line saying so)."""
    if hasattr(torch, "autocast"):
        kwargs = {"device_type": device_type, "enabled": enabled}
        if dtype is not None:
            kwargs["dtype"] = dtype
        return torch.autocast(**kwargs)
    if not enabled:  # torch < 1.10: nothing autocasts unless asked, except an enclosing CUDA autocast
        return torch.cuda.amp.autocast(enabled=False) if device_type == "cuda" else contextlib.nullcontext()
    if device_type == "cuda" and dtype in (None, torch.float16):
        return torch.cuda.amp.autocast(enabled=True)
    key = (device_type, dtype)
    if key not in _warned:
        _warned.add(key)
        log.warning("torch %s has no %s autocast for %s; running in float32", torch.__version__, device_type, dtype)
    return contextlib.nullcontext()


def autocast_off(device_type: str):
    """A region that runs in float32 even inside an autocast region (margin heads, losses)."""
    return autocast(device_type, enabled=False)
