"""Postprocess ``db_anchor_rerank`` (1st place): a ranking step that uses the query's two best database
images as extra anchors.

s0 = clip(cos(query, db), 0, 1) with the query's own image removed; d1, d2 = the two best database images;
s1, s2 = clip(cos(d1, db)), clip(cos(d2, db)); score = a * s0^p + b * s1^p + c * s2^p, top ``top_k``.
1st place: (a, b, c) = (0.4, 0.4, 0.2), p = 7, and (0.2, 0.4, 0.4) for lateral->top scenarios (known from
the retrieval context's viewpoints; docs/winners.md). With weights summing to 1 the score is in [0, 1].
Replaces ``knn`` (it ranks). Cost: 3 x Q x N similarities, ``chunk`` queries at a time.
"""

from __future__ import annotations

import numpy as np

from core.hookspecs import hookimpl


class DbAnchorRerank:
    def __init__(self, weights=(0.4, 0.4, 0.2), lateral_top_weights=(0.2, 0.4, 0.4), power: float = 7.0,
                 top_k: int = 20, chunk: int = 1024):
        for name, w in (("weights", weights), ("lateral_top_weights", lateral_top_weights)):
            w = np.asarray(w, dtype=np.float64)
            if w.shape != (3,) or (w < 0).any() or not np.isclose(w.sum(), 1.0):
                raise ValueError(f"postprocess 'db_anchor_rerank' {name} must be 3 non-negative numbers summing to 1, "
                                 f"got {list(w)}")
        self.weights = np.asarray(weights, np.float64)
        self.lateral_top = np.asarray(lateral_top_weights, np.float64)
        self.power, self.top_k, self.chunk = float(power), int(top_k), int(chunk)

    def __call__(self, ctx):
        n = len(ctx.db_image_ids)
        ctx.ranked, ctx.similarity = [], []
        if n == 0:
            ctx.ranked = [(np.zeros(0, np.int64), np.zeros(0)) for _ in ctx.query_ids]
            ctx.similarity = [np.zeros(0) for _ in ctx.query_ids]
            return ctx
        w = self.lateral_top if ctx.kind() == "lateral_top" else self.weights
        db = ctx.db_emb.astype(np.float32)
        db_ids = np.asarray(ctx.db_image_ids, dtype=object)
        for start in range(0, len(ctx.query_ids), self.chunk):
            q = ctx.query_emb[start:start + self.chunk].astype(np.float32)
            own = np.asarray(ctx.query_image_ids[start:start + self.chunk], dtype=object)[:, None] == db_ids[None, :]
            s0 = np.clip(q @ db.T, 0.0, 1.0).astype(np.float64)
            s0[own] = -1.0  # never an anchor
            order = np.argsort(-s0, axis=1, kind="stable")
            d1, d2 = order[:, 0], order[:, 1] if n > 1 else order[:, 0]
            s1 = np.clip(db[d1] @ db.T, 0.0, 1.0).astype(np.float64)
            s2 = np.clip(db[d2] @ db.T, 0.0, 1.0).astype(np.float64)
            score = w[0] * np.clip(s0, 0, None) ** self.power + w[1] * s1 ** self.power + w[2] * s2 ** self.power
            score[own] = -1.0
            for row in range(len(q)):
                keep = np.flatnonzero(~own[row])
                top = keep[np.argsort(-score[row, keep], kind="stable")[: self.top_k]]
                ctx.ranked.append((top.astype(np.int64), np.clip(score[row, top], 0.0, 1.0)))
                ctx.similarity.append(s0[row, top])
        return ctx


@hookimpl
def register_postprocess(register):
    register("db_anchor_rerank", DbAnchorRerank)
