"""Shared fixtures: one tiny synthetic survey per test session, a trained smoke run, the fused run and its
bundles, the GPU recipes shrunk to one CPU step; the helpers they use live in ``tests/helpers.py``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.helpers import ROOT, SMOKE, run_core, shrunk_gpu_recipe


@pytest.fixture(scope="session")
def tiny_survey(tmp_path_factory) -> Path:
    from tools.synthesize import synthesize

    out = tmp_path_factory.mktemp("survey") / "tiny"
    synthesize("tiny", out, seed=0, workers=1)
    return out


def pytest_configure(config):
    """Under pytest-xdist each of the two workers (and every process it starts: runs, the twin) computes on one
    thread. Two workers of two threads each on two cores spend their time spin-waiting for each other."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Under pytest-xdist (``make test`` runs two workers), the tests that share the GPU recipes' runs go to one
    worker, first: a session fixture is built once per worker, and those runs are the suite's most expensive."""
    for item in items:
        if "recipe_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("recipes"))
    # that group first: one worker trains and runs it (about a third of the suite) while the other takes the rest,
    # instead of one worker starting it last while the other runs out of tests
    items.sort(key=lambda item: "recipe_run" not in getattr(item, "fixturenames", ()))


@pytest.fixture(scope="session")
def recipe_run(tiny_survey, tmp_path_factory):
    """``recipe_run("winners/2nd/tf_efficientnet_b3_ns")``: that GPU recipe shrunk to one CPU step on tiny data
    (``shrunk_gpu_recipe``), trained once per session and shared by the tests that train, pack or run it."""
    cache = {}

    def get(config: str) -> Path:
        if config not in cache:
            out = tmp_path_factory.mktemp("recipe") / config.replace("/", "_")
            args = shrunk_gpu_recipe(ROOT / "configs" / f"{config}.yaml", tiny_survey / "train", out)
            if config.startswith("winners/4th"):
                args += ["dataset.min_images_per_whale=2"]  # tiny's whales have few photos
            run_core(args)
            # the tests read metrics, history and the best weights; the resume checkpoint (weights and optimizer
            # state) and last.safetensors are 3x the weights again: 3.7 GB for the seed's ConvNeXt-L alone, and
            # all of them at once filled a CI host's disk
            assert (out / "best.safetensors").exists(), out
            shutil.rmtree(out / "checkpoint", ignore_errors=True)
            (out / "last.safetensors").unlink(missing_ok=True)
            cache[config] = out
        return cache[config]

    return get


@pytest.fixture(scope="session")
def smoke_run(tiny_survey, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "smoke"
    run_core(SMOKE + [f"data.root={tiny_survey / 'train'}", f"output_dir={out}"])
    return out


@pytest.fixture(scope="session")
def fused_run(smoke_run, tiny_survey, tmp_path_factory) -> Path:
    """The smoke run's weights with the default recipe's chain (knn, then local_match fitted on the validation
    whales), as ``core/run.py`` fits it: the shape of ``make demo``'s run at smoke size."""
    root = tmp_path_factory.mktemp("fused")
    config = root / "fused.yaml"
    config.write_text(f"extends: {ROOT / 'configs' / 'smoke.yaml'}\npostprocess:\n  - {{name: knn, top_k: 25}}\n"
                      "  - {name: local_match, shortlist: 25, max_side: 256}\n")
    out = root / "run"
    run_core(["--config", str(config), f"data.root={tiny_survey / 'train'}", f"output_dir={out}", "eval_only=true",
              f"weights={smoke_run / 'best.safetensors'}"])
    shutil.copy(smoke_run / "best.safetensors", out / "best.safetensors")
    return out


@pytest.fixture(scope="session")
def command_bundles(smoke_run, fused_run, tmp_path_factory) -> dict:
    """{"fused": the default recipe's kind of bundle (local_match in its chain), "global": a global-only one}."""
    from submission.build import build

    root = tmp_path_factory.mktemp("bundles")
    out = {"fused": root / "fused.zip", "global": root / "global.zip"}
    build([fused_run], out["fused"])
    build([smoke_run], out["global"])
    return out
