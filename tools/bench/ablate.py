"""Ablation: each technique alone on top of one config, over seeds, with a verdict against noise.

    python -m tools.bench.ablate configs/ablation/toolbox.yaml [--out runs/ablation] [--jobs 2] [--arms a b ...]
                           [--table-only] [--dry-run] [--boot 2000]

The spec (YAML) names the base ``config``, the ``seeds``, the budget overrides ``set`` shared by every
run, and the ``arms``: each has a ``name``, a one-line ``what``, its own ``set`` (``key=value``
overrides of core/run.py) and optionally ``eval_only: true`` or ``control: true`` (a change that should not
matter, such as a learning rate 1.00001x: its difference is how far trained runs of one recipe wander,
and no trained arm is called better or worse unless it moves further). The tool

1. trains the baseline and every training arm as a seeds run of ``core/run.py`` (under accelerate
   launch) into ``OUT/<name>/``, ``--jobs`` at a time with the cores shared between them; a finished
   run is skipped, an interrupted one resumes (``resume=true``);
2. re-evaluates the baseline's best weights of each seed with every ``eval_only`` arm's overrides (a
   postprocess chain, say) into ``OUT/<name>/seed<s>/``: the same model, another ranking;
3. compares every arm with the baseline through ``tools.compare``: mAP (mean +- s.d. over seeds),
   the difference with a 95% paired-bootstrap interval over queries and seeds, the verdict, and the
   difference per scenario. The tables go to stdout, ``OUT/ablation.md`` and ``OUT/ablation.json``.

Every spec and override is checked (``core.config.load_config``) before anything is trained; an error
names the spec file and the arm.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tools.bench.common import ROOT

from core.training.runs import RunError, kind, metrics, seeds_summary, write_json
from tools.bench.common import cores, launcher

BASELINE = "baseline"
ARM_KEYS = {"name", "what", "set", "eval_only", "control"}
SPEC_KEYS = {"config", "seeds", "set", "arms"}


class SpecError(ValueError):
    """The ablation spec is malformed; the message names the file and the arm."""


@dataclass
class Arm:
    name: str
    what: str
    sets: list[str] = field(default_factory=list)
    eval_only: bool = False
    control: bool = False


@dataclass
class Spec:
    path: Path
    config: str
    seeds: list[int]
    sets: list[str]
    arms: list[Arm]


def _str_list(value, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and "=" in v for v in value):
        raise SpecError(f"{where}: 'set' must be a list of key=value strings, got {value!r}")
    return list(value)


def load_spec(path: Path) -> Spec:
    """Read and check an ablation spec, including every arm's overrides against the config schema."""
    from core.config import ConfigError, load_config

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"ablation spec not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: cannot parse YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: the spec must be a mapping with keys {sorted(SPEC_KEYS)}")
    unknown = set(raw) - SPEC_KEYS
    if unknown:
        raise SpecError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(SPEC_KEYS)}")
    if "config" not in raw or "arms" not in raw:
        raise SpecError(f"{path}: needs 'config' (the base config) and 'arms'")
    seeds = raw.get("seeds", [0, 1, 2])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) for s in seeds) or len(set(seeds)) < len(seeds):
        raise SpecError(f"{path}: 'seeds' must be a list of distinct integers, got {seeds!r}")
    if not isinstance(raw["arms"], list) or not raw["arms"]:
        raise SpecError(f"{path}: 'arms' must be a non-empty list")
    sets = _str_list(raw.get("set"), f"{path}")
    arms, names = [], set()
    for i, a in enumerate(raw["arms"]):
        where = f"{path}: arm {i + 1}"
        if not isinstance(a, dict) or "name" not in a:
            raise SpecError(f"{where}: each arm is a mapping with at least 'name' and 'set'")
        where = f"{path}: arm '{a['name']}'"
        if set(a) - ARM_KEYS:
            raise SpecError(f"{where}: unknown key(s) {sorted(set(a) - ARM_KEYS)}; known: {sorted(ARM_KEYS)}")
        name = str(a["name"])
        if name == BASELINE or name in names or not name.replace("_", "").replace("-", "").isalnum():
            raise SpecError(f"{where}: names must be unique, made of letters, digits, '_' or '-', and not "
                            f"'{BASELINE}'")
        names.add(name)
        arm = Arm(name, str(a.get("what", "")), _str_list(a.get("set"), where), bool(a.get("eval_only", False)),
                  bool(a.get("control", False)))
        if arm.control and arm.eval_only:
            raise SpecError(f"{where}: a control arm trains (it measures how far training wanders); drop eval_only")
        if not arm.sets:
            raise SpecError(f"{where}: no overrides in 'set'; an arm must change something")
        try:
            load_config(ROOT / raw["config"] if not Path(raw["config"]).is_absolute() else raw["config"], sets + arm.sets)
        except ConfigError as exc:
            raise SpecError(f"{where}: {exc}") from exc
        arms.append(arm)
    return Spec(path, str(raw["config"]), seeds, sets, arms)


def threads_for(jobs: int) -> int:
    return max(1, cores() // max(1, jobs))


def train_command(spec: Spec, out: Path, arm: Arm | None, threads: int) -> list[str]:
    seeds = "[" + ",".join(map(str, spec.seeds)) + "]"
    return launcher(threads) + [str(ROOT / "core" / "run.py"), "--config", spec.config, *spec.sets,
                                *(arm.sets if arm else []), f"output_dir={out}", f"seeds={seeds}", "resume=true"]


def eval_command(spec: Spec, out: Path, arm: Arm, seed: int, weights: Path, threads: int) -> list[str]:
    return launcher(threads) + [str(ROOT / "core" / "run.py"), "--config", spec.config, *spec.sets, *arm.sets,
                                f"output_dir={out}", f"seed={seed}", "eval_only=true", f"weights={weights}"]


def done(folder: Path) -> bool:
    try:
        return kind(folder) == "seeds"
    except RunError:
        return False


def run_jobs(jobs: list[tuple[str, list[str], Path]], parallel: int, dry_run: bool) -> list[str]:
    """Run (name, command, log) jobs, ``parallel`` at a time; returns the names that failed."""
    failed, running, queue = [], [], list(jobs)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    start = time.time()
    while queue or running:
        while queue and len(running) < parallel:
            name, cmd, log = queue.pop(0)
            shown = cmd[next(i for i, c in enumerate(cmd) if c.endswith("run.py")):]
            print(f"[{time.time() - start:6.0f} s] start {name}: {' '.join(shown)}  (log: {log})", flush=True)
            if dry_run:
                continue
            log.parent.mkdir(parents=True, exist_ok=True)
            fh = open(log, "ab")
            running.append((name, subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=fh, stderr=subprocess.STDOUT), fh, log))
        for item in list(running):
            name, proc, fh, log = item
            if proc.poll() is not None:
                fh.close()
                running.remove(item)
                status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; see {log})"
                print(f"[{time.time() - start:6.0f} s] {status}: {name}", flush=True)
                if proc.returncode:
                    failed.append(name)
        if running:
            time.sleep(2)
    return failed


def write_seeds_summary(folder: Path, seeds: list[int], baseline: Path) -> None:
    """``seeds.json`` for an eval-only arm, in core/run.py's format, naming the weights it re-evaluated."""
    values = [metrics(folder / f"seed{s}")["mAP"] for s in seeds]
    shutil.copyfile(folder / f"seed{seeds[0]}" / "config.yaml", folder / "config.yaml")
    write_json(folder / "seeds.json", seeds_summary(seeds, "mAP", values, eval_only_of=str(baseline)))


def run_all(spec: Spec, out: Path, arms: list[Arm], parallel: int, dry_run: bool) -> list[str]:
    threads = threads_for(parallel)
    base = out / BASELINE
    trains = [(BASELINE, None)] + [(a.name, a) for a in arms if not a.eval_only]
    jobs = [(name, train_command(spec, out / name, arm, threads), out / f"{name}.log")
            for name, arm in trains if not done(out / name)]
    for name, _ in trains:
        if done(out / name):
            print(f"{name}: finished in {out / name}; skipped")
    failed = run_jobs(jobs, parallel, dry_run)
    evals = [a for a in arms if a.eval_only and not done(out / a.name)]
    if evals and BASELINE in failed:
        return failed + [a.name for a in evals]
    jobs = []
    for arm in evals:
        for s in spec.seeds:
            target = out / arm.name / f"seed{s}"
            if (target / "metrics.json").is_file():
                continue
            jobs.append((f"{arm.name} seed {s}", eval_command(spec, target, arm, s, base / f"seed{s}" / "best.safetensors",
                                                               threads), out / f"{arm.name}.log"))
    failed += run_jobs(jobs, parallel, dry_run)
    if not dry_run:
        for arm in evals:
            if all((out / arm.name / f"seed{s}" / "metrics.json").is_file() for s in spec.seeds):
                write_seeds_summary(out / arm.name, spec.seeds, base)
    return failed


def seed_differences(base, arm) -> dict:
    """Arm minus baseline, seed by seed (same seed: same initialisation and sample order), over the
    queries both answered; {seed folder: difference}."""
    def by_seed(entry) -> dict:
        return {Path(group[0]).relative_to(entry.path).parts[0]: t for group, t in zip(entry.groups, entry.tables)}

    base_by, out = by_seed(base), {}
    for name, t in by_seed(arm).items():
        if name in base_by:
            b, a = base_by[name].set_index("query_id")["ap"], t.set_index("query_id")["ap"]
            common = a.index.intersection(b.index)
            out[name] = float(a[common].mean() - b[common].mean())
    return out


def verdict_of(v: dict, floor: float, control: bool) -> str:
    """'better' / 'worse' when the interval excludes 0 and the difference exceeds the controls' spread."""
    if control:
        return "control"
    lo, hi = v["ci95"]
    if (lo > 0 or hi < 0) and abs(v["difference"]) <= floor:
        return "within the controls' spread"
    return "better" if lo > 0 else "worse" if hi < 0 else "within noise"


def _signs(per_seed: dict) -> str:
    return f"{sum(d > 0 for d in per_seed.values())}/{len(per_seed)}" if per_seed else "-"


def short(scenario: str) -> str:
    return scenario.replace("_vs_", "/").replace("later/earlier", "later").replace("same_year", "same yr")


def tables(spec: Spec, out: Path, arms: list[Arm], boots: int) -> tuple[str, dict]:
    """The ablation tables (markdown) and their numbers, every arm against the baseline."""
    from tools.compare import config_differences, load, paired_bootstrap

    base = load(out / BASELINE)
    base.name = BASELINE
    scen = base.scenarios
    m, sd = base.score()
    def wall(e) -> str:
        w = e.wall_s()
        return f"{w:.0f}" if w is not None else "-"

    rows = [f"| arm | what | kind | mAP (mean +- s.d., {len(base.tables)} seeds) | difference | 95% interval | verdict "
            "| seeds up | train s per seed |",
            "|---|---|---|---|---|---|---|---|---|",
            f"| {BASELINE} | {spec.config} with {' '.join(spec.sets) or 'no change'} | train | {m:.4f} +- {sd:.4f} | | | "
            f"| | {wall(base)} |"]
    per = ["| arm | " + " | ".join(short(s) for s in scen) + " |", "|---|" + "---|" * len(scen),
           f"| {BASELINE} (mAP) | " + " | ".join(f"{base.score(s)[0]:.4f}" for s in scen) + " |"]
    report = {"spec": str(spec.path), "config": spec.config, "set": spec.sets, "seeds": spec.seeds,
              "baseline": {"mAP": m, "sd": sd, "scenarios": {s: base.score(s)[0] for s in scen}}, "arms": []}
    compared = []
    for arm in arms:
        if not done(out / arm.name):
            compared.append((arm, None, None))
            continue
        e = load(out / arm.name)
        e.name = arm.name
        compared.append((arm, e, paired_bootstrap(base, e, boots, same_models=arm.eval_only)))
    # controls change nothing that matters, so their differences are how far trained runs of one recipe wander
    floor = max((abs(v["difference"]) for arm, _, v in compared if arm.control and v), default=0.0)
    for arm, e, v in compared:
        kind_ = "control" if arm.control else "eval" if arm.eval_only else "train"
        if e is None:
            rows.append(f"| {arm.name} | {arm.what} | {kind_} | not run | | | | | |")
            continue
        am, asd = e.score()
        verdict = verdict_of(v, floor if not arm.eval_only else 0.0, arm.control)
        per_seed = seed_differences(base, e)
        rows.append(f"| {arm.name} | {arm.what} | {kind_} | {am:.4f} +- {asd:.4f} | "
                    f"{v['difference']:+.4f} | [{v['ci95'][0]:+.4f}, {v['ci95'][1]:+.4f}] | {verdict} | {_signs(per_seed)} | {wall(e)} |")
        deltas = {s: e.score(s)[0] - base.score(s)[0] for s in scen if s in e.scenarios}
        per.append(f"| {arm.name} | " + " | ".join(f"{deltas[s]:+.4f}" if s in deltas else "-" for s in scen) + " |")
        report["arms"].append({"name": arm.name, "what": arm.what, "eval_only": arm.eval_only, "control": arm.control,
                               "mAP": am, "sd": asd,
                               "difference": v["difference"], "ci95": v["ci95"], "verdict": verdict,
                               "queries": v["queries"], "seeds": v["seeds_b"], "scenario_differences": deltas,
                               "values": [float(t["ap"].mean()) for t in e.tables], "train_s_per_seed": e.wall_s(),
                               "seed_differences": per_seed,
                               "config_differences": config_differences(base.config, e.config)})
    report["control_floor"] = floor
    text = ("\n".join(rows) + "\n\nDifference from the baseline per scenario (mean over seeds):\n\n" + "\n".join(per)
            + f"\n\nIntervals: paired bootstrap ({boots} resamples) over the {len(base.tables[0])} validation queries "
              "and over seeds (independently per arm for trained arms; as pairs for eval arms, which re-rank the baseline's "
              "own models); 'better' or 'worse' when the interval excludes 0 and, for trained arms, the difference "
              f"is larger than every control arm's ({floor:.4f} here): controls change nothing that matters, so their "
              "differences are how far trained runs of one recipe wander. 'seeds up': seeds on which the arm beat the "
              "baseline run of the same seed.\n")
    return text, report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.ablate", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m tools.bench.ablate configs/ablation/toolbox.yaml --out runs/ablation "
                                       "--jobs 2 (the README's table); add --table-only to reprint it",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("spec", type=Path, help="ablation spec (YAML): config, seeds, set, arms")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "ablation", help="folder for the runs (default runs/ablation)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time; the cores are shared between them (default 1)")
    p.add_argument("--arms", nargs="+", help="only these arms (the baseline always)")
    p.add_argument("--table-only", action="store_true", help="train nothing; print the table of what has finished")
    p.add_argument("--dry-run", action="store_true", help="print the commands and train nothing")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    args = p.parse_args(argv)
    try:
        spec = load_spec(args.spec)
    except SpecError as exc:
        p.exit(2, f"error: {exc}\n")
    arms = spec.arms
    if args.arms:
        unknown = sorted(set(args.arms) - {a.name for a in arms})
        if unknown:
            p.exit(2, f"error: {args.spec} has no arm(s) {unknown}; it has {[a.name for a in arms]}\n")
        arms = [a for a in arms if a.name in args.arms]
    if args.jobs < 1:
        p.exit(2, "error: --jobs must be at least 1\n")
    failed = [] if args.table_only else run_all(spec, args.out, arms, args.jobs, args.dry_run)
    if args.dry_run:
        return 0
    if not done(args.out / BASELINE):
        p.exit(1, f"error: the baseline has not finished in {args.out / BASELINE}; nothing to compare\n")
    text, report = tables(spec, args.out, arms, args.boot)
    print("\n" + text)
    (args.out / "ablation.md").write_text(text)
    (args.out / "ablation.json").write_text(json.dumps(report, indent=2))
    if failed:
        print(f"failed: {', '.join(failed)} (their logs are in {args.out})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
