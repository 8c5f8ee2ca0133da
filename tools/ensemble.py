"""Choose ensemble weights on out-of-fold data, with the submission's own combination rule.

    python -m tools.ensemble runs/cv_a runs/cv_b [...] [--grid 0 0.25 0.5 0.75 1] [--out runs/ensemble.json]

Each member is a cross-validation run (``data.fold=all``) or a single run; all must share the same
folds (same data, ``data.num_folds`` and ``data.fold_seed``). For every fold the members' saved
validation embeddings (``oof.npz``) are combined as ``submission/main.py`` combines models (unit
embeddings scaled by sqrt(weight / sum) and concatenated: a weighted mean of cosines), ranked by the
first member's postprocess chain and scored with the competition metric over every validation query
of every fold. Nothing is re-embedded.

Weights: every combination of the ``--grid`` values for up to 4 members (scale duplicates dropped),
else coordinate ascent over the grid from equal weights. Prints each member's OOF mAP beside the
best combination's and writes them to ``--out``, which ``submission.build --ensemble`` reads to pack
every fold model of every member (a member's weight shared equally by its folds).
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent

from core.training.runs import RunError, fold_scenarios, kind, leaf_runs, read_oof, run_config

RULE = ("per-model unit embeddings scaled by sqrt(weight / sum of weights) and concatenated, as in the submission: "
        "a weighted mean of cosine similarities")


@dataclass
class Fold:
    name: str
    scenarios: list  # core.scenarios.Scenario, rebuilt from split.csv's validation rows
    image_ids: list[str]
    embeddings: list[np.ndarray]  # one [N, E_m] per member, rows in image_ids order


def load_members(members: list[Path]) -> tuple[list[Fold], list]:
    """Folds with every member's embeddings, and the postprocess steps of the first member."""
    from core.config import component
    from core.plugins import build_registries
    from core.retrieval import build_steps

    for m in members:
        if kind(m) == "seeds":
            raise RunError(f"{m}: a seeds parent; give its seed folders (each a CV run) as separate members")
    leaves = [leaf_runs(m) for m in members]
    names = [[leaf.name for leaf in group] for group in leaves]
    if any(n != names[0] for n in names[1:]):
        raise RunError(f"members have different folds: {dict(zip(map(str, members), names))}")
    folds = []
    for k, name in enumerate(names[0]):
        image_ids, scenarios = fold_scenarios(leaves[0][k])
        for group in leaves[1:]:
            other, _ = fold_scenarios(group[k])
            if sorted(other) != sorted(image_ids):
                raise RunError(f"{group[k]} validates on other images than {leaves[0][k]}: the members' folds differ "
                               "(same data, data.num_folds and data.fold_seed are needed)")
        folds.append(Fold(name, scenarios, image_ids, [read_oof(group[k], image_ids) for group in leaves]))
    cfg = run_config(leaves[0][0])
    steps = build_steps(component(cfg, "postprocess"), build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])["postprocess"])
    return folds, steps


def score(folds: list[Fold], steps, weights) -> dict:
    """OOF mAP (overall and per scenario) of the members combined with ``weights``."""
    from core.metric import score_scenarios
    from core.retrieval import combine_embeddings, predict

    used = [k for k, w in enumerate(weights) if w > 0]
    preds, scen = [], []
    for fold in folds:
        emb = combine_embeddings([fold.embeddings[k] for k in used], [weights[k] for k in used])
        index = {img: i for i, img in enumerate(fold.image_ids)}
        p = predict(fold.scenarios, emb, index, steps)
        preds.append(p.assign(query_id=fold.name + "/" + p["query_id"].astype(str)))
        for sc in fold.scenarios:
            q = sc.queries.assign(query_id=fold.name + "/" + sc.queries["query_id"].astype(str))
            labels = sc.labels.assign(query_id=fold.name + "/" + sc.labels["query_id"].astype(str))
            scen.append(type(sc)(sc.name, q, sc.database, labels))
    merged = _merge_scenarios(scen)
    return score_scenarios(pd.concat(preds, ignore_index=True), merged)


def _merge_scenarios(scenarios):
    """One Scenario per name (queries and labels of every fold), for per-scenario means over all folds."""
    by_name: dict[str, list] = {}
    for sc in scenarios:
        by_name.setdefault(sc.name, []).append(sc)
    out = []
    for name, group in by_name.items():
        out.append(type(group[0])(name, pd.concat([g.queries for g in group], ignore_index=True),
                                  pd.concat([g.database for g in group], ignore_index=True),
                                  pd.concat([g.labels for g in group], ignore_index=True)))
    return out


def candidates(members: int, grid: list[float]):
    """Weight vectors over the grid, all-zero and scale duplicates dropped."""
    seen = set()
    for w in itertools.product(grid, repeat=members):
        total = sum(w)
        if total <= 0:
            continue
        key = tuple(round(x / total, 6) for x in w)
        if key not in seen:
            seen.add(key)
            yield list(w)


def search(folds: list[Fold], steps, grid: list[float], max_exhaustive: int = 4, progress=None) -> tuple[list[float], dict, list]:
    """(best weights, their score, every (weights, mAP) tried): exhaustive for few members, else
    coordinate ascent from equal weights."""
    m = len(folds[0].embeddings)
    tried: list[tuple[list[float], float]] = []

    def evaluate(w):
        r = score(folds, steps, w)
        tried.append((list(w), r["mAP"]))
        if progress:
            progress(w, r["mAP"])
        return r

    if m <= max_exhaustive:
        best_w, best = None, None
        for w in candidates(m, grid):
            r = evaluate(w)
            if best is None or r["mAP"] > best["mAP"] + 1e-12:
                best_w, best = w, r
        return best_w, best, tried
    best_w = [1.0] * m
    best = evaluate(best_w)
    improved = True
    while improved:
        improved = False
        for k in range(m):
            for g in grid:
                w = list(best_w)
                w[k] = g
                if sum(w) <= 0 or w == best_w:
                    continue
                r = evaluate(w)
                if r["mAP"] > best["mAP"] + 1e-12:
                    best_w, best, improved = w, r, True
    return best_w, best, tried


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.ensemble", description=__doc__.split("\n\n")[0],
                                epilog="Example: python -m tools.ensemble runs/cv_r18 runs/cv_r34 --out runs/ensemble.json\n"
                                       "then:    python -m submission.build --ensemble runs/ensemble.json",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("members", nargs="+", type=Path, help="CV run folders (or single runs) on the same folds")
    p.add_argument("--grid", nargs="+", type=float, default=[0.0, 0.25, 0.5, 0.75, 1.0], help="weight values to try")
    p.add_argument("--out", type=Path, default=Path("runs/ensemble.json"), help="where to write the chosen weights")
    args = p.parse_args(argv)
    if any(g < 0 for g in args.grid) or not any(g > 0 for g in args.grid):
        p.exit(2, "error: --grid needs non-negative values, at least one positive\n")
    try:
        folds, steps = load_members(args.members)
    except RunError as exc:
        p.exit(2, f"error: {exc}\n")
    m = len(args.members)
    singles = [score(folds, steps, [1.0 if j == k else 0.0 for j in range(m)]) for k in range(m)]
    for member, s in zip(args.members, singles):
        print(f"member {member}: OOF mAP {s['mAP']:.4f}")
    weights, best, tried = search(folds, steps, args.grid)
    total = sum(weights)
    result = {
        "members": [{"run": str(member), "path": str(member.resolve()), "weight": w / total, "oof_mAP": s["mAP"],
                     "oof_scenarios": s["scenarios"]} for member, w, s in zip(args.members, weights, singles)],
        "oof_mAP": best["mAP"], "oof_scenarios": best["scenarios"], "rule": RULE, "grid": args.grid,
        "tried": len(tried), "folds": [f.name for f in folds], "queries": int(sum(len(sc.queries) for f in folds for sc in f.scenarios)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"best of {len(tried)} weightings: " + ", ".join(f"{mm['run']} {mm['weight']:.3f}" for mm in result["members"])
          + f" -> OOF mAP {best['mAP']:.4f} (best member {max(s['mAP'] for s in singles):.4f}); written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
