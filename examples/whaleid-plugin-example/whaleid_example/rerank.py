"""``alpha_qe``: alpha query expansion (Radenovic et al., TPAMI 2019) before ranking.

Each query embedding becomes the normalised sum of itself and its ``k`` nearest database embeddings
weighted by ``similarity ** alpha`` (negative similarities count 0); a later ``knn`` step ranks with
it. The query's own image is never used. Defaults come from ``defaults.json``, the package's data.
"""

import json
from pathlib import Path

import numpy as np

DEFAULTS = json.loads((Path(__file__).with_name("defaults.json")).read_text())


def alpha_qe(ctx, k: int, alpha: float):
    if k <= 0 or len(ctx.db_emb) == 0 or len(ctx.query_emb) == 0:
        return ctx
    sims = ctx.query_emb @ ctx.db_emb.T
    db_ids = np.asarray(ctx.db_image_ids, dtype=object)
    for q, img in enumerate(ctx.query_image_ids):
        sims[q, db_ids == img] = -np.inf
    kk = min(k, sims.shape[1])
    top = np.argsort(-sims, axis=1)[:, :kk]
    w = np.clip(np.take_along_axis(sims, top, axis=1), 0, None) ** alpha
    w[~np.isfinite(w)] = 0.0
    expanded = ctx.query_emb + np.einsum("qk,qkd->qd", w, ctx.db_emb[top])
    ctx.query_emb = (expanded / np.maximum(np.linalg.norm(expanded, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    return ctx


def build_alpha_qe(k=DEFAULTS["k"], alpha=DEFAULTS["alpha"]):
    return lambda ctx: alpha_qe(ctx, int(k), float(alpha))
