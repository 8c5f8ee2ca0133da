"""What a submission's ``main.py`` does: embed the test images with each bundled model, combine
the models, rank every scenario's database, and write ``submission.csv``.

Bundle layout (made by ``submission.build``): ``manifest.json``, ``models/<k>/config.yaml`` and
``models/<k>/weights.safetensors``, and the ``core``/``plugins`` modules inference needs. Needs only
torch, numpy, pandas, PIL, pluggy, omegaconf, timm (and faiss when configured), at the 2022 runtime's
versions or today's (``submission/runtime-2022.txt``; weights are read by ``core.weights``).

Bad data never stops the run: a missing or corrupt image, an image id absent from metadata, or an
empty database is logged by name, and the file written is always valid.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from core.data import EvalImages, read_metadata
from core.images import IMAGENET_MEAN, IMAGENET_STD
from core.metric import validate_predictions
from core.plugins import build_registries
from core.retrieval import build_steps, combine_embeddings, embed_images, predict
from core.scenarios import distinct, read_scenarios

log = logging.getLogger("whaleid.inference")


def load_manifest(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def image_files(data_root: Path, image_ids: list[str]) -> list[str]:
    """A path per image id: from metadata.csv, else ``images/<id>.jpg`` (logged); missing files stay
    in the list and are handled when read."""
    try:
        meta = read_metadata(data_root, require_identity=False)
        known = dict(zip(meta["image_id"], meta["file"]))
    except Exception as exc:  # a broken metadata file must not stop the run
        log.warning("cannot use %s/metadata.csv (%s); looking images up as images/<id>.jpg", data_root, exc)
        known = {}
    files = []
    for image_id in image_ids:
        if image_id not in known:
            log.warning("image id %s is not in metadata.csv; trying images/%s.jpg", image_id, image_id)
        files.append(known.get(image_id, str(data_root / "images" / f"{image_id}.jpg")))
    return files


def image_viewpoints(data_root: Path) -> dict[str, str]:
    """image id -> viewpoint from metadata.csv, or {} when it cannot be read (steps then see 'unknown')."""
    try:
        meta = read_metadata(data_root, require_identity=False)
        return dict(zip(meta["image_id"], meta["viewpoint"]))
    except Exception as exc:
        log.warning("no viewpoints for viewpoint-aware steps (%s)", exc)
        return {}


def bundle_registries(manifest: dict) -> dict:
    """Registries filled by the bundle's own plugin modules only (no built-ins, no entry points)."""
    return build_registries(manifest["plugins"], builtins=(), entry_points=False)


def load_bundle_model(bundle: Path, entry: dict, registries: dict):
    """(model in eval mode with its trained weights, its config) for one ``manifest["models"]`` entry."""
    from omegaconf import OmegaConf

    from core.model import build_model, load_weights

    cfg = OmegaConf.load(bundle / entry["config"])
    model = build_model(cfg, registries)
    load_weights(model, bundle / entry["weights"])
    return model.eval(), cfg


def embed_with_bundle(bundle: Path, manifest: dict, files: list[str], device: torch.device,
                      num_workers: int | None = None, registries: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(combined embeddings [N, D], ok [N]) over every model of the bundle, with the manifest's weights."""
    per_model, weights, ok = embed_models(bundle, manifest, files, device, num_workers, registries)
    return combine_embeddings(per_model, weights), ok


def embed_models(bundle: Path, manifest: dict, files: list[str], device: torch.device,
                 num_workers: int | None = None, registries: dict | None = None):
    """(per-model embeddings, the manifest's weights, ok [N]) over every model of the bundle."""
    if num_workers is None:
        num_workers = default_workers()
    registries = registries or bundle_registries(manifest)
    per_model, weights, ok_all = [], [], np.ones(len(files), bool)
    for k, entry in enumerate(manifest["models"]):
        started = time.time()
        model, cfg = load_bundle_model(bundle, entry, registries)
        model.to(device)
        mean = tuple(cfg.dataset.get("mean", IMAGENET_MEAN))
        std = tuple(cfg.dataset.get("std", IMAGENET_STD))
        images = EvalImages(files, list(cfg.data.image_size), mean, std, on_error="blank",
                            rotate_landscape=bool(cfg.data.get("rotate_landscape", False)))
        loader = DataLoader(images, batch_size=int(cfg.infer.batch_size), num_workers=num_workers,
                            pin_memory=device.type == "cuda")
        autocast = torch.float16 if device.type == "cuda" else None
        emb, ok = embed_images(model, loader, device, bool(cfg.infer.tta_flip), num_images=len(files),
                               autocast_dtype=autocast, log_every=20)
        per_model.append(emb)
        weights.append(float(entry["weight"]))
        ok_all &= ok
        log.info("model %d/%d (%s) embedded %d images in %.1f s", k + 1, len(manifest["models"]),
                 cfg.backbone.get("model", cfg.backbone.name), len(files), time.time() - started)
        del model
    return per_model, weights, ok_all


def predict_by_viewpoint(scenarios, per_model, weights, viewpoint_weights: dict, index, steps, views,
                         files: dict | None = None) -> pd.DataFrame:
    """Predictions with each scenario's models combined by ``viewpoint_weights[kind]`` (a weight per model,
    per scenario kind: ``top_top``, ``top_lateral``, ...), or by ``weights`` for a kind it does not list."""
    from core.retrieval import viewpoint_kind

    combined, frames = {}, []
    for sc in scenarios:
        kind = viewpoint_kind([views.get(i, "unknown") for i in sc.queries["query_image_id"]],
                              [views.get(i, "unknown") for i in sc.database["database_image_id"]])
        key = kind if kind in (viewpoint_weights or {}) else None
        if key not in combined:
            combined[key] = combine_embeddings(per_model, viewpoint_weights[key] if key else weights)
            if key:
                log.info("scenarios of kind %s combine the models with weights %s", key, viewpoint_weights[key])
        frames.append(predict([sc], combined[key], index, steps, views, files))
    if not frames:
        return pd.DataFrame(columns=["query_id", "database_image_id", "score"])
    return pd.concat(frames, ignore_index=True)


def save_embeddings(per_model, image_ids, ok) -> None:
    """With WHALEID_SAVE_EMBEDDINGS=FILE (``submission.check --save-embeddings``), keep every model's embeddings
    of the test images, for comparing one bundle across machines or package versions."""
    path = os.environ.get("WHALEID_SAVE_EMBEDDINGS")
    if not path:
        return
    try:
        np.savez(path, image_ids=np.asarray(image_ids), ok=ok, **{f"model{k}": e for k, e in enumerate(per_model)})
        log.info("saved the embeddings to %s", path)
    except OSError as exc:  # a debugging aid must never cost the submission its file
        log.warning("cannot save the embeddings to %s: %s", path, exc)


def fallback_predictions(scenarios) -> pd.DataFrame:
    """A valid file when the models cannot run: each query's first 20 other database images, equal scores."""
    rows = []
    for sc in scenarios:
        queries, db = distinct(sc)
        for qid, img in zip(queries["query_id"], queries["query_image_id"]):
            rows += [(qid, d, 0.5) for d in [d for d in db if d != img][:20]]
    return pd.DataFrame(rows, columns=["query_id", "database_image_id", "score"])


def write_csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def default_workers() -> int:
    """Image-loading processes: one core is left to the model (on 2 cores, 2 workers were slower)."""
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def run(bundle: Path, data_root: Path, output: Path, num_workers: int | None = None) -> dict:
    """Write ``output`` (always a valid file); returns counts and timings."""
    started = time.time()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if num_workers is None:
        num_workers = default_workers()
    try:
        scenarios = read_scenarios(data_root, skip_broken=True)
    except Exception:
        log.exception("cannot read the scenarios under %s; writing a file with no rows", data_root)
        write_csv(pd.DataFrame(columns=["query_id", "database_image_id", "score"]), output)
        return {"status": "no scenarios", "rows": 0, "queries": 0, "seconds": round(time.time() - started, 2)}
    query_map = {q: i for sc in scenarios for q, i in zip(sc.queries["query_id"], sc.queries["query_image_id"])}
    needed = sorted({i for sc in scenarios for i in sc.queries["query_image_id"]}
                    | {i for sc in scenarios for i in sc.database["database_image_id"]})
    log.info("%d scenarios, %d queries, %d distinct images; device %s", len(scenarios), len(query_map), len(needed), device)
    status = "ok"
    try:
        manifest = load_manifest(bundle)
        registries = bundle_registries(manifest)
        files = image_files(data_root, needed)
        per_model, weights, ok = embed_models(bundle, manifest, files, device, num_workers, registries)
        save_embeddings(per_model, needed, ok)
        bad = [needed[i] for i in np.flatnonzero(~ok)]
        if bad:
            log.warning("%d images could not be read and are left out of databases: %s", len(bad), ", ".join(bad[:20]))
        index = {img: i for i, img in enumerate(needed) if ok[i]}
        steps = build_steps(manifest["postprocess"], registries["postprocess"])
        embedded = time.time()
        predictions = predict_by_viewpoint(scenarios, per_model, weights, manifest.get("viewpoint_weights") or {},
                                           index, steps, image_viewpoints(data_root), dict(zip(needed, files)))
        log.info("ranked %d scenarios in %.2f s", len(scenarios), time.time() - embedded)
    except Exception:
        log.exception("inference failed; writing a fallback ranking so the file stays valid")
        predictions, status = fallback_predictions(scenarios), "fallback"
    validate_predictions(predictions, query_map)
    missing = sorted(set(query_map) - set(predictions["query_id"]))
    if missing:
        log.warning("%d queries have no database image to return (empty database or only themselves): %s",
                    len(missing), ", ".join(missing[:10]))
    write_csv(predictions, output)
    stats = {"status": status, "rows": len(predictions), "queries": len(query_map), "queries_without_rows": len(missing),
             "images": len(needed), "seconds": round(time.time() - started, 2)}
    log.info("wrote %s: %s", output, stats)
    return stats
