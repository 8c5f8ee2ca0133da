"""The synthetic survey: determinism, layout, scenarios, and identity kept in the pixels."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from tools.synthesize import PRESETS, PhotoStyle, make_whale, render, synthesize


def digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_and_worker_count_does_not_matter(tiny_survey, tmp_path):
    synthesize("tiny", tmp_path / "again", seed=0, workers=2)
    assert digest(tmp_path / "again") == digest(tiny_survey)
    synthesize("tiny", tmp_path / "other", seed=1, workers=1)
    assert digest(tmp_path / "other") != digest(tiny_survey)


def test_layout_and_columns(tiny_survey):
    train = pd.read_csv(tiny_survey / "train" / "metadata.csv")
    assert list(train.columns) == ["image_id", "path", "height", "width", "viewpoint", "date", "timestamp",
                                   "whale_id", "encounter_id"]
    test = pd.read_csv(tiny_survey / "test" / "metadata.csv")
    assert list(test.columns) == ["image_id", "path", "height", "width", "viewpoint", "date"]
    for root, meta in ((tiny_survey / "train", train), (tiny_survey / "test", test)):
        assert all((root / p).is_file() for p in meta.path)
    scen = pd.read_csv(tiny_survey / "test" / "query_scenarios.csv")
    assert list(scen.columns) == ["scenario_id", "queries_path", "database_path"]
    assert not (tiny_survey / "test" / "test_labels.csv").exists() and (tiny_survey / "test_labels.csv").exists()
    # encounters are bursts less than an hour long
    stamps = pd.to_datetime(train.timestamp)
    spans = stamps.groupby(train.encounter_id).agg(lambda s: s.max() - s.min())
    assert spans.max() < pd.Timedelta(hours=1)


def test_every_query_has_a_true_match_in_its_database(tiny_survey):
    scen = pd.read_csv(tiny_survey / "test" / "query_scenarios.csv")
    labels = pd.read_csv(tiny_survey / "test_labels.csv")
    assert {"top_all", "top_vs_lateral", "lateral_vs_top"} <= set(scen.scenario_id)
    for row in scen.itertuples():
        queries = pd.read_csv(tiny_survey / "test" / row.queries_path)
        db = set(pd.read_csv(tiny_survey / "test" / row.database_path).database_image_id)
        assert len(queries) > 0
        for qid in queries.query_id:
            matches = set(labels[labels.query_id == qid].database_image_id)
            assert matches and matches <= db
        assert all(q.startswith(f"{row.scenario_id}-") for q in queries.query_id)


def test_test_whales_never_in_training(tmp_path):
    synthesize("tiny", tmp_path / "s", seed=3, workers=1)
    train = pd.read_csv(tmp_path / "s" / "train" / "metadata.csv")
    # identities of the test set come from the labels' true matches, which the test metadata hides
    from tools.synthesize import plan_survey

    preset = PRESETS["tiny"]
    _, rows = plan_survey(preset, preset.test_whales, "test", 3 * 2 + 2, preset.train_whales)
    assert not set(r["whale_id"] for r in rows) & set(train.whale_id)


def test_viewpoint_shares_within_tolerance(tmp_path):
    from tools.synthesize import plan_survey

    preset = PRESETS["full"]
    _, rows = plan_survey(preset, 400, "train", 5, 0)
    share = np.mean([r["viewpoint"] == "top" for r in rows])
    assert abs(share - preset.top_share) < 0.03
    counts = pd.Series([r["whale_id"] for r in rows]).value_counts()
    assert counts.min() == 1 and counts.max() > 20  # long-tailed


def test_identity_is_drawn_and_kept():
    rng = np.random.default_rng(0)
    a, b = make_whale("a", rng), make_whale("b", rng)
    neutral = PhotoStyle.neutral()
    shot = lambda w, view="top", seed=0: np.asarray(render(w, 2018, view, neutral, (120, 300), seed), np.int16)
    assert np.array_equal(shot(a, seed=0), shot(a, seed=1))  # same whale, same view, no variation: identical
    assert np.abs(shot(a) - shot(b)).mean() > 1.0  # different whales differ
    assert np.array_equal(shot(a, "left"), shot(a, "left", seed=5))
    assert np.abs(shot(a, "left") - shot(a, "right")).mean() > 1.0  # the two flanks differ
    unmarked = make_whale("a", np.random.default_rng(0))
    unmarked.marks = []
    assert np.abs(shot(a) - shot(unmarked)).sum() > 0  # the marks are what is drawn
    # photographic variation changes the pixels
    styled = PhotoStyle(water_texture=0.05, blur=1.0, rotate=8, quality=70)
    assert not np.array_equal(shot(a), np.asarray(render(a, 2018, "top", styled, (120, 300), 0), np.int16))


def test_contact_sheet(tmp_path):
    from tools.synthesize import contact_sheet

    contact_sheet(tmp_path / "sheet.png", seed=0, n_whales=2)
    assert (tmp_path / "sheet.png").stat().st_size > 10_000
