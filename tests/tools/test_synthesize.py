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

    from PIL import Image

    contact_sheet(tmp_path / "two.png", seed=0, n_whales=2)
    contact_sheet(tmp_path / "three.png", seed=0, n_whales=3)
    two, three = (np.asarray(Image.open(tmp_path / f"{n}.png").convert("L"), np.float32) for n in ("two", "three"))
    assert two.shape[1] == three.shape[1] and three.shape[0] > two.shape[0]
    row = three.shape[0] - two.shape[0]  # one whale's row
    rows = [three[-(k + 1) * row:three.shape[0] - k * row] for k in range(3)]
    assert all(r.std() > 20 for r in rows)  # each row carries photos, not a blank band
    assert np.abs(rows[0] - rows[1]).mean() > 5 and np.abs(rows[1] - rows[2]).mean() > 5  # whales differ


def marked_area(whale, year=2019):
    """Pelt pixels darker than bare skin: the area the marks cover."""
    from tools.synthesize import pelt, skin_tone

    return int((pelt(whale, year) < skin_tone(whale, year) * 0.97).sum())


def test_every_variant_renders_deterministically():
    from tools.synthesize import PRESETS, VARIANTS, plan_survey

    for name, variant in VARIANTS.items():
        shots = []
        for _ in range(2):
            whales, rows = plan_survey(PRESETS["tiny"], 6, "train", 11, 0, variant)
            shots.append([np.asarray(render(whales[r["whale"]], r["year"], r["viewpoint"], r["style"], r["size"], r["seed"]))
                          for r in rows[:3]])
        assert all(np.array_equal(a, b) for a, b in zip(*shots)), name


def test_hard_variant_survey_is_byte_identical_across_runs(tmp_path):
    synthesize("tiny", tmp_path / "a", seed=0, workers=1, variant="hard")
    synthesize("tiny", tmp_path / "b", seed=0, workers=2, variant="hard")
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    base = tmp_path / "base"
    synthesize("tiny", base, seed=0, workers=1)
    assert digest(tmp_path / "a") != digest(base)


def test_knobs_move_what_they_claim():
    from tools.synthesize import PRESETS, Variant, plan_survey

    def whales(variant, n=40):
        rng = np.random.default_rng(5)
        return [make_whale(f"w{i}", rng, variant) for i in range(n)]

    # mark size: the marked area shrinks
    assert sum(map(marked_area, whales(Variant(mark_scale=0.5)))) < 0.5 * sum(map(marked_area, whales(Variant())))
    # mark contrast: marks are less dark
    dark = lambda ws: np.mean([m.dark for w in ws for m in w.marks])
    assert dark(whales(Variant(mark_contrast=0.6))) == pytest.approx(0.6 * dark(whales(Variant())), rel=0.01)
    # marks per whale (ridge nicks, kind "nick", and later scars come on top)
    counts = [sum(m.kind != "nick" and not m.year_from for m in w.marks) for w in whales(Variant(marks=(1, 2)))]
    assert min(counts) == 1 and max(counts) == 2
    preset = PRESETS["small"]

    def plan(variant):
        return plan_survey(preset, 120, "train", 3, 0, variant)[1]

    base = plan(Variant())
    # rotation: headings spread over the circle
    spread = lambda rows: np.std([r["style"].rotate for r in rows])
    assert spread(base) < 20 and spread(plan(Variant(rotation=180.0))) > 80
    # photos per whale
    assert len(plan(Variant(photos_per_whale=2.0))) < 0.6 * len(base)
    # resolution: photo sizes scale
    size = lambda rows: np.mean([r["size"][0] * r["size"][1] for r in rows])
    assert size(plan(Variant(resolution=0.5))) == pytest.approx(0.25 * size(base), rel=0.05)
    # blur range
    assert max(r["style"].blur for r in plan(Variant(blur=3.0))) > 2.0 >= max(r["style"].blur for r in base) + 0.6
    # lateral share
    lateral = lambda rows: np.mean([r["viewpoint"] != "top" for r in rows])
    assert lateral(plan(Variant(lateral_share=0.4))) > lateral(base) + 0.15
    # one water pattern per encounter, shared by its photos, different between encounters
    rows = plan(Variant(encounter_pattern=0.15))
    by_encounter = pd.DataFrame([(r["encounter_id"], r["style"].pattern_seed, r["style"].pattern) for r in rows],
                                columns=["enc", "seed", "strength"])
    assert (by_encounter.groupby("enc").seed.nunique() == 1).all() and by_encounter.seed.nunique() > 50
    assert (by_encounter.strength == 0.15).all() and all(r["style"].pattern == 0 for r in base)


def test_whale_factor_and_unknown_variant(tmp_path):
    out = synthesize("tiny", tmp_path / "few", seed=0, workers=1, variant="few_photos")
    assert out["train_whales"] == round(PRESETS["tiny"].train_whales * 1.6) and out["variant"] == "few_photos"
    with pytest.raises(SystemExit, match="unknown variant"):
        synthesize("tiny", tmp_path / "x", variant="nope")
