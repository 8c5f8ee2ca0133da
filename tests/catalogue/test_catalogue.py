"""The catalogue: its SQLite store, identity-level matching, calibration and open-set scores."""

import json
import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from catalogue.exchange.exporting import plain
from catalogue.deciding.calibrators import Isotonic, Logistic, ece, reliability
from catalogue.deciding.open_set import NEW, auroc, baks, baus, choose_threshold, open_set_scores
from catalogue.deciding.match import pool_encounter, rank_whales
from catalogue.records.errors import CatalogueError
from catalogue.records.store import Catalogue
from tests.helpers import ROOT


def rows(n, start=0, whale=lambda i: f"w{i % 3}"):
    return [{"image_id": f"p{i}", "whale_id": whale(i), "encounter_id": f"e{i // 2}", "viewpoint": "top",
             "date": "2019-06-01", "path": f"images/p{i}.jpg"} for i in range(start, start + n)]


def propose(cat, ids, whale="w0"):
    """identify's proposals for photos ``ids`` (what a decision must be about), each with a unit embedding."""
    rows = [{"image_id": q, "path": "", "viewpoint": "top", "date": "2020-01-01", "encounter_id": f"e{q}",
             "decision": "review", "whale_id": whale, "score": 0.9, "probability": 0.8, "candidates": "[]"} for q in ids]
    dim = int(cat.meta["dim"])
    cat.add_proposals(rows, np.eye(len(ids), dim)[np.arange(len(ids)) % dim], "2020")


def test_a_catalogue_stores_photos_once_and_refuses_another_model(tmp_path):
    rng = np.random.default_rng(0)
    cat = Catalogue.create(tmp_path / "c.sqlite", "a" * 64, "lite0", 4)
    assert cat.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    emb = rng.normal(size=(5, 4)).astype(np.float32)
    assert cat.add_photos(rows(5), emb, "2019") == 5
    assert cat.add_photos(rows(7), rng.normal(size=(7, 4)), "2020") == 2  # p0-p4 are there: only p5, p6 added
    table, stored = cat.photos()
    assert list(table.image_id) == [f"p{i}" for i in range(7)] and list(table.batch) == ["2019"] * 5 + ["2020"] * 2
    assert np.array_equal(stored[:5], emb)  # the first embeddings, not the second batch's
    cat.close()
    with pytest.raises(CatalogueError, match=r"embedded by model lite0 \(aaaaaaaaaaaa\), not by the one given \(bbbbbbbbbbbb\)"):
        Catalogue.open(tmp_path / "c.sqlite", model_hash="b" * 64)
    with pytest.raises(CatalogueError, match="exists"):
        Catalogue.create(tmp_path / "c.sqlite", "a" * 64, "lite0", 4)
    with pytest.raises(CatalogueError, match=r"shape \(1, 4\)"):
        Catalogue.open(tmp_path / "c.sqlite").add_photos(rows(1, 9), np.zeros((1, 3)), "x")
    with pytest.raises(CatalogueError, match="p9: its embedding is not finite"):
        Catalogue.open(tmp_path / "c.sqlite").add_photos(rows(1, 9), np.full((1, 4), np.nan), "x")


def test_a_newer_schema_is_refused_with_a_clear_message(tmp_path):
    Catalogue.create(tmp_path / "c.sqlite", "a" * 64, "lite0", 4).close()
    conn = sqlite3.connect(tmp_path / "c.sqlite")
    conn.execute("PRAGMA user_version = 7")
    conn.close()
    with pytest.raises(CatalogueError, match="schema 7 is newer than this whaleid reads"):
        Catalogue.open(tmp_path / "c.sqlite")
    with pytest.raises(CatalogueError, match="no such catalogue"):
        Catalogue.open(tmp_path / "none.sqlite")


def test_the_decision_log_is_append_only_and_exports(tmp_path):
    cat = Catalogue.create(tmp_path / "c.sqlite", "a" * 64, "lite0", 4)
    cat.add_photos(rows(3), np.eye(3, 4), "2019")
    propose(cat, ["q1"])
    first = cat.decide("ana", "accept", "q1", whale_id="w1", scores={"w1": 0.93})
    cat.decide("ana", "undo", "q1", undoes=first)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        cat.conn.execute("UPDATE decisions SET who = 'eve'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        cat.conn.execute("DELETE FROM decisions")
    log = cat.decisions()
    assert [d["action"] for d in log] == ["accept", "undo"] and log[1]["undoes"] == first
    assert json.loads(log[0]["scores"]) == {"w1": 0.93} and log[0]["model_hash"] == "a" * 64
    out = json.loads(plain(cat, tmp_path / "c.json").read_text())
    assert [p["image_id"] for p in out["photos"]] == ["p0", "p1", "p2"] and len(out["decisions"]) == 2
    assert "embedding" not in plain(cat, tmp_path / "c.csv").read_text().splitlines()[0]


KILLED_APPEND = r"""
import os, sys
import numpy as np
from catalogue.records.store import Catalogue

class Bomb(dict):
    def get(self, key, default=None):
        os._exit(9)  # like kill -9, in the middle of the batch's transaction

cat = Catalogue.open(sys.argv[1])
rows = [{"image_id": f"n{i}", "whale_id": "w", "encounter_id": "e", "viewpoint": "top", "date": "2020", "path": ""}
        for i in range(100)]
rows[60] = Bomb(rows[60])
cat.add_photos(rows, np.ones((100, 4), np.float32), "2020")
"""


def test_a_killed_append_leaves_the_catalogue_as_it_was(tmp_path):
    path = tmp_path / "c.sqlite"
    cat = Catalogue.create(path, "a" * 64, "lite0", 4)
    cat.add_photos(rows(10), np.ones((10, 4)), "2019")
    cat.close()
    proc = subprocess.run([sys.executable, "-c", KILLED_APPEND, str(path)], cwd=ROOT, capture_output=True, timeout=120)
    assert proc.returncode == 9
    cat = Catalogue.open(path)
    assert cat.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    table, emb = cat.photos()
    assert list(table.image_id) == [f"p{i}" for i in range(10)] and emb.shape == (10, 4)
    assert cat.add_photos(rows(2, 100), np.ones((2, 4)), "2020") == 2  # and it takes the next batch


def unit(v):
    v = np.asarray(v, np.float32)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def test_whales_are_ranked_by_their_photos_like_with_like():
    cat = unit([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0.95, 0.05, 0.2], [0.2, 0, 1]])
    whales, ids = ["a", "a", "b", "c", "c"], ["a1", "a2", "b1", "c1", "c2"]
    views = ["top", "top", "top", "left", "top"]
    q = unit([[1, 0.02, 0.0]])
    (best,) = rank_whales(q, ["top"], cat, whales, ids, views, how="max")
    sims = cat @ q[0]
    # whale c has a top photo, so the top query is scored on c2 only, not on its closer lateral c1
    assert [c.whale_id for c in best] == ["a", "c", "b"]
    assert best[0].score == pytest.approx(sims[0]) and best[1].score == pytest.approx(sims[4])
    assert best[0].photos[0][0] == "a1" and [p for p, _ in best[0].photos] == ["a1", "a2"]
    (mean,) = rank_whales(q, ["top"], cat, whales, ids, views, how="mean_top", k=2)
    assert mean[0].score == pytest.approx((sims[0] + sims[1]) / 2)
    (lateral,) = rank_whales(q, ["left"], cat, whales, ids, views)  # a lateral query: c's lateral photo counts
    assert lateral[1].whale_id == "c" and lateral[1].score == pytest.approx(sims[3])
    (own,) = rank_whales(cat[:1], ["top"], cat, whales, ids, views, exclude=["a1"])
    assert own[0].photos[0][0] == "a2"  # the query's own photo is never its support
    pooled = pool_encounter([best, lateral])
    assert [c.whale_id for c in pooled][:2] == ["a", "c"] and pooled[1].score == pytest.approx(max(sims[3], sims[4]))


def test_isotonic_is_the_monotone_least_squares_fit_and_logistic_recovers_its_curve():
    x = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    y = np.array([0, 1, 0, 0, 1, 1])
    iso = Isotonic().fit(x, y)
    fitted = iso.predict(x)
    assert np.all(np.diff(fitted) >= 0)
    assert fitted == pytest.approx([0, 1 / 3, 1 / 3, 1 / 3, 1, 1])  # pool-adjacent-violators by hand
    rng = np.random.default_rng(0)
    s = rng.uniform(-1, 1, 20000)
    y = rng.uniform(size=s.size) < 1 / (1 + np.exp(-(6 * s - 1)))
    lr = Logistic().fit(s, y)
    assert lr.a == pytest.approx(6, abs=0.4) and lr.b == pytest.approx(-1, abs=0.15)
    assert ece(lr.predict(s), y) < 0.02
    assert ece(np.full(s.size, 0.9), y) > 0.3  # an overconfident model is far from calibrated
    flat = Logistic().fit(-s, y)  # scores that fall as P(same) rises: no evidence, the base rate
    assert flat.a == 0 and flat.predict([0.3])[0] == pytest.approx(y.mean())
    bins = reliability([0.05, 0.15, 0.95], [0, 1, 1], bins=10)
    assert [b["count"] for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]


def test_open_set_scores_by_hand():
    truth = ["a", "a", "b", NEW, NEW, NEW]
    real = ["a", "a", "b", "x", "x", "y"]
    predicted = ["a", "b", "b", NEW, "a", NEW]
    assert baks(truth, predicted) == pytest.approx((0.5 + 1.0) / 2)  # per whale: a 1 of 2, b 1 of 1
    assert baus(truth, predicted, real) == pytest.approx((0.5 + 1.0) / 2)  # x 1 of 2, y 1 of 1
    assert auroc([0.9, 0.8, 0.1, 0.2], [True, True, False, False]) == 1.0
    assert auroc([0.5, 0.5], [True, False]) == 0.5
    top_whale, top_score = ["a", "a", "b", "a", "b", "a"], [0.9, 0.8, 0.85, 0.3, 0.5, 0.2]
    best = choose_threshold(truth, top_whale, top_score, real)
    assert 0.5 < best["threshold"] < 0.8 and best["baks"] == 1.0 and best["baus"] == 1.0 and best["auroc"] == 1.0
    assert open_set_scores(truth, top_whale, top_score, 0.0, real)["baus"] == 0.0  # nothing is ever called new


def _open_set_survey(rng, known=60, new=25):
    """Top candidates of a held-out open set: known whales' queries right 80% of the time and then scoring higher;
    new whales' queries scoring as a known whale's wrong ones."""
    truth, real, top, score = [], [], [], []
    for w in range(known):
        for _ in range(rng.integers(1, 4)):
            ok = rng.uniform() < 0.8
            truth.append(f"k{w}"), real.append(f"k{w}"), top.append(f"k{w}" if ok else "other")
            score.append(rng.beta(6, 2) if ok else rng.beta(3, 3))
    for w in range(new):
        for _ in range(rng.integers(1, 4)):
            truth.append(NEW), real.append(f"n{w}"), top.append("k0"), score.append(rng.beta(3, 3))
    return truth, top, score, real


def test_the_new_whale_threshold_is_the_middle_of_the_near_best_not_the_wandering_argmax():
    """``geometric_means`` is ``open_set_scores``' geometric mean at every threshold at once; over 16 held-out
    samples of one population the chosen thresholds (the middle of those within one bootstrap standard error of
    the best) spread less than the argmax does and do no worse on the population itself."""
    from catalogue.deciding.open_set import geometric_means

    truth, top, score, real = _open_set_survey(np.random.default_rng(0))
    grid = np.linspace(0, 1, 21)
    assert np.allclose(geometric_means(truth, top, score, real, grid),
                       [open_set_scores(truth, top, score, t, real)["geometric_mean"] for t in grid])
    population = _open_set_survey(np.random.default_rng(999), known=2000, new=800)
    argmax, middle = [], []
    for i in range(16):
        sample = _open_set_survey(np.random.default_rng(100 + i))
        argmax.append(choose_threshold(*sample, resamples=0)["threshold"])
        chosen = choose_threshold(*sample)
        assert chosen["within"][0] <= chosen["threshold"] <= chosen["within"][1]
        assert chosen["geometric_mean"] >= chosen["best_geometric_mean"] - chosen["standard_error"] - 1e-12
        middle.append(chosen["threshold"])
    assert np.std(middle) < 0.8 * np.std(argmax)
    on_population = [np.mean([open_set_scores(*population[:3], t, population[3])["geometric_mean"] for t in ts])
                     for ts in (argmax, middle)]
    assert on_population[1] >= on_population[0] - 0.002


def test_the_whaleid_command_builds_appends_identifies_and_scores_open_set(smoke_run, tiny_survey, tmp_path, capsys):
    """Time-aware open set on the tiny survey: the catalogue holds the photos taken before 2019, the 2019 photos
    are identified; a whale first seen in 2019 is new."""
    import pandas as pd

    from catalogue.cli import main
    from submission.build import build

    zip_path = tmp_path / "s.zip"
    build([smoke_run], zip_path)
    db, train = tmp_path / "c.sqlite", tiny_survey / "train"
    meta = pd.read_csv(train / "metadata.csv", dtype=str)
    early, late = meta[meta.date < "2019-01-01"], meta[meta.date >= "2019-01-01"]
    assert main(["catalogue", "build", "--bundle", str(zip_path), "--data", str(train), "--db", str(db),
                 "--before", "2019-01-01", "--workers", "0"]) == 0
    assert f"added {len(early)} photos" in capsys.readouterr().out
    assert main(["catalogue", "build", "--bundle", str(zip_path), "--data", str(train), "--db", str(db),
                 "--before", "2019-01-01", "--workers", "0"]) == 0
    assert "0 to embed" in capsys.readouterr().out  # nothing is embedded twice

    other = tmp_path / "other.zip"
    other.write_bytes(zip_path.read_bytes() + b"\0")  # another file: another model identity
    assert main(["catalogue", "build", "--bundle", str(other), "--data", str(train), "--db", str(db)]) == 2
    assert "embedded by model s.zip" in capsys.readouterr().err

    out = tmp_path / "r.csv"
    assert main(["identify", "--bundle", str(zip_path), "--db", str(db), "--data", str(train), "--from", "2019-01-01",
                 "--evaluate", "--out", str(out), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    result = pd.read_csv(out, dtype={"image_id": str})
    assert sorted(result.image_id) == sorted(late.image_id)
    assert set(result.decision) <= {"match", "review", NEW}
    known = set(early.whale_id)
    truth = [w if w in known else NEW for w in late.set_index("image_id").loc[result.image_id, "whale_id"]]
    assert f"known {sum(t != NEW for t in truth)} photos, new {sum(t == NEW for t in truth)}" in printed
    expected = open_set_scores(truth, list(result.whale_id.fillna("")), list(result.score), 0.5,
                               list(late.set_index("image_id").loc[result.image_id, "whale_id"]))
    assert f"BAKS {expected['baks']:.4f}  BAUS {expected['baus']:.4f}" in printed
    for cands in result.candidates:  # each candidate whale is a catalogue whale, with its supporting photos
        for c in json.loads(cands):
            assert c["whale_id"] in known and c["photos"] and {p for p, _ in c["photos"]} <= set(early.image_id)

    assert main(["catalogue", "export", "--db", str(db), "--out", str(tmp_path / "c.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "c.csv")) == len(early)
    proposals = Catalogue.open(db).proposals()  # what the review page shows
    assert {p["image_id"] for p in proposals} == set(late.image_id)
    assert all(p["path"] and p["candidates"][0]["whale_id"] == p["whale_id"] for p in proposals if p["candidates"])
    assert main(["catalogue", "check", "--db", str(db)]) == 0
    assert "check passed" in capsys.readouterr().out

    # a re-run on a copy of the survey with a truncated photo: the warning names that photo's own CSV row
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(train, copy)
    row = int(np.flatnonzero((meta.date >= "2019-01-01").to_numpy())[1])
    (copy / meta.path[row]).write_bytes((copy / meta.path[row]).read_bytes()[:100])
    db2 = tmp_path / "c2.sqlite"
    db2.write_bytes(db.read_bytes())
    assert main(["catalogue", "build", "--bundle", str(zip_path), "--data", str(copy), "--db", str(db2),
                 "--workers", "0"]) == 0
    assert f"(row {row + 2} of {copy / 'metadata.csv'}) cannot be read" in capsys.readouterr().err


def test_photo_paths_must_stay_inside_their_survey_folder(tmp_path):
    from catalogue.cli import read_photos

    survey = tmp_path / "survey"
    (survey / "images").mkdir(parents=True)
    (survey / "images" / "a.jpg").write_bytes(b"x")
    (tmp_path / "outside.jpg").write_bytes(b"x")
    (survey / "images" / "link.jpg").symlink_to(tmp_path / "outside.jpg")
    (survey / "images" / "inner.jpg").symlink_to(survey / "images" / "a.jpg")  # a link that stays inside is fine
    lines = ["image_id,path,viewpoint,date", "a,images/a.jpg,top,2019", "b,../outside.jpg,top,2019",
             "c,/etc/passwd,top,2019", "d,images/link.jpg,top,2019", "e,images/inner.jpg,top,2019"]
    (survey / "metadata.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        read_photos(survey, require_identity=False)
    message = str(err.value)
    assert "row 3 ('../outside.jpg')" in message and "row 4 ('/etc/passwd')" in message
    assert "row 5 ('images/link.jpg')" in message and "row 2 " not in message and "row 6" not in message
    (survey / "metadata.csv").write_text("\n".join(lines[:2] + lines[-1:]) + "\n")
    photos = read_photos(survey, require_identity=False)
    assert list(photos.file) == [str((survey / "images" / "a.jpg").resolve())] * 2 and list(photos.row) == [2, 3]


def test_calibrated_identify_from_a_runs_held_out_whales(smoke_run, tiny_survey, tmp_path, capsys):
    """``whaleid calibrate`` fits on the smoke run's validation whales (time-aware: their latest year's photos are
    queries), stores the calibration; identify then decides by it, per photo and per encounter, and prints
    BAKS, BAUS, AUROC and ECE beside the top-1 cosine baseline; the heatmaps need the catalogue's own bundle."""
    import pandas as pd

    from catalogue.deciding import calibration, held_out
    from catalogue.deciding import verifier
    from catalogue.cli import main
    from catalogue.review.server import Heatmaps
    from submission.build import build

    zip_path = tmp_path / "s.zip"
    build([smoke_run], zip_path)
    db, train = tmp_path / "c.sqlite", tiny_survey / "train"
    assert main(["catalogue", "build", "--bundle", str(zip_path), "--data", str(train), "--db", str(db),
                 "--workers", "0"]) == 0
    capsys.readouterr()
    assert main(["calibrate", "--db", str(db), "--run", str(smoke_run), "--per-viewpoint"]) == 0
    printed = capsys.readouterr().out
    cal = calibration.Calibration.from_json(Catalogue.open(db).meta["calibration"])
    split = pd.read_csv(smoke_run / "split.csv", dtype=str)
    val = split[split.role == "val"]
    cut = held_out.last_year_cut(val.date)
    assert cal.fitted_on["queries"] == int((val.date >= cut).sum()) and f"from {cut} on" in printed
    assert cal.fitted_on["known"] > 0 and cal.fitted_on["new"] > 0 and "all" in cal.thresholds
    p = cal.probability([-1.0, 0.0, 0.5, 1.0])
    assert np.all(np.diff(p) >= 0) and np.all((0 <= p) & (p <= 1))  # a probability, monotone in the score
    assert cal.decide(cal.thresholds["all"] - 1e-3, 0.99, "top") == NEW
    assert cal.decide(cal.thresholds["all"] + 1e-3, cal.match_probability, "top") == "match"
    assert cal.decide(cal.thresholds["all"] + 1e-3, cal.match_probability - 1e-3, "top") == "review"

    # identify the same survey's photos from another catalogue: the one before 2019, calibrated on the same run
    db2 = tmp_path / "c2.sqlite"
    assert main(["catalogue", "build", "--bundle", str(zip_path), "--data", str(train), "--db", str(db2),
                 "--before", "2019-01-01", "--workers", "0"]) == 0
    Catalogue.open(db2).set_meta("calibration", cal.to_json())
    capsys.readouterr()
    metrics = tmp_path / "m.json"
    for by in ("photo", "encounter"):
        out = tmp_path / f"{by}.csv"
        assert main(["identify", "--bundle", str(zip_path), "--db", str(db2), "--data", str(train), "--from",
                     "2019-01-01", "--evaluate", "--by", by, "--out", str(out), "--metrics", str(metrics),
                     "--workers", "0"]) == 0
        printed = capsys.readouterr().out
        assert "top-1 cosine, threshold from validation" in printed and "ECE over the candidates shown" in printed
        result = pd.read_csv(out, dtype=str)
        used = cal.verified()  # identify decides by the whale-level verifier's P, calibrated on held-out folds
        assert used is not None and "whale-level evidence" in printed
        if by == "encounter":  # pooled by encounter: decided by the fit on held-out photos pooled the same way
            used = used.for_encounters()
            assert used is not None and used.fitted_on["by"] == "encounter" and "pooled by encounter" in printed
            assert len(used.operating["p"]) == len(cal.verified().operating["p"])  # a decision per photo still
            assert used.fitted_on["encounters"] < len(used.operating["p"])
        for _, row in result.iterrows():  # each decision is the calibration's on its top score and probability
            top = json.loads(row.candidates)[0]
            assert row.decision == used.decide(top["score"], top["probability"], row.viewpoint)
            assert float(row.probability) == pytest.approx(float(used.probability([top["score"]])[0]), abs=1e-4)
            assert all(name in verifier.FEATURES for name, _ in top["why"])
        if by == "encounter":  # one decision per encounter
            assert (result.groupby("encounter_id").whale_id.nunique() == 1).all()
            assert (result.groupby("encounter_id").decision.nunique() == 1).all()
    scored = json.loads(metrics.read_text())
    for key in ("baks", "baus", "geometric_mean", "auroc", "ece_raw", "ece_logistic", "ece_isotonic"):
        assert np.isfinite(scored["whaleid"][key]), key
    assert np.isfinite(scored["baseline"]["baks"]) and scored["calibration"]["source"] == str(smoke_run)

    heat = Heatmaps(zip_path, Catalogue.open(db).meta["model_hash"])
    from PIL import Image
    import io
    a, b = list(val.image_id[:2])
    files = pd.read_csv(train / "metadata.csv", dtype=str).set_index("image_id")["path"]
    png = Image.open(io.BytesIO(heat.png(str(train / files[a]), str(train / files[b]))))
    assert png.size[0] > png.size[1] > 0 and png.mode == "RGB"
    with pytest.raises(CatalogueError, match="not the bundle that embedded this catalogue"):
        Heatmaps(zip_path, "0" * 64)

    # local evidence: the fusion fitted on the same held-out pairs; identify decides by the fused P
    from catalogue.deciding.local import keypoint_dir

    assert len(list(keypoint_dir(db).glob("*.npz"))) == len(Catalogue.open(db).known_ids())  # stored at build
    assert main(["calibrate", "--db", str(db), "--run", str(smoke_run), "--local", "--max-side", "256"]) == 0
    assert "local evidence: P = sigmoid(" in capsys.readouterr().out
    local = calibration.Calibration.from_json(Catalogue.open(db).meta["calibration"])
    assert local.local["options"]["detector"] == "sift"
    assert main(["calibrate", "--db", str(db), "--run", str(smoke_run), "--local", "--detector", "surf"]) == 2
    assert "detector must be one of" in capsys.readouterr().err  # named, and the calibration left as it was
    assert calibration.Calibration.from_json(Catalogue.open(db).meta["calibration"]).local == local.local
    fused = local.fused()
    assert local.local["fusion"]["a"] >= 0 and local.local["fusion"]["b"] >= 0 and "all" in fused.thresholds
    Catalogue.open(db2).set_meta("calibration", local.to_json())
    out = tmp_path / "local.csv"
    assert main(["identify", "--bundle", str(zip_path), "--db", str(db2), "--data", str(train), "--from",
                 "2019-01-01", "--evaluate", "--out", str(out), "--metrics", str(metrics), "--workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "global score alone (calibrated)" in printed and "best share decidable on these labels" in printed
    assert "--max-error 0.05: decided without review" in printed
    used = local.verified()  # with keypoints: the verifier sees the inliers, same-view and cross-view apart
    assert local.verifier["local"] and {"inliers_same_view", "inliers_cross_view"} & set(local.verifier["verifier"]["use"])
    result = pd.read_csv(out, dtype=str)
    for _, row in result.iterrows():
        cands = json.loads(row.candidates)
        assert all("inliers" in c for c in cands) and [c["score"] for c in cands] == sorted((c["score"] for c in cands),
                                                                                            reverse=True)
        assert row.decision == used.decide(cands[0]["score"], cands[0]["probability"], row.viewpoint)
    # every photo has an encounter: by default one whale per encounter, its photos' evidence pooled
    assert (result.groupby("encounter_id").whale_id.nunique() == 1).all()
    assert result.encounter_id.nunique() < len(result)
    scored = json.loads(metrics.read_text())
    assert set(scored["whaleid"]["workload"]) == {"0.01", "0.05"} and "workload" in scored["global_only"]
    assert set(scored["operating_points"]) == {"0.01", "0.05"} and scored["review_all"]["actions_per_photo"] > 0
    assert main(["identify", "--bundle", str(zip_path), "--db", str(db2), "--data", str(train), "--from",
                 "2019-01-01", "--global-only", "--out", str(out), "--workers", "0"]) == 0
    assert all("inliers" not in c for r in pd.read_csv(out, dtype=str).candidates for c in json.loads(r))


def test_identities_from_competition_labels(tiny_survey):
    """The test whales recovered from test_labels.csv: every labelled pair is one whale, and groups never mix
    two whales (checked against the synthetic survey's own identities)."""
    import pandas as pd

    from catalogue.records.test_labels import identities_from_labels

    ids = identities_from_labels(tiny_survey / "test", tiny_survey / "test_labels.csv")
    labels = pd.read_csv(tiny_survey / "test_labels.csv", dtype=str)
    assert set(ids) == set(pd.read_csv(tiny_survey / "test" / "metadata.csv", dtype=str).image_id)
    for q, d in zip(labels.query_id, labels.database_image_id):
        assert ids[q.split("-")[-1]] == ids[d]
    assert len(set(ids.values())) > 1 and all(v.startswith("test-whale-") for v in ids.values())
    assert not any(v.split("-")[-1] in ids for v in ids.values())  # no whale is named after one of its photos
    bad = tiny_survey.parent / "bad_labels.csv"
    labels.iloc[:1].assign(database_image_id="nope").to_csv(bad, index=False)
    with pytest.raises(ValueError, match="row 2 names nope"):
        identities_from_labels(tiny_survey / "test", bad)


def test_a_schema_1_catalogue_is_upgraded_in_place(tmp_path):
    from catalogue.records.store import SCHEMA, SCHEMA_VERSION, _statements

    conn = sqlite3.connect(tmp_path / "old.sqlite")
    for statement in _statements(SCHEMA):
        conn.execute(statement)
    conn.executemany("INSERT INTO meta VALUES (?, ?)", [("model_hash", "a" * 64), ("model_name", "m"), ("dim", "4")])
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    cat = Catalogue.open(tmp_path / "old.sqlite")
    assert cat.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION and cat.proposals() == []
    assert {"reviewed", "latitude", "longitude", "species"} <= {r[1] for r in cat.conn.execute("PRAGMA table_info(photos)")}
    cat.add_photos([{"image_id": "p", "whale_id": "w", "latitude": "61.5", "longitude": "nan"}], np.ones((1, 4)), "b")
    table, _ = cat.photos()
    assert table.latitude[0] == 61.5 and table.longitude.isna()[0]  # numbers, and no location is NULL


def test_identify_demo_from_a_run_to_scored_decisions_and_the_report(smoke_run, tmp_path, capsys):
    """``make identify-demo`` on the smoke run: the five steps, the open-set scores printed and saved, the
    decisions file, and the report's identification section with its picture."""
    import shutil

    import pandas as pd

    from tools import identify_demo
    from tools.report import build_report

    run = tmp_path / "smoke"
    run.mkdir()
    for name in ("config.yaml", "best.safetensors", "split.csv", "metrics.json", "history.jsonl", "per_query.csv", "oof.npz"):
        shutil.copy(smoke_run / name, run / name)
    assert identify_demo.main([str(run), "--workers", "0", "--detector", "xfeat"]) == 0  # as make identify-demo
    printed = capsys.readouterr().out
    from catalogue.records.store import Catalogue

    local = json.loads(Catalogue.open(run / "identify" / "catalogue.sqlite").meta["calibration"])["local"]
    assert local["options"]["detector"] == "xfeat" and local["fusion"]["b"] >= 0  # calibrated on XFeat's inliers
    for step in ("[1/5]", "[2/5]", "[3/5]", "[4/5]", "[5/5]", "BAKS", "BAUS", "geometric mean", "AUROC",
                 "ECE over the candidates shown", "operating point at most 5.0% wrong decisions",
                 "--max-error 0.01: decided without review", "reviewer actions a photo"):
        assert step in printed, step
    metrics = json.loads((run / "identify" / "metrics.json").read_text())
    assert metrics["whaleid"]["known"] > 0 and metrics["whaleid"]["new"] > 0
    for rate, point in metrics["operating_points"].items():  # expected on held-out whales, observed on the test
        assert point["max_error"] == float(rate) and 0 <= point["observed_decided"] <= 1
        assert point["actions_per_photo"] <= metrics["review_all"]["actions_per_photo"]
    decisions = pd.read_csv(run / "identify" / "decisions.csv", dtype=str)
    assert len(decisions) == metrics["whaleid"]["known"] + metrics["whaleid"]["new"]
    assert set(decisions.decision) <= {"match", "review", NEW}
    from tools.bench import decisions as bench  # the bench's row is the metrics file's, as printed

    r = bench.row("tiny", 0, run, 1.0, "xfeat")
    assert r["geometric_mean"] == metrics["whaleid"]["geometric_mean"]
    assert r["observed_decided@0.05"] == metrics["operating_points"]["0.05"]["observed_decided"]
    assert f"| tiny | 0 | one | xfeat | {metrics['calibration']['queries']} | {r['baks']:.3f} |" in bench.table([r])
    assert identify_demo.main([str(run), "--workers", "0", "--detector", "xfeat"]) == 0  # again: nothing re-embedded
    assert "0 to embed" in capsys.readouterr().out
    build_report(run, tmp_path / "report.html", queries=1, top_k=3, explain=False)
    page = (tmp_path / "report.html").read_text()
    assert 'id="identify"' in page and "reliability diagram" in page and "decided alone, expected" in page and (tmp_path / "report_files" / "identify.png").is_file()


def test_reviewed_photos_join_the_catalogue_under_their_current_whale(tmp_path, capsys):
    """After review, ``catalogue apply`` adds accepted and new-whale photos (with identify's embeddings) to the
    searchable photos; a merge makes two whales one for matching; a rejected or undone photo stays out."""
    from catalogue.cli import main

    cat = Catalogue.create(tmp_path / "c.sqlite", "a" * 64, "m", 4)
    cat.add_photos(rows(3), np.eye(3, 4), "2019")  # p0 w0, p1 w1, p2 w2
    queries = [{"image_id": f"q{i}", "path": "", "viewpoint": "top", "date": "2020-01-01", "encounter_id": f"e{i}",
                "decision": "review", "whale_id": "w0", "score": 0.9, "probability": 0.8, "candidates": "[]"}
               for i in range(4)]
    cat.add_proposals(queries, np.eye(4, 4)[[0, 1, 3, 2]], "2020")
    cat.decide("ana", "accept", "q0", whale_id="w0", expect_last=None)
    cat.decide("ana", "new_whale", "q1", whale_id="w9", expect_last=None)
    gone = cat.decide("ana", "accept", "q2", whale_id="w1", expect_last=None)
    cat.decide("ana", "undo", "q2", undoes=gone)
    cat.decide("ana", "reject", "q3", whale_id="w2", expect_last=None)
    cat.decide("bob", "merge", "q0", whale_id="w0", other_whale="w2")
    with pytest.raises(CatalogueError, match="one whale already"):
        cat.decide("bob", "merge", "q0", whale_id="w2", other_whale="w0")
    cat.close()
    assert main(["catalogue", "apply", "--db", str(tmp_path / "c.sqlite")]) == 0
    assert "added 2 reviewed photos" in capsys.readouterr().out
    cat = Catalogue.open(tmp_path / "c.sqlite")
    table, emb = cat.photos()
    assert dict(zip(table.image_id, table.whale_id))["q0"] == "w0" and dict(zip(table.image_id, table.whale_id))["q1"] == "w9"
    assert np.array_equal(emb[list(table.image_id).index("q1")], np.eye(4)[1])  # identify's embedding, not recomputed
    assert cat.current_whales(["w0", "w1", "w2", "w9"]) == ["w0", "w1", "w0", "w9"]
    assert cat.apply_reviewed() == 0  # nothing twice
