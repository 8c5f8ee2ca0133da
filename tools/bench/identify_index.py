"""identify at catalogue scale: whale ranking through exact search against the approximate index, side by side.

    python -m tools.bench.identify_index [--photos 1000000] [--queries 500] [--dim 512] [--top 20]

A synthetic catalogue shaped like ``tools.bench.search``'s (groups of similar whales, 8 photos a whale around
its whale's direction, 512-d unit embeddings), ranked at whale level by ``catalogue.deciding.match.rank_whales`` for
``--queries`` new photos of catalogue whales: once by exact search and once through ``catalogue.embedding.index`` (built
in a temporary folder, its build timed apart: it is done once per catalogue; its first search, which reads the
float file's pages and warms faiss up, timed apart too). Prints milliseconds per query for each (the timings
include the whale ranking and, for the index, its recall check on a sample against exact search),
their ratio, the index's build time, and recall@top of whales: the share of the exact ranking's top whales that
the index's ranking also has (and how often the first whale is the same). One table, then one JSON line.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m tools.bench.identify_index", description=__doc__.split("\n\n")[0])
    p.add_argument("--photos", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=500)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--top", type=int, default=20, help="candidate whales per query")
    p.add_argument("--nprobe", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from catalogue.embedding.index import searcher
    from catalogue.deciding.match import rank_whales
    from tools.bench.search import directions

    rng = np.random.default_rng(args.seed)
    whales = max(1, args.photos // 8)
    centres = directions(whales, args.dim, rng, directions(max(1, args.photos // 1000), args.dim, rng))

    def photos(n):
        who = rng.integers(0, whales, n)
        out = np.empty((n, args.dim), np.float32)
        for s in range(0, n, 65536):
            x = centres[who[s:s + 65536]] + rng.standard_normal((len(who[s:s + 65536]), args.dim), dtype=np.float32) * (
                0.85 / np.sqrt(args.dim))
            out[s:s + len(x)] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out, who

    cat, cat_who = photos(args.photos)
    q, _ = photos(args.queries)
    names = np.array([f"w{i}" for i in range(whales)], dtype=object)[cat_who]
    ids = [str(i) for i in range(args.photos)]
    views = ["top"] * args.photos
    t = time.perf_counter()
    exact = rank_whales(q, None, cat, names, ids, views, top_n=args.top)
    exact_s = time.perf_counter() - t
    folder = Path(tempfile.mkdtemp(prefix="whaleid_identify_index_")) / "c.sqlite"
    t = time.perf_counter()
    search = searcher(folder, "0" * 64, ids, cat, above=0, nprobe=args.nprobe)
    build_s = time.perf_counter() - t
    t = time.perf_counter()
    approx = rank_whales(q, None, cat, names, ids, views, top_n=args.top, search=search)
    first_s = time.perf_counter() - t  # the first search after the build: pages of the float file read, faiss warms up
    t = time.perf_counter()
    approx = rank_whales(q, None, cat, names, ids, views, top_n=args.top, search=search)
    approx_s = time.perf_counter() - t
    verify_s = verify_time(exact, names, ids, rng)
    hits = sum(len({c.whale_id for c in a} & {c.whale_id for c in e}) for a, e in zip(approx, exact))
    total = sum(len(e) for e in exact)
    first = np.mean([bool(a) and bool(e) and a[0].whale_id == e[0].whale_id for a, e in zip(approx, exact)])
    result = {"photos": args.photos, "whales": whales, "queries": args.queries, "dim": args.dim, "top": args.top,
              "exact_ms_per_query": 1000 * exact_s / args.queries, "index_ms_per_query": 1000 * approx_s / args.queries,
              "speedup": exact_s / approx_s, "index_build_s": build_s,
              "index_first_call_ms_per_query": 1000 * first_s / args.queries, "whale_recall": hits / total,
              "first_whale_same": float(first), "photo_recall_sample": search.recall, "nprobe": args.nprobe,
              "verifier_ms_per_query": 1000 * verify_s / args.queries}
    print(f"{args.queries} queries against {args.photos:,} photos of {whales:,} whales, {args.dim}-d, top {args.top} "
          f"whales")
    print("| search | ms per query | x exact | whale recall@%d | first whale same |" % args.top)
    print("|---|---|---|---|---|")
    print(f"| exact | {result['exact_ms_per_query']:.2f} | 1.00 | 1.0000 | 1.0000 |")
    print(f"| index, first call after its build (built once in {build_s:.1f} s) | "
          f"{result['index_first_call_ms_per_query']:.2f} | {first_s / exact_s:.3f} | | |")
    print(f"| index (nprobe {args.nprobe}) | {result['index_ms_per_query']:.2f} | "
          f"{approx_s / exact_s:.3f} | {result['whale_recall']:.4f} | {first:.4f} |")
    print(f"| the whale-level verifier after the ranking (its features from the catalogue, P, re-ranking) | "
          f"{result['verifier_ms_per_query']:.2f} | {verify_s / exact_s:.3f} | | |")
    print(json.dumps(result))
    return result


def verify_time(ranked, names, ids, rng) -> float:
    """Seconds for identify's whale-level step on ``ranked``: the catalogue's context (every photo's view and date,
    every whale's photo count), the features of every candidate, a fitted verifier's P and the re-ranking."""
    import pandas as pd

    from catalogue.deciding import verifier as vf

    n = len(ids)
    table = pd.DataFrame({"image_id": ids, "whale_id": names, "viewpoint": np.where(rng.random(n) < 0.5, "top", "left"),
                          "date": [f"{2015 + d // 365}-{1 + (d % 365) // 31:02d}-{1 + d % 28:02d}"
                                   for d in rng.integers(0, 5 * 365, n)]})
    dates = ["2020-07-01"] * len(ranked)
    counts = [[int(k) for k in rng.integers(0, 40, len(c))] for c in ranked]
    sample = vf.features(ranked[:50], counts[:50], ["top"] * 50, dates[:50], vf.Context(table.head(1000)), [500] * 50)
    x = np.concatenate(sample)
    model = vf.Verifier().fit(x, rng.random(len(x)) < 0.2)
    t = time.perf_counter()
    rows = vf.features(ranked, counts, ["top"] * len(ranked), dates, vf.Context(table), [500] * len(ranked))
    vf.rescore(ranked, rows, model, counts)
    [model.why_rows(r) for r in rows]  # each candidate's explanation, as identify stores it
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
