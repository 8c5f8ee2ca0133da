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
from plugins.postprocess.neighbours import weighted_neighbours


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
        db = weighted_neighbours(db, db, self.db_k, self.alpha, ids, ids)
        # a query that is itself in the database starts from its augmented row
        pos = {img: i for i, img in enumerate(ids)}
        q = np.stack([db[pos[img]] if img in pos else q[i] for i, img in enumerate(ctx.query_image_ids)])
        ctx.query_emb = weighted_neighbours(q, db, self.query_k, self.alpha, list(ctx.query_image_ids), ids)
        ctx.db_emb = db
        return ctx


@hookimpl
def register_postprocess(register):
    register("expand", ExpandStep)
