"""Search at catalogue scale: streaming exact top-k and the approximate index against the matmul bound.

    python -m tools.bench.search [--db N] [--queries Q] [--dim D] [--k K] [--mode exact|approx|both]

On synthetic unit embeddings shaped like photo-ID's: ``--groups`` groups (survey conditions, viewpoints, related
animals: what makes some whales' photos resemble others'), ``--ids`` whales around them (cosine about 0.7 to
their group), each photo its whale's direction plus noise (cosine about 0.76 to it); ``--groups 0`` drops the
groups (whales in random directions, where nothing but the true matches is near and an index has little to
work with). In one run: the FLOP-bound time of the search's multiply-adds
(2 Q N D at the GEMM throughput measured here, now), then each mode's wall time, its ratio to that bound,
its peak resident memory (sampled) against the embeddings' own bytes, and recall@k against exact (1.0 for
exact modes, computed on every query when the exact result is at hand, else on a sample). One table, then
one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import threading
import time

import numpy as np


class PeakRSS:
    """The peak resident memory of this process while the block runs, sampled every 5 ms from /proc."""

    def __enter__(self):
        self.peak, self._stop = current_rss(), threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, current_rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())


def current_rss() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # not Linux: the lifetime peak is the best there is
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def directions(n: int, dim: int, rng, around: np.ndarray | None = None, spread: float = 1.0) -> np.ndarray:
    """``n`` random unit directions; with ``around``, each near a random row of it (noise of norm ``spread``)."""
    x = rng.standard_normal((n, dim), dtype=np.float32)
    if around is not None:
        x = around[rng.integers(0, len(around), n)] + x * (spread / np.sqrt(dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def embeddings(n: int, dim: int, centres: np.ndarray, rng, noise: float = 0.85, chunk: int = 65536) -> np.ndarray:
    """``n`` unit rows, each a random centre plus Gaussian noise, made ``chunk`` rows at a time (no float64 copy)."""
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, len(centres), m)] + rng.standard_normal((m, dim), dtype=np.float32) * (noise / np.sqrt(dim))
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def gemm_rate(dim: int, rows: int = 2048, cols: int = 32768, repeats: int = 3) -> float:
    """Multiply-adds x 2 per second of one float32 GEMM block of the search's shape, best of ``repeats``."""
    import torch

    a, b = torch.randn(rows, dim), torch.randn(cols, dim)
    a @ b.T  # warm-up
    best = min(_timed(lambda: a @ b.T) for _ in range(repeats))
    return 2.0 * rows * cols * dim / best


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--db", type=int, default=100_000, help="database rows (default 100,000; try 1,000,000)")
    p.add_argument("--queries", type=int, default=10_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=20)
    p.add_argument("--ids", type=int, default=None, help="individuals (default: db / 8)")
    p.add_argument("--groups", type=int, default=None, help="groups of similar whales (default: db / 1000; 0: none)")
    p.add_argument("--mode", choices=("exact", "approx", "both"), default="both")
    p.add_argument("--backend", choices=("torch", "faiss"), default="torch", help="exact search's backend")
    p.add_argument("--budget-mb", type=float, default=None, help="exact search's score block (default: a tenth of free RAM)")
    p.add_argument("--nprobe", type=int, nargs="+", default=[32], help="approx: cells scanned per query (several: a sweep)")
    p.add_argument("--nlist", type=int, default=None, help="approx: cells (default: sqrt(db))")
    p.add_argument("--rerank", type=int, default=2, help="approx: shortlist of rerank x k re-scored exactly")
    p.add_argument("--index-dir", default=None, help="approx: where the index lives (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import tempfile

    import torch

    from core.ann import ApproxIndex, recall_at
    from core.search import exact_topk

    rng = np.random.default_rng(args.seed)
    groups = max(1, args.db // 1000) if args.groups is None else args.groups
    centres = directions(args.ids or max(1, args.db // 8), args.dim, rng,
                         directions(groups, args.dim, rng) if groups else None)
    db = embeddings(args.db, args.dim, centres, rng)
    q = embeddings(args.queries, args.dim, centres, rng)
    emb_bytes = db.nbytes + q.nbytes
    rate = gemm_rate(args.dim)
    bound = 2.0 * args.queries * args.db * args.dim / rate
    result = {"db": args.db, "queries": args.queries, "dim": args.dim, "k": args.k, "threads": torch.get_num_threads(),
              "groups": groups, "whales": len(centres), "gemm_gflops": rate / 1e9, "matmul_bound_s": bound, "embeddings_gb": emb_bytes / 1e9, "modes": {}}
    rows = [("matmul bound (2QND / GEMM rate)", bound, None, None, None)]
    exact = None
    if args.mode in ("exact", "both"):
        budget = int(args.budget_mb * (1 << 20)) if args.budget_mb else None
        with PeakRSS() as mem:
            t = time.perf_counter()
            sims, exact = exact_topk(q, db, args.k, backend=args.backend, budget=budget)
            took = time.perf_counter() - t
        result["modes"]["exact"] = {"backend": args.backend, "seconds": took, "x_bound": took / bound,
                                    "peak_rss_gb": mem.peak / 1e9, "x_embeddings": mem.peak / emb_bytes, "recall": 1.0}
        rows.append((f"exact, streaming ({args.backend})", took, took / bound, mem.peak, 1.0))
    if args.mode in ("approx", "both"):
        folder = args.index_dir or tempfile.mkdtemp(prefix="whaleid_ann_")
        with PeakRSS() as mem_build:
            t = time.perf_counter()
            index = ApproxIndex.build(folder, db, [str(i) for i in range(args.db)], nlist=args.nlist, seed=args.seed)
            built = time.perf_counter() - t
        if exact is None:  # recall on a sample when exact was not run
            pick = np.sort(rng.choice(args.queries, min(args.queries, 500), replace=False))
            reference = exact_topk(q[pick], db, args.k)[1]
        else:
            pick, reference = np.arange(args.queries), exact
        result["modes"]["approx"] = []
        for nprobe in args.nprobe:
            with PeakRSS() as mem:
                t = time.perf_counter()
                sims_a, found = index.search(q, args.k, nprobe=nprobe, rerank=args.rerank, check_recall=0)
                took = time.perf_counter() - t
            recall = recall_at(found[pick], reference)
            row = {"index": f"IVF{index.meta['nlist']},SQ8 + exact rerank x{args.rerank}", "nprobe": nprobe,
                   "build_seconds": built, "build_peak_rss_gb": mem_build.peak / 1e9, "seconds": took,
                   "x_bound": took / bound, "peak_rss_gb": mem.peak / 1e9, "x_embeddings": mem.peak / emb_bytes,
                   "recall": recall}
            if "exact" in result["modes"]:
                row["speedup_vs_exact"] = result["modes"]["exact"]["seconds"] / took
            result["modes"]["approx"].append(row)
            rows.append((f"approx IVF{index.meta['nlist']},SQ8 nprobe {nprobe} (build {built:.0f} s)", took,
                         took / bound, mem.peak, recall))
    print(f"{args.queries:,} queries x {args.db:,} database x {args.dim}-d, top {args.k}, {result['threads']} threads, "
          f"GEMM {rate / 1e9:.1f} GFLOP/s, embeddings {emb_bytes / 1e9:.2f} GB")
    print(f"| {'search':<58} | {'seconds':>8} | {'x bound':>7} | {'peak RSS GB':>11} | {'x emb':>5} | {'recall@' + str(args.k):>9} |")
    print(f"|{'-' * 60}|{'-' * 10}|{'-' * 9}|{'-' * 13}|{'-' * 7}|{'-' * 11}|")
    for name, secs, ratio, peak, recall in rows:
        fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
        print(f"| {name:<58} | {secs:>8.2f} | {fmt(ratio, '>7.2f'):>7} | {fmt(peak and peak / 1e9, '>11.2f'):>11} | "
              f"{fmt(peak and peak / emb_bytes, '>5.2f'):>5} | {fmt(recall, '>9.4f'):>9} |")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
