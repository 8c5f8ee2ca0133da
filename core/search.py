"""Top-k search in bounded memory: the database and the queries both in chunks, a running top-k per query.

Every ranking path (validation, ``main.py``, the expansion steps, a catalogue search) asks this module for
the k best database rows of each query instead of building a queries x database score matrix: 4,096
queries against a million photos would be 16 GB of scores; here the score block is at most ``budget``
bytes (default: a tenth of the memory available, between 64 MB and 512 MB), and what stays is Q x k.

- ``stream_topk(n_queries, n_db, k, block)``: the k largest values of ``block(q0, q1, d0, d1)`` (any score
  a caller computes for a block of query rows and database rows: a dot product, a re-ranker's
  combination), with database positions. Exact: the same k as a dense top-k of the whole matrix.
- ``exact_topk(queries, database, k)``: inner products, on torch (the default) or faiss (flat indexes
  over database chunks, merged the same way).
- ``exclude_own(query_ids, db_ids)``: each query's own database position, so a block can mask it.
- ``merge_topk(parts, k)``: the global top-k from per-shard top-k lists (``tools/search_shards.py`` runs one
  shard per process under ``accelerate launch`` and merges them).

Works on the 2022 runtime's torch 1.8 / numpy 1.20 / faiss 1.7.2 as on today's (a bundle carries it).
"""

from __future__ import annotations

import math
import warnings
from typing import Callable, Optional, Sequence

import numpy as np
import torch

MIN_BUDGET, MAX_BUDGET = 64 << 20, 512 << 20


def available_memory() -> Optional[int]:
    """Bytes of memory available to a new allocation (``MemAvailable`` of /proc/meminfo), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def default_budget() -> int:
    """A tenth of the available memory, clamped to [64 MB, 512 MB] (512 MB blocks already run at matmul speed)."""
    free = available_memory()
    return MAX_BUDGET if free is None else int(min(MAX_BUDGET, max(MIN_BUDGET, free // 10)))


def plan_chunks(n_queries: int, n_db: int, k: int, budget: Optional[int] = None, max_query_chunk: int = 4096):
    """(query rows, database rows) per block so that a block's float32 scores and its top-k fit ``budget`` bytes."""
    budget = int(budget or default_budget())
    qc = max(1, min(n_queries, max_query_chunk))
    while True:
        # the score block, and the chunk top-k's values and int64 positions beside the running top-k
        dc = (budget - qc * k * 24) // (qc * 4)
        if dc >= max(k, 1) or qc == 1:
            break
        qc = max(1, qc // 2)
    if dc < 1:
        raise MemoryError(f"a search budget of {budget} bytes cannot hold one query's top-{k} block; raise the budget")
    return qc, int(max(1, min(n_db, dc)))


def _merge(best, new, k: int):
    """The k best of two (values, positions) pairs of [rows, *] tensors, best first."""
    if best is None:
        values, positions = new
    else:
        values, positions = torch.cat([best[0], new[0]], 1), torch.cat([best[1], new[1]], 1)
    top, where = torch.topk(values, min(k, values.shape[1]), dim=1)
    return top, torch.gather(positions, 1, where)


@torch.no_grad()
def stream_topk(n_queries: int, n_db: int, k: int, block: Callable[[int, int, int, int], torch.Tensor],
                budget: Optional[int] = None, chunks=None, dtype=np.float32):
    """(values float32 [Q, k'], positions int64 [Q, k']) with k' = min(k, n_db): the k largest entries of each row
    of the virtual [n_queries, n_db] matrix that ``block(q0, q1, d0, d1)`` returns a [q1-q0, d1-d0] piece of
    (float tensor; -inf marks an entry that must never be chosen, and such entries come back as position -1).
    Rows best first. ``chunks`` forces (query rows, database rows) per block; else ``plan_chunks``. ``dtype``:
    the values' type (float64 for a block that scores in double precision)."""
    k = min(int(k), n_db)
    values = np.full((n_queries, k), -np.inf, dtype)
    positions = np.full((n_queries, k), -1, np.int64)
    if k <= 0 or n_queries == 0:
        return values, positions
    qc, dc = chunks or plan_chunks(n_queries, n_db, k, budget)
    for q0 in range(0, n_queries, qc):
        q1, best = min(n_queries, q0 + qc), None
        for d0 in range(0, n_db, dc):
            d1 = min(n_db, d0 + dc)
            scores = block(q0, q1, d0, d1)
            top, where = torch.topk(scores, min(k, d1 - d0), dim=1)
            del scores  # before the next block is computed: one block alive at a time, not two
            best = _merge(best, (top, where + d0), k)
        top, where = best
        values[q0:q1], positions[q0:q1] = top.numpy(), where.numpy()
    return _canonical(values, positions)


def _canonical(values: np.ndarray, positions: np.ndarray):
    """Rows best first, exact ties in database order (top-k implementations order them as they please), and
    position -1 wherever nothing was found: the same answer whatever the chunking or backend."""
    positions[~np.isfinite(values)] = -1
    order = np.lexsort((np.where(positions < 0, np.iinfo(np.int64).max, positions), -values.astype(np.float64)), axis=-1)
    return np.take_along_axis(values, order, -1), np.take_along_axis(positions, order, -1)


def merge_topk(parts, k: int):
    """The k best of several (values [Q, *], positions [Q, *]) results over the same queries, e.g. one per database
    shard with positions already global: (values, positions) numpy arrays, best first."""
    best = None
    for values, positions in parts:
        best = _merge(best, (torch.from_numpy(np.asarray(values)), torch.from_numpy(np.asarray(positions, np.int64))), k)
    values, positions = best[0].numpy(), best[1].numpy()
    positions[~np.isfinite(values)] = -1
    return values, positions


def exclude_own(query_ids: Sequence, db_ids: Sequence) -> np.ndarray:
    """int64 [Q]: the database position of each query's own image, or -1 (the query is not in the database)."""
    where = {img: i for i, img in enumerate(db_ids)}
    return np.asarray([where.get(img, -1) for img in query_ids], dtype=np.int64)


def mask_own(scores: torch.Tensor, own: Optional[np.ndarray], q0: int, d0: int) -> torch.Tensor:
    """Set the block's entries where a query meets its own database image to -inf (in place)."""
    if own is None:
        return scores
    rows = np.arange(scores.shape[0])
    cols = own[q0:q0 + scores.shape[0]] - d0
    hit = (cols >= 0) & (cols < scores.shape[1])
    if hit.any():
        scores[torch.from_numpy(rows[hit]), torch.from_numpy(cols[hit])] = -math.inf
    return scores


def exact_topk(queries: np.ndarray, database: np.ndarray, k: int, backend: str = "torch",
               budget: Optional[int] = None, own: Optional[np.ndarray] = None, chunks=None):
    """(similarities float32 [Q, k], positions int64 [Q, k]) of the k largest inner products of each query with
    the database, best first, in bounded memory; ``own`` (``exclude_own``) keeps each query's own image out.
    ``backend``: torch (matmul per block) or faiss (a flat inner-product index per database chunk)."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    db = np.ascontiguousarray(database, dtype=np.float32)
    if backend == "faiss":
        return _exact_topk_faiss(q, db, k, budget, own, chunks)
    if backend != "torch":
        raise ValueError(f"search backend must be torch or faiss, got {backend!r}")
    with warnings.catch_warnings():  # a read-only memory map is read, never written
        warnings.simplefilter("ignore", UserWarning)
        qt, dbt = torch.from_numpy(q), torch.from_numpy(db)

    def block(q0, q1, d0, d1):
        return mask_own(qt[q0:q1] @ dbt[d0:d1].T, own, q0, d0)

    return stream_topk(len(q), len(db), k, block, budget, chunks)


def _exact_topk_faiss(q: np.ndarray, db: np.ndarray, k: int, budget, own, chunks):
    import faiss

    n, dim = len(db), db.shape[1]
    k_eff = min(int(k), n)
    extra = 1 if own is not None else 0  # the own image may take one of the chunk's places
    values = np.full((len(q), k_eff), -np.inf, np.float32)
    positions = np.full((len(q), k_eff), -1, np.int64)
    if k_eff <= 0 or len(q) == 0:
        return values, positions
    # faiss blocks the queries itself and keeps a heap per query: only the database chunk's copy is ours
    dc = chunks[1] if chunks else max(k_eff + extra, int(budget or default_budget()) // (dim * 4))
    best = None
    for d0 in range(0, n, dc):
        d1 = min(n, d0 + dc)
        index = _flat_index(faiss, dim)
        index.add(db[d0:d1])
        sims, idx = index.search(q, min(k_eff + extra, d1 - d0))
        sims, idx = torch.from_numpy(sims.copy()), torch.from_numpy(idx.astype(np.int64))
        if own is not None:
            sims[idx == torch.from_numpy(own - d0)[:, None]] = -math.inf
        sims[idx < 0] = -math.inf
        best = _merge(best, (sims, idx + d0), k_eff)
    top, where = best
    values[:, :top.shape[1]], positions[:, :top.shape[1]] = top.numpy(), where.numpy()
    return _canonical(values, positions)


def _flat_index(faiss, dim: int):
    """An exact inner-product index, on every GPU when faiss has GPU support and one is present."""
    index = faiss.IndexFlatIP(dim)
    if hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0:
        index = faiss.index_cpu_to_all_gpus(index)
    return index
