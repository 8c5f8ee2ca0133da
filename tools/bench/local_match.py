"""What ``local_match`` costs: keypoints per photo, matching and verification per pair, memory per photo, and the
projection for the competition's test set.

    python -m tools.bench.local_match [--data data/synthetic/small/test] [--photos 200] [--pairs 2000]
                                      [--shortlist 50] [--threads 2]
                                      [--detector sift xfeat xfeat+lighterglue]

Reads ``--photos`` photos of a survey folder (its metadata.csv), extracts their keypoints on one thread, then
matches ``--pairs`` random pairs of them on one thread, timing the ratio-test matching and the RANSAC
verification apart, and the whole step's pairs on ``--threads`` threads, for each ``--detector`` in turn. Prints
each stage's milliseconds per detector side by side, with the last detector's ratio to the first
(``DETECTOR+MATCHER``: that detector's keypoints paired by a learned matcher, ``xfeat+lighterglue``), the kilobytes
a photo's keypoints take, and the projection for the 2022 test set (about 3,400 distinct photos, 4,419 queries,
``--shortlist`` candidates each).
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
    from plugins.postprocess.multi_match import CHOICES

    p.add_argument("--detector", nargs="+", choices=CHOICES, default=["sift"], help="one or more, measured in "
                   "one run and printed side by side with the last's ratio to the first (default sift)")
    args = p.parse_args(argv)

    import pandas as pd

    meta = pd.read_csv(args.data / "metadata.csv", dtype=str)
    files = [str(args.data / f) for f in meta["path"][: args.photos]]
    got = {d: measure(d, files, args) for d in args.detector}
    names = list(got)
    print(f"{len(files)} photos of {args.data} at {args.max_side} px; keypoints a photo: "
          + ", ".join(f"{d} {got[d]['keypoints']:.0f}" for d in names))
    rows = [("keypoints, per photo (ms, one thread)", "extract_ms"), ("matching, per pair (ms, one thread)", "match_ms"),
            ("RANSAC verification, per pair (ms, one thread)", "ransac_ms"),
            (f"a pair, {args.threads} threads (ms)", "pair_threads_ms"), ("keypoints in memory (KB a photo)", "kb"),
            (f"2022 test set, {args.threads} threads (minutes)", "minutes")]
    ratio = f" | {names[-1]} / {names[0]}" if len(names) > 1 else ""
    print(f"| stage | " + " | ".join(names) + f"{ratio} |\n|---|" + "---|" * (len(names) + bool(ratio)))
    for label, key in rows:
        cells = " | ".join(f"{got[d][key]:.2f}" for d in names)
        r = f" | {got[names[-1]][key] / got[names[0]][key]:.2f}x" if ratio and got[names[0]][key] > 0 else (" | -" if ratio else "")
        print(f"| {label} | {cells}{r} |")
    print(f"the 2022 test set: {TEST_PHOTOS} photos, {TEST_QUERIES} queries x {args.shortlist} candidates = "
          f"{TEST_QUERIES * args.shortlist} pairs (at most twice for mirrored lateral pairs)")


def measure(detector: str, files: list, args) -> dict:
    """One detector's costs on ``files``: keypoints per photo, matching and RANSAC per pair on one thread, a pair
    on ``args.threads`` threads, memory, and the projection for the 2022 test set."""
    from plugins.postprocess.local_match import LocalMatch, ransac_similarity

    from plugins.postprocess.multi_match import matcher_options

    step = LocalMatch(max_side=args.max_side, workers=args.threads, **matcher_options(detector))
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
    seconds = TEST_PHOTOS * extract_ms / 1000 / args.threads + TEST_QUERIES * args.shortlist * pair_threads_ms / 1000
    return {"keypoints": float(np.mean([len(xy) for xy, _ in feats])), "extract_ms": extract_ms, "match_ms": match_ms,
            "ransac_ms": ransac_ms, "pair_threads_ms": pair_threads_ms, "kb": per_photo / 1024, "minutes": seconds / 60}


if __name__ == "__main__":
    main()
