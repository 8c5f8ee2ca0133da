"""The approximate index behind identify, for catalogues too large to scan (``core.ann.ApproxIndex``).

Below ``INDEX_ABOVE`` searchable photos identify scans them all exactly (``core.search``): at 200,000 photos of
512-d that is about 2.5 ms a query on two cores, and nothing to build. From there on it searches an IVF index
(8-bit, the shortlist re-scored exactly against the float embeddings), kept beside the catalogue in
``C.sqlite.index-<model hash>/``: built once (about 30 s per million photos on two cores), appended to when
photos were only added since, rebuilt when the photos changed otherwise (a review moved or removed one), and
never used for another model's embeddings. Each search logs its recall against exact search on a sample of its
queries. The whale-level ranking on top (``catalogue.deciding.match.rank_whales``) is the same either way: only which
photos reach the shortlist can differ, and the recall says how often.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

INDEX_ABOVE = 200_000

log = logging.getLogger(__name__)


def index_folder(db: Path, model_hash: str) -> Path:
    return Path(str(db) + f".index-{model_hash[:16]}")


def open_index(db: Path, model_hash: str, ids: list, emb: np.ndarray):
    """The catalogue's index, holding exactly ``ids`` (the photos' image ids in insertion order) at their positions:
    opened, appended to, or (re)built."""
    from core.ann import AnnIndexError, ApproxIndex

    try:
        import faiss  # noqa: F401
    except ImportError as exc:
        raise ValueError(f"the catalogue holds {len(ids)} photos, over --index-above: its index needs faiss, not "
                         "installed here (pip install 'whaleid[cpu]', or [gpu] on CUDA; or --index-above -1)") from exc
    folder = index_folder(db, model_hash)
    try:
        index = ApproxIndex.open(folder)
        have = index.ids()
    except AnnIndexError:
        index, have = None, []
    if index is not None and len(have) <= len(ids) and have == [str(i) for i in ids[:len(have)]] \
            and index.meta["dim"] == emb.shape[1]:
        if len(have) < len(ids):
            log.info("index %s: appending %d photos to its %d", folder, len(ids) - len(have), len(have))
            index.add(emb[len(have):], [str(i) for i in ids[len(have):]])
        return index
    log.info("index %s: building over %d photos (once; later photos are appended)", folder, len(ids))
    return ApproxIndex.build(folder, emb, [str(i) for i in ids])


def searcher(db: Path, model_hash: str, ids: list, emb: np.ndarray, above: int = INDEX_ABOVE, nprobe: int = 16,
             rerank: int = 2, check_recall: int | None = None):
    """A ``search(queries, k) -> (similarities, positions)`` through the index when the catalogue holds at least
    ``above`` photos, else None (exact search). Recall against exact search of the in-memory embeddings is
    checked on ``check_recall`` of the queries (default: one in 20, at least 1 and at most 20: each costs what an
    exact query costs) and logged."""
    if above < 0 or len(ids) < max(1, above):
        return None
    index = open_index(db, model_hash, list(ids), emb)

    def search(queries: np.ndarray, k: int):
        from core.ann import recall_at
        from core.search import exact_topk

        sims, pos = index.search(queries, k, nprobe=nprobe, rerank=rerank, check_recall=0)
        sample = check_recall if check_recall is not None else max(1, min(20, -(-len(queries) // 20)))
        if sample and len(queries):
            pick = np.sort(np.random.default_rng(0).choice(len(queries), min(sample, len(queries)), replace=False))
            search.recall = recall_at(pos[pick], exact_topk(np.ascontiguousarray(queries[pick], np.float32), emb, k)[1])
            log.info("approximate search: recall@%d %.4f against exact on %d of %d queries (nprobe %d)", k,
                     search.recall, len(pick), len(queries), nprobe)
        return sims, pos

    search.recall = None
    search.describe = f"approximate index ({len(ids)} photos, IVF{index.meta['nlist']} 8-bit, nprobe {nprobe})"
    return search
