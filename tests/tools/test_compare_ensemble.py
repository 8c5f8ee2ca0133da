"""tools.compare (table, config differences, paired bootstrap) and tools.ensemble (OOF weight search)
on constructed run folders, so the right answers are known."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml


def make_run(root: Path, name: str, ap: np.ndarray, lr: float = 1e-3, seed_dirs: int = 0, epochs: int = 3) -> Path:
    """A finished single run (or a seeds parent of ``seed_dirs`` runs) whose best evaluation has these APs."""
    run = root / name
    if seed_dirs:
        run.mkdir(parents=True)
        for s in range(seed_dirs):
            make_run(run, f"seed{s}", ap[s], lr)
        (run / "seeds.json").write_text(json.dumps({"runs": [f"seed{s}" for s in range(seed_dirs)]}))
        (run / "config.yaml").write_text(yaml.safe_dump({"train": {"lr": lr}, "seeds": list(range(seed_dirs))}))
        return run
    run.mkdir(parents=True)
    queries = [f"top_all-img{i}" if i % 2 else f"top_vs_lateral-img{i}" for i in range(len(ap))]
    pd.DataFrame({"query_id": queries, "scenario": [q.split("-")[0] for q in queries], "ap": ap}).to_csv(
        run / "per_query.csv", index=False)
    (run / "metrics.json").write_text(json.dumps({"mAP": float(np.mean(ap)), "epoch": epochs}))
    hist = [{"epoch": e, "mAP": float(np.mean(ap)) * e / epochs, "scenarios": {"top_all": 0.1 * e},
             "img_s": 40.0, "train_s": 10.0 * e} for e in range(1, epochs + 1)]
    (run / "history.jsonl").write_text("\n".join(json.dumps(h) for h in hist) + "\n")
    (run / "config.yaml").write_text(yaml.safe_dump({"train": {"lr": lr}, "output_dir": str(run)}))
    return run


@pytest.fixture
def aps():
    return np.random.default_rng(0).uniform(0, 1, 300)


def test_a_run_compared_with_itself_shows_no_difference(tmp_path, aps):
    from tools.compare import load, paired_bootstrap

    a = load(make_run(tmp_path, "a", aps))
    v = paired_bootstrap(a, a, boots=500)
    assert v["difference"] == 0 and v["ci95"] == [0, 0] and v["verdict"] == "no difference beyond noise"


def test_a_planted_difference_is_detected_both_ways(tmp_path, aps):
    from tools.compare import load, paired_bootstrap

    a = load(make_run(tmp_path, "a", aps))
    b = load(make_run(tmp_path, "b", np.clip(aps + 0.05, 0, 1)))
    v = paired_bootstrap(a, b, boots=500)
    assert v["verdict"] == "b beats a" and v["ci95"][0] > 0
    back = paired_bootstrap(b, a, boots=500)  # b as the reference: the first argument wins now
    assert back["difference"] < 0 and back["ci95"][1] < 0 and back["verdict"] == "b beats a"


def test_noise_between_seeds_widens_the_interval(tmp_path, aps):
    """Two seeds per run, each much noisier than the planted gap: the verdict must not claim a win."""
    from tools.compare import load, paired_bootstrap

    rng = np.random.default_rng(1)
    seeds_a = np.stack([np.clip(aps + s, 0, 1) for s in (-0.1, 0.1)])
    seeds_b = np.stack([np.clip(aps + 0.01 + s, 0, 1) for s in (-0.1, 0.1)])
    a = load(make_run(tmp_path, "a", seeds_a, seed_dirs=2))
    b = load(make_run(tmp_path, "b", seeds_b, seed_dirs=2))
    assert len(a.tables) == 2
    v = paired_bootstrap(a, b, boots=1000, seed=int(rng.integers(100)))
    assert v["seeds_a"] == 2 and v["verdict"] == "no difference beyond noise"


def test_same_models_pairs_the_seeds(tmp_path):
    """b re-ranks a's models: seed k of b is seed k of a plus 0.01 per query. Paired seeds see the gap;
    independent resampling mixes in the 0.2 between seeds and cannot."""
    from tools.compare import RunError, load, paired_bootstrap

    base = np.random.default_rng(2).uniform(0.3, 0.6, 300)
    seeds_a = np.stack([base + s for s in (-0.2, 0.0, 0.2)])
    a = load(make_run(tmp_path, "a", seeds_a, seed_dirs=3))
    b = load(make_run(tmp_path, "b", seeds_a + 0.01, seed_dirs=3))
    paired = paired_bootstrap(a, b, boots=1000, same_models=True)
    assert paired["ci95"] == pytest.approx([0.01, 0.01]) and paired["verdict"] == "b beats a"
    independent = paired_bootstrap(a, b, boots=1000)
    assert independent["ci95"][0] < 0 < independent["ci95"][1]
    with pytest.raises(RunError, match="seeds"):
        paired_bootstrap(a, load(make_run(tmp_path, "c", seeds_a[:2], seed_dirs=2)), same_models=True)


def test_compare_cli_prints_table_differences_verdict_and_plots(tmp_path, aps, capsys):
    from tools.compare import main

    a = make_run(tmp_path, "a", aps)
    b = make_run(tmp_path, "b", np.clip(aps + 0.05, 0, 1), lr=2e-3)
    png = tmp_path / "curves.png"
    assert main([str(a), str(b), "--plot", str(png), "--boot", "300", "--json", str(tmp_path / "c.json")]) == 0
    out = capsys.readouterr().out
    assert "| a | 1 | 300 |" in out and "top_vs_lateral" in out
    assert "train.lr: 0.001 -> 0.002" in out and "b beats a" in out
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["comparisons"][0]["verdict"] == "b beats a"


def test_compare_names_a_folder_that_is_not_a_run(tmp_path, capsys):
    from tools.compare import main

    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "empty"), str(tmp_path / "empty")])
    assert exc.value.code == 2 and "empty: not a whaleid run folder" in capsys.readouterr().err


# ---- ensemble ------------------------------------------------------------------------------------

def make_cv_member(root: Path, name: str, emb_for, whales: int = 16, per_whale: int = 3, folds: int = 2) -> Path:
    """A CV run whose fold k validates on its own whales, with embeddings from ``emb_for(whale, image)``."""
    parent = root / name
    for k in range(folds):
        run = parent / f"fold{k}"
        run.mkdir(parents=True)
        rows, emb = [], []
        for w in range(whales):
            for i in range(per_whale):
                img = f"f{k}w{w}i{i}"
                rows.append({"image_id": img, "whale_id": f"f{k}w{w}", "role": "val", "class_index": -1,
                             "viewpoint": "top", "date": "2021-06-01"})
                emb.append(emb_for(k, w, i))
        pd.DataFrame(rows).to_csv(run / "split.csv", index=False)
        e = np.asarray(emb, np.float32)
        e /= np.linalg.norm(e, axis=1, keepdims=True)
        np.savez(run / "oof.npz", image_ids=np.array([r["image_id"] for r in rows]), embeddings=e)
        (run / "metrics.json").write_text("{}")
        (run / "config.yaml").write_text(yaml.safe_dump({"plugins": [], "postprocess": [{"name": "knn", "top_k": 20}]}))
    (parent / "cv.json").write_text(json.dumps({"folds": [f"fold{k}" for k in range(folds)]}))
    return parent


def test_ensemble_search_finds_the_known_best_weights(tmp_path, capsys):
    """Member A encodes the identity of the first half of the whales only, member B of the second half:
    each alone ranks half the queries at random; with equal weights every query ranks perfectly, and
    unequal weights drown one half's signal in the other member's noise."""
    from tools.ensemble import main

    dim, rng = 128, np.random.default_rng(0)
    direction = {(k, w): rng.normal(size=dim) for k in range(2) for w in range(16)}
    noise = {}

    def member(half):
        def f(k, w, i):
            if (w < 8) == (half == 0):
                return direction[(k, w)] / np.linalg.norm(direction[(k, w)]) + 0.01 * rng.normal(size=dim)
            return noise.setdefault((half, k, w, i), rng.normal(size=dim))
        return f

    a = make_cv_member(tmp_path, "a", member(0))
    b = make_cv_member(tmp_path, "b", member(1))
    out = tmp_path / "ens.json"
    assert main([str(a), str(b), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    wa, wb = (m["weight"] for m in result["members"])
    assert wa == pytest.approx(0.5) and wb == pytest.approx(0.5)
    assert result["oof_mAP"] == pytest.approx(1.0)
    assert all(m["oof_mAP"] < 0.8 for m in result["members"])
    assert "OOF mAP 1.0000" in capsys.readouterr().out


def test_ensemble_refuses_members_on_other_folds(tmp_path, capsys):
    from tools.ensemble import main

    rng = np.random.default_rng(0)
    a = make_cv_member(tmp_path, "a", lambda k, w, i: rng.normal(size=8))
    b = make_cv_member(tmp_path, "b", lambda k, w, i: rng.normal(size=8), whales=15)
    with pytest.raises(SystemExit) as exc:
        main([str(a), str(b), "--out", str(tmp_path / "e.json")])
    assert exc.value.code == 2 and "folds differ" in capsys.readouterr().err


def test_build_reads_an_ensemble_file(tmp_path, smoke_run):
    import zipfile

    from submission.build import main as build_main

    spec = {"members": [{"run": str(smoke_run), "weight": 0.6}, {"run": str(smoke_run), "weight": 0.4}]}
    (tmp_path / "e.json").write_text(json.dumps(spec))
    zip_path = tmp_path / "s.zip"
    build_main(["--ensemble", str(tmp_path / "e.json"), "--out", str(zip_path)])
    manifest = json.loads(zipfile.ZipFile(zip_path).read("manifest.json"))
    assert [m["weight"] for m in manifest["models"]] == pytest.approx([0.6, 0.4])
