"""Run folders, written and read back: a single run, a cross-validation parent (``cv.json``) or a seeds parent
(``seeds.json``).

The runner writes them (every file replaced atomically: a crash leaves the old file or the new one, never
half of one); ``tools.compare``, ``tools.ensemble``, ``tools.report`` and ``submission.build`` read them, and
reading errors name the folder."""

from __future__ import annotations

import json
import os
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


def metrics(run: Path) -> dict:
    """A single run's ``metrics.json``: its best evaluation."""
    return json.loads((Path(run) / "metrics.json").read_text())


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


FITTED = "fitted.yaml"  # the options core.training.fit fitted, beside config.yaml (what was asked), never in it


def run_config(run: Path):
    """The run's config as it ranks: ``config.yaml`` (what was asked) with the postprocess chain the fit wrote to
    ``fitted.yaml`` when there is one (``core.training.fit``). A config edited after its fit is refused, naming
    both files: the fitted options belong to the chain they were fitted in."""
    import hashlib

    from omegaconf import OmegaConf

    run = Path(run)
    path = run / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run}: no config.yaml; is this a whaleid run folder?")
    cfg = OmegaConf.load(path)
    if (run / FITTED).is_file():
        fitted = OmegaConf.load(run / FITTED)
        if fitted.get("config_sha256") != hashlib.sha256(path.read_bytes()).hexdigest():
            raise RunError(f"{path} changed after its postprocess was fitted ({run / FITTED}): fit again "
                           "(python -m tools.fit_local, or rerun with eval_only=true) or remove the stale file")
        cfg.postprocess = fitted.postprocess
    return cfg


def write_fitted(run: Path, fitted: list[dict], chain: list[dict]) -> None:
    """``fitted.yaml``: the chain as it ranks after the fit (``chain`` with each ``fitted`` step's options), what was
    fitted, and the hash of the ``config.yaml`` it belongs to; written atomically."""
    import hashlib

    from omegaconf import OmegaConf

    run = Path(run)
    chain = [dict(s) for s in chain]
    for f in fitted:
        chain[f["step"]].update({k: v for k, v in f.items() if k not in ("step", "name")})
    doc = {"config_sha256": hashlib.sha256((run / "config.yaml").read_bytes()).hexdigest(),
           "fitted": [{"step": f["step"], "name": f["name"], "keys": sorted(k for k in f if k not in ("step", "name"))}
                      for f in fitted],
           "postprocess": chain}
    tmp = run / (FITTED + ".tmp")
    tmp.write_text("# options fitted on the validation whales (core.training.fit); config.yaml holds what was asked\n"
                   + OmegaConf.to_yaml(OmegaConf.create(doc)))
    os.replace(tmp, run / FITTED)


def fold_scenarios(run: Path):
    """(validation image ids, scenarios) of one fold run, rebuilt from its ``split.csv`` as the run built them."""
    from core.scenarios import build_scenarios

    path = run / "split.csv"
    if not path.is_file():
        raise RunError(f"{run}: no split.csv")
    split = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("viewpoint", "date") if c not in split.columns]
    if missing:
        raise RunError(f"{path}: lacks {missing} (written by whaleid before 0.2); retrain the run to ensemble it")
    val = split[split["role"] == "val"].reset_index(drop=True)
    return list(val["image_id"]), build_scenarios(val)


def read_oof(run: Path, image_ids: list[str]):
    """The run's validation embeddings (``oof.npz``) in ``image_ids`` order."""
    import numpy as np

    path = run / "oof.npz"
    if not path.is_file():
        raise RunError(f"{run}: no oof.npz (validation embeddings); retrain the run with this whaleid")
    with np.load(path) as z:
        ids, emb = [str(x) for x in z["image_ids"]], z["embeddings"].astype(np.float32)
    index = {i: k for k, i in enumerate(ids)}
    lost = [i for i in image_ids if i not in index]
    if lost:
        raise RunError(f"{path}: {len(lost)} validation images of the fold have no embedding (e.g. {lost[0]}); "
                       "the members do not share folds")
    return emb[[index[i] for i in image_ids]]


# ---- writing -------------------------------------------------------------------------------------------------


def write_json(path: Path, obj) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


def append_history(out: Path, result: dict) -> None:
    """One evaluation, one line of ``history.jsonl``."""
    with open(Path(out) / "history.jsonl", "a") as fh:
        fh.write(json.dumps(result) + "\n")


def keep_history_until(out: Path, epoch: int) -> None:
    """Drop ``history.jsonl``'s evaluations after ``epoch`` (all of them for a fresh start, epoch 0)."""
    path = Path(out) / "history.jsonl"
    if not path.exists():
        return
    if epoch == 0:
        path.unlink()
        return
    kept = [h for h in history(out) if int(h.get("epoch", 0)) <= epoch]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(h) + "\n" for h in kept))
    os.replace(tmp, path)


def save_oof(out: Path, image_ids, embeddings, per_query_table) -> None:
    """``oof.npz`` (image_ids, embeddings of the validation images) and ``per_query.csv`` of one evaluation."""
    import numpy as np

    tmp = out / "oof.tmp.npz"
    np.savez(tmp, image_ids=np.asarray(image_ids, dtype=str), embeddings=np.asarray(embeddings, dtype=np.float32))
    os.replace(tmp, out / "oof.npz")
    tmp = out / "per_query.csv.tmp"
    per_query_table.to_csv(tmp, index=False)
    os.replace(tmp, out / "per_query.csv")


def write_split(path: Path, train_df, val_df, class_of: dict) -> None:
    """``image_id, whale_id, role (train|val), class_index`` (-1 for validation rows), ``viewpoint, date,
    encounter_id``: what trained on what, and enough to rebuild the validation scenarios."""
    rows = pd.concat([train_df.assign(role="train"), val_df.assign(role="val")], ignore_index=True)
    rows["class_index"] = [class_of.get(w, -1) if r == "train" else -1 for w, r in zip(rows["whale_id"], rows["role"])]
    tmp = path.with_suffix(".tmp")
    extra = [c for c in ("viewpoint", "date", "encounter_id") if c in rows.columns]  # what scenarios are built from
    rows[["image_id", "whale_id", "role", "class_index"] + extra].to_csv(tmp, index=False)
    os.replace(tmp, path)


def cross_validation(runs: list[Path]) -> dict:
    """``cv.json`` of fold runs: every validation query of every fold scored once (its fold's best
    evaluation); the random baseline on the same queries, weighted by each fold's query counts."""
    tables, fold_maps, rand_total, rand_scen, counts = [], [], 0.0, {}, {}
    for run in runs:
        table = pd.read_csv(run / "per_query.csv", dtype={"query_id": str, "scenario": str})
        metrics = json.loads((run / "metrics.json").read_text())
        tables.append(table.assign(run=run.name))
        fold_maps.append(float(metrics["mAP"]))
        rand_total += float(metrics["random"]["mAP"]) * len(table)
        for name, n in table.groupby("scenario").size().items():
            rand_scen[name] = rand_scen.get(name, 0.0) + float(metrics["random"]["scenarios"].get(name, 0.0)) * n
            counts[name] = counts.get(name, 0) + int(n)
    allq = pd.concat(tables, ignore_index=True)
    spread = spread_of(fold_maps)
    return {
        "folds": [r.name for r in runs], "queries": int(len(allq)),
        "oof_mAP": float(allq["ap"].mean()),
        "oof_scenarios": {k: float(v) for k, v in allq.groupby("scenario")["ap"].mean().items()},
        "fold_mAP": fold_maps, "fold_mean": spread["mean"], "fold_std": spread["std"],
        "random": {"mAP": rand_total / max(1, len(allq)),
                   "scenarios": {k: rand_scen[k] / counts[k] for k in sorted(rand_scen)}},
        "best_epochs": [json.loads((r / "metrics.json").read_text()).get("epoch") for r in runs],
    }


def seeds_summary(seeds: list[int], metric: str, values: list[float], **extra) -> dict:
    """What ``seeds.json`` holds: one run (or one set of folds) per seed in ``seed<s>/``, and the spread of ``metric``."""
    return {"seeds": list(seeds), "metric": metric, "values": [float(v) for v in values], **spread_of(values),
            "runs": [f"seed{s}" for s in seeds], **extra}


def hyperparameters(tree) -> dict:
    """A config as flat ``a.b: value`` pairs of scalars (what trackers accept as hyperparameters)."""
    return {k: json.dumps(v) if isinstance(v, list) else v if isinstance(v, (int, float, str, bool)) else str(v)
            for k, v in flatten(tree).items()}
