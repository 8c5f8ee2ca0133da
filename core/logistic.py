"""One logistic fitter for every fitted score in the project: the local-match step's fusion (shipped in bundles,
so plain numpy that runs on the 2022 runtime's packages), and the catalogue's calibrators and verifier."""

from __future__ import annotations

import numpy as np


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
