"""The runner says when a run is not learning: the checks alone, a run on shuffled labels, and the checker's lift."""

import json
import shutil

import numpy as np
import pandas as pd

from core.training.health import MIN_EVALUATIONS, learning_warnings
from tests.helpers import SMOKE, read_json, run_core


def history(maps, losses, random_mAP=0.1):
    return [{"epoch": i + 1, "mAP": m, "random_mAP": random_mAP, "train_loss": l} for i, (m, l) in enumerate(zip(maps, losses))]


def codes(h):
    return {w["code"] for w in learning_warnings(h)}


def test_a_learning_run_is_quiet():
    assert codes(history([0.15, 0.22, 0.30], [10.0, 8.0, 6.0])) == set()


def test_each_check_fires_alone():
    assert codes(history([0.105, 0.11, 0.112], [10.0, 8.0, 6.0])) == {"near_random"}
    assert codes(history([0.30, 0.25, 0.20], [10.0, 8.0, 6.0])) == {"best_is_first"}
    assert codes(history([0.15, 0.22, 0.30], [10.0, 9.8, 9.6])) == {"loss_flat"}
    for w in learning_warnings(history([0.1, 0.09, 0.08], [10.0, 10.0, 10.0])):
        assert w["message"] and w["hint"]


def test_checks_wait_for_three_evaluations():
    assert MIN_EVALUATIONS == 3
    assert codes(history([0.10, 0.09], [10.0, 10.0])) == set()
    assert codes(history([0.10, 0.09, 0.08], [10.0, 10.0, 10.0])) == {"near_random", "best_is_first", "loss_flat"}


def test_run_on_shuffled_labels_warns_in_log_and_metrics(tiny_survey, tmp_path):
    root = tmp_path / "train"
    shutil.copytree(tiny_survey / "train", root)
    meta = pd.read_csv(root / "metadata.csv")
    meta["whale_id"] = np.random.default_rng(0).permutation(meta["whale_id"].to_numpy())
    meta["encounter_id"] = meta["whale_id"] + "_" + meta["date"]
    meta.to_csv(root / "metadata.csv", index=False)
    out = tmp_path / "run"
    proc = run_core(SMOKE + [f"data.root={root}", f"output_dir={out}", "train.epochs=4"])
    metrics = read_json(out / "metrics.json")
    assert metrics["warnings"], metrics
    assert "NOT LEARNING?" in proc.stderr and "Hint:" in proc.stderr
    assert metrics["lift"] == metrics["mAP"] / metrics["random"]["mAP"]
    for line in (out / "history.jsonl").read_text().splitlines():
        h = json.loads(line)
        assert {"train_loss", "steps", "images_seen", "lift"} <= set(h)
    assert "random" in proc.stderr and "lift" in proc.stderr  # every evaluation line shows both


def test_check_warns_on_a_low_lift():
    from submission.check import lift_report

    assert lift_report(0.30, 0.10) == {"lift": 3.0, "warnings": []}
    low = lift_report(0.12, 0.10)
    assert low["lift"] == 1.2 and "1.20x" in low["warnings"][0]
    assert lift_report(0.1, 0.0)["lift"] is None


def test_smoke_run_stays_quiet(smoke_run):
    # two evaluations: too few to judge, so nothing fires
    metrics = read_json(smoke_run / "metrics.json")
    assert metrics["warnings"] == [] and metrics["lift"] > 1.15
    assert len((smoke_run / "history.jsonl").read_text().splitlines()) < MIN_EVALUATIONS
