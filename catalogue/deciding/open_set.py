"""How well "new whale" decisions do on whales never seen, and what a reviewer is left with.

- Open-set scores as the WildlifeDatasets tools and AnimalCLEF 2025 define them: ``baks`` (balanced accuracy
  on known individuals: each known whale's queries' accuracy, averaged over whales), ``baus`` (balanced
  accuracy on unknown ones: the share of each new whale's queries called "new", averaged over whales), their
  geometric mean, and ``auroc`` of a "new" score separating unknown from known queries (scikit-learn's
  ``roc_auc_score`` by hand, tested equal to it).
- ``choose_threshold``: the top-score threshold below which a query is "new", maximising that geometric mean.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NEW = "new_whale"


def baks(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Balanced accuracy on known individuals: queries whose truth is a known whale, accuracy per whale, averaged."""
    per = {}
    for t, p in zip(truth, predicted):
        if t != NEW:
            per.setdefault(t, []).append(p == t)
    return float(np.mean([np.mean(v) for v in per.values()])) if per else float("nan")


def baus(truth: Sequence[str], predicted: Sequence[str], unknown_ids: Sequence[str]) -> float:
    """Balanced accuracy on unknown individuals: per new whale (``unknown_ids`` gives each query's real id), the
    share of its queries called new, averaged over new whales."""
    per = {}
    for t, p, who in zip(truth, predicted, unknown_ids):
        if t == NEW:
            per.setdefault(who, []).append(p == NEW)
    return float(np.mean([np.mean(v) for v in per.values()])) if per else float("nan")


def auroc(new_scores, is_new) -> float:
    """Area under the ROC curve of ``new_scores`` (higher: more likely new) for ``is_new``, ties counted half."""
    s, y = np.asarray(new_scores, np.float64), np.asarray(is_new, bool)
    pos, neg = s[y], s[~y]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    allv = np.concatenate([pos, neg])[order]
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return float((ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def open_set_scores(truth, top_whale, top_score, threshold: float, real_ids) -> dict:
    """BAKS, BAUS, their geometric mean and AUROC when queries whose top score is below ``threshold`` are new."""
    predicted = [NEW if s < threshold else w for w, s in zip(top_whale, top_score)]
    k, u = baks(truth, predicted), baus(truth, predicted, real_ids)
    return {"baks": k, "baus": u, "geometric_mean": float(np.sqrt(k * u)) if np.isfinite(k * u) else float("nan"),
            "auroc": auroc(-np.asarray(top_score, np.float64), [t == NEW for t in truth]), "threshold": float(threshold)}


def choose_threshold(truth, top_whale, top_score, real_ids) -> dict:
    """The threshold (among midpoints of the observed top scores) with the best geometric mean of BAKS and BAUS."""
    values = np.unique(np.asarray(top_score, np.float64))
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-6]])
    best = None
    for t in candidates:
        scored = open_set_scores(truth, top_whale, top_score, float(t), real_ids)
        g = scored["geometric_mean"]
        if np.isfinite(g) and (best is None or g > best["geometric_mean"]):
            best = scored
    return best


def workload(ranked, truth, rates=(0.01, 0.05)) -> dict:
    """The share of photos that could be decided without review at each rate of wrong decisions: each photo
    decided as its top whale when P(top) >= 0.5, else as new, the most confident first (confidence
    ``max(P, 1 - P)``); the largest share whose wrong decisions stay within the rate. Computed on labelled
    photos: how well the scores sort right from wrong, not a threshold to deploy."""
    p = np.asarray([min(max(c[0].score, 0.0), 1.0) if c else 0.0 for c in ranked], np.float64)
    said = [c[0].whale_id if c and pi >= 0.5 else NEW for c, pi in zip(ranked, p)]
    wrong = np.asarray([s != t for s, t in zip(said, truth)], np.float64)
    order = np.argsort(-np.maximum(p, 1 - p), kind="stable")
    rate = np.cumsum(wrong[order]) / np.arange(1, len(order) + 1) if len(order) else np.zeros(0)
    out = {}
    for r in rates:
        ok = np.flatnonzero(rate <= r)
        out[f"{r:g}"] = float((ok.max() + 1) / len(order)) if len(ok) else 0.0
    return out
