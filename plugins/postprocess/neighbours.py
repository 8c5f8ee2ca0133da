"""Neighbour weighting shared by the expansion steps (``expand``, ``query_expansion``): each embedding plus its
most similar embeddings of a pool, weighted by similarity ** alpha, back to unit length. No hook: a helper
module that postprocess plugins import (``submission.build`` bundles it with them)."""

from __future__ import annotations

import numpy as np

from core.search import exact_topk, exclude_own


def weighted_neighbours(anchor: np.ndarray, pool: np.ndarray, k: int, alpha: float, anchor_ids=None,
                         pool_ids=None, budget: int | None = None, chunks=None) -> np.ndarray:
    """Each row of ``anchor`` plus its ``k`` most similar rows of ``pool``, weighted by sim^alpha, unit length.

    A pool row whose id equals the anchor's id (its own image) is never taken. The neighbours come from
    ``core.search.exact_topk``: memory stays within ``budget`` bytes of scores however large the pool."""
    if k <= 0 or len(pool) == 0 or len(anchor) == 0:
        return anchor
    anchor = np.ascontiguousarray(anchor, dtype=np.float32)
    pool = np.ascontiguousarray(pool, dtype=np.float32)
    own = exclude_own(anchor_ids, pool_ids) if anchor_ids is not None and pool_ids is not None else None
    sims, top = exact_topk(anchor, pool, min(k, len(pool)), budget=budget, own=own, chunks=chunks)
    weights = np.where(top >= 0, np.clip(sims, 0.0, None), 0.0) ** alpha
    weights[top < 0] = 0.0
    out = anchor.copy()
    step = 4096  # rows of neighbours gathered at a time: k x 4096 x dim floats, not k x all
    for start in range(0, len(anchor), step):
        rows = np.clip(top[start:start + step], 0, None)
        out[start:start + step] += np.einsum("ak,akd->ad", weights[start:start + step].astype(np.float32), pool[rows])
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
