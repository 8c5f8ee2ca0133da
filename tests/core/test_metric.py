"""The competition metric against hand-computed cases."""

import pandas as pd
import pytest

from core.metric import SubmissionFormatError, average_precision, map_score, validate_predictions
import numpy as np


def preds(rows):
    return pd.DataFrame(rows, columns=["query_id", "database_image_id", "score"])


def labels(rows):
    return pd.DataFrame(rows, columns=["query_id", "database_image_id"])


def test_perfect_ranking_scores_one():
    p = preds([("q", "a", 0.9), ("q", "b", 0.8), ("q", "x", 0.1)])
    assert map_score(p, labels([("q", "a"), ("q", "b")])) == pytest.approx(1.0)


def test_no_hits_scores_zero():
    p = preds([("q", "x", 0.9), ("q", "y", 0.8)])
    assert map_score(p, labels([("q", "a")])) == 0.0


def test_hand_computed_interleaved_and_missed_matches():
    # rows T F T: thresholds 0.9 (P 1, R .5), 0.8 (P .5, R .5), 0.7 (P 2/3, R 1) -> AP = .5 + .5 * 2/3
    p = preds([("q", "a", 0.9), ("q", "x", 0.8), ("q", "b", 0.7)])
    ap = 0.5 + 0.5 * 2 / 3
    assert map_score(p, labels([("q", "a"), ("q", "b")])) == pytest.approx(ap)
    # two more true matches exist but were not returned: times 2 / min(4, 20)
    four = labels([("q", "a"), ("q", "b"), ("q", "c"), ("q", "d")])
    assert map_score(p, four) == pytest.approx(ap * 2 / 4)


def test_more_than_twenty_true_matches_caps_the_denominator():
    truth = labels([("q", f"t{i}") for i in range(25)])
    p = preds([("q", f"t{i}", 1 - i / 100) for i in range(20)])
    assert map_score(p, truth) == pytest.approx(1.0)
    half = preds([("q", f"t{i}", 1 - i / 100) for i in range(10)])
    assert map_score(half, truth) == pytest.approx(10 / 20)


def test_ties_form_one_threshold():
    assert average_precision(np.array([True, False]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert average_precision(np.array([True, False]), np.array([0.6, 0.5])) == pytest.approx(1.0)
    # tie between a hit and a miss after a hit: thresholds .9 (P 1, R .5) and .5 (P 2/3, R 1)
    assert average_precision(np.array([True, True, False]), np.array([0.9, 0.5, 0.5])) == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_missing_query_counts_zero():
    p = preds([("q1", "a", 0.9)])
    assert map_score(p, labels([("q1", "a"), ("q2", "b")])) == pytest.approx(0.5)


@pytest.mark.parametrize("score", [1.2, -0.1, float("nan")])
def test_scores_out_of_range_rejected(score):
    with pytest.raises(SubmissionFormatError, match="outside"):
        map_score(preds([("q", "a", score)]), labels([("q", "a")]))


def test_format_rules():
    with pytest.raises(SubmissionFormatError, match="at most 20"):
        validate_predictions(preds([("q", f"d{i}", 0.5) for i in range(21)]))
    with pytest.raises(SubmissionFormatError, match="more than once"):
        validate_predictions(preds([("q", "a", 0.5), ("q", "a", 0.4)]))
    with pytest.raises(SubmissionFormatError, match="own image"):
        validate_predictions(preds([("s-img1", "img1", 0.5)]), {"s-img1": "img1"})
    with pytest.raises(SubmissionFormatError, match="lack columns"):
        validate_predictions(pd.DataFrame({"query_id": ["q"]}))


def test_map_score_equals_the_per_query_average_precision_on_random_rankings():
    """``map_score`` scores every query at once; each query's value must be ``average_precision`` of its own rows
    times its recall factor, with ties, queries without rows and predictions for unlabelled queries."""
    rng = np.random.default_rng(0)
    for trial in range(60):
        nq, nd = int(rng.integers(1, 20)), int(rng.integers(1, 30))
        rows = []
        for q in range(nq):
            dbs = rng.choice(nd, size=int(rng.integers(0, min(20, nd) + 1)), replace=False)
            scores = rng.choice([0.2, 0.5, 0.9], size=len(dbs)) if trial % 2 else rng.random(len(dbs))
            rows += [(f"q{q}", f"d{d}", float(s)) for d, s in zip(dbs, scores)]
        preds = pd.DataFrame(rows, columns=["query_id", "database_image_id", "score"])
        labels = pd.DataFrame([(f"q{q}", f"d{d}") for q in range(nq + 2) if rng.random() > 0.2
                               for d in rng.choice(nd, size=int(rng.integers(1, min(25, nd) + 1)), replace=False)]
                              or [("q0", "d0")], columns=["query_id", "database_image_id"])
        got = map_score(preds, labels, per_query=True)
        for query_id, truth in labels.groupby("query_id")["database_image_id"]:
            mine = preds[preds["query_id"] == query_id]
            hits = mine["database_image_id"].isin(set(truth)).to_numpy()
            want = average_precision(hits, mine["score"].to_numpy()) * hits.sum() / min(truth.nunique(), 20) if len(mine) else 0.0
            assert got[query_id] == pytest.approx(want, abs=1e-12), (trial, query_id)
        assert list(got.index) == sorted(labels["query_id"].unique())
