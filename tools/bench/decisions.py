"""How much the catalogue decides by itself, on bench surveys of both renderers and several seeds.

    python -m tools.bench.decisions [--variants base outline/calm ...] [--seeds 0 1] [--folds one|all]
                                    [--detector xfeat|sift] [--config configs/synthetic_cpu.yaml]
                                    [--out runs/bench_decisions]

For each variant (``tools.bench.quality``'s surveys, written on first use) and seed it trains the config
through ``core/run.py`` (``--folds all``: every fold, so every training whale calibrates; ``one``: fold 0, the
one-fold path, five times cheaper), then runs ``tools.identify_demo`` on the run: the catalogue of the training
whales, calibration on the held-out whales with ``--detector``'s keypoints (default XFeat's, as ``make
identify-demo``), the test photos of the latest year identified at 5% wrong decisions.
Prints one row per run: BAKS, BAUS and their geometric mean (ours and the top-1 cosine baseline), AUROC, the
share decided without review at 1% and 5% wrong decisions (expected on the held-out whales, observed on the
test whales) with the observed error, and the reviewer's simulated actions a photo (every photo reviewed, and
at 5%). Results are kept in ``OUT/results.jsonl``; an interrupted run picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tools.bench.common import ROOT, cores, launcher


def row(variant: str, seed: int, run: Path, seconds: float, detector: str = "sift") -> dict:
    m = json.loads((run / "identify" / "metrics.json").read_text())
    out = {"variant": variant, "seed": seed, "run": str(run), "seconds": round(seconds, 1), "detector": detector,
           "known": m["whaleid"]["known"], "new": m["whaleid"]["new"],
           "calibration_queries": (m.get("calibration") or {}).get("queries")}
    for key in ("baks", "baus", "geometric_mean", "auroc"):
        out[key], out[f"baseline_{key}"] = m["whaleid"][key], m["baseline"][key]
    for rate, p in m.get("operating_points", {}).items():
        for k in ("expected_decided", "observed_decided", "expected_error", "observed_error", "actions_per_photo",
                  "accept", "new"):
            out[f"{k}@{rate}"] = p[k]
    out["actions_review_all"] = m["review_all"]["actions_per_photo"]
    out["thresholds"] = m.get("thresholds")
    return out


def table(rows: list[dict]) -> str:
    head = ("| survey | seed | folds | keypoints | held-out photos | BAKS | BAUS | geometric mean (top-1 cosine) | AUROC | decided at 1%: "
            "expected / observed (wrong) | decided at 5%: expected / observed (wrong) | reviewer actions a photo: "
            "all / at 5% |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['seed']} | {r.get('folds', 'one')} | {r.get('detector', 'sift')} | "
            f"{r['calibration_queries']} | {r['baks']:.3f} | {r['baus']:.3f} | "
            f"{r['geometric_mean']:.3f} ({r['baseline_geometric_mean']:.3f}) | {r['auroc']:.3f} | "
            f"{r['expected_decided@0.01']:.1%} / {r['observed_decided@0.01']:.1%} ({r['observed_error@0.01']:.1%}) | "
            f"{r['expected_decided@0.05']:.1%} / {r['observed_decided@0.05']:.1%} ({r['observed_error@0.05']:.1%}) | "
            f"{r['actions_review_all']:.2f} / {r['actions_per_photo@0.05']:.2f} |")
    return head + "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.decisions", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", nargs="+", default=["base", "hard", "outline/calm", "outline/choppy"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--folds", choices=("one", "all"), default="one", help="train fold 0 only, or every fold")
    p.add_argument("--detector", default="xfeat", help="the keypoints of the local evidence (default xfeat, the "
                   "learned one make identify-demo uses; sift for SIFT)")
    p.add_argument("--config", default=str(ROOT / "configs" / "synthetic_cpu.yaml"))
    p.add_argument("--data-dir", type=Path, default=ROOT / "data" / "variants", help="where surveys are kept (tools.bench.quality's)")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_decisions")
    args = p.parse_args(argv)

    import subprocess

    from tools import identify_demo
    from tools.bench.quality import ensure_survey

    args.out.mkdir(parents=True, exist_ok=True)
    results = args.out / "results.jsonl"
    done = {(r["variant"], r["seed"], r.get("folds", "one"), r.get("detector", "sift")): r for r in
            (json.loads(line) for line in (results.read_text().splitlines() if results.is_file() else []) if line)}
    rows = []
    for variant in args.variants:
        for seed in args.seeds:
            key = (variant, seed, args.folds, args.detector)
            if key in done:
                rows.append(done[key])
                continue
            survey = ensure_survey(args.data_dir, "bench", variant)
            run = args.out / variant.replace("/", "-") / f"seed{seed}-{args.folds}"
            started = time.time()
            cmd = launcher(cores()) + [str(ROOT / "core" / "run.py"), "--config", args.config,
                                       f"data.root={survey / 'train'}", f"output_dir={run}", f"seed={seed}",
                                       f"data.fold_seed={seed}"] + (["data.fold=all"] if args.folds == "all" else [])
            run.mkdir(parents=True, exist_ok=True)
            if not (run / "cv.json" if args.folds == "all" else run / "metrics.json").is_file():  # trained once
                with open(run.parent / f"{run.name}.train.log", "w") as log:
                    subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            identify = run / "identify" / "catalogue.sqlite"
            if identify.is_file():  # calibrated with other keypoints: a fresh catalogue (its stores are kept)
                identify.unlink()
            if identify_demo.main([str(run), "--max-error", "0.05", "--detector", args.detector]):
                raise SystemExit(f"identify_demo failed on {run}")
            r = dict(row(variant, seed, run, time.time() - started, args.detector), folds=args.folds)
            with open(results, "a") as f:
                f.write(json.dumps(r) + "\n")
            rows.append(r)
    text = table(rows)
    (args.out / "decisions.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
