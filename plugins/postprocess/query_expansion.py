"""Postprocess ``query_expansion``: alpha-QE alone (Radenovic, Tolias and Chum, TPAMI 2018). Each query
becomes the unit-length sum of itself and its ``k`` nearest database embeddings weighted by
``similarity ** alpha``; its own image is never a neighbour. Place before ``knn``. Cost: Q x N
similarities, computed 2,048 queries at a time. The same arithmetic as ``expand`` with ``db_k: 0``."""

from __future__ import annotations

import numpy as np

from core.hookspecs import hookimpl
from plugins.postprocess.neighbours import weighted_neighbours


class QueryExpansion:
    def __init__(self, k: int = 1, alpha: float = 3.0):
        if int(k) < 0:
            raise ValueError(f"postprocess 'query_expansion' k must be >= 0, got {k}")
        self.k, self.alpha = int(k), float(alpha)

    def __call__(self, ctx):
        if len(ctx.db_emb) and len(ctx.query_emb):
            ctx.query_emb = weighted_neighbours(ctx.query_emb.astype(np.float32), ctx.db_emb.astype(np.float32), self.k,
                                                 self.alpha, list(ctx.query_image_ids),
                                                 np.asarray(ctx.db_image_ids, dtype=object))
        return ctx


@hookimpl
def register_postprocess(register):
    register("query_expansion", QueryExpansion)
