"""From similarity to P(same whale), and how well "new whale" decisions do on whales never seen.

- ``Isotonic``: the monotone step function closest (least squares) to the labels, by pool-adjacent-violators;
  ``Logistic``: P = sigmoid(a s + b) fitted by Newton's method (Platt scaling). Both fit on labelled pairs
  (a query and a candidate whale, the whale's score, same whale or not) taken out of fold, so the model never
  trained on them.
- ``ece``: expected calibration error over equal-width bins, and ``reliability`` the bins themselves.
- Open-set scores as the WildlifeDatasets tools and AnimalCLEF 2025 define them: ``baks`` (balanced accuracy
  on known individuals: each known whale's queries' accuracy, averaged over whales), ``baus`` (balanced
  accuracy on unknown ones: the share of each new whale's queries called "new", averaged over whales), their
  geometric mean, and ``auroc`` of a "new" score separating unknown from known queries.
- ``choose_threshold``: the top-score threshold below which a query is "new", maximising that geometric mean.

The fitters, ``auroc`` and ``reliability`` are scikit-learn's ``IsotonicRegression``, unpenalised
``LogisticRegression``, ``roc_auc_score`` and ``calibration_curve`` computed by hand, and tested equal to them
(tests/test_scores.py). They stay by hand: the logistic fit has a monotone guard scikit-learn lacks, the
isotonic fit predicts its steps rather than interpolating between them, and the catalogue need not carry
scikit-learn and SciPy for 150 lines.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

NEW = "new_whale"


class Isotonic:
    """A non-decreasing step function of the score, fitted by pool-adjacent-violators."""

    def fit(self, scores, labels) -> "Isotonic":
        order = np.argsort(np.asarray(scores, np.float64), kind="stable")
        x, y = np.asarray(scores, np.float64)[order], np.asarray(labels, np.float64)[order]
        means, weights, lefts = [], [], []
        for xi, yi in zip(x, y):
            means.append(yi)
            weights.append(1.0)
            lefts.append(xi)
            while len(means) > 1 and means[-2] > means[-1]:  # a violation: pool the two blocks
                w = weights[-2] + weights[-1]
                m = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w
                means[-2:], weights[-2:], lefts[-2:] = [m], [w], [lefts[-2]]
        self.lefts, self.values = np.asarray(lefts), np.asarray(means)
        return self

    def predict(self, scores) -> np.ndarray:
        where = np.searchsorted(self.lefts, np.asarray(scores, np.float64), side="right") - 1
        return self.values[np.clip(where, 0, len(self.values) - 1)]


def fit_logistic(x, y, monotone=None, ridge: float = 1e-6, iterations: int = 50) -> tuple[np.ndarray, float]:
    """(weights [d], bias) of P = sigmoid(x w + bias), maximum likelihood by Newton's method with a ridge on the
    weights (which keeps them finite when the classes separate). A column marked ``monotone`` whose weight comes
    out negative is dropped (weight 0) and the rest refitted, so P never falls as such a column rises."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    x = x.reshape(len(y), -1)
    monotone = np.zeros(x.shape[1], bool) if monotone is None else np.asarray(monotone, bool)
    use = list(range(x.shape[1]))
    while True:
        X = np.concatenate([x[:, use], np.ones((len(y), 1))], 1)
        w = np.zeros(X.shape[1])
        for _ in range(iterations):
            p = 1.0 / (1.0 + np.exp(-np.clip(X @ w, -60, 60)))
            grad = X.T @ (p - y) + ridge * np.r_[w[:-1], 0.0]
            hess = (X * (p * (1 - p))[:, None]).T @ X + ridge * np.eye(len(w)) + 1e-9 * np.eye(len(w))
            step = np.linalg.solve(hess, grad)
            w -= step
            if np.abs(step).max() < 1e-10:
                break
        negative = [c for c, v in zip(use, w[:-1]) if v < 0 and monotone[c]]
        if not negative:
            break
        use = [c for c in use if c not in negative]
    weights = np.zeros(x.shape[1])
    weights[use] = w[:-1]
    return weights, float(w[-1])


class Logistic:
    """P = 1 / (1 + exp(-(a s + b))), maximum likelihood by Newton's method (``fit_logistic``). Monotone like the
    isotonic fit: a fitted slope under 0 (a model whose scores do not separate same from different whales)
    becomes the constant base rate."""

    def fit(self, scores, labels, iterations: int = 50, ridge: float = 1e-6) -> "Logistic":
        s, y = np.asarray(scores, np.float64), np.asarray(labels, np.float64)
        if not len(y):
            self.a, self.b = 0.0, 0.0
            return self
        w, b = fit_logistic(s[:, None], y, monotone=[True], ridge=ridge, iterations=iterations)
        self.a, self.b = float(w[0]), b
        return self

    def predict(self, scores) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * np.asarray(scores, np.float64) + self.b)))


def reliability(probabilities, labels, bins: int = 10) -> list[dict]:
    """Per equal-width bin of predicted probability: its range, count, mean prediction and observed frequency."""
    p, y = np.asarray(probabilities, np.float64), np.asarray(labels, np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for b in range(bins):
        inside = which == b
        out.append({"low": b / bins, "high": (b + 1) / bins, "count": int(inside.sum()),
                    "predicted": float(p[inside].mean()) if inside.any() else None,
                    "observed": float(y[inside].mean()) if inside.any() else None})
    return out


def ece(probabilities, labels, bins: int = 10) -> float:
    """Expected calibration error: the count-weighted mean |observed - predicted| over the bins."""
    n = len(probabilities)
    return float(sum(b["count"] / n * abs(b["observed"] - b["predicted"]) for b in reliability(probabilities, labels, bins)
                     if b["count"])) if n else 0.0


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
