"""Postprocess steps fitted on a run's validation whales after training (``local_match``'s fusion).

A step takes part when it is a ``core.contracts.FittedStep``: ``fit(records, truth) -> options`` (and from then on
it ranks with them), ``record`` (set to a list, the step appends what it saw while ranking), ``needs_top_k``
(candidates the ranking step before it must keep) and ``fitted_keys`` (the options ``fit`` returns).
``fit_postprocess(run)`` builds the run's chain once, as asked in its ``config.yaml`` less any fitted options,
ranks the run's validation scenarios (``split.csv``, the best epoch's embeddings in ``oof.npz``, the photo files
from ``data.root``) with the steps recording, calls each ``fit`` with the pairs of one whale, ranks again with
the fitted steps, and writes the options to the run's ``fitted.yaml`` (``config.yaml`` stays what was asked;
``core.training.runs.run_config`` reads the two together, and so does ``submission.build``) and
``postprocess_fit.json``: the validation mAP of the chain before the fit and after it (in sample: fitted on
those pairs). Nothing of a test set is read.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger("whaleid")


def fittable(steps) -> list[int]:
    return [k for k, s in enumerate(steps) if callable(getattr(s, "fit", None)) and hasattr(s, "record")]


def fit_after_training(out: Path, steps) -> dict | None:
    """What ``core/run.py`` calls once a run is trained (or evaluated): fit its fittable steps, if any, on the
    best epoch's validation embeddings, so what a bundle of it ranks with is what was fitted."""
    if fittable(steps) and (Path(out) / "oof.npz").exists():
        return fit_postprocess(out)
    return None


def fit_postprocess(run: Path, chain: list | None = None) -> dict | None:
    """Fit the fittable steps of ``chain`` (default: the run's ``postprocess`` as asked) on ``run``'s validation
    fold; None when no step is fittable."""
    from omegaconf import OmegaConf

    from core.data import read_metadata
    from core.plugins import build_registries
    from core.retrieval import build_steps, predict
    from core.metric import score_scenarios
    from core.training.runs import fold_scenarios, read_oof, write_fitted, write_json

    run = Path(run)
    cfg = OmegaConf.load(run / "config.yaml")
    specs = [dict(s) for s in (chain or OmegaConf.to_container(cfg.postprocess, resolve=True))]
    registry = build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])["postprocess"]
    for spec in specs:  # the chain as it ranks before the fit: no fitted options
        for key in getattr(registry.factory(spec["name"]), "fitted_keys", ()):
            spec.pop(key, None)
    steps = build_steps(specs, registry)
    targets = fittable(steps)
    if not targets:
        return None
    for k in targets:
        ranking = [j for j in range(k) if "top_k" in specs[j]]
        if ranking and int(specs[ranking[-1]]["top_k"]) < steps[k].needs_top_k:
            raise ValueError(f"postprocess step {specs[k]['name']} matches {steps[k].needs_top_k} candidates a query, "
                             f"but {specs[ranking[-1]]['name']} before it keeps {specs[ranking[-1]]['top_k']}: "
                             f"set its top_k to at least {steps[k].needs_top_k}")
    image_ids, scenarios = fold_scenarios(run)
    emb = read_oof(run, image_ids)
    meta = read_metadata(cfg.data.root, require_identity=False)
    files = dict(zip(meta["image_id"].astype(str), meta["file"]))
    views = dict(zip(meta["image_id"].astype(str), meta["viewpoint"]))
    index = {img: i for i, img in enumerate(image_ids)}
    truth = {(str(q), str(d)) for sc in scenarios for q, d in zip(sc.labels["query_id"], sc.labels["database_image_id"])}

    for k in targets:
        steps[k].record = []
    started = time.time()
    before = score_scenarios(predict(scenarios, emb, index, steps, views, files), scenarios)
    seconds = time.time() - started
    fitted = []
    for k in targets:
        options = steps[k].fit(steps[k].record, truth)  # the step ranks with its options from here on
        steps[k].record = None
        fitted.append({"step": k, "name": specs[k]["name"], "options": options, **getattr(steps[k], "fit_pairs", {})})
    after = score_scenarios(predict(scenarios, emb, index, steps, views, files), scenarios)
    report = {"steps": fitted, "validation_before": before, "validation_after_in_sample": after,
              "queries": sum(len(sc.queries) for sc in scenarios), "rank_seconds": round(seconds, 2)}
    write_fitted(run, [{"step": f["step"], "name": f["name"], **f["options"]} for f in fitted], specs)
    write_json(run / "postprocess_fit.json", report)
    log.info("postprocess fitted on the validation whales: %s; val mAP %.4f before, %.4f after (in sample)",
             json.dumps([s["options"] for s in report["steps"]]), before["mAP"], after["mAP"])
    return report
