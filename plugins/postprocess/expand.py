"""Postprocess ``expand``: database-side augmentation and query expansion before the ranking step.

Photo-ID databases hold bursts of near-identical frames of one whale per encounter. Replacing each
embedding by a similarity-weighted mean of itself and its nearest database neighbours moves it toward
the centre of its whale's cluster, so a query also matches the frames that look less like it:

- DBA, database-side augmentation (Arandjelovic and Zisserman, "Three things everyone should know to
  improve object retrieval", CVPR 2012): each database embedding averaged with its ``db_k`` nearest
  database neighbours;
- alpha-QE, query expansion (Radenovic, Tolias and Chum, "Fine-tuning CNN image retrieval with no
  human annotation", TPAMI 2018): each query averaged with its ``query_k`` nearest (augmented)
  database embeddings, weighted by ``similarity ** alpha``.

The query's own image is never one of its neighbours. Rows stay unit length, so the ``knn`` step
that follows ranks and scores them as before. Place it before ``knn``:
``postprocess: [{name: expand}, {name: knn}]``.
"""

from __future__ import annotations

import numpy as np

from core.hookspecs import hookimpl


def _weighted_neighbours(anchor: np.ndarray, pool: np.ndarray, k: int, alpha: float, anchor_ids=None,
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


class ExpandStep:
    def __init__(self, db_k: int = 2, query_k: int = 1, alpha: float = 3.0):
        if db_k < 0 or query_k < 0:
            raise ValueError(f"postprocess 'expand' db_k and query_k must be >= 0, got {db_k}, {query_k}")
        self.db_k, self.query_k, self.alpha = int(db_k), int(query_k), float(alpha)

    def __call__(self, ctx):
        db, q = ctx.db_emb.astype(np.float32), ctx.query_emb.astype(np.float32)
        if len(db) == 0 or len(q) == 0:
            return ctx
        ids = np.asarray(ctx.db_image_ids, dtype=object)
        db = _weighted_neighbours(db, db, self.db_k, self.alpha, ids, ids)
        # a query that is itself in the database starts from its augmented row
        pos = {img: i for i, img in enumerate(ids)}
        q = np.stack([db[pos[img]] if img in pos else q[i] for i, img in enumerate(ctx.query_image_ids)])
        ctx.query_emb = _weighted_neighbours(q, db, self.query_k, self.alpha, list(ctx.query_image_ids), ids)
        ctx.db_emb = db
        return ctx


@hookimpl
def register_postprocess(register):
    register("expand", ExpandStep)
