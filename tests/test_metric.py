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
