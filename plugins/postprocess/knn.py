"""Postprocess ``knn`` (the seed's): exact cosine kNN, the query's own image removed, top k, scores in [0, 1].

The search is ``core.search.exact_topk``: queries and database both in chunks with a running top-k, so the
score block stays within ``budget_mb`` (default: a tenth of free memory, 64 MB to 512 MB) whatever the
database size. Backends: ``faiss`` (flat inner-product indexes per database chunk) and ``torch`` (matmul +
topk per block); ``auto`` takes faiss when it imports, else torch. Speed and memory against the matmul bound:
``python -m tools.bench.search`` (docs/benchmarks.md). Score: ``clip((sim + 1) * scale, 0, max_score)``,
the seed's mapping of cosine into [0, 1].
"""

from __future__ import annotations

import numpy as np

from core.hookspecs import hookimpl
from core.search import exact_topk, exclude_own


def _faiss_importable() -> bool:
    try:
        import faiss  # noqa: F401

        return True
    except ImportError:
        return False


TIE = 1e-5  # cosine similarities closer than this are a tie


def tie_order(positions: np.ndarray, sims: np.ndarray, tie: float = TIE) -> np.ndarray:
    """The order of candidates by similarity, best first, with runs of similarities less than ``tie`` apart in
    database order. faiss and torch break near-ties differently between releases and their similarities differ
    in the last bits, so this keeps a bundle's ranking the same in the 2022 runtime as here."""
    if len(sims) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-sims, kind="stable")
    gaps = -np.diff(sims[order].astype(np.float64))
    run = np.concatenate([[0], np.cumsum(gaps >= tie)])
    return order[np.lexsort((positions[order], run))]


class KnnStep:
    def __init__(self, top_k: int = 20, backend: str = "auto", scale: float = 0.49, max_score: float = 0.9999,
                 budget_mb: float | None = None):
        if backend not in ("auto", "torch", "faiss"):
            raise ValueError(f"postprocess 'knn' backend must be auto, torch or faiss, got {backend!r}")
        if backend == "auto":
            backend = "faiss" if _faiss_importable() else "torch"
        self.top_k, self.backend, self.scale, self.max_score = int(top_k), backend, scale, max_score
        self.budget = int(float(budget_mb) * (1 << 20)) if budget_mb else None

    def __call__(self, ctx):
        n_db = len(ctx.db_image_ids)
        if n_db == 0 or len(ctx.query_ids) == 0:
            ctx.ranked = [(np.zeros(0, np.int64), np.zeros(0)) for _ in ctx.query_ids]
            ctx.similarity = [np.zeros(0) for _ in ctx.query_ids]
            return ctx
        own = exclude_own(ctx.query_image_ids, ctx.db_image_ids)  # the query's own image never comes back
        # one spare candidate: a near-tie at the k-th place is ordered by database position (tie_order)
        sims, idx = exact_topk(ctx.query_emb, ctx.db_emb, min(self.top_k + 1, n_db), self.backend, self.budget, own)
        ctx.ranked, ctx.similarity = [], []
        for qi in range(len(ctx.query_image_ids)):
            keep = idx[qi] >= 0
            i, s = idx[qi][keep], sims[qi][keep]
            order = tie_order(i, s)[: self.top_k]
            i, s = i[order], s[order]
            ctx.ranked.append((i, self.to_score(s)))
            ctx.similarity.append(s)
        return ctx

    def to_score(self, sim: np.ndarray) -> np.ndarray:
        return np.clip((sim.astype(np.float64) + 1.0) * self.scale, 0.0, self.max_score)


@hookimpl
def register_postprocess(register):
    register("knn", KnnStep)
