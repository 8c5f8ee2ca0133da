"""Postprocess ``db_anchor_rerank`` (1st place): a ranking step that uses the query's two best database
images as extra anchors.

s0 = clip(cos(query, db), 0, 1) with the query's own image removed; d1, d2 = the two best database images;
s1, s2 = clip(cos(d1, db)), clip(cos(d2, db)); score = a * s0^p + b * s1^p + c * s2^p, top ``top_k``.
1st place: (a, b, c) = (0.4, 0.4, 0.2), p = 7, and (0.2, 0.4, 0.4) for lateral->top scenarios (known from
the retrieval context's viewpoints; docs/winners.md). With weights summing to 1 the score is in [0, 1].
Replaces ``knn`` (it ranks). Cost: 3 x Q x N similarities, streamed through ``core.search.stream_topk`` in
blocks of at most ``budget_mb`` (default: a tenth of free memory), so no Q x N matrix is held.
"""

from __future__ import annotations

import numpy as np
import torch

from core.hookspecs import hookimpl
from core.search import exact_topk, exclude_own, mask_own, stream_topk


TIE_STEP = 1e-12  # per database position: below any score difference that matters, above float64's resolution


class DbAnchorRerank:
    def __init__(self, weights=(0.4, 0.4, 0.2), lateral_top_weights=(0.2, 0.4, 0.4), power: float = 7.0,
                 top_k: int = 20, budget_mb: float | None = None):
        for name, w in (("weights", weights), ("lateral_top_weights", lateral_top_weights)):
            w = np.asarray(w, dtype=np.float64)
            if w.shape != (3,) or (w < 0).any() or not np.isclose(w.sum(), 1.0):
                raise ValueError(f"postprocess 'db_anchor_rerank' {name} must be 3 non-negative numbers summing to 1, "
                                 f"got {list(w)}")
        self.weights = np.asarray(weights, np.float64)
        self.lateral_top = np.asarray(lateral_top_weights, np.float64)
        self.power, self.top_k = float(power), int(top_k)
        self.budget = int(float(budget_mb) * (1 << 20)) if budget_mb else None

    def __call__(self, ctx):
        n = len(ctx.db_image_ids)
        ctx.ranked, ctx.similarity = [], []
        if n == 0:
            ctx.ranked = [(np.zeros(0, np.int64), np.zeros(0)) for _ in ctx.query_ids]
            ctx.similarity = [np.zeros(0) for _ in ctx.query_ids]
            return ctx
        w = self.lateral_top if ctx.kind() == "lateral_top" else self.weights
        q, db = ctx.query_emb.astype(np.float32), ctx.db_emb.astype(np.float32)
        own = exclude_own(ctx.query_image_ids, ctx.db_image_ids)
        # pass 1: the query's two best database images (never its own), the anchors
        _, anchors = exact_topk(q, db, 2, budget=self.budget, own=own)
        d1 = anchors[:, 0]
        d2 = anchors[:, 1] if anchors.shape[1] > 1 else d1
        d2 = np.where(d2 >= 0, d2, d1)
        qt, dbt = torch.from_numpy(q).double(), torch.from_numpy(db)
        a1, a2 = torch.from_numpy(db[np.clip(d1, 0, None)]).double(), torch.from_numpy(db[np.clip(d2, 0, None)]).double()
        power, weights = self.power, [float(x) for x in w]

        def block(q0, q1, d0, d1_):  # pass 2: the anchored score of a block, streamed into a running top-k
            part = dbt[d0:d1_].double().T
            score = (weights[0] * (qt[q0:q1] @ part).clamp(0, 1) ** power
                     + weights[1] * (a1[q0:q1] @ part).clamp(0, 1) ** power
                     + weights[2] * (a2[q0:q1] @ part).clamp(0, 1) ** power)
            # exact ties (scores clipped to 0) go to the earlier database image, as a stable sort would order them
            return mask_own(score - TIE_STEP * torch.arange(d0, d1_, dtype=torch.float64), own, q0, d0)

        scores, top = stream_topk(len(q), len(db), self.top_k, block, self.budget, dtype=np.float64)
        scores = scores + TIE_STEP * np.clip(top, 0, None)
        for row in range(len(q)):
            keep = top[row] >= 0
            i = top[row][keep]
            ctx.ranked.append((i.astype(np.int64), np.clip(scores[row][keep], 0.0, 1.0)))
            ctx.similarity.append(np.clip(db[i] @ q[row], 0.0, 1.0).astype(np.float64))
        return ctx


@hookimpl
def register_postprocess(register):
    register("db_anchor_rerank", DbAnchorRerank)
