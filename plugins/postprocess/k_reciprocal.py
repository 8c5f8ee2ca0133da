"""Postprocess ``k_reciprocal``: k-reciprocal re-ranking (Zhong et al., "Re-ranking person
re-identification with k-reciprocal encoding", CVPR 2017), a ranking step.

On the set of a scenario's queries and database images (M = Q + N):
1. d = (1 - cos) / 2 between all pairs;
2. R(i) = the k-reciprocal neighbours of i: j among i's ``k1`` nearest and i among j's ``k1`` nearest;
   R*(i) adds R(j) of each j in R(i) whose own ``k1 / 2``-reciprocal set overlaps R(i) by at least 2/3;
3. V_i = exp(-d(i, .)) on R*(i), normalised; local query expansion averages V over i's ``k2`` nearest;
4. Jaccard distance J(i, j) = 1 - sum min(V_i, V_j) / sum max(V_i, V_j);
5. final = (1 - lambda) J + lambda d; score = 1 - final, in [0, 1]; the query's own image is dropped.

4th place tried it without gain (docs/winners.md). Cost: M x M floats (an M of 3,400, a competition
scenario's size, is 46 MB in float32); above ``max_items`` it falls back to plain cosine ranking and logs so.
"""

from __future__ import annotations

import logging

import numpy as np

from core.hookspecs import hookimpl
from core.search import exact_topk, exclude_own

log = logging.getLogger(__name__)


def reciprocal_sets(dist: np.ndarray, k: int) -> list[np.ndarray]:
    """For each i, the j (i included) with j among i's k nearest and i among j's k nearest."""
    k = min(k, len(dist) - 1)
    near = np.argsort(dist, axis=1, kind="stable")[:, : k + 1]
    member = np.zeros(dist.shape, dtype=bool)
    np.put_along_axis(member, near, True, axis=1)
    mutual = member & member.T
    return [np.flatnonzero(mutual[i]) for i in range(len(dist))]


def k_reciprocal_distance(emb: np.ndarray, k1: int = 20, k2: int = 6, lam: float = 0.3) -> np.ndarray:
    """[M, M] re-ranked distances of unit rows ``emb`` (steps 1-5 above)."""
    m = len(emb)
    dist = np.clip((1.0 - emb @ emb.T) / 2.0, 0.0, 1.0).astype(np.float32)
    r = reciprocal_sets(dist, k1)
    r_half = reciprocal_sets(dist, max(1, int(round(k1 / 2))))
    v = np.zeros((m, m), np.float32)
    for i in range(m):
        expanded = set(r[i].tolist())
        for j in r[i]:
            cand = r_half[j]
            if len(np.intersect1d(cand, r[i])) > 2 / 3 * len(cand):
                expanded |= set(cand.tolist())
        idx = np.fromiter(expanded, dtype=np.int64)
        w = np.exp(-dist[i, idx])
        v[i, idx] = w / w.sum()
    if k2 > 1:
        near = np.argsort(dist, axis=1, kind="stable")[:, :k2]
        v = v[near].mean(axis=1)
    jaccard = np.empty((m, m), np.float32)
    for i in range(m):
        mins = np.minimum(v[i][None, :], v).sum(axis=1)
        maxs = np.maximum(v[i][None, :], v).sum(axis=1)
        jaccard[i] = 1.0 - mins / np.maximum(maxs, 1e-12)
    return (1.0 - lam) * jaccard + lam * dist


class KReciprocal:
    def __init__(self, k1: int = 20, k2: int = 6, lam: float = 0.3, top_k: int = 20, max_items: int = 6000):
        if k1 < 1 or k2 < 1 or not 0 <= lam <= 1:
            raise ValueError(f"postprocess 'k_reciprocal' needs k1, k2 >= 1 and 0 <= lam <= 1, got {k1}, {k2}, {lam}")
        self.k1, self.k2, self.lam, self.top_k, self.max_items = int(k1), int(k2), float(lam), int(top_k), int(max_items)

    def __call__(self, ctx):
        q, n = len(ctx.query_ids), len(ctx.db_image_ids)
        ctx.ranked, ctx.similarity = [], []
        if n == 0 or q == 0:
            ctx.ranked = [(np.zeros(0, np.int64), np.zeros(0)) for _ in ctx.query_ids]
            ctx.similarity = [np.zeros(0) for _ in ctx.query_ids]
            return ctx
        if q + n > self.max_items:  # decided before any q x n or (q + n)^2 matrix is allocated
            log.warning("k_reciprocal: %s has %d images, above max_items %d (its distances are (q + n)^2 floats); "
                        "ranking by cosine in bounded memory", ctx.scenario, q + n, self.max_items)
            sims, top = exact_topk(ctx.query_emb, ctx.db_emb, self.top_k, own=exclude_own(ctx.query_image_ids, ctx.db_image_ids))
            for row in range(q):
                keep = top[row] >= 0
                ctx.ranked.append((top[row][keep], np.clip((1.0 + sims[row][keep].astype(np.float64)) / 2.0, 0.0, 1.0)))
                ctx.similarity.append(sims[row][keep])
            return ctx
        db_ids = np.asarray(ctx.db_image_ids, dtype=object)
        own = np.asarray(ctx.query_image_ids, dtype=object)[:, None] == db_ids[None, :]
        cos = ctx.query_emb.astype(np.float32) @ ctx.db_emb.astype(np.float32).T
        emb = np.concatenate([ctx.query_emb, ctx.db_emb]).astype(np.float32)
        final = k_reciprocal_distance(emb, self.k1, self.k2, self.lam)[:q, q:]
        final = np.where(own, np.inf, final)
        for row in range(q):
            keep = np.flatnonzero(~own[row])
            top = keep[np.argsort(final[row, keep], kind="stable")[: self.top_k]]
            ctx.ranked.append((top.astype(np.int64), np.clip(1.0 - final[row, top], 0.0, 1.0)))
            ctx.similarity.append(cos[row, top])
        return ctx


@hookimpl
def register_postprocess(register):
    register("k_reciprocal", KReciprocal)
