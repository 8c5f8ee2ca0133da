"""Compare runs: one table, the config differences, and whether a change beats noise.

    python -m tools.compare runs/a runs/b [runs/c ...] [--plot curves.png] [--boot 2000] [--json out.json]

Each argument is a run folder: a single run, a cross-validation parent (``data.fold=all``: its
out-of-fold queries) or a seeds parent (``seeds=[...]``: one table of queries per seed). The first
run is the reference; every other is compared with it:

- the table: mAP overall and per scenario (mean over seeds), best epoch, training wall time, images/s;
- config differences as ``key: a -> b``;
- a paired bootstrap over the queries both runs answered (and over seeds, resampled within each run,
  when there are several): the mean difference b - a with a 95% interval, and the verdict
  "b beats a", "a beats b" or "no difference beyond noise" (the interval holds 0).

``--plot`` draws validation mAP per epoch, one line per run (the mean over folds and seeds), one
panel overall and one per scenario.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

from core.training.runs import RunError, flat_config, history, per_query, seed_groups

IGNORED_KEYS = ("output_dir", "resume")


@dataclass
class Entry:
    name: str
    path: Path
    tables: list[pd.DataFrame]  # one (query_id, scenario, ap) table per seed
    config: dict
    histories: list[list[dict]] = field(default_factory=list)  # one per leaf run
    groups: list[list[Path]] = field(default_factory=list)

    @property
    def scenarios(self) -> list[str]:
        return sorted(set().union(*(set(t["scenario"]) for t in self.tables)))

    def score(self, scenario: str | None = None) -> tuple[float, float]:
        """(mean, s.d.) over seeds of the mean AP over queries (of one scenario)."""
        vals = [float((t if scenario is None else t[t["scenario"] == scenario])["ap"].mean()) for t in self.tables]
        return float(np.mean(vals)), float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0

    def best_epochs(self) -> list:
        return [max(h, key=lambda r: r["mAP"])["epoch"] for h in self.histories if h]

    def wall_s(self) -> float | None:
        """Training seconds per seed (all folds summed), averaged over seeds; None for runs that kept no time."""
        per_seed = []
        for group in self.groups:
            total = 0.0
            for leaf in group:
                h = history(leaf)
                if not h or "train_s" not in h[-1]:
                    return None
                total += float(h[-1]["train_s"])
            per_seed.append(total)
        return float(np.mean(per_seed)) if per_seed else None

    def img_s(self) -> float | None:
        rates = [r["img_s"] for h in self.histories for r in h if "img_s" in r]
        return float(np.mean(rates)) if rates else None


def load(path: Path) -> Entry:
    groups = seed_groups(path)
    tables = []
    for group in groups:
        tables.append(pd.concat([per_query(leaf) for leaf in group], ignore_index=True))
    hist = [history(leaf) for group in groups for leaf in group]
    return Entry(path.name or str(path), path, tables, flat_config(path), hist, groups)


def config_differences(a: dict, b: dict) -> list[str]:
    """``key: a -> b`` for each key whose values differ; a key one run's config lacks (written before the key
    existed) counts as its default from ``core.config.DEFAULTS``."""
    from core.config import DEFAULTS
    from core.training.runs import flatten

    defaults = flatten(DEFAULTS)
    keys = sorted((set(a) | set(b)) - set(IGNORED_KEYS))
    unset = object()
    out = []
    for k in keys:
        va, vb = a.get(k, defaults.get(k, unset)), b.get(k, defaults.get(k, unset))
        if va != vb:
            out.append(f"{k}: {'(unset)' if va is unset else va} -> {'(unset)' if vb is unset else vb}")
    return out


def paired_bootstrap(a: Entry, b: Entry, boots: int = 2000, seed: int = 0, same_models: bool = False) -> dict:
    """Bootstrap the difference of mean AP, b - a, over the queries both answered (paired), and over
    each run's seeds when it has several. Returns the observed difference, the 95% interval and a verdict.

    ``same_models``: b's k-th seed ranks with a's k-th seed's weights (another postprocess chain on the
    same models), so seeds are resampled as pairs, not independently in each run."""
    common = set(a.tables[0]["query_id"])
    for t in a.tables[1:] + b.tables:
        common &= set(t["query_id"])
    if not common:
        raise RunError(f"{a.path} and {b.path} share no validation query; compare runs on the same folds "
                       "(same data, data.num_folds and data.fold_seed)")
    order = sorted(common)
    A = np.stack([t.set_index("query_id")["ap"].reindex(order).to_numpy(float) for t in a.tables])
    B = np.stack([t.set_index("query_id")["ap"].reindex(order).to_numpy(float) for t in b.tables])
    rng = np.random.default_rng(seed)
    q, sa, sb = len(order), len(A), len(B)
    if same_models and sa != sb:
        raise RunError(f"{b.path} re-ranks the models of {a.path} but has {sb} seeds against {sa}")
    diffs = np.empty(boots)
    for i in range(boots):
        qi = rng.integers(0, q, q)
        if same_models:
            si = rng.integers(0, sa, sa)
            ra, rb = A[si], B[si]
        else:
            ra = A[rng.integers(0, sa, sa)] if sa > 1 else A
            rb = B[rng.integers(0, sb, sb)] if sb > 1 else B
        diffs[i] = rb[:, qi].mean() - ra[:, qi].mean()
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    observed = float(B.mean() - A.mean())
    if lo > 0:
        verdict = f"{b.name} beats {a.name}"
    elif hi < 0:
        verdict = f"{a.name} beats {b.name}"
    else:
        verdict = "no difference beyond noise"
    return {"a": a.name, "b": b.name, "queries": q, "seeds_a": sa, "seeds_b": sb, "difference": observed,
            "ci95": [float(lo), float(hi)], "verdict": verdict, "boots": boots,
            "only_in_one": int(len(set(a.tables[0]["query_id"]) ^ set(b.tables[0]["query_id"])))}


def _fmt(mean: float, sd: float, seeds: int) -> str:
    return f"{mean:.4f} +- {sd:.4f}" if seeds > 1 else f"{mean:.4f}"


def table(entries: list[Entry]) -> str:
    scen = sorted(set().union(*(set(e.scenarios) for e in entries)))
    head = ["run", "seeds", "queries", "mAP"] + scen + ["best epoch", "train wall s", "img/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for e in entries:
        n = len(e.tables)
        wall, rate = e.wall_s(), e.img_s()
        cells = [e.name, str(n), str(len(e.tables[0])), _fmt(*e.score(), n)]
        cells += [_fmt(*e.score(s), n) if s in e.scenarios else "-" for s in scen]
        epochs = e.best_epochs()
        cells += [",".join(map(str, epochs)) if len(set(epochs)) > 1 else str(epochs[0]) if epochs else "-",
                  f"{wall:.0f}" if wall is not None else "n/a", f"{rate:.1f}" if rate is not None else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def curves(entries: list[Entry]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """{run: {panel: (epochs, mean mAP over leaf runs)}} with panels 'mAP' and each scenario."""
    out = {}
    for e in entries:
        per_epoch: dict[str, dict[int, list[float]]] = {}
        for h in e.histories:
            for r in h:
                per_epoch.setdefault("mAP", {}).setdefault(r["epoch"], []).append(r["mAP"])
                for k, v in r.get("scenarios", {}).items():
                    per_epoch.setdefault(k, {}).setdefault(r["epoch"], []).append(v)
        out[e.name] = {k: (sorted(d), [float(np.mean(d[x])) for x in sorted(d)]) for k, d in per_epoch.items()}
    return out


def plot(entries: list[Entry], path: Path) -> Path:
    from tools.plots import epoch_panels

    data = curves(entries)
    panels = ["mAP"] + sorted({k for d in data.values() for k in d} - {"mAP"})

    def draw(ax, panel):
        for name, d in data.items():
            if panel in d:
                ax.plot(*d[panel], marker="o", ms=3, label=name)
        ax.set_title("validation mAP (all queries)" if panel == "mAP" else panel)
        ax.set_ylabel("mAP")

    return epoch_panels(panels, draw, path, dpi=110, height=3.2)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.compare", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m tools.compare runs/cv_resnet18 runs/cv_resnet34 --plot runs/curves.png",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", type=Path, help="run folders; the first is the reference")
    p.add_argument("--plot", type=Path, help="write validation curves to this PNG")
    p.add_argument("--boot", type=int, default=2000, help="bootstrap resamples (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--json", type=Path, help="also write the table, differences and verdicts as JSON")
    args = p.parse_args(argv)
    try:
        entries = [load(r) for r in args.runs]
    except RunError as exc:
        p.exit(2, f"error: {exc}\n")
    names = [e.name for e in entries]
    if len(set(names)) < len(names):  # same folder names under different parents: use the paths
        for e in entries:
            e.name = str(e.path)
    print(table(entries))
    report = {"runs": [{"run": str(e.path), "mAP": e.score()[0], "sd": e.score()[1], "seeds": len(e.tables),
                        "scenarios": {s: e.score(s)[0] for s in e.scenarios}} for e in entries], "comparisons": []}
    for other in entries[1:]:
        diff = config_differences(entries[0].config, other.config)
        print(f"\n{entries[0].name} -> {other.name}: " + ("; ".join(diff) if diff else "no config differences"))
        try:
            verdict = paired_bootstrap(entries[0], other, args.boot, args.seed)
        except RunError as exc:
            print(f"  no verdict: {exc}")
            continue
        print(f"  {other.name} - {entries[0].name}: {verdict['difference']:+.4f} mAP, 95% interval "
              f"[{verdict['ci95'][0]:+.4f}, {verdict['ci95'][1]:+.4f}] over {verdict['queries']} paired queries"
              f" ({verdict['seeds_a']} and {verdict['seeds_b']} seed(s)): {verdict['verdict']}")
        if verdict["only_in_one"]:
            print(f"  note: {verdict['only_in_one']} queries are answered by only one of the two runs and left out")
        report["comparisons"].append({**verdict, "config_differences": diff})
    if args.plot:
        print(f"\ncurves: {plot(entries, args.plot)}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
