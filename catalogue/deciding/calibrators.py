"""From similarity to P(same whale), and how well the probabilities hold.

- ``Isotonic``: the monotone step function closest (least squares) to the labels, by pool-adjacent-violators;
  ``Logistic``: P = sigmoid(a s + b) fitted by Newton's method (Platt scaling, ``core.logistic``). Both fit on
  labelled pairs (a query and a candidate whale, the whale's score, same whale or not) taken out of fold, so the
  model never trained on them.
- ``ece``: expected calibration error over equal-width bins, and ``reliability`` the bins themselves.

The fitters and ``reliability`` are scikit-learn's ``IsotonicRegression``, unpenalised ``LogisticRegression`` and
``calibration_curve`` computed by hand, and tested equal to them (tests/catalogue/test_scores.py). They stay by
hand: the logistic fit has a monotone guard scikit-learn lacks, the isotonic fit predicts its steps rather than
interpolating between them, and the catalogue need not carry scikit-learn and SciPy for 100 lines.
"""

from __future__ import annotations

import numpy as np

from core.logistic import fit_logistic


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
