"""Checkpoint swaps under injected faults: a crash at any file-system step of ``save_checkpoint`` leaves a
complete checkpoint that ``find_checkpoint`` finds, and resuming from it then completes; a full disk gives
a clear error and keeps the previous checkpoint."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch


class Crash(BaseException):
    """Stands for SIGKILL at one step: nothing after it runs (BaseException: no handler catches it)."""


class FakeAccelerator:
    """What save_checkpoint uses of accelerate: a state folder whose content names its epoch."""

    is_main_process = True

    def __init__(self):
        self.epoch = 0

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "model.bin").write_text(str(self.epoch))


def save(out: Path, epoch: int):
    from core.run import save_checkpoint

    acc = FakeAccelerator()
    acc.epoch = epoch
    save_checkpoint(acc, out, {"epoch": epoch, "best_mAP": 0.1 * epoch}, torch.nn.Linear(2, 2))


def consistent(out: Path) -> int:
    from core.run import find_checkpoint

    ckpt = find_checkpoint(out)
    assert ckpt is not None, sorted(p.name for p in out.iterdir())
    epoch = json.loads((ckpt / "state.json").read_text())["epoch"]
    assert (ckpt / "model.bin").read_text() == str(epoch)  # the state and the marker belong together
    return epoch


def test_a_crash_at_every_step_of_the_swap_leaves_a_complete_checkpoint(tmp_path, monkeypatch):
    import os

    import safetensors.torch

    import core.run

    calls = {"n": 0, "crash_at": None}

    def hooked(fn):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == calls["crash_at"]:
                raise Crash(f"crash at step {calls['n']} ({fn.__name__})")
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(core.run.os, "replace", hooked(os.replace))
    monkeypatch.setattr(core.run.shutil, "rmtree", hooked(shutil.rmtree))
    monkeypatch.setattr(safetensors.torch, "save_file", hooked(safetensors.torch.save_file))
    monkeypatch.setattr(FakeAccelerator, "save_state", hooked(FakeAccelerator.save_state))
    monkeypatch.setattr(Path, "write_text", hooked(Path.write_text))

    survived, point = 0, 1
    while True:
        out = tmp_path / f"run{point}"
        out.mkdir()
        calls["crash_at"] = None
        save(out, 1)
        save(out, 2)  # a run with a previous checkpoint to replace
        calls["n"], calls["crash_at"] = 0, point
        try:
            save(out, 3)
        except Crash:
            assert consistent(out) in (2, 3)
            calls["crash_at"] = None
            save(out, 3)  # resumed: the epoch is written again, and completes
            assert consistent(out) == 3
            survived += 1
            point += 1
            continue
        assert consistent(out) == 3
        break
    assert survived >= 8  # every step: stale-tmp cleanup, state, marker, weights, the two renames, deletion
    print(f"{survived} crash points injected and survived")


def test_full_disk_gives_a_clear_error_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    save(tmp_path, 1)

    def no_space(self, path):
        Path(path).mkdir(parents=True, exist_ok=True)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(FakeAccelerator, "save_state", no_space)
    with pytest.raises(OSError, match=r"cannot write the checkpoint of epoch 2 .*No space left on device.*"
                                      r"the previous one, .*checkpoint, is kept") as exc:
        save(tmp_path, 2)
    assert exc.value.errno == errno.ENOSPC
    assert consistent(tmp_path) == 1


def test_a_checkpoint_left_complete_in_tmp_is_the_newest(tmp_path):
    from core.run import find_checkpoint

    save(tmp_path, 1)
    shutil.copytree(tmp_path / "checkpoint", tmp_path / "checkpoint.tmp")
    (tmp_path / "checkpoint.tmp" / "state.json").write_text(json.dumps({"epoch": 2}))
    (tmp_path / "checkpoint.tmp" / "model.bin").write_text("2")
    assert find_checkpoint(tmp_path).name == "checkpoint.tmp"
    (tmp_path / "checkpoint.tmp" / "state.json").write_text("{trunc")  # a marker cut short: incomplete
    assert find_checkpoint(tmp_path).name == "checkpoint"


@pytest.mark.parametrize("entry, why", [("/etc/evil.py", "unsafe path"), ("../evil.py", "unsafe path"),
                                        ("models/../../evil.py", "unsafe path"), ("C:/evil.py", "unsafe path"),
                                        ("link", "symbolic link")])
def test_the_checker_refuses_a_zip_that_escapes_or_links(tmp_path, tiny_survey, entry, why):
    import stat
    import zipfile

    from submission.check import check

    zip_path = tmp_path / "s.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("main.py", "open('/tmp/whaleid_should_not_run', 'w').write('ran')\n")
        info = zipfile.ZipInfo(entry)
        if why == "symbolic link":
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd" if why == "symbolic link" else "x = 1\n")
    result = check(zip_path, tiny_survey / "test")
    assert result.get("refused") and any(why in p and entry in p for p in result["problems"])
    assert "exit_code" not in result  # main.py never ran
