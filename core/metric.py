"""The competition metric of "Where's Whale-do?", and the submission format rules.

Per query: the average precision of its returned rows ordered by score (scikit-learn's
``average_precision_score`` semantics: rows with equal scores form one threshold, so ties cost
precision), times ``(true matches returned) / min(true matches, 20)``. A query with no returned
rows scores 0. The result is the mean over the queries in the labels.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

MAX_ROWS_PER_QUERY = 20
PREDICTION_COLUMNS = ["query_id", "database_image_id", "score"]


class SubmissionFormatError(ValueError):
    """Predictions break the competition's format rules."""


def average_precision(hits: np.ndarray, scores: np.ndarray) -> float:
    """scikit-learn's average precision of boolean ``hits`` ranked by ``scores`` (ties grouped)."""
    total = int(hits.sum())
    if total == 0:
        return 0.0
    order = np.argsort(-scores, kind="mergesort")
    hits, scores = hits[order], scores[order]
    # the last row of each run of equal scores closes one threshold
    closes = np.r_[np.flatnonzero(np.diff(scores) != 0), len(scores) - 1]
    tp = np.cumsum(hits)[closes]
    precision = tp / (closes + 1)
    recall = tp / total
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def validate_predictions(predictions: pd.DataFrame, query_image_ids: dict[str, str] | None = None) -> None:
    """Raise ``SubmissionFormatError`` for any broken rule; ``query_image_ids`` maps query_id -> image_id."""
    missing = [c for c in PREDICTION_COLUMNS if c not in predictions.columns]
    if missing:
        raise SubmissionFormatError(f"predictions lack columns {missing}; need {PREDICTION_COLUMNS}")
    scores = pd.to_numeric(predictions["score"], errors="coerce")
    bad = predictions[scores.isna() | (scores < 0) | (scores > 1)]
    if len(bad):
        raise SubmissionFormatError(
            f"{len(bad)} scores outside [0, 1] or not numbers; first at row {bad.index[0]}: {bad.iloc[0].to_dict()}"
        )
    counts = predictions.groupby("query_id").size()
    if (counts > MAX_ROWS_PER_QUERY).any():
        q = counts.idxmax()
        raise SubmissionFormatError(f"query {q} has {counts[q]} rows; at most {MAX_ROWS_PER_QUERY} allowed")
    dup = predictions.duplicated(["query_id", "database_image_id"])
    if dup.any():
        row = predictions[dup].iloc[0]
        raise SubmissionFormatError(f"query {row.query_id} returns {row.database_image_id} more than once")
    if query_image_ids is not None:
        unknown = set(predictions["query_id"]) - set(query_image_ids)
        if unknown:
            raise SubmissionFormatError(f"{len(unknown)} unknown query ids, e.g. {sorted(unknown)[0]}")
        self_hits = predictions["database_image_id"].to_numpy() == predictions["query_id"].map(query_image_ids).to_numpy()
        if self_hits.any():
            row = predictions[self_hits].iloc[0]
            raise SubmissionFormatError(f"query {row.query_id} returns its own image {row.database_image_id}")


def map_score(predictions: pd.DataFrame, labels: pd.DataFrame, per_query: bool = False):
    """Competition mAP of ``predictions`` (query_id, database_image_id, score) against ``labels``
    (query_id, database_image_id: every true match). Returns a float, or a Series per query.

    Every query at once in numpy (``average_precision``'s arithmetic on all queries' rows sorted together): a
    run scores its validation fold about 20 times per evaluation (``random_baseline``)."""
    validate_predictions(predictions)
    truth = labels.groupby("query_id")["database_image_id"].nunique()  # true matches per labelled query
    rows = predictions[predictions["query_id"].isin(truth.index)]
    query = rows["query_id"].to_numpy()
    hits = pd.MultiIndex.from_arrays([query, rows["database_image_id"].to_numpy()]).isin(
        pd.MultiIndex.from_arrays([labels["query_id"].to_numpy(), labels["database_image_id"].to_numpy()]))
    codes, queries = pd.factorize(query)
    scores = rows["score"].to_numpy(dtype=float)
    order = np.lexsort((-scores, codes))  # by query, then by falling score; stable, as a mergesort
    codes, scores, hits = codes[order], scores[order], hits[order].astype(float)
    found = np.bincount(codes, weights=hits, minlength=len(queries))
    ap = np.zeros(len(queries))
    if len(codes):
        first = np.r_[0, np.flatnonzero(np.diff(codes)) + 1]  # each query's first row
        rows_per_query = np.diff(np.r_[first, len(codes)])
        rank = np.arange(len(codes)) - np.repeat(first, rows_per_query)
        tp = np.cumsum(hits)
        tp = tp - np.repeat(tp[first] - hits[first], rows_per_query)
        # the last row of each run of equal scores in a query closes one threshold
        closes = np.flatnonzero(np.r_[(np.diff(codes) != 0) | (np.diff(scores) != 0), True])
        q = codes[closes]
        with np.errstate(divide="ignore", invalid="ignore"):
            recall = np.where(found[q] > 0, tp[closes] / found[q], 0.0)
        before = np.r_[0.0, recall[:-1]]
        before[np.r_[True, q[1:] != q[:-1]]] = 0.0  # a query's first threshold starts from recall 0
        ap = np.bincount(q, weights=(recall - before) * tp[closes] / (rank[closes] + 1), minlength=len(queries))
    per = pd.Series(ap * found, index=queries, dtype=float)
    values = (per / np.minimum(truth, MAX_ROWS_PER_QUERY)).reindex(truth.index).fillna(0.0)
    series = pd.Series(values.to_numpy(dtype=float), index=truth.index, dtype=float, name="score")
    if per_query:
        return series
    return float(series.mean()) if len(series) else float("nan")


def score_scenarios(predictions: pd.DataFrame, scenarios: Sequence, labels: pd.DataFrame | None = None,
                    details: bool = False):
    """``{"mAP": over all labelled queries, "scenarios": {name: mAP}}``; ``labels`` default to the scenarios' own.
    With ``details`` also the per-query table (query_id, scenario, ap) that these means are taken over."""
    if labels is None:
        labels = pd.concat([sc.labels for sc in scenarios], ignore_index=True)
    per_query = map_score(predictions, labels, per_query=True)
    by_scenario = {sc.name: float(per_query.reindex(sc.queries["query_id"]).fillna(0.0).mean()) for sc in scenarios}
    result = {"mAP": float(per_query.mean()), "scenarios": by_scenario}
    if not details:
        return result
    scenario_of = {q: sc.name for sc in scenarios for q in sc.queries["query_id"]}
    table = pd.DataFrame({"query_id": per_query.index.astype(str),
                          "scenario": [scenario_of.get(q, "") for q in per_query.index],
                          "ap": per_query.to_numpy(dtype=float)})
    return result, table


def random_baseline(scenarios: Sequence, seed: int = 0, draws: int = 20,
                    labels: pd.DataFrame | None = None) -> dict:
    """The expected score of a random ranking: the mean over ``draws`` random rankings. One draw
    scatters (s.d. 0.02 mAP on a 41-image fold), too much to judge a run's lift over chance by."""
    from core.scenarios import random_predictions

    results = [score_scenarios(random_predictions(list(scenarios), seed + k), scenarios, labels) for k in range(draws)]
    return {"mAP": float(np.mean([r["mAP"] for r in results])),
            "scenarios": {name: float(np.mean([r["scenarios"][name] for r in results])) for name in results[0]["scenarios"]},
            "draws": draws}
