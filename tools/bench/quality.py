"""Quality benchmark: a whaleid recipe against a bare PyTorch loop on survey variants, scored on unseen whales.

    python -m tools.bench.quality [--variants base hard ...] [--seeds 0 1] [--config configs/synthetic_cpu.yaml]
                                  [--epochs N] [--set key=value ...] [--label NAME] [--out runs/bench_quality]

For each variant (``tools.synthesize --preset bench --variant V``, or ``outline/V`` for the second
renderer ``tools.outline_survey``, which shares no code with the first and only confirms choices; written
to ``--data-dir`` on first use) and seed it

1. trains the config through ``core/run.py`` under ``accelerate launch`` on all cores, packs the best
   weights with ``submission.build`` and scores them with ``submission.check`` on the variant's test
   whales (never seen in training), beside a random ranking;
2. trains ``tools.bench.bare_loop`` (nothing of whaleid) on exactly the images the run trained on
   (its ``split.csv``) for the same epochs, batch size and steps, on the same cores, and scores it on
   the same test set with the same metric: from scratch (resnet18) and from the same ImageNet
   EfficientNet-Lite0 weights the default starts from (``--bare scratch pretrained``).

3. the same weights with and without ``local_match`` (keypoint matching of each query's top 50 fused with the
   global score, fitted on the run's validation whales): a config that names it (the default) was fitted by the
   runner, and the global ranking is scored beside it; for one that does not, ``--fused SHORTLIST`` (50; 0:
   not) fits it afterwards (``tools.fit_local``). Both bundles are scored on the same test whales.

Prints a table (variant x {ours, ours fused, both bare loops, random}, mean and spread over seeds) with ours / bare,
how many seeds ours beat the pretrained bare loop, and keeps every result in ``OUT/results.jsonl``: an interrupted benchmark picks up
where it stopped, and a bare result is reused by every arm (``--label``) that trains on the same images.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from tools.bench.common import ROOT, cores, launcher
DEFAULT_VARIANTS = ("base", "small_marks", "few_marks", "any_angle", "few_photos", "encounter_water", "low_res",
                    "lateral", "hard")


def ensure_survey(data_dir: Path, preset: str, variant: str) -> Path:
    """The survey of ``variant`` (``family/variant`` for the outline renderer), written on first use."""
    family, _, name = variant.rpartition("/")
    root = data_dir / preset / (f"{family}-{name}" if family else variant)
    if not (root / "test_labels.csv").is_file():
        print(f"synthesizing {preset}/{variant} into {root}", file=sys.stderr)
        if family == "outline":
            from tools.outline_survey import survey

            survey(preset, root, variant=name, seed=0)
        else:
            from tools.synthesize import synthesize

            synthesize(preset, root, seed=0, variant=variant)
    return root


def known_variants() -> list[str]:
    """``tools.synthesize``'s variants, then the second renderer's as ``outline/<name>``."""
    from tools.outline_survey import VARIANTS as OUTLINE
    from tools.synthesize import VARIANTS

    return list(VARIANTS) + [f"outline/{v}" for v in OUTLINE]


def run_ours(survey: Path, run_dir: Path, config: str, seed: int, epochs: int | None, sets: list[str],
             threads: int, fused: int = 0) -> dict:
    """Train through the runner, pack, check on the test whales; the check's JSON plus the run's metrics. With
    ``fused`` (a shortlist size), also the same weights with ``local_match`` fitted on the run's validation
    whales (``tools.fit_local``), packed and checked on the same test whales: ``fused_mAP``."""
    launch = launcher(threads)
    args = ["--config", config, f"data.root={survey / 'train'}", f"output_dir={run_dir}", f"seed={seed}",
            f"data.fold_seed={seed}"]  # the seed picks the split too: the bare results are keyed by it
    args += [f"train.epochs={epochs}"] if epochs else []
    started = time.time()
    _run(launch + [str(ROOT / "core" / "run.py")] + args + sets, run_dir / "train.log")
    train_seconds = time.time() - started
    checked = pack_and_check(survey, run_dir, run_dir / "submission.zip", run_dir / "build.log")
    history = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    local = {}
    if (run_dir / "postprocess_fit.json").exists():  # the config fused already: score the global ranking beside it
        local = {"fused_mAP": checked["mAP"], "fused_scenarios": checked["scenarios"]}
        checked = run_global(survey, run_dir)
    elif fused:
        local = run_fused(survey, run_dir, fused)
    return {**local, "mAP": checked["mAP"], "random_mAP": checked["random_mAP"], "scenarios": checked["scenarios"],
            "train_seconds": round(train_seconds, 1), "val_mAP": metrics["mAP"], "best_epoch": metrics["epoch"],
            "warnings": [w["code"] for w in metrics.get("warnings", [])],
            "loss_first": history[0].get("train_loss"), "loss_last": history[-1].get("train_loss"),
            "steps": history[-1]["steps"], "epochs": history[-1]["epoch"]}


def run_fused(survey: Path, run_dir: Path, shortlist: int) -> dict:
    """``local_match`` fitted on the run's validation whales, the fused bundle checked on the test whales."""
    from core.training.fit import fit_postprocess
    from tools.fit_local import local_chain

    started = time.time()
    report = fit_postprocess(run_dir, local_chain(run_dir, {"shortlist": shortlist}))
    checked = pack_and_check(survey, run_dir, run_dir / "submission_fused.zip", run_dir / "build_fused.log")
    return {"fused_mAP": checked["mAP"], "fused_scenarios": checked["scenarios"],
            "fusion": report["steps"][0]["options"]["fusion"], "shortlist": shortlist,
            "fused_val_global": report["validation_before"]["mAP"],
            "fused_val_in_sample": report["validation_after_in_sample"]["mAP"],
            "fused_seconds": round(time.time() - started, 1)}


def run_global(survey: Path, run_dir: Path) -> dict:
    """The same weights ranked without ``local_match`` (its ranking step cut back to the step's rows), checked on
    the test whales: the global column when the config itself fused."""
    import shutil

    plain = run_dir / "global"
    if plain.exists():
        shutil.rmtree(plain)
    shutil.copytree(run_dir, plain, ignore=shutil.ignore_patterns("checkpoint", "*.zip", "global"))
    rank_globally(plain)
    return pack_and_check(survey, plain, run_dir / "submission_global.zip", run_dir / "build_global.log")


def rank_globally(run: Path) -> None:
    """``run``'s chain as asked and fitted, without its local step, the ranking step cut back to the rows the local
    step kept; its ``fitted.yaml`` removed and ``config.yaml`` rewritten (on a copy of a run)."""
    from omegaconf import OmegaConf

    from core.training.runs import FITTED, run_config

    cfg = run_config(run)
    (run / FITTED).unlink(missing_ok=True)
    chain = OmegaConf.to_container(cfg.postprocess, resolve=True)
    rows = next((int(s.get("top_k", 20)) for s in chain if s["name"] in LOCAL_STEPS), None)
    chain = [s for s in chain if s["name"] not in LOCAL_STEPS]
    for s in chain:
        if rows and "top_k" in s:
            s["top_k"] = rows
    cfg.postprocess = chain
    OmegaConf.save(cfg, run / "config.yaml")


LOCAL_STEPS = ("local_match", "multi_match")


def pack_and_check(survey: Path, run_dir: Path, zip_path: Path, log_path: Path) -> dict:
    """``run_dir`` packed into ``zip_path`` and checked on the survey's test whales (its problems raise)."""
    from submission.check import check

    _run([sys.executable, "-m", "submission.build", "--run", str(run_dir), "--out", str(zip_path)], log_path)
    checked = check(zip_path, survey / "test", survey / "test_labels.csv")
    if checked["problems"]:
        raise RuntimeError(f"submission check of {zip_path} failed: {checked['problems']}")
    return checked


def _run(cmd: list[str], log_path: Path) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}); see {log_path}:\n"
                           + "\n".join(log_path.read_text().splitlines()[-15:]))


def bare_inputs(survey: Path, run_dir: Path) -> tuple[list[str], list[int]]:
    """The files and class indices the whaleid run trained on, in its split.csv's order."""
    split = pd.read_csv(run_dir / "split.csv", dtype={"image_id": str})
    train = split[split.role == "train"]
    meta = pd.read_csv(survey / "train" / "metadata.csv", dtype=str).set_index("image_id")
    return [str(survey / "train" / meta.loc[i, "path"]) for i in train.image_id], [int(c) for c in train.class_index]


def run_bare(survey: Path, run_dir: Path, seed: int, epochs: int, batch_size: int, steps_per_epoch: int,
             image_size, threads: int, pretrained: bool = False) -> dict:
    from core.metric import score_scenarios
    from core.scenarios import distinct, read_scenarios
    from tools.bench import bare_loop

    files, labels = bare_inputs(survey, run_dir)
    trained = bare_loop.train(files, labels, tuple(image_size), epochs, batch_size, steps_per_epoch, seed=seed,
                              threads=threads, pretrained=pretrained, log=lambda m: print(m, file=sys.stderr))
    test = survey / "test"
    scenarios = read_scenarios(test)
    meta = pd.read_csv(test / "metadata.csv", dtype=str)
    needed = sorted({i for sc in scenarios for i in list(sc.queries.query_image_id) + list(sc.database.database_image_id)})
    path_of = dict(zip(meta.image_id, meta.path))
    emb = bare_loop.embed(trained["model"], [str(test / path_of[i]) for i in needed], tuple(image_size))
    emb_of = dict(zip(needed, emb))
    rows = []
    for sc in scenarios:
        queries, database = distinct(sc)
        rows += bare_loop.rank(list(queries.query_id), list(queries.query_image_id), database, emb_of)
    preds = pd.DataFrame(rows, columns=["query_id", "database_image_id", "score"])
    scored = score_scenarios(preds, scenarios, pd.read_csv(survey / "test_labels.csv", dtype=str))
    return {"mAP": round(scored["mAP"], 4), "scenarios": {k: round(v, 4) for k, v in scored["scenarios"].items()},
            "train_seconds": round(trained["seconds"], 1), "loss_first": trained["losses"][0],
            "loss_last": trained["losses"][-1], "steps": trained["steps"], "images": len(files)}


def load_results(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def append_result(path: Path, row: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fh.write(json.dumps(row) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


BARE_ARMS = ("scratch", "pretrained")  # tools.bench.bare_loop from random weights / from ImageNet EfficientNet-Lite0


def bare_key(base_key: str, arm: str) -> str:
    return base_key if arm == "scratch" else f"{base_key}/{arm}"


def summarize(rows: list[dict], label: str) -> str:
    """The table: one line per variant (family/variant), mean +- s.d. over seeds, with both bare loops."""
    def stat(values):
        v = np.asarray(values, float)
        return f"{v.mean():.3f} +- {v.std(ddof=1):.3f}" if len(v) > 1 else (f"{v.mean():.3f}" if len(v) else "-")

    lines = [f"| survey | seeds | ours ({label}) | ours + local_match | fused / ours, seeds ahead | bare, scratch | "
             "bare, ImageNet | random | ours / bare scratch | ours / bare ImageNet | ours > bare ImageNet, seeds |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    ours = [r for r in rows if r["kind"] == "ours" and r["label"] == label]
    for variant in dict.fromkeys(r["variant"] for r in ours):
        o = [r for r in ours if r["variant"] == variant]
        cells = []
        wins = "-"
        for arm in BARE_ARMS:
            b = {r["seed"]: r for r in rows if r["kind"] == "bare" and r.get("arm", "scratch") == arm
                 and r["variant"] == variant and r["key"] in {bare_key(x["bare_key"], arm) for x in o}}
            paired = [(x, b[x["seed"]]) for x in o if x["seed"] in b]
            ratio = np.mean([x["mAP"] / y["mAP"] for x, y in paired if y["mAP"] > 0]) if paired else float("nan")
            cells.append((stat([y["mAP"] for _, y in paired]), ratio))
            if arm == "pretrained" and paired:
                wins = f"{sum(x['mAP'] > y['mAP'] for x, y in paired)}/{len(paired)}"
        om, rm = [x["mAP"] for x in o], [x["random_mAP"] for x in o]
        fused = [x for x in o if "fused_mAP" in x]
        gain = (f"{np.mean([x['fused_mAP'] / x['mAP'] for x in fused]):.2f}x, "
                f"{sum(x['fused_mAP'] > x['mAP'] for x in fused)}/{len(fused)}") if fused else "-"
        lines.append(f"| {variant} | {len(o)} | {stat(om)} | {stat([x['fused_mAP'] for x in fused])} | {gain} | "
                     f"{cells[0][0]} | {cells[1][0]} | {stat(rm)} | {cells[0][1]:.2f} | {cells[1][1]:.2f} | {wins} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.bench.quality", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    p.add_argument("--variants", nargs="+", default=list(DEFAULT_VARIANTS), help="survey variants: tools.synthesize's (--list-variants) or outline/calm, outline/choppy "
                   "(tools.outline_survey, a second renderer, for confirming a choice)")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="training seeds (split and initialisation)")
    p.add_argument("--config", default="configs/synthetic_cpu.yaml", help="the whaleid config to measure")
    p.add_argument("--epochs", type=int, help="override train.epochs (both sides train as many)")
    p.add_argument("--set", nargs="*", default=[], dest="sets", help="more key=value overrides for the whaleid run")
    p.add_argument("--label", default="default", help="name of this arm in the results (for ablations)")
    p.add_argument("--preset", default="bench", help="survey size (default: bench, 150 training whales)")
    p.add_argument("--data-dir", type=Path, default=ROOT / "data" / "variants", help="where surveys are kept")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_quality", help="runs and results.jsonl")
    p.add_argument("--bare", nargs="*", choices=BARE_ARMS, default=list(BARE_ARMS),
                   help="bare loops to train beside ours (default: both; none: --bare with no value)")
    p.add_argument("--no-bare", action="store_true", help="skip the bare loops (ablation arms reuse their results)")
    p.add_argument("--threads", type=int, default=cores(), help="CPU threads for both sides (default: all cores)")
    p.add_argument("--fused", type=int, default=50, metavar="SHORTLIST",
                   help="also rank ours with local_match fitted on its validation whales, matching this many "
                   "candidates a query (0: not)")
    args = p.parse_args(argv)

    from core.config import load_config

    unknown = [v for v in args.variants if v not in known_variants()]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; choose from {', '.join(known_variants())}")
    results_path = args.out / "results.jsonl"
    for variant in args.variants:
        survey = ensure_survey(args.data_dir, args.preset, variant)
        for seed in args.seeds:
            cfg = load_config(args.config, [f"seed={seed}", f"data.fold_seed={seed}"] + ([f"train.epochs={args.epochs}"] if args.epochs else []) + args.sets)
            epochs, batch = int(cfg.train.epochs), int(cfg.train.batch_size)
            size = [int(s) for s in cfg.data.image_size]
            done = load_results(results_path)
            run_dir = args.out / "runs" / f"{args.label}-{variant.replace('/', '-')}-s{seed}"
            base_key = f"{args.preset}/{variant}/s{seed}/e{epochs}/b{batch}/{size[0]}x{size[1]}/f{cfg.data.num_folds}.{cfg.data.fold}"
            ours = next((r for r in done if r["kind"] == "ours" and r["label"] == args.label and r["variant"] == variant
                         and r["seed"] == seed), None)
            if ours is None:
                print(f"[{args.label}] {variant} seed {seed}: training whaleid ({epochs} epochs)", file=sys.stderr)
                ours = {"kind": "ours", "label": args.label, "variant": variant, "seed": seed, "bare_key": base_key,
                        "config": args.config, "sets": args.sets,
                        **run_ours(survey, run_dir, args.config, seed, args.epochs, args.sets, args.threads,
                                   args.fused)}
                append_result(results_path, ours)
            print(json.dumps({k: ours.get(k) for k in ("label", "variant", "seed", "mAP", "fused_mAP", "random_mAP", "val_mAP",
                                                   "best_epoch", "loss_first", "loss_last", "train_seconds", "warnings")}))
            for arm in [] if args.no_bare else args.bare:
                key = bare_key(base_key, arm)
                if any(r["kind"] == "bare" and r["key"] == key for r in done):
                    continue
                print(f"{variant} seed {seed}: training the bare loop ({arm})", file=sys.stderr)
                bare = {"kind": "bare", "arm": arm, "variant": variant, "seed": seed, "key": key,
                        **run_bare(survey, run_dir, seed, epochs, batch, ours["steps"] // ours["epochs"], size, args.threads,
                                   pretrained=arm == "pretrained")}
                append_result(results_path, bare)
                print(json.dumps({k: bare[k] for k in ("arm", "variant", "seed", "mAP", "loss_first", "loss_last", "train_seconds")}))
    print(summarize([r for r in load_results(results_path) if r["variant"] in args.variants], args.label))


if __name__ == "__main__":
    main()
