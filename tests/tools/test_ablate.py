"""tools.bench.ablate: the spec is checked before anything trains, arms train or re-evaluate over seeds, and the
table's numbers are the runs' own."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from tests.helpers import ROOT, read_json
from tools.bench.ablate import SpecError, load_spec

SMOKE_CONFIG = str(ROOT / "configs" / "smoke.yaml")


def write_spec(path: Path, arms: list[dict], sets=(), **extra) -> Path:
    spec = {"config": SMOKE_CONFIG, "seeds": [0, 1], "set": list(sets), "arms": arms, **extra}
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("arms, extra, message", [
    ([{"name": "a", "set": ["train.nope=1"]}], {}, "arm 'a'.*unknown config key 'train.nope'"),
    ([{"name": "a", "set": ["train.lr=1e-3"]}, {"name": "a", "set": ["train.lr=1e-2"]}], {}, "arm 'a': names must be unique"),
    ([{"name": "baseline", "set": ["train.lr=1e-3"]}], {}, "arm 'baseline'"),
    ([{"name": "a", "set": []}], {}, "arm 'a': no overrides"),
    ([{"name": "a", "set": ["train.lr"]}], {}, "arm 'a': 'set' must be a list of key=value"),
    ([{"name": "a", "set": ["train.lr=1e-3"], "colour": 1}], {}, r"arm 'a': unknown key\(s\) \['colour'\]"),
    ([{"name": "a", "set": ["train.lr=1e-3"]}], {"seeds": [1, 1]}, "'seeds' must be a list of distinct"),
    ([{"name": "a", "set": ["train.data=1"]}], {}, "arm 'a'"),
    ([{"name": "a", "set": ["train.lr=1e-3"], "eval_only": True, "control": True}], {}, "arm 'a': a control arm trains"),
])
def test_bad_specs_name_the_file_and_arm(tmp_path, arms, extra, message):
    path = write_spec(tmp_path / "spec.yaml", arms, **extra)
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert str(path) in str(info.value)


def test_the_shipped_spec_loads_and_every_arm_changes_the_config():
    from core.config import load_config

    spec = load_spec(ROOT / "configs" / "ablation" / "toolbox.yaml")
    base = load_config(ROOT / spec.config, spec.sets)
    assert len(spec.seeds) >= 3
    for arm in spec.arms:
        assert load_config(ROOT / spec.config, spec.sets + arm.sets) != base, arm.name


def test_verdicts_need_the_interval_and_more_than_the_controls_moved():
    from tools.bench.ablate import verdict_of

    up = {"difference": 0.02, "ci95": [0.01, 0.03]}
    assert verdict_of(up, 0.0, False) == "better"
    assert verdict_of(up, 0.025, False) == "within the controls' spread"
    assert verdict_of({"difference": -0.02, "ci95": [-0.03, -0.01]}, 0.015, False) == "worse"
    assert verdict_of({"difference": 0.03, "ci95": [-0.01, 0.07]}, 0.0, False) == "within noise"
    assert verdict_of(up, 0.0, True) == "control"


def test_focal_off_is_a_control_at_these_losses():
    """The spec's premise for its 'arcface' control: while the batch-mean smoothed CE is high (8-11 here), the
    seed's focal factor (1 - e^-CE)^6 is ~1, so arcface_focal and plain arcface give the same gradient direction."""
    import torch

    from plugins.losses.arcface import ArcFaceLoss
    from plugins.losses.arcface_focal import ArcFaceFocalLoss

    torch.manual_seed(0)
    focal = ArcFaceFocalLoss(256, 180, s=20.0, m=0.3, ls_eps=0.2, gamma=6.0, reduction="batch")
    plain = ArcFaceLoss(256, 180, s=20.0, m=0.3, ls_eps=0.2)
    plain.weight.data.copy_(focal.head.weight.data)
    e, y = torch.randn(32, 256), torch.randint(0, 180, (32,))
    grads = []
    for loss in (focal, plain):
        x = e.clone().requires_grad_()
        value = loss(x, y)
        value.backward()
        grads.append(x.grad.flatten())
    assert float(value.detach()) > 8
    assert torch.nn.functional.cosine_similarity(*grads, dim=0) > 0.99999
    assert 1.0 < float(grads[0].norm() / grads[1].norm()) < 1.003
    # and the premise fails where it should: at a low loss the focal term reweights
    low = ArcFaceFocalLoss(256, 180, s=20.0, m=0.3, ls_eps=0.0, gamma=6.0, reduction="batch")
    with torch.no_grad():
        low.head.weight.data[y] = torch.nn.functional.normalize(e, dim=1) * 5  # each sample at its class centre
    assert float(low(e, y).detach()) < 0.5


def test_cli_refuses_a_bad_spec_before_training(tmp_path):
    path = write_spec(tmp_path / "spec.yaml", [{"name": "a", "set": ["neck.dropout=0.0"]}, {"name": "b", "set": ["x.y=1"]}])
    proc = subprocess.run([sys.executable, "-m", "tools.bench.ablate", str(path), "--out", str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "arm 'b'" in proc.stderr and str(path) in proc.stderr
    assert not (tmp_path / "out").exists()


def test_ablation_trains_re_evaluates_and_reports_the_runs_numbers(tiny_survey, tmp_path):
    sets = [f"data.root={tiny_survey / 'train'}", "train.epochs=1", "train.max_steps_per_epoch=3"]
    arms = [
        # the one trained arm is also the control, as plain ArcFace is in configs/ablation/toolbox.yaml
        {"name": "arcface", "what": "no focal", "control": True, "set": ["loss.name=arcface", "loss.ls_eps=0.2"]},
        # the baseline's own chain, re-evaluated: the same model ranks the same, so the difference is 0
        {"name": "same_chain", "what": "control", "eval_only": True,
         "set": ["postprocess=[{name: expand, db_k: 1, query_k: 0}, {name: knn, top_k: 20}]"]},
        {"name": "no_dba", "what": "kNN alone", "eval_only": True, "set": ["postprocess=[{name: knn, top_k: 20}]"]},
    ]
    spec = write_spec(tmp_path / "spec.yaml", arms, sets)
    out = tmp_path / "abl"
    cmd = [sys.executable, "-m", "tools.bench.ablate", str(spec), "--out", str(out), "--jobs", "2", "--boot", "300"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = read_json(out / "ablation.json")
    by_name = {a["name"]: a for a in report["arms"]}
    assert set(by_name) == {"arcface", "same_chain", "no_dba"}
    assert by_name["arcface"]["verdict"] == "control"
    assert report["control_floor"] == pytest.approx(abs(by_name["arcface"]["difference"]))

    # every arm's per-seed values are its seed runs' metrics, and the baseline's mean is its seeds.json mean
    assert report["baseline"]["mAP"] == pytest.approx(read_json(out / "baseline" / "seeds.json")["mean"])
    for name in by_name:
        summary = read_json(out / name / "seeds.json")
        assert by_name[name]["values"] == pytest.approx(summary["values"])
        assert summary["values"] == pytest.approx([read_json(out / name / f"seed{s}" / "metrics.json")["mAP"] for s in (0, 1)])
    assert "arcface" in (out / "arcface" / "config.yaml").read_text()
    base_values = read_json(out / "baseline" / "seeds.json")["values"]
    diffs = by_name["arcface"]["seed_differences"]
    assert list(diffs) == ["seed0", "seed1"]
    assert list(diffs.values()) == pytest.approx([a - b for a, b in zip(by_name["arcface"]["values"], base_values)])

    # eval-only arms re-evaluate the baseline's weights and train nothing
    control = by_name["same_chain"]
    assert control["difference"] == pytest.approx(0.0, abs=1e-9) and control["verdict"] == "within noise"
    assert list(control["seed_differences"].values()) == pytest.approx([0.0, 0.0], abs=1e-9)
    for s in (0, 1):
        a = pd.read_csv(out / "baseline" / f"seed{s}" / "per_query.csv")
        b = pd.read_csv(out / "same_chain" / f"seed{s}" / "per_query.csv")
        assert a["ap"].to_numpy() == pytest.approx(b["ap"].to_numpy())
        assert not (out / "no_dba" / f"seed{s}" / "best.safetensors").exists()
    assert read_json(out / "no_dba" / "seeds.json")["eval_only_of"] == str(out / "baseline")
    assert any(d.startswith("postprocess") for d in by_name["no_dba"]["config_differences"])
    table = (out / "ablation.md").read_text()
    for name in ("baseline", "arcface", "same_chain", "no_dba", "top_all"):
        assert name in table

    # a second call trains nothing and prints the same table
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0
    assert "baseline: finished" in again.stdout and "arcface: finished" in again.stdout and " start " not in again.stdout
    assert json.loads((out / "ablation.json").read_text())["arms"] == report["arms"]
