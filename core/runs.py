"""Reading run folders back: a single run, a cross-validation parent (``cv.json``) or a seeds parent
(``seeds.json``). Used by ``tools.compare``, ``tools.ensemble`` and ``submission.build``; errors name the folder."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd


class RunError(ValueError):
    """A folder is not a (finished) whaleid run."""


def kind(run: Path) -> str:
    run = Path(run)
    if (run / "seeds.json").is_file():
        return "seeds"
    if (run / "cv.json").is_file():
        return "cv"
    if (run / "metrics.json").is_file():
        return "run"
    if (run / "config.yaml").is_file():
        raise RunError(f"{run}: has a config but no metrics.json, cv.json or seeds.json; did it finish? "
                       "(rerun it with resume=true)")
    raise RunError(f"{run}: not a whaleid run folder (no metrics.json, cv.json or seeds.json)")


def children(run: Path) -> list[Path]:
    """The folds of a CV parent or the seeds of a seeds parent, in order; ``[run]`` for a single run."""
    run = Path(run)
    k = kind(run)
    if k == "run":
        return [run]
    listed = json.loads((run / ("cv.json" if k == "cv" else "seeds.json")).read_text())
    names = listed["folds"] if k == "cv" else listed["runs"]
    missing = [n for n in names if not (run / n).is_dir()]
    if missing:
        raise RunError(f"{run}: {k} summary lists {missing}, which are not folders here")
    return [run / n for n in names]


def seed_groups(run: Path) -> list[list[Path]]:
    """Leaf runs grouped by seed: ``[[fold runs of seed 1], [of seed 2], ...]`` (one group without seeds)."""
    run = Path(run)
    if kind(run) == "seeds":
        return [leaf_runs(child) for child in children(run)]
    return [leaf_runs(run)]


def leaf_runs(run: Path) -> list[Path]:
    """Every single run (one fold, one seed) under ``run``, in order."""
    run = Path(run)
    if kind(run) == "run":
        return [run]
    return [leaf for child in children(run) for leaf in leaf_runs(child)]


def per_query(run: Path) -> pd.DataFrame:
    """(query_id, scenario, ap) of the best evaluation of one run, or of all folds of a CV run."""
    if kind(run) == "seeds":
        raise RunError(f"{run}: a seeds parent has one table per seed; read its children (seed_groups)")
    frames = []
    for leaf in leaf_runs(run):
        path = leaf / "per_query.csv"
        if not path.is_file():
            raise RunError(f"{leaf}: no per_query.csv (runs before whaleid 0.2 did not save one; retrain or "
                           "re-evaluate with eval_only=true weights=best.safetensors)")
        frames.append(pd.read_csv(path, dtype={"query_id": str, "scenario": str}))
    return pd.concat(frames, ignore_index=True)


def history(run: Path) -> list[dict]:
    path = Path(run) / "history.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def spread_of(values) -> dict:
    """Mean, s.d. (ddof 1; 0 for one value), min, max and count: the summary ``cv.json`` and ``seeds.json`` keep."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(len(v))}


def flatten(tree, prefix: str = "") -> dict:
    """Nested mappings as flat ``a.b: value`` pairs; lists and other values are leaves, kept whole."""
    out: dict = {}
    if isinstance(tree, dict):
        for k, v in tree.items():
            out.update(flatten(v, f"{prefix}{k}."))
    else:
        out[prefix[:-1]] = tree
    return out


def flat_config(run: Path) -> dict:
    """The run's resolved config as flat ``a.b: value`` pairs (lists kept whole)."""
    from omegaconf import OmegaConf

    path = Path(run) / "config.yaml"
    if not path.is_file():
        return {}
    return flatten(OmegaConf.to_container(OmegaConf.load(path), resolve=True))
