"""The experiment loop: folds in one launch, seeds, comparisons, ensembles on out-of-fold data,
trackers, plain progress lines, and exact resume with loader workers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch

from tests.helpers import ROOT, SMOKE, read_json, run_core

FAST = ["train.epochs=2", "train.max_steps_per_epoch=3"]


@pytest.fixture(scope="module")
def cv_run(tiny_survey, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "cv"
    proc = run_core(SMOKE + [f"data.root={tiny_survey / 'train'}", f"output_dir={out}", "data.fold=all"] + FAST)
    return out, proc


def test_fold_all_trains_every_fold_and_writes_cv(cv_run):
    out, proc = cv_run
    cv = read_json(out / "cv.json")
    assert cv["folds"] == ["fold0", "fold1", "fold2"]
    tables, maps = [], []
    for k in range(3):
        run = out / f"fold{k}"
        for name in ("metrics.json", "oof.npz", "per_query.csv", "split.csv", "best.safetensors", "checkpoint"):
            assert (run / name).exists(), f"{run}/{name}"
        assert "fold: %d" % k in (run / "config.yaml").read_text()
        tables.append(pd.read_csv(run / "per_query.csv"))
        maps.append(read_json(run / "metrics.json")["mAP"])
    # every validation query of every fold once: the folds' query sets are disjoint
    ids = pd.concat(tables)["query_id"]
    assert ids.is_unique and cv["queries"] == len(ids)
    assert cv["oof_mAP"] == pytest.approx(pd.concat(tables)["ap"].mean())
    assert cv["fold_mAP"] == pytest.approx(maps)
    assert cv["fold_mean"] == pytest.approx(np.mean(maps)) and cv["fold_std"] == pytest.approx(np.std(maps, ddof=1))
    assert 0 < cv["random"]["mAP"] < 1 and set(cv["random"]["scenarios"]) == set(cv["oof_scenarios"])
    # the folds' splits share one fold assignment: each image validates in exactly one fold
    vals = [set(pd.read_csv(out / f"fold{k}" / "split.csv").query("role == 'val'")["image_id"]) for k in range(3)]
    assert not (vals[0] & vals[1]) and not (vals[1] & vals[2]) and not (vals[0] & vals[2])


def test_cv_oof_map_equals_the_metric_recomputed_from_saved_embeddings(cv_run):
    from tools.ensemble import load_members, score

    out, _ = cv_run
    folds, steps = load_members([out])
    again = score(folds, steps, [1.0])
    cv = read_json(out / "cv.json")
    assert again["mAP"] == pytest.approx(cv["oof_mAP"], abs=1e-9)
    for name, value in cv["oof_scenarios"].items():
        assert again["scenarios"][name] == pytest.approx(value, abs=1e-9)


def test_calibrate_on_a_cross_validated_run_pools_every_folds_held_out_whales(cv_run, tiny_survey, tmp_path, capsys):
    """``whaleid calibrate --run CV`` scores each fold's held-out whales with that fold's model (which never
    trained on them) and fits on all of them: every training whale is a calibration whale once."""
    from catalogue.deciding import calibration, held_out
    from catalogue.deciding import out_of_fold
    from catalogue.cli import main
    from catalogue.records.store import Catalogue
    from submission.build import build

    out, _ = cv_run
    bundle, db = tmp_path / "fold0.zip", tmp_path / "c.sqlite"
    build([out / "fold0"], bundle)
    assert main(["catalogue", "build", "--bundle", str(bundle), "--data", str(tiny_survey / "train"), "--db", str(db),
                 "--workers", "0", "--no-keypoints"]) == 0
    cat = Catalogue.open(db)
    table, emb = cat.photos()
    cat.close()
    # a fold's model embeds as the bundle of that fold does
    again = out_of_fold.embed_run(out / "fold0", list(table["path"]), "cpu", 0)
    assert np.allclose(again, emb, atol=1e-4)
    capsys.readouterr()
    assert main(["calibrate", "--db", str(db), "--run", str(out), "--workers", "0", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    cal = calibration.Calibration.from_json(Catalogue.open(db).meta["calibration"])
    per_fold = cal.fitted_on["per_fold"]
    assert cal.fitted_on["folds"] == 3 and [f["source"] for f in per_fold] == [str(out / f"fold{k}") for k in range(3)]
    assert "over 3 folds" in printed and printed.count("embedded by its model") == 3
    assert cal.fitted_on["queries"] == sum(f["queries"] for f in per_fold)
    split = pd.read_csv(out / "fold1" / "split.csv", dtype=str).query("role == 'val'")
    assert per_fold[1]["queries"] == int((split.date >= held_out.last_year_cut(split.date)).sum())
    assert len(cal.verifier["operating"]["p"]) == cal.fitted_on["queries"] and "--max-error 0.05" in printed
    assert main(["calibrate", "--db", str(db), "--run", str(out), "--workers", "0", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count(f"0 of the {len(table)} catalogue photos embedded") == 3  # kept
    assert Catalogue.open(db).meta["calibration"] == cal.to_json()  # the same fit from the kept embeddings
    with pytest.raises(ValueError, match="a seeds parent"):
        out_of_fold.fold_runs(_seeds_parent(tmp_path))


def _seeds_parent(tmp_path):
    parent = tmp_path / "seeds"
    parent.mkdir()
    (parent / "seeds.json").write_text(json.dumps({"runs": []}))
    return parent


def test_redirected_output_has_plain_progress_lines(cv_run):
    _, proc = cv_run
    assert "\r" not in proc.stderr + proc.stdout
    assert "epoch 1/2: 3/3 batch" in proc.stderr


def test_resume_skips_finished_folds_and_trains_the_missing_one(cv_run, tiny_survey, tmp_path):
    import shutil

    src, _ = cv_run
    out = tmp_path / "cv"
    shutil.copytree(src, out)
    before = (out / "fold0" / "metrics.json").read_text()
    shutil.rmtree(out / "fold2")
    proc = run_core(SMOKE + [f"data.root={tiny_survey / 'train'}", f"output_dir={out}", "data.fold=all",
                             "resume=true"] + FAST)
    assert "fold 0 already finished" in proc.stderr and "fold 1 already finished" in proc.stderr
    assert "fold 2 already finished" not in proc.stderr
    assert (out / "fold0" / "metrics.json").read_text() == before
    assert (out / "fold2" / "metrics.json").is_file()
    assert read_json(out / "cv.json")["folds"] == ["fold0", "fold1", "fold2"]


def test_build_packs_every_fold_of_a_cv_run(cv_run, tiny_survey, tmp_path):
    import zipfile

    from submission.build import build

    out, _ = cv_run
    info = build([out], tmp_path / "s.zip")
    assert info["models"] == 3
    manifest = json.loads(zipfile.ZipFile(tmp_path / "s.zip").read("manifest.json"))
    assert [m["weight"] for m in manifest["models"]] == pytest.approx([1 / 3] * 3)
    from tests.helpers import assert_same_in_twin

    assert_same_in_twin(tmp_path / "s.zip", tiny_survey)  # the 3-fold bundle runs in the 2022 runtime's twin


def test_seeds_repeat_a_run_share_folds_and_log_to_tensorboard(tiny_survey, tmp_path):
    pytest.importorskip("tensorboard")  # a dev dependency: installed by `make test`
    out = tmp_path / "seeds"
    run_core(SMOKE + [f"data.root={tiny_survey / 'train'}", f"output_dir={out}", "seeds=[3,4]", "log_with=[tensorboard]",
                      "train.epochs=1", "train.max_steps_per_epoch=2"])
    summary = read_json(out / "seeds.json")
    values = [read_json(out / f"seed{s}" / "metrics.json")["mAP"] for s in (3, 4)]
    assert summary["values"] == pytest.approx(values)
    assert summary["mean"] == pytest.approx(np.mean(values)) and summary["std"] == pytest.approx(np.std(values, ddof=1))
    assert summary["min"] == min(values) and summary["max"] == max(values)
    splits = [(out / f"seed{s}" / "split.csv").read_text() for s in (3, 4)]
    assert splits[0] == splits[1]  # data.fold_seed, not the training seed, assigns folds
    from safetensors.torch import load_file

    w3, w4 = (load_file(out / f"seed{s}" / "best.safetensors") for s in (3, 4))
    assert any(not torch.equal(w3[k], w4[k]) for k in w3)  # the seeds do differ
    events = list((out / "seed3").rglob("events.out.tfevents*"))
    assert events and events[0].stat().st_size > 0


def test_kill_during_epoch_2_and_resume_matches_uninterrupted_with_workers(tiny_survey, tmp_path):
    """SIGKILL in the middle of epoch 2 with 2 loader workers, then resume=true: the same numbers and weights
    as a run that was never interrupted (augmentations are a function of seed, epoch and sample)."""
    common = SMOKE + [f"data.root={tiny_survey / 'train'}", "data.num_workers=2", "train.epochs=3",
                      "train.max_steps_per_epoch=3", "train.log_every=1"]
    run_core(common + [f"output_dir={tmp_path / 'a'}"])

    b = tmp_path / "b"
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(ROOT / "core" / "run.py")] + common + [f"output_dir={b}"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)
    killed, deadline = False, time.time() + 400
    for line in proc.stderr:
        if "epoch 2/3: 1/3 batch" in line:  # one step into epoch 2
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            break
        if time.time() > deadline:
            break
    proc.wait(timeout=60)
    assert killed, "the run ended before epoch 2 started"
    assert json.loads((b / "checkpoint" / "state.json").read_text())["epoch"] == 1
    run_core(common + [f"output_dir={b}", "resume=true"])

    ha = [json.loads(x) for x in (tmp_path / "a" / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(x) for x in (b / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hb] == [1, 2, 3]
    assert [h["mAP"] for h in hb] == [h["mAP"] for h in ha]
    assert [h["train_loss"] for h in hb] == [h["train_loss"] for h in ha]
    from safetensors.torch import load_file

    wa, wb = load_file(tmp_path / "a" / "last.safetensors"), load_file(b / "last.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


# ---- sampling ------------------------------------------------------------------------------------

class Noisy(torch.utils.data.Dataset):
    """Items drawn from torch's and numpy's global RNGs, like an augmenting dataset plugin."""

    def __len__(self):
        return 12

    def __getitem__(self, i):
        return torch.rand(2) + float(np.random.rand()), i


def _epoch_items(workers: int, epoch: int, seed: int = 7):
    from core.training.sampling import EpochSampler, SeededSamples

    data = SeededSamples(Noisy(), seed)
    sampler = EpochSampler(len(data), seed)
    loader = torch.utils.data.DataLoader(data, batch_size=4, sampler=sampler, num_workers=workers,
                                         persistent_workers=workers > 0)
    out = []
    for e in range(1, epoch + 1):
        sampler.epoch = e
        out = [(x.clone(), i.clone()) for x, i in loader]
    return torch.cat([x for x, _ in out]), torch.cat([i for _, i in out])


def test_augmentations_are_a_function_of_seed_epoch_and_sample():
    x0, i0 = _epoch_items(0, 2)
    x2, i2 = _epoch_items(2, 2)
    assert torch.equal(x0, x2) and torch.equal(i0, i2)  # 0 or 2 workers: the same epoch 2
    x1, i1 = _epoch_items(0, 1)
    assert not torch.equal(i1, i0)  # another order in another epoch
    assert sorted(i0.tolist()) == list(range(12))
    # the same sample in another epoch gets other random draws
    first = {int(i): x for x, i in zip(x1, i1)}
    assert not torch.equal(first[0], {int(i): x for x, i in zip(x0, i0)}[0])


def test_seeded_samples_leave_the_callers_rng_alone():
    from core.training.sampling import SeededSamples

    torch.manual_seed(0)
    np.random.seed(0)
    expect_t, expect_n = torch.rand(3), np.random.rand()
    torch.manual_seed(0)
    np.random.seed(0)
    SeededSamples(Noisy(), 1)[5]
    assert torch.equal(torch.rand(3), expect_t) and np.random.rand() == expect_n


# ---- progress ------------------------------------------------------------------------------------

def test_plain_progress_logs_lines_not_bars(caplog):
    import logging

    from core.progress import PlainProgress, progress

    with caplog.at_level(logging.INFO, logger="whaleid"):
        bar = progress(range(25), desc="work", unit="img", every=10, terminal=False)
        assert isinstance(bar, PlainProgress)
        for k in bar:
            bar.set_postfix(loss="1.0")
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("work:")]
    assert [ln.split()[1] for ln in lines] == ["10/25", "20/25", "25/25"]
    assert all("loss 1.0" in ln for ln in lines)
    assert list(progress(range(3), enabled=False)) == [0, 1, 2]


def test_plain_progress_logs_the_last_step_when_the_caller_stops_early(caplog):
    import logging

    from core.progress import progress

    with caplog.at_level(logging.INFO, logger="whaleid"):
        for step, _ in enumerate(progress(range(100), total=4, desc="epoch", every=3, terminal=False)):
            if step >= 4:
                break
    assert [r.getMessage().split()[1] for r in caplog.records if r.getMessage().startswith("epoch:")] == ["3/4", "4/4"]


# ---- config --------------------------------------------------------------------------------------

@pytest.mark.parametrize("override, ok", [
    ("data.fold=all", True), ("data.fold=[0,2]", True), ("data.fold=2", True), ("data.fold=3", False),
    ("data.fold=[0,0]", False), ("data.fold=[0,5]", False), ("data.fold=some", False),
    ("seeds=[0,1,2]", True), ("seeds=[1,1]", False), ("seeds=7", False), ("seeds=[]", False)])
def test_fold_and_seed_options_are_validated(override, ok):
    from core.config import ConfigError, fold_list, load_config

    if ok:
        cfg = load_config(ROOT / "configs" / "smoke.yaml", [override])
        if override.startswith("data.fold=all"):
            assert fold_list(cfg) == [0, 1, 2]
    else:
        with pytest.raises(ConfigError, match="data.fold|seeds"):
            load_config(ROOT / "configs" / "smoke.yaml", [override])


@pytest.mark.parametrize("module", ["tools.compare", "tools.ensemble", "core.plugins", "submission.build", "tools.report", "tools.report_check",
                                    "tools.explain"])
def test_every_new_command_has_help(module):
    proc = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "usage:" in proc.stdout and len(proc.stdout) > 200


def test_a_fold_ensembles_bundle_fits_its_fusion_on_its_own_scores(cv_run, tiny_survey, tmp_path, capsys):
    """Two folds packed: the bundle's ``local_match`` fusion is fitted on the ensemble's out-of-fold scores (each
    fold's validation whales scored by the model that never trained on them, pooled), not fold 0's fit on fold 0's
    whales alone; it differs from fold 0's, and on the survey's test whales (held out from every fold) the bundle
    scores no worse than the same two models ranked with fold 0's fusion."""
    import shutil
    import zipfile

    from submission.build import build
    from submission.check import check
    from tools import fit_local

    out, _ = cv_run
    folds = []
    for k in (0, 1):
        run = tmp_path / f"fold{k}"
        shutil.copytree(out / f"fold{k}", run, ignore=shutil.ignore_patterns("checkpoint"))
        assert fit_local.main([str(run), "--shortlist", "10", "--max-side", "128"]) == 0
        folds.append(run)
    build([folds[0]], tmp_path / "fold0.zip")
    build(folds, tmp_path / "both.zip")
    assert "on the ensemble's own scores" in capsys.readouterr().err

    def manifest(name):
        return json.loads(zipfile.ZipFile(tmp_path / name).read("manifest.json"))

    alone, both = manifest("fold0.zip"), manifest("both.zip")
    own = json.loads((folds[0] / "postprocess_fit.json").read_text())
    assert alone["postprocess"][-1]["fusion"] == own["steps"][0]["options"]["fusion"] and alone["postprocess_fit"] is None
    fit = both["postprocess_fit"]
    assert fit["folds"] == 2 and fit["queries"] > own["queries"]  # both folds' validation whales, pooled
    assert both["postprocess"][-1]["fusion"] != alone["postprocess"][-1]["fusion"]
    assert fit["steps"][0]["options"]["fusion"] == both["postprocess"][-1]["fusion"]
    # the old way for comparison: the same two models ranked with fold 0's fusion
    old = tmp_path / "old"
    with zipfile.ZipFile(tmp_path / "both.zip") as zf:
        zf.extractall(old)
    m = json.loads((old / "manifest.json").read_text())
    m["postprocess"][-1]["fusion"] = alone["postprocess"][-1]["fusion"]
    (old / "manifest.json").write_text(json.dumps(m))
    with zipfile.ZipFile(tmp_path / "old.zip", "w") as zf:
        for path in sorted(old.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(old).as_posix())
    scored = {name: check(tmp_path / f"{name}.zip", tiny_survey / "test", tiny_survey / "test_labels.csv",
                          runtime="here")["mAP"] for name in ("both", "old")}
    assert scored["both"] >= scored["old"] - 0.005, scored
    # members sharing a fold (seeds) are one group, combined as the bundle combines them: two copies of one model
    # rank as that model does, so their fit is the model's own
    from core.training.fit import fit_ensemble
    from core.training.runs import run_config

    chain = [dict(s) for s in run_config(folds[0]).postprocess]
    twice = fit_ensemble([folds[0], folds[0]], [1.0, 1.0], chain)
    assert twice["folds"] == 1 and twice["members"] == 2 and twice["queries"] == own["queries"]
    def close(a, b):  # a fitted fusion: numbers, nested by view relation in the default recipe's
        if isinstance(a, dict):
            return a.keys() == b.keys() and all(close(a[k], b[k]) for k in a)
        return a == b if isinstance(a, str) else b == pytest.approx(a, rel=1e-4, abs=1e-4)

    assert own["steps"][0]["options"]["fusion"]["kind"] == "view"  # fit_local fits the recipe's fusion
    assert close(own["steps"][0]["options"]["fusion"], twice["steps"][0]["options"]["fusion"])
