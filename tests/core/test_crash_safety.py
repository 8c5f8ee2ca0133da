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
    from core.training.checkpoint import save_checkpoint

    acc = FakeAccelerator()
    acc.epoch = epoch
    save_checkpoint(acc, out, {"epoch": epoch, "best_mAP": 0.1 * epoch}, torch.nn.Linear(2, 2))


def consistent(out: Path) -> int:
    from core.training.checkpoint import find_checkpoint

    ckpt = find_checkpoint(out)
    assert ckpt is not None, sorted(p.name for p in out.iterdir())
    epoch = json.loads((ckpt / "state.json").read_text())["epoch"]
    assert (ckpt / "model.bin").read_text() == str(epoch)  # the state and the marker belong together
    return epoch


def test_a_crash_at_every_step_of_the_swap_leaves_a_complete_checkpoint(tmp_path, monkeypatch):
    import os

    import safetensors.torch

    import core.training.checkpoint

    calls = {"n": 0, "crash_at": None}

    def hooked(fn):
        def wrapper(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == calls["crash_at"]:
                raise Crash(f"crash at step {calls['n']} ({fn.__name__})")
            return fn(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(core.training.checkpoint.os, "replace", hooked(os.replace))
    monkeypatch.setattr(core.training.checkpoint.shutil, "rmtree", hooked(shutil.rmtree))
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
    from core.training.checkpoint import find_checkpoint

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


def test_the_runner_killed_at_file_system_steps_resumes_to_the_uninterrupted_result(tiny_survey, tmp_path):
    """The real runner, ended abruptly (os._exit, like SIGKILL) at file-system steps spread over the whole run,
    then resumed: the same best metrics, history and last weights as a run that was never interrupted."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from tests.helpers import ROOT, SMOKE, run_core

    common = SMOKE + [f"data.root={tiny_survey / 'train'}", "train.epochs=3", "train.max_steps_per_epoch=2"]
    env = dict(__import__("os").environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")

    def faulty(n, out):
        count = tmp_path / f"count_{n}"
        proc = subprocess.run([sys.executable, str(ROOT / "tests" / "core" / "faulty_run.py"), str(n), str(count),
                               str(ROOT / "core" / "run.py")] + common + [f"output_dir={out}"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
        return proc.returncode, int(count.read_text()) if count.exists() else None

    code, total = faulty(0, tmp_path / "clean")
    assert code == 0 and total and total > 10
    clean = json.loads((tmp_path / "clean" / "metrics.json").read_text())
    def results(run):  # each evaluation, less its timings
        return [{k: v for k, v in json.loads(x).items() if k not in ("img_s", "train_s")}
                for x in (run / "history.jsonl").read_text().splitlines()]

    clean_hist = results(tmp_path / "clean")
    # early in epoch 1, mid-run and the very last step (each swap step alone: the unit test above)
    points = sorted({max(1, round(total * f)) for f in (0.15, 0.55, 1.0)})
    for n in points:
        out = tmp_path / f"crash{n}"
        code, _ = faulty(n, out)
        assert code == 137, f"step {n} of {total} did not crash the run"
        run_core(common + [f"output_dir={out}", "resume=true"])
        got = json.loads((out / "metrics.json").read_text())
        assert (got["mAP"], got["epoch"]) == (clean["mAP"], clean["epoch"]), f"crash at step {n}"
        assert results(out) == clean_hist, f"crash at step {n}"  # one line per epoch, none repeated
        a, b = load_file(tmp_path / "clean" / "last.safetensors"), load_file(out / "last.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), f"crash at step {n}"
    print(f"{len(points)} crash points of {total} file-system steps injected into the runner and survived")
