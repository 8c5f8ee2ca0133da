"""What ``local_match`` costs: keypoints per photo, matching and verification per pair, memory per photo, and the
projection for the competition's test set.

    python -m tools.bench.local_match [--data data/synthetic/small/test] [--photos 200] [--pairs 2000]
                                      [--shortlist 50] [--threads 2]

Reads ``--photos`` photos of a survey folder (its metadata.csv), extracts their keypoints on one thread, then
matches ``--pairs`` random pairs of them on one thread, timing the ratio-test matching and the RANSAC
verification apart, and the whole step's pairs on ``--threads`` threads. Prints each stage's milliseconds, the
stages side by side as shares of a pair's cost, the bytes a photo's keypoints take (per 1,000 photos), and the
projection for the 2022 test set (about 3,400 distinct photos, 4,419 queries, ``--shortlist`` candidates each).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

TEST_PHOTOS, TEST_QUERIES = 3400, 4419  # the 2022 challenge's hidden test set (the competition's data page)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.bench.local_match", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("data/synthetic/small/test"))
    p.add_argument("--photos", type=int, default=200)
    p.add_argument("--pairs", type=int, default=2000)
    p.add_argument("--shortlist", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-side", type=int, default=512)
    from plugins.postprocess.local_match import DETECTORS

    p.add_argument("--detector", choices=DETECTORS, default="sift")
    args = p.parse_args(argv)

    import pandas as pd

    from plugins.postprocess.local_match import LocalMatch, ransac_similarity

    meta = pd.read_csv(args.data / "metadata.csv", dtype=str)
    files = [str(args.data / f) for f in meta["path"][: args.photos]]
    step = LocalMatch(max_side=args.max_side, detector=args.detector, workers=args.threads)
    started = time.perf_counter()
    feats = [step.features(f) for f in files]
    extract_ms = 1000 * (time.perf_counter() - started) / len(files)
    rng = np.random.default_rng(0)
    pairs = [tuple(rng.choice(len(files), 2, replace=False)) for _ in range(args.pairs)]
    started = time.perf_counter()
    matched = [step.matches(feats[a], feats[b]) for a, b in pairs]
    match_ms = 1000 * (time.perf_counter() - started) / len(pairs)
    started = time.perf_counter()
    for src, dst in matched:
        if len(src) >= 3:
            ransac_similarity(src, dst, step.ransac_px, step.ransac_iters)
    ransac_ms = 1000 * (time.perf_counter() - started) / len(pairs)
    started = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(lambda ab: step.inliers(feats[ab[0]], feats[ab[1]]), pairs))
    pair_threads_ms = 1000 * (time.perf_counter() - started) / len(pairs)
    per_photo = np.mean([xy.nbytes + d.nbytes for xy, d in feats])
    keypoints = np.mean([len(xy) for xy, _ in feats])
    pair_ms = match_ms + ransac_ms
    print(f"{len(files)} photos of {args.data} at {args.max_side} px, {args.detector}: {keypoints:.0f} keypoints a photo")
    print(f"| stage | ms, one thread | share of a pair |\n|---|---|---|\n"
          f"| keypoints, per photo | {extract_ms:.2f} | - |\n| ratio-test matching, per pair | {match_ms:.2f} | "
          f"{match_ms / pair_ms:.0%} |\n| RANSAC verification, per pair | {ransac_ms:.2f} | {ransac_ms / pair_ms:.0%} |\n"
          f"| a pair, {args.threads} threads | {pair_threads_ms:.2f} | {pair_threads_ms / pair_ms:.2f}x one thread |")
    print(f"keypoints in memory: {per_photo / 1024:.1f} KB a photo, {per_photo * 1000 / 2 ** 20:.0f} MB per 1,000 photos")
    total_pairs = TEST_QUERIES * args.shortlist
    seconds = TEST_PHOTOS * extract_ms / 1000 / args.threads + total_pairs * pair_threads_ms / 1000
    print(f"projection for the 2022 test set ({TEST_PHOTOS} photos, {TEST_QUERIES} queries x {args.shortlist} "
          f"candidates = {total_pairs} pairs, at most twice for mirrored lateral pairs): keypoints "
          f"{TEST_PHOTOS * extract_ms / 1000 / args.threads:.0f} s, matching {total_pairs * pair_threads_ms / 1000:.0f} s, "
          f"{seconds / 60:.1f} minutes on {args.threads} threads; memory {per_photo * TEST_PHOTOS / 2 ** 20:.0f} MB")


if __name__ == "__main__":
    main()
