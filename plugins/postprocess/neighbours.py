"""Neighbour weighting shared by the expansion steps (``expand``, ``query_expansion``): each embedding plus its
most similar embeddings of a pool, weighted by similarity ** alpha, back to unit length. No hook: a helper
module that postprocess plugins import (``submission.build`` bundles it with them)."""

from __future__ import annotations

import numpy as np


def weighted_neighbours(anchor: np.ndarray, pool: np.ndarray, k: int, alpha: float, anchor_ids=None,
                         pool_ids=None, chunk: int = 2048) -> np.ndarray:
    """Each row of ``anchor`` plus its ``k`` most similar rows of ``pool``, weighted by sim^alpha, unit length.

    A pool row whose id equals the anchor's id (its own image) is never taken. Similarities are
    computed ``chunk`` anchors at a time, so memory stays at ``chunk x len(pool)`` floats."""
    if k <= 0 or len(pool) == 0 or len(anchor) == 0:
        return anchor
    k = min(k, pool.shape[0])
    out = np.empty_like(anchor, dtype=np.float32)
    for start in range(0, len(anchor), chunk):
        a = anchor[start:start + chunk]
        sims = a @ pool.T
        if anchor_ids is not None:
            own = np.asarray(anchor_ids[start:start + chunk], dtype=object)[:, None] == pool_ids[None, :]
            sims[own] = -np.inf
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        top_sims = np.take_along_axis(sims, top, axis=1)
        weights = np.where(np.isfinite(top_sims), np.clip(top_sims, 0.0, None) ** alpha, 0.0)
        out[start:start + chunk] = a + np.einsum("ak,akd->ad", weights, pool[top])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
