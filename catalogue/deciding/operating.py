"""Operating points: which photos the catalogue decides by itself at an error rate the user chooses, and what
the rest costs a reviewer.

A photo's evidence is P(top), the calibrated probability that its best candidate is its whale. ``fit`` takes
out-of-fold photos with labels and finds two thresholds: from ``accept`` up a photo is matched to its top
whale, up to ``new`` it is a new whale, in between it goes to review; among all pairs with ``new < accept``,
the one that decides the most photos while its wrong decisions (a match to the wrong whale, or "new" for a
known whale) stay within ``max_error`` of those decided, with a confidence (``fit``). The error and share on
those photos are the expected ones. The review queue is ordered by how much a review would change: ``min(P, 1 - P)``, the chance that the
decision a reviewer would otherwise default to is wrong, most first.

``workload`` simulates a reviewer from the labels: a photo sent to review costs the rank of its whale among
the candidates shown (look at each until the right one, accept it), or one more than the candidates shown
when its whale is not among them (reject all, name it); a photo decided alone costs nothing.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

from catalogue.deciding.open_set import NEW

MATCH, REVIEW = "match", "review"


def evidence(ranked, truth) -> dict:
    """Per photo: P(top), whether matching its top whale is right, whether it is a new whale."""
    return {"p": [float(min(max(c[0].score, 0.0), 1.0)) if c else 0.0 for c in ranked],
            "top_right": [bool(c and c[0].whale_id == t) for c, t in zip(ranked, truth)],
            "is_new": [t == NEW for t in truth]}


def wilson_upper(wrong, decided, z: float):
    """The upper end of Wilson's score interval for a rate of ``wrong`` in ``decided`` (one-sided, ``z`` the
    normal quantile of the confidence: 0.84 for 80%); 1 where nothing is decided."""
    n = np.maximum(np.asarray(decided, np.float64), 1e-12)
    p = np.asarray(wrong, np.float64) / n
    up = (p + z * z / (2 * n) + z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))) / (1 + z * z / n)
    return np.where(np.asarray(decided) > 0, up, 1.0)


def fit(data: dict, max_error: float, confidence: float = 0.8, max_candidates: int = 600) -> dict:
    """The thresholds (accept, new) deciding the most of ``data``'s photos (``evidence``) while the wrong share of
    those decided stays within ``max_error`` with ``confidence``: the upper end of its one-sided Wilson interval,
    not the share itself, must be at most ``max_error``, so that a few lucky held-out photos do not set the point
    (the risk bound of selective classification, Geifman and El-Yaniv, NeurIPS 2017, with Wilson's interval in
    place of their binomial tail). ``confidence`` 0.5 holds the share itself. The point's share decided and
    wrong share are the expected figures."""
    from statistics import NormalDist

    if not 0.5 <= confidence < 1:
        raise ValueError(f"confidence must be in [0.5, 1), got {confidence}")
    z = NormalDist().inv_cdf(confidence)
    p = np.asarray(data["p"], np.float64)
    wrong_accept = ~np.asarray(data["top_right"], bool)
    wrong_new = ~np.asarray(data["is_new"], bool)
    n = len(p)
    if not n:
        return {"max_error": max_error, "accept": 1.01, "new": -0.01, "confidence": confidence, "expected_error": 0.0,
                "expected_decided": 0.0, "error_bound": 1.0, "photos": 0}
    values = np.unique(p)
    if len(values) > max_candidates:
        values = np.unique(np.quantile(p, np.linspace(0, 1, max_candidates)))
    # accept from a (a over the values and above all); new up to t (t under all, or a value)
    accepts = np.r_[values, np.inf]
    news = np.r_[-np.inf, values]
    order = np.argsort(p)
    ps, wa, wn = p[order], wrong_accept[order], wrong_new[order]
    cum_wn = np.r_[0, np.cumsum(wn)]
    cum_wa_from_top = np.r_[np.cumsum(wa[::-1])[::-1], 0]
    first_ge = np.searchsorted(ps, accepts, side="left")  # accepted: ps[first_ge:]
    last_le = np.searchsorted(ps, news, side="right")  # new: ps[:last_le]
    n_acc, w_acc = n - first_ge, cum_wa_from_top[first_ge]
    n_new, w_new = last_le, cum_wn[last_le]
    decided = n_acc[:, None] + n_new[None, :]
    wrong = w_acc[:, None] + w_new[None, :]
    valid = (news[None, :] < accepts[:, None]) & (wilson_upper(wrong, decided, z) <= max_error + 1e-12) & (decided > 0)
    score = np.where(valid, decided, -1)
    i, j = np.unravel_index(int(np.argmax(score)), score.shape)
    if score[i, j] <= 0:
        return {"max_error": max_error, "accept": 1.01, "new": -0.01, "confidence": confidence, "expected_error": 0.0,
                "expected_decided": 0.0, "error_bound": 1.0, "photos": int(n)}
    # thresholds between observed values, so a new photo's P is judged like its neighbours
    lower = ps[first_ge[i] - 1] if first_ge[i] > 0 else -np.inf
    accept = float((accepts[i] + lower) / 2) if np.isfinite(accepts[i]) and np.isfinite(lower) else float(
        min(accepts[i], 1.01))
    upper = ps[last_le[j]] if last_le[j] < n else np.inf
    new = float((news[j] + upper) / 2) if np.isfinite(news[j]) and np.isfinite(upper) else float(max(news[j], -0.01))
    return {"max_error": max_error, "accept": accept, "new": new, "confidence": confidence,
            "expected_error": float(wrong[i, j] / decided[i, j]), "expected_decided": float(decided[i, j] / n),
            "error_bound": float(wilson_upper(wrong[i, j], decided[i, j], z)), "photos": int(n)}


def decide(p: float, point: dict) -> str:
    if p >= point["accept"]:
        return MATCH
    if p <= point["new"]:
        return NEW
    return REVIEW


def observed(data: dict, point: dict) -> dict:
    """The share decided and the error among them when ``point`` decides ``data``'s labelled photos."""
    said = [decide(p, point) for p in data["p"]]
    decided = [i for i, s in enumerate(said) if s != REVIEW]
    wrong = sum(1 for i in decided if (said[i] == MATCH and not data["top_right"][i])
                or (said[i] == NEW and not data["is_new"][i]))
    return {"observed_decided": len(decided) / len(said) if said else 0.0,
            "observed_error": wrong / len(decided) if decided else 0.0, "decided_photos": len(decided),
            "wrong_decisions": wrong}


def review_value(p: float) -> float:
    """How much a review of a photo with P(top) = p would change: the chance its default decision is wrong."""
    return float(min(p, 1.0 - p))


def true_rank(cands, whale) -> Optional[int]:
    """1-based rank of ``whale`` among the candidates shown, None when it is not there."""
    return next((k for k, c in enumerate(cands, 1) if c.whale_id == whale), None)


def workload(ranked, truth, decisions: Optional[Sequence[str]] = None) -> dict:
    """Reviewer actions to finish a batch, simulated from the labels (the module's docstring), and the ranks of
    the true whales among the candidates shown; ``decisions`` (per photo) marks the photos decided alone."""
    actions, ranks = [], []
    for k, (cands, t) in enumerate(zip(ranked, truth)):
        r = true_rank(cands, t) if t != NEW else None
        if t != NEW:
            ranks.append(r)
        if decisions is not None and decisions[k] in (MATCH, NEW):
            actions.append(0)
        else:
            actions.append(r if r is not None else len(cands) + 1)
    shown = [r for r in ranks if r is not None]
    return {"actions": int(sum(actions)), "actions_per_photo": float(np.mean(actions)) if actions else 0.0,
            "known_photos": len(ranks), "true_whale_shown": len(shown) / len(ranks) if ranks else float("nan"),
            "true_whale_rank_mean": float(np.mean(shown)) if shown else float("nan"),
            "true_whale_rank_counts": {str(k): int(sum(1 for r in shown if r == k)) for k in sorted(set(shown))}}


def evaluate(policy, ranked, truth, probabilities, ok, confidence: float = 0.8,
             note: Callable[[str], None] = lambda line: None) -> dict:
    """``identify --evaluate``'s operating points at 1% and 5% (expected on the held-out photos of ``policy``, a
    calibration, observed on these labelled photos: ``truth`` per photo, ``ok`` whether it was read) and the
    reviewer's simulated workload with every photo reviewed and at each point."""
    keep = [i for i in range(len(truth)) if ok[i]]
    data = {"p": [probabilities[i] for i in keep], "top_right": [bool(ranked[i]) and ranked[i][0].whale_id == truth[i]
                                                                  for i in keep],
            "is_new": [truth[i] == NEW for i in keep]}
    cands, labels = [ranked[i] for i in keep], [truth[i] for i in keep]
    every = workload(cands, labels)
    note(f"review of every photo: {every['actions_per_photo']:.2f} reviewer actions a photo (simulated); the true "
         f"whale shown for {every['true_whale_shown']:.1%} of known photos, at mean rank {every['true_whale_rank_mean']:.2f}")
    out = {"review_all": every, "operating_points": {}}
    if not getattr(policy, "operating", None):
        return out
    for rate in (0.01, 0.05):
        point = fit(policy.operating, rate, confidence)
        seen = observed(data, point)
        work = workload(cands, labels, [decide(p, point) for p in data["p"]])
        out["operating_points"][f"{rate:g}"] = dict(point, **seen, actions_per_photo=work["actions_per_photo"])
        note(f"--max-error {rate:g}: decided without review {seen['observed_decided']:.1%} (expected "
             f"{point['expected_decided']:.1%}), wrong {seen['observed_error']:.1%} of those decided (expected "
             f"{point['expected_error']:.1%}); {work['actions_per_photo']:.2f} reviewer actions a photo")
    return out
