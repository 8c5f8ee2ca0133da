"""Shared fixtures: one tiny synthetic survey per test session, and a trained smoke run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SMOKE = ["--config", str(ROOT / "configs" / "smoke.yaml")]


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory) -> Path:
    from tools.synthesize import synthesize

    out = tmp_path_factory.mktemp("survey") / "tiny"
    synthesize("tiny", out, seed=0, workers=1)
    return out


def run_core(args: list[str], launcher: list[str] | None = None, check: bool = True) -> subprocess.CompletedProcess:
    """Run ``core/run.py`` as a user would: a script in a fresh process (optionally under accelerate launch)."""
    cmd = (launcher or [sys.executable]) + [str(ROOT / "core" / "run.py")] + args
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def shrunk_gpu_recipe(config: Path, data_root: Path, out: Path) -> list[str]:
    """Arguments that run a GPU recipe config as one CPU step on tiny data with random weights."""
    return ["--config", str(config), f"data.root={data_root}", f"output_dir={out}", "data.image_size=[64,64]",
            "backbone.pretrained=false", "train.epochs=1", "train.max_steps_per_epoch=1", "train.batch_size=4",
            "train.mixed_precision=no", "data.num_workers=0", "data.num_folds=3", "infer.batch_size=16"]


@pytest.fixture(scope="session")
def smoke_run(tiny_survey, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "smoke"
    run_core(SMOKE + [f"data.root={tiny_survey / 'train'}", f"output_dir={out}"])
    return out


def read_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
