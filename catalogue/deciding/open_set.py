"""How well "new whale" decisions do on whales never seen, and what a reviewer is left with.

- Open-set scores as the WildlifeDatasets tools and AnimalCLEF 2025 define them: ``baks`` (balanced accuracy
  on known individuals: each known whale's queries' accuracy, averaged over whales), ``baus`` (balanced
  accuracy on unknown ones: the share of each new whale's queries called "new", averaged over whales), their
  geometric mean, and ``auroc`` of a "new" score separating unknown from known queries (scikit-learn's
  ``roc_auc_score`` by hand, tested equal to it).
- ``choose_threshold``: the top-score threshold below which a query is "new": the middle of the thresholds whose
  geometric mean is within one bootstrap standard error of the best (``geometric_means`` computes the curve).
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


def geometric_means(truth, top_whale, top_score, real_ids, thresholds, resamples: int = 0, seed: int = 0):
    """The geometric mean of BAKS and BAUS at every threshold of ``thresholds`` ([T]), at once: BAKS(t) is a
    weighted count of known queries scoring ``>= t`` whose top whale is right, BAUS(t) one of new queries under
    ``t`` (each whale's queries weighing ``1 / queries`` of it). With ``resamples``, also [resamples, T]: the same
    on whales drawn with replacement (known and new whales apart, a fixed ``seed``)."""
    truth = list(truth)
    s = np.asarray(top_score, np.float64)
    t = np.asarray(thresholds, np.float64)
    known = np.array([w != NEW for w in truth])
    who = np.array([f"known:{w}" if w != NEW else f"new:{r}" for w, r in zip(truth, real_ids)], dtype=object)
    right = known & np.array([str(a) == str(b) for a, b in zip(top_whale, truth)])
    names, index = np.unique(who, return_inverse=True)
    per = np.bincount(index, minlength=len(names)).astype(np.float64)
    known_name = np.zeros(len(names), bool)
    known_name[index[known]] = True  # a whale's side from its queries, never from how its id is spelt
    draws = np.ones((1, len(names)))
    if resamples:
        rng = np.random.default_rng(seed)
        draws = np.ones((resamples + 1, len(names)))
        for side in (True, False):
            ids = np.flatnonzero(known_name == side)
            if len(ids):
                picked = rng.integers(0, len(ids), (resamples, len(ids)))
                draws[1:, ids] = 0
                for row, p in enumerate(picked):
                    np.add.at(draws[row + 1], ids[p], 1.0)
    weight = draws[:, index] / per[index]  # [R, n]: each query's share of its whale, times the whale's draws
    k = np.where(known, weight, 0.0)
    u = np.where(known, 0.0, weight)
    above = (s[None, :] >= t[:, None]).astype(np.float64)  # [T, n]
    baks_t = (k * right) @ above.T / np.maximum(k.sum(1, keepdims=True), 1e-12)
    baus_t = u @ (1 - above).T / np.maximum(u.sum(1, keepdims=True), 1e-12)
    gm = np.sqrt(baks_t * baus_t)
    return (gm[0], gm[1:]) if resamples else gm[0]


def choose_threshold(truth, top_whale, top_score, real_ids, resamples: int = 200) -> dict:
    """The threshold (among midpoints of the observed top scores) below which a query is "new".

    The geometric mean of BAKS and BAUS is flat near its best over a wide range of thresholds, so its argmax
    wanders from one sample of held-out whales to the next (two seeds of one recipe put it 0.09 apart on the
    demo). So: the thresholds whose geometric mean is within one bootstrap standard error of the best (whales
    resampled ``resamples`` times; the standard error of the best threshold's geometric mean), and of those the
    middle one, as the one-standard-error rule of model selection chooses among near-equals (Breiman et al.,
    Classification and Regression Trees, 1984). ``resamples=0``: the argmax itself. Returns the open-set scores at
    the chosen threshold, with ``best_geometric_mean``, ``standard_error`` and ``within`` (the lowest and highest
    threshold within it)."""
    values = np.unique(np.asarray(top_score, np.float64))
    candidates = np.concatenate([[values[0] - 1e-6], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-6]])
    got = geometric_means(truth, top_whale, top_score, real_ids, candidates, resamples)
    gm, boot = got if resamples else (got, None)
    gm = np.nan_to_num(gm, nan=-1.0)
    best = int(np.argmax(gm))
    se = float(np.nanstd(boot[:, best])) if boot is not None and len(boot) > 1 else 0.0
    near = np.flatnonzero(gm >= gm[best] - se)
    chosen = float(candidates[near[len(near) // 2]])
    scored = open_set_scores(truth, top_whale, top_score, chosen, real_ids)
    return dict(scored, best_geometric_mean=float(gm[best]), standard_error=se,
                within=[float(candidates[near[0]]), float(candidates[near[-1]])])


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
