"""Local evidence arms on the quality bench's trained runs: the same weights ranked globally, fused with SIFT
(the one logistic), fused per view relation (today's default), fused with the learned XFeat keypoints (matched as
mutual nearest neighbours, or by the learned matcher LighterGlue: ``lighterglue_view``), and with both detectors
(``multi_match``: whichever of WildFusion's mean, one logistic and the view fusion ranks held-out validation
queries best, or the view fusion forced), scored on the test whales.

    python -m tools.bench.local_fusion [--bench runs/bench_quality] [--variants base hard ...] [--seeds 0 1]
                                       [--arms global sift sift_view xfeat xfeat_view
                                       lighterglue_view both both_view] [--shortlist 50]

For every run ``tools.bench.quality`` trained (``BENCH/results.jsonl``, its ``ours`` rows of ``--label``) and each
arm, a copy of the run (``RUN/arms/<arm>``) gets ``local_match`` with the arm's options fitted on the run's own
validation whales (``core.training.fit``, as ``tools.fit_local``; ``global``: no local step), is packed for this
installation (``submission.build --runtime here``: XFeat needs torch >= 2) and checked with this project's
interpreter on the survey's test whales. Every arm is scored the same way, so the columns compare; the quality
bench's own figures come from the 2022 twin and differ from these in the third decimal.

Prints, per survey and arm, the mAP (mean over seeds), its ratio to the global arm, the scenarios a top photo
and a lateral photo share (top_vs_lateral, lateral_vs_top) and the matching cost per validation pair; then each
other arm against ``sift`` seed by seed, beside the seed noise (``versus``); keeps each
result in ``BENCH/local_fusion.jsonl`` (an interrupted run picks up where it stopped).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ARMS = {"global": None, "sift": {"detector": "sift", "fit_kind": "logistic"},
        "sift_view": {"detector": "sift", "fit_kind": "view"}, "xfeat": {"detector": "xfeat", "fit_kind": "logistic"},
        "xfeat_view": {"detector": "xfeat", "fit_kind": "view"},
        "lighterglue_view": {"detector": "xfeat", "matcher": "lighterglue", "fit_kind": "view"},
        "both": {"name": "multi_match", "detectors": ["sift", "xfeat"], "fit_kind": "choose"},
        "both_view": {"name": "multi_match", "detectors": ["sift", "xfeat"], "fit_kind": "view"}}
CROSS = ("top_vs_lateral", "lateral_vs_top")
ROOT = Path(__file__).resolve().parents[2]


def arm_run(run: Path, arm: str, shortlist: int) -> tuple[Path, dict]:
    """A copy of ``run`` ranking as ``arm`` asks, and what its fit reported (empty for ``global``)."""
    from core.training.fit import fit_postprocess
    from tools.bench.quality import rank_globally
    from tools.fit_local import local_chain

    out = run / "arms" / arm
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(run, out, ignore=shutil.ignore_patterns("checkpoint", "*.zip", "arms", "global"))
    if ARMS[arm] is None:
        rank_globally(out)
        return out, {}
    options = dict(ARMS[arm], shortlist=shortlist)
    report = fit_postprocess(out, local_chain(out, options, options.pop("name", "local_match")))
    step = report["steps"][0]
    return out, {"fusion": step["options"]["fusion"], "pairs": step["pairs"], "fit_seconds": report["rank_seconds"],
                 "ms_per_pair": round(1000 * report["rank_seconds"] / max(step["pairs"], 1), 2),
                 "val_global": report["validation_before"]["mAP"],
                 "val_fused_in_sample": report["validation_after_in_sample"]["mAP"]}


def score(survey: Path, run: Path) -> dict:
    from submission.build import build
    from submission.check import check

    started = time.time()
    build([run], run / "here.zip", runtime="here")
    checked = check(run / "here.zip", survey / "test", survey / "test_labels.csv", runtime="here")
    if checked["problems"]:
        raise RuntimeError(f"submission check of {run / 'here.zip'} failed: {checked['problems']}")
    return {"mAP": checked["mAP"], "scenarios": checked["scenarios"], "check_seconds": round(time.time() - started, 1)}


def table(rows: list[dict]) -> str:
    arms = [a for a in ARMS if any(r["arm"] == a for r in rows)]
    lines = ["| survey | arm | seeds | mAP | / global | " + " | ".join(CROSS) + " | ms a pair (fit) |",
             "|---|---|---|---|---|---|---|---|"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        base = {r["seed"]: r for r in rows if r["variant"] == variant and r["arm"] == "global"}
        for arm in arms:
            got = [r for r in rows if r["variant"] == variant and r["arm"] == arm]
            if not got:
                continue
            ratio = [r["mAP"] / base[r["seed"]]["mAP"] for r in got if r["seed"] in base and base[r["seed"]]["mAP"] > 0]
            cross = [np.mean([r["scenarios"].get(c, np.nan) for r in got]) for c in CROSS]
            cost = [r["ms_per_pair"] for r in got if "ms_per_pair" in r]
            lines.append(f"| {variant} | {arm} | {len(got)} | {np.mean([r['mAP'] for r in got]):.4f} | "
                         f"{np.mean(ratio):.3f}x | " + " | ".join(f"{c:.3f}" for c in cross)
                         + (f" | {np.mean(cost):.1f} |" if cost else " | - |"))
    return "\n".join(lines)


def versus(rows: list[dict], arm: str, ref: str = "sift") -> str:
    """``arm`` against ``ref`` (today's default) and against the global ranking, seed by seed on the same weights:
    per survey the mean difference in mAP and in each cross-view scenario, beside the seed noise (the standard
    deviation over seeds of ``ref``'s mAP, and of the global ranking's scenario)."""
    lines = [f"| survey | seeds | {arm} - {ref} (mAP) | sd of {ref} over seeds | "
             + " | ".join(f"{c}: {arm} - global (sd of global)" for c in CROSS) + " |",
             "|---|---|---|---|" + "---|" * len(CROSS)]
    diffs = []
    for variant in dict.fromkeys(r["variant"] for r in rows):
        by = {(r["arm"], r["seed"]): r for r in rows if r["variant"] == variant}
        seeds = sorted(s for a, s in by if a == arm and (ref, s) in by and ("global", s) in by)
        if not seeds:
            continue
        d = [by[(arm, s)]["mAP"] - by[(ref, s)]["mAP"] for s in seeds]
        diffs += d
        sd = np.std([by[(ref, s)]["mAP"] for s in seeds], ddof=1) if len(seeds) > 1 else float("nan")
        cells = []
        for c in CROSS:
            dc = [by[(arm, s)]["scenarios"].get(c, np.nan) - by[("global", s)]["scenarios"].get(c, np.nan) for s in seeds]
            g = [by[("global", s)]["scenarios"].get(c, np.nan) for s in seeds]
            cells.append(f"{np.mean(dc):+.4f} ({np.std(g, ddof=1) if len(seeds) > 1 else float('nan'):.4f})")
        lines.append(f"| {variant} | {len(seeds)} | {np.mean(d):+.4f} | {sd:.4f} | " + " | ".join(cells) + " |")
    if diffs:
        lines.append(f"| all | {len(diffs)} survey-seeds | {np.mean(diffs):+.4f} (ahead on {sum(x > 0 for x in diffs)}, "
                     f"behind on {sum(x < 0 for x in diffs)}) | | " + " | " * (len(CROSS) - 1) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.local_fusion", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bench", type=Path, default=ROOT / "runs" / "bench_quality", help="tools.bench.quality's --out")
    p.add_argument("--label", default="default", help="the quality bench's arm whose runs are used")
    p.add_argument("--variants", nargs="*", help="surveys (default: every one the bench trained)")
    p.add_argument("--seeds", nargs="*", type=int, help="seeds (default: every one the bench trained)")
    p.add_argument("--arms", nargs="+", choices=list(ARMS), default=list(ARMS))
    p.add_argument("--shortlist", type=int, default=50, help="candidates matched per query")
    p.add_argument("--data-dir", type=Path, default=ROOT / "data" / "variants", help="where the bench keeps its surveys")
    p.add_argument("--preset", default="bench")
    args = p.parse_args(argv)
    from tools.bench.quality import append_result, ensure_survey, load_results

    ours = [r for r in load_results(args.bench / "results.jsonl") if r["kind"] == "ours" and r["label"] == args.label
            and (not args.variants or r["variant"] in args.variants) and (not args.seeds or r["seed"] in args.seeds)]
    if not ours:
        p.exit(2, f"error: {args.bench / 'results.jsonl'} has no trained run of label {args.label!r} for these "
                  "surveys and seeds; run python -m tools.bench.quality first\n")
    out = args.bench / "local_fusion.jsonl"
    for row in ours:
        run = args.bench / "runs" / f"{args.label}-{row['variant'].replace('/', '-')}-s{row['seed']}"
        survey = ensure_survey(args.data_dir, args.preset, row["variant"])
        for arm in args.arms:
            if any(r["variant"] == row["variant"] and r["seed"] == row["seed"] and r["arm"] == arm
                   and r["shortlist"] == args.shortlist for r in load_results(out)):
                continue
            print(f"{row['variant']} seed {row['seed']}: {arm}", file=sys.stderr, flush=True)
            arm_dir, fitted = arm_run(run, arm, args.shortlist)
            result = {"variant": row["variant"], "seed": row["seed"], "arm": arm, "shortlist": args.shortlist,
                      **fitted, **score(survey, arm_dir)}
            append_result(out, result)
            print(json.dumps({k: result.get(k) for k in ("variant", "seed", "arm", "mAP", "ms_per_pair")}), flush=True)
    rows = [r for r in load_results(out) if r["shortlist"] == args.shortlist
            and any(r["variant"] == o["variant"] and r["seed"] == o["seed"] for o in ours)]
    print(table(rows))
    for arm in args.arms:
        if arm not in ("global", "sift") and any(r["arm"] == arm for r in rows) and any(r["arm"] == "sift" for r in rows):
            print(versus(rows, arm))
    return 0


if __name__ == "__main__":
    sys.exit(main())
