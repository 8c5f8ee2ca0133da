"""From a trained run to named whales, end to end on its own survey: ``make identify-demo RUN=runs/demo``.

    python -m tools.identify_demo RUN [--test DIR --labels CSV] [--per-viewpoint] [--max-error 0.05]

RUN is a cross-validated run (``make cv-demo``: every training whale is held out by one fold) or a single run
(one validation fold: the one-fold path, five times cheaper to train, calibrated on a fifth of the whales).

1. packs RUN (a cross-validated run: its first fold's model) into a bundle for this installation
   (``RUN/identify/bundle.zip``, ``submission.build --runtime here``), kept while those weights are unchanged;
2. ``whaleid catalogue build``: the catalogue (``RUN/identify/catalogue.sqlite``) of RUN's training data, every
   whale the run knew (its training and validation folds);
3. ``whaleid calibrate --local``: P(same whale), the whale-level verifier, the new-whale threshold and the
   operating points on RUN's held-out whales, which the model scoring them never trained on (every fold's, each
   scored by its fold's model; time-aware: their latest year's photos are the queries), from the global score
   with keypoint inliers between each photo and its candidates' best photos (``--global-only``: the score alone);
4. a time-aware open set of the survey's test whales (recovered from ``test_labels.csv``): the test photos before
   the test set's latest year are added to the catalogue, the photos of that year are identified, so a test
   whale first seen in that year is a new whale and one seen before is known;
5. ``whaleid identify --evaluate --max-error 0.05``: the three-way decision per photo (match, review, new
   whale) at that operating point, BAKS, BAUS, their geometric mean, AUROC and ECE beside the global score alone
   and the top-1 cosine baseline, and at 1% and 5% wrong decisions the share decided without review and the
   error, expected (held-out whales) and observed, with the reviewer's simulated workload, into ``RUN/identify/metrics.json``
   (``tools.report`` draws its reliability diagram and score distributions) and ``decisions.csv``.

Then ``whaleid review --db RUN/identify/catalogue.sqlite --bundle RUN/identify/bundle.zip`` serves the review page.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.identify_demo", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder core/run.py wrote: cross-validated (data.fold=all) or one "
                   "with a validation fold")
    p.add_argument("--max-error", type=float, default=0.05, help="identify's operating point (default 0.05: 5%%)")
    p.add_argument("--test", type=Path, help="the test folder (default: test/ beside the run's data.root)")
    p.add_argument("--labels", type=Path, help="its test_labels.csv (default: beside the test folder)")
    p.add_argument("--per-viewpoint", action="store_true", help="a new-whale threshold per viewpoint")
    p.add_argument("--workers", type=int, default=None, help="image loading processes")
    p.add_argument("--detector", help="keypoints for the local evidence: the local_match step's default (sift), or "
                   "xfeat (learned: pip install 'whaleid[matchers]'; make identify-demo's); the calibration records it")
    p.add_argument("--global-only", action="store_true", help="calibrate and decide without the local evidence "
                   "(keypoint matching), by the global score alone")
    args = p.parse_args(argv)

    from omegaconf import OmegaConf

    from catalogue.deciding import held_out
    from catalogue import cli
    from catalogue.deciding import out_of_fold
    from catalogue.embedding.embed import bundle_hash
    from catalogue.records.store import Catalogue
    from submission.build import BuildError, build

    run = args.run
    if not (run / "config.yaml").is_file():
        p.exit(2, f"error: {run}: no config.yaml; train the run first (make demo, or make cv-demo)\n")
    try:
        folds = out_of_fold.fold_runs(run)
    except ValueError as exc:
        p.exit(2, f"error: {exc}\n")
    model_run = folds[0]  # the model the catalogue is embedded with; every fold calibrates
    train = Path(OmegaConf.load(model_run / "config.yaml").data.root)
    test = args.test or train.parent / "test"
    labels = args.labels or test.parent / "test_labels.csv"
    for need in (train / "metadata.csv", test / "metadata.csv", labels):
        if not need.is_file():
            p.exit(2, f"error: {need} not found (--test and --labels name another test set)\n")
    out = run / "identify"
    out.mkdir(exist_ok=True)
    bundle, db = out / "bundle.zip", out / "catalogue.sqlite"
    weights = next((model_run / n for n in ("best.safetensors", "last.safetensors") if (model_run / n).is_file()), None)
    started = time.time()
    if not bundle.is_file() or (weights and weights.stat().st_mtime > bundle.stat().st_mtime):
        try:
            build([model_run], bundle, runtime="here")  # the catalogue runs here, never in the 2022 runtime
        except BuildError as exc:
            p.exit(2, f"error: {exc}\n")
        print(f"[1/5] packed {model_run} into {bundle}", flush=True)
    else:
        print(f"[1/5] {bundle} is up to date with {model_run}'s weights", flush=True)
    if db.is_file() and Catalogue.open(db).meta["model_hash"] != bundle_hash(bundle):
        aside = db.with_name(f"catalogue.{time.strftime('%Y%m%d-%H%M%S')}.sqlite")
        db.rename(aside)
        print(f"      the catalogue was embedded by earlier weights: kept as {aside}, a new one is built")
    workers = [] if args.workers is None else ["--workers", str(args.workers)]
    cut = held_out.last_year_cut(cli.read_photos(test, require_identity=False)["date"])
    steps = [
        ("[2/5] the catalogue of the run's training whales", ["catalogue", "build", "--bundle", str(bundle), "--data",
                                                              str(train), "--db", str(db), "--batch", "training"]),
        (f"[3/5] calibration on the held-out whales of {len(folds)} fold{'s' * (len(folds) > 1)}",
         ["calibrate", "--db", str(db), "--run", str(run)]
         + (["--per-viewpoint"] if args.per_viewpoint else []) + ([] if args.global_only else ["--local"])
         + (["--detector", args.detector] if args.detector and not args.global_only else [])),
        (f"[4/5] the test photos before {cut} join the catalogue", ["catalogue", "build", "--bundle", str(bundle),
                                                                     "--data", str(test), "--labels", str(labels),
                                                                     "--db", str(db), "--before", cut, "--batch", "test"]),
        (f"[5/5] identify the test photos from {cut} on", ["identify", "--bundle", str(bundle), "--db", str(db),
                                                           "--data", str(test), "--labels", str(labels), "--from", cut,
                                                           "--evaluate", "--max-error", str(args.max_error),
                                                           "--out", str(out / "decisions.csv"),
                                                           "--metrics", str(out / "metrics.json")]),
    ]
    for title, cmd in steps:
        print(title, flush=True)
        code = cli.main(cmd + workers)
        if code:
            return code
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["cut"], metrics["seconds"] = cut, round(time.time() - started, 1)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    print(f"done in {metrics['seconds']:.0f} s: {out / 'decisions.csv'}, {out / 'metrics.json'}; review with\n"
          f"  .venv/bin/whaleid review --db {db} --bundle {bundle}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
