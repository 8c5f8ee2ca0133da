"""Calibration data from every training whale: a cross-validated run's folds, each fold's held-out whales
scored by the model of that fold, which never trained on them.

``whaleid calibrate --run RUN`` takes a single run (its validation fold, scored by the catalogue's own
embeddings: the one-fold path) or a cross-validated run (``core/run.py ... data.fold=all``: ``RUN/fold<k>/``).
For a cross-validated run every fold's model embeds the catalogue's photos once more (the catalogue's stored
embeddings are left as they are), so calibrating on five folds costs five embeddings of the catalogue beside
the five trainings; ``folds`` prints each fold's time. Those embeddings are kept beside the catalogue
(``<catalogue>.folds/``), so calibrating again embeds only the photos added since.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def fold_runs(run: Path) -> list[Path]:
    """The single runs of ``run`` that have a validation fold: ``[run]`` for a single run, its folds for a CV run."""
    from core.training.runs import RunError, kind, leaf_runs

    run = Path(run)
    if (run / "split.csv").is_file():
        return [run]
    try:
        if kind(run) == "seeds":
            raise ValueError(f"{run}: a seeds parent; give one seed's folder (for example {run}/seed0)")
        leaves = leaf_runs(run)
    except RunError as exc:
        raise ValueError(f"{exc}; calibrate needs a run folder that core/run.py wrote") from None
    missing = [str(p) for p in leaves if not (p / "split.csv").is_file()]
    if missing:
        raise ValueError(f"{', '.join(missing)}: no split.csv; calibrate needs runs with a validation fold")
    return leaves


def held_out(run: Path) -> set:
    split = Path(run) / "split.csv"
    table = pd.read_csv(split, dtype=str)
    ids = set(table.loc[table["role"] == "val", "image_id"])
    if not ids:
        raise ValueError(f"{split}: no validation photos (role val); calibrate needs a run with a validation fold")
    return ids


def embed_run(run: Path, files: list, device="cpu", workers=None) -> np.ndarray:
    """Unit embeddings of ``files`` by a run folder's trained model (its best weights, else its last), as a bundle
    of that one run embeds them; plugins from this installation."""
    from omegaconf import OmegaConf

    from catalogue.embedding.embed import resolve_device
    from core.inference import embed_with_bundle
    from core.plugins import build_registries

    run = Path(run)
    weights = next((run / n for n in ("best.safetensors", "last.safetensors") if (run / n).is_file()), None)
    if weights is None:
        raise ValueError(f"{run}: no best.safetensors or last.safetensors; train the run first")
    cfg = OmegaConf.load(run / "config.yaml")
    if "pretrained" in cfg.backbone:  # the trained weights replace any starting point, as in a bundle
        cfg.backbone.pretrained = False
    if "weights" in cfg.backbone:
        cfg.backbone.weights = None
    with tempfile.TemporaryDirectory(prefix="whaleid_fold_") as tmp:
        OmegaConf.save(cfg, Path(tmp) / "config.yaml")
        manifest = {"models": [{"config": "config.yaml", "weights": str(weights.resolve()), "weight": 1.0}]}
        emb, _ = embed_with_bundle(Path(tmp), manifest, files, resolve_device(device), workers,
                                   build_registries())
    return np.asarray(emb, np.float32)


def fold_cache(db: Path, fold: Path) -> Path:
    """Where a fold model's embeddings of the catalogue's photos are kept: beside the catalogue, named by the
    SHA-256 of the fold's weights and config (new weights, new file)."""
    import hashlib

    weights = next((fold / n for n in ("best.safetensors", "last.safetensors") if (fold / n).is_file()), None)
    h = hashlib.sha256((fold / "config.yaml").read_bytes())
    if weights is not None:
        with open(weights, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    db = Path(db)
    return db.with_name(db.name + ".folds") / f"{h.hexdigest()[:32]}.npz"


def cached_embeddings(db, fold: Path, table, device="cpu", workers=None) -> tuple[np.ndarray, int]:
    """(the catalogue's photos embedded by ``fold``'s model, how many were embedded now): those embedded by an
    earlier ``calibrate`` are read back (a photo is known by its id and file)."""
    path = fold_cache(db, fold) if db is not None else None
    keys = [f"{i}\0{p}" for i, p in zip(table["image_id"].astype(str), table["path"].astype(str))]
    have: dict = {}
    if path is not None and path.is_file():
        with np.load(path, allow_pickle=False) as z:
            have = dict(zip(z["keys"].tolist(), z["emb"]))
    todo = [k for k in keys if k not in have]
    if todo:
        emb = embed_run(fold, [k.split("\0", 1)[1] for k in todo], device, workers)
        have.update(zip(todo, emb))
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, keys=np.asarray(list(have), dtype=str), emb=np.stack(list(have.values())))
            tmp.replace(path)  # whole or not at all: a crash leaves the earlier file
    return np.stack([have[k] for k in keys]).astype(np.float32), len(todo)


def folds(run: Path, table, emb: np.ndarray, device="cpu", workers=None, db=None) -> list:
    """``calibration.fit_folds``' folds: per fold run of ``run``, (its name, the catalogue embedded by its model,
    its held-out photo ids); a single run uses the catalogue's own embeddings ``emb``. With ``db``, each fold's
    embeddings are kept beside the catalogue and only photos new since are embedded again."""
    runs = fold_runs(run)
    if runs == [Path(run)]:
        return [(str(run), emb, held_out(run))]
    out = []
    for k, fold in enumerate(runs, 1):
        started = time.time()
        fold_emb, embedded = cached_embeddings(db, fold, table, device, workers)
        out.append((str(fold), fold_emb, held_out(fold)))
        print(f"fold {k}/{len(runs)} ({fold}): {embedded} of the {len(table)} catalogue photos embedded by its model "
              f"in {time.time() - started:.1f} s", flush=True)
    return out
