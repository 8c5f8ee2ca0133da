"""The checkpoint protocol: at every instant one complete checkpoint is on disk, and a run resumes from it.

A checkpoint is a folder written by ``accelerator.save_state`` (model, optimizer, scheduler, RNG state),
``last.safetensors`` beside it, and ``state.json`` (the run's progress) written last as its completion
marker. ``save_checkpoint`` writes ``checkpoint.tmp``, then swaps it in for ``checkpoint``;
``find_checkpoint`` picks the newest complete one of the three names a crash can leave.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

from core.training.runs import keep_history_until, write_json

log = logging.getLogger("whaleid")

NAMES = ("checkpoint", "checkpoint.old", "checkpoint.tmp")


def save_weights(model, path: Path) -> None:
    """The model's state dict as a safetensors file, replaced atomically."""
    from safetensors.torch import save_file

    tmp = path.with_suffix(".tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, path)


def find_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint folder under ``out``: ``checkpoint``, or ``checkpoint.old`` /
    ``checkpoint.tmp`` left by a crash mid-swap. Complete means its ``state.json``, written last, is there
    and parses."""
    best, best_epoch = None, -1
    for name in NAMES:
        marker = out / name / "state.json"
        try:
            epoch = int(json.loads(marker.read_text())["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if epoch > best_epoch:
            best, best_epoch = out / name, epoch
    return best


def resume_state(accelerator, out: Path, resume: bool) -> dict:
    """The run's progress: restored from the newest complete checkpoint with ``resume``, else a fresh start.
    The history is cut to the restored epoch (a crash after an evaluation was logged but before its
    checkpoint runs that epoch again); a fresh run's history starts empty."""
    state = {"epoch": 0, "best_mAP": -1.0}
    ckpt = find_checkpoint(out) if resume else None
    if ckpt is not None:
        accelerator.load_state(str(ckpt))
        state = json.loads((ckpt / "state.json").read_text())
        log.info("resumed from %s at epoch %d", ckpt, state["epoch"])
    elif resume:
        log.warning("resume=true but %s holds no complete checkpoint; starting afresh", out)
    if accelerator.is_main_process:
        keep_history_until(out, int(state["epoch"]))
    return state


def save_checkpoint(accelerator, out: Path, state: dict, model) -> None:
    """Everything needed to resume, and ``last.safetensors``. The new checkpoint is written to
    ``checkpoint.tmp`` and completed by its ``state.json``; then ``checkpoint`` becomes ``checkpoint.old``,
    the new one becomes ``checkpoint`` and the old one is deleted. At every instant one complete checkpoint
    is on disk, and ``find_checkpoint`` picks the newest; a failed write (a full disk) leaves the previous one."""
    accelerator.wait_for_everyone()
    tmp, ckpt, old = (out / name for name in ("checkpoint.tmp", "checkpoint", "checkpoint.old"))
    if accelerator.is_main_process and tmp.exists():
        shutil.rmtree(tmp)  # an incomplete write of an earlier crash
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(str(tmp))
        if accelerator.is_main_process:
            save_weights(model, out / "last.safetensors")  # before the marker: a complete checkpoint has its weights
            write_json(tmp / "state.json", state)  # the completion marker, last
    except OSError as exc:
        kept = find_checkpoint(out)
        raise OSError(exc.errno, f"cannot write the checkpoint of epoch {state.get('epoch')} to {tmp} ({exc.strerror or exc}); "
                      + (f"the previous one, {kept}, is kept: free space and rerun with resume=true" if kept else
                         "no earlier checkpoint exists")) from exc
    if accelerator.is_main_process:
        if ckpt.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(ckpt, old)
        os.replace(tmp, ckpt)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def finished(out: Path, epochs: int) -> bool:
    """A run folder whose training reached ``epochs`` and whose best evaluation was saved."""
    if not ((out / "metrics.json").is_file() and (out / "per_query.csv").is_file()):
        return False
    ckpt = find_checkpoint(out)
    return ckpt is not None and int(json.loads((ckpt / "state.json").read_text()).get("epoch", 0)) >= epochs
