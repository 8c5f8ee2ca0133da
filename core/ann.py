"""Approximate search for catalogues too large to scan: a persistent faiss IVF index with exact re-scoring.

Exact search (``core.search``) costs Q x N x D multiply-adds; at a million photos and ten thousand queries
that is minutes on two cores. ``ApproxIndex`` clusters the database into ``nlist`` cells (faiss
``IndexIVFScalarQuantizer``, 8 bits per dimension: a quarter of the float embeddings' memory), scans the
``nprobe`` cells nearest each query, and re-scores a shortlist of ``rerank x k`` candidates exactly against
the float embeddings, which stay on disk (memory-mapped). Each search reports its recall@k against exact
search on a sample of its queries, so an approximate answer never passes unnoticed.

On disk, one folder: ``vectors.f32`` (float32 rows, append-only), ``ids.txt`` (one id per row),
``index-<rows>.faiss`` and ``meta.json`` (dim, rows, the index file), written last: it is the commit point.
``add`` appends new photos without rebuilding: rows and ids are appended, the trained index takes the new
rows, and ``meta.json`` is replaced. A crash before that leaves the previous ``meta.json``, and ``open``
ignores rows past its count (the next ``add`` overwrites them).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from core.search import exact_topk

log = logging.getLogger(__name__)

FORMAT = 1


class AnnIndexError(ValueError):
    """An index folder is missing, from a newer format, or does not match the embeddings given."""


class ApproxIndex:
    def __init__(self, folder: Path, index, meta: dict):
        self.folder, self.index, self.meta = Path(folder), index, meta
        self.last_recall: Optional[float] = None

    # ---- building and opening ------------------------------------------------------------------------------

    @classmethod
    def build(cls, folder, vectors: np.ndarray, ids: Sequence[str], nlist: Optional[int] = None,
              train_size: Optional[int] = None, seed: int = 0) -> "ApproxIndex":
        """Train the cells on (a sample of) ``vectors`` and index them all into a new ``folder``."""
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        n, dim = vectors.shape
        if n != len(ids):
            raise AnnIndexError(f"{len(ids)} ids for {n} vectors")
        nlist = int(nlist or max(1, min(n // 39, int(np.sqrt(n)))))  # faiss wants >= 39 training rows a cell
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for old in [folder / "meta.json", folder / "vectors.f32", folder / "ids.txt", *folder.glob("index-*.faiss")]:
            if old.exists():
                old.unlink()  # a new index replaces whatever the folder held
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        rng = np.random.default_rng(seed)
        take = min(n, int(train_size or max(64 * nlist, 20000)))  # faiss's own advice: 30 to 256 rows a cell
        sample = vectors[np.sort(rng.choice(n, take, replace=False))] if take < n else vectors
        index.train(sample)
        meta = {"format": FORMAT, "dim": dim, "rows": 0, "nlist": nlist, "index_file": None}
        self = cls(folder, index, meta)
        self._quantizer = quantizer  # the IVF index refers to it: keep it alive
        self.add(vectors, ids)
        return self

    @classmethod
    def open(cls, folder) -> "ApproxIndex":
        import faiss

        folder = Path(folder)
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            raise AnnIndexError(f"{folder}: no meta.json; not an index folder (build one first)")
        meta = json.loads(meta_path.read_text())
        if int(meta.get("format", 0)) > FORMAT:
            raise AnnIndexError(f"{folder}: index format {meta['format']} is newer than this whaleid reads ({FORMAT})")
        index = faiss.read_index(str(folder / meta["index_file"]))
        if index.ntotal != meta["rows"]:
            raise AnnIndexError(f"{folder}: {meta['index_file']} holds {index.ntotal} rows, meta.json {meta['rows']}")
        return cls(folder, index, meta)

    # ---- appending ------------------------------------------------------------------------------------------

    def add(self, vectors: np.ndarray, ids: Sequence[str]) -> None:
        """Append rows: their floats and ids first, then the index, then ``meta.json`` (the commit)."""
        import faiss

        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.meta["dim"]:
            raise AnnIndexError(f"{self.folder}: vectors of shape {vectors.shape}, the index holds {self.meta['dim']}-d rows")
        if len(ids) != len(vectors):
            raise AnnIndexError(f"{len(ids)} ids for {len(vectors)} vectors")
        rows = self.meta["rows"]
        with open(self.folder / "vectors.f32", "ab") as fh:  # rows past the committed count are a crash's: cut
            fh.truncate(rows * self.meta["dim"] * 4)
            fh.seek(rows * self.meta["dim"] * 4)
            fh.write(vectors.tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        kept = self.ids()
        with open(self.folder / "ids.txt", "w") as fh:
            fh.write("".join(f"{i}\n" for i in list(kept) + [str(x) for x in ids]))
        self.index.add(vectors)
        name = f"index-{rows + len(vectors)}.faiss"
        faiss.write_index(self.index, str(self.folder / (name + ".tmp")))
        os.replace(self.folder / (name + ".tmp"), self.folder / name)
        old = self.meta.get("index_file")
        self.meta.update(rows=rows + len(vectors), index_file=name)
        tmp = self.folder / "meta.json.tmp"
        tmp.write_text(json.dumps(self.meta, indent=2))
        os.replace(tmp, self.folder / "meta.json")
        if old and old != name:
            (self.folder / old).unlink()

    # ---- reading --------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.meta["rows"])

    def ids(self) -> list[str]:
        path = self.folder / "ids.txt"
        lines = path.read_text().splitlines() if path.is_file() else []
        return lines[: len(self)]

    def vectors(self) -> np.ndarray:
        """The committed float rows, memory-mapped (read from disk as needed, not loaded whole)."""
        if len(self) == 0:
            return np.zeros((0, self.meta["dim"]), np.float32)
        return np.memmap(self.folder / "vectors.f32", dtype=np.float32, mode="r", shape=(len(self), self.meta["dim"]))

    def search(self, queries: np.ndarray, k: int = 20, nprobe: int = 16, rerank: int = 2,
               check_recall: int = 200, seed: int = 0):
        """(similarities float32 [Q, k], positions int64 [Q, k]): ``nprobe`` cells scanned, the best ``rerank x k``
        candidates re-scored exactly; recall@k against exact search on ``check_recall`` sampled queries is
        logged and kept in ``last_recall`` (0 skips the check)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(int(k), len(self))
        self.index.nprobe = int(nprobe)
        _, cand = self.index.search(queries, max(k, int(rerank) * k))
        sims, positions = rescore(queries, self.vectors(), cand, k)
        if check_recall and len(queries):
            rng = np.random.default_rng(seed)
            pick = np.sort(rng.choice(len(queries), min(len(queries), int(check_recall)), replace=False))
            _, exact = exact_topk(queries[pick], self.vectors(), k)
            self.last_recall = recall_at(positions[pick], exact)
            log.info("approximate search: recall@%d %.4f against exact on %d of %d queries (nprobe %d, rerank %d)",
                     k, self.last_recall, len(pick), len(queries), nprobe, rerank)
        return sims, positions


def rescore(queries: np.ndarray, vectors: np.ndarray, candidates: np.ndarray, k: int, chunk: int = 512):
    """The k best of each query's candidate positions (-1: none), by exact inner product, best first. Only the
    candidates' float rows are read (from a memory map: the gather is the cost, ~2 KB a candidate)."""
    import torch

    sims = np.full((len(queries), k), -np.inf, np.float32)
    positions = np.full((len(queries), k), -1, np.int64)
    for start in range(0, len(queries), chunk):
        cand = candidates[start:start + chunk]
        rows = np.ascontiguousarray(vectors[np.clip(cand, 0, None).ravel()], dtype=np.float32)
        picked = torch.from_numpy(rows).view(cand.shape[0], cand.shape[1], -1)  # [chunk, candidates, dim]
        q = torch.from_numpy(np.ascontiguousarray(queries[start:start + chunk]))
        scores = torch.bmm(picked, q[:, :, None])[:, :, 0]
        scores[torch.from_numpy(cand < 0)] = -float("inf")
        top, order = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        sims[start:start + len(cand), :top.shape[1]] = top.numpy()
        positions[start:start + len(cand), :top.shape[1]] = np.take_along_axis(cand, order.numpy(), 1)
    positions[~np.isfinite(sims)] = -1
    return sims, positions


def recall_at(found: np.ndarray, exact: np.ndarray) -> float:
    """The share of the exact top-k positions that ``found`` (same shape) holds, over all queries."""
    hits = sum(len(set(f[f >= 0]) & set(e[e >= 0])) for f, e in zip(found, exact))
    total = int((exact >= 0).sum())
    return hits / total if total else 1.0
