"""Postprocess steps fitted on validation whales (``local_match``'s fusion): after training, on a run's own, and
when several runs are packed, on what their ensemble ranks.

A step takes part when it is a ``core.contracts.FittedStep``: ``fit(records, truth) -> options`` (and from then on
it ranks with them), ``record`` (set to a list, the step appends what it saw while ranking), ``needs_top_k``
(candidates the ranking step before it must keep) and ``fitted_keys`` (the options ``fit`` returns).
``fit_chain`` builds the chain once, as asked less any fitted options, ranks validation scenarios (``split.csv``,
the best epoch's embeddings in ``oof.npz``, the photo files from ``data.root``) with the steps recording, calls
each ``fit`` with the pairs of one whale, and ranks again with the fitted steps. Nothing of a test set is read.

- ``fit_postprocess(run)``: a run's own validation fold; the options go to the run's ``fitted.yaml``
  (``config.yaml`` stays what was asked; ``core.training.runs.run_config`` reads the two together, and so does
  ``submission.build``) and ``postprocess_fit.json`` holds the validation mAP before and after (in sample).
- ``fit_ensemble(runs, weights, chain)``: what a bundle of several runs ranks (``submission.build``): the members
  grouped by their validation fold, each group's embeddings combined as the bundle combines them, the groups'
  records pooled. A whale is scored only by members that never trained on it: a fold ensemble fits on its
  out-of-fold scores, a seeds ensemble on its own combined scores, never on one member's.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

log = logging.getLogger("whaleid")


def fittable(steps) -> list[int]:
    return [k for k, s in enumerate(steps) if callable(getattr(s, "fit", None)) and hasattr(s, "record")]


def ranking_step(specs: list, registry, before: int | None = None) -> tuple | None:
    """(index, top_k) of the last step of ``specs`` before position ``before`` (default: the end) whose factory
    keeps ``top_k`` candidates a query (``knn``, ``k_reciprocal``, ``db_anchor_rerank``): the ranking a
    re-ranking step such as ``local_match`` follows, with the top_k it keeps (its default when the spec omits
    it); None when there is none. The one way the project finds it (the fit here, ``tools.fit_local``)."""
    import inspect

    for j in reversed(range(len(specs) if before is None else before)):
        params = inspect.signature(registry.factory(specs[j]["name"])).parameters
        if "top_k" in params:
            return j, int(specs[j].get("top_k", params["top_k"].default))
    return None


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

    from core.training.runs import write_fitted, write_json

    run = Path(run)
    cfg = OmegaConf.load(run / "config.yaml")
    report = fit_chain(chain or OmegaConf.to_container(cfg.postprocess, resolve=True), cfg, [[(run, 1.0)]])
    if report is None:
        return None
    write_fitted(run, [{"step": f["step"], "name": f["name"], **f["options"]} for f in report["steps"]], report["asked"])
    write_json(run / "postprocess_fit.json", {k: v for k, v in report.items() if k not in ("asked", "chain")})
    log.info("postprocess fitted on the validation whales: %s; val mAP %.4f before, %.4f after (in sample)",
             json.dumps([s["options"] for s in report["steps"]]), report["validation_before"]["mAP"],
             report["validation_after_in_sample"]["mAP"])
    return report


def fit_ensemble(runs: list, weights: list, chain: list) -> dict | None:
    """The fittable steps of ``chain`` fitted on what the ensemble of ``runs`` (weighted by ``weights``) ranks for
    validation whales: members sharing a validation fold (their ``split.csv``) form a group whose embeddings are
    combined as the bundle combines them; the groups' records are pooled. None when no step is fittable."""
    from core.plugins import build_registries
    from core.training.runs import fold_scenarios, run_config

    cfg = run_config(runs[0])
    registry = build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])["postprocess"]
    if not any(callable(getattr(registry.factory(s["name"]), "fit", None)) for s in chain):
        return None  # nothing to fit: the members' folds are not read
    groups: dict = {}
    for run, weight in zip(runs, weights):
        if float(weight) > 0:
            groups.setdefault(tuple(fold_scenarios(Path(run))[0]), []).append((Path(run), float(weight)))
    return fit_chain(chain, cfg, list(groups.values()), registry)


def fit_chain(chain: list, cfg, groups: list, registry=None) -> dict | None:
    """Fit ``chain``'s fittable steps on ``groups`` (each a list of (run, weight) sharing a validation fold);
    the report holds the chain as asked and as fitted, what each step fitted, and the validation mAP before and
    after (in sample, pooled over the groups' queries)."""
    import numpy as np

    from core.data import read_metadata
    from core.plugins import build_registries
    from core.retrieval import build_steps, predict
    from core.metric import score_scenarios
    from core.training.runs import fold_scenarios, read_oof

    specs = [dict(s) for s in chain]
    if registry is None:
        registry = build_registries(cfg.plugins, exclude=cfg.get("plugins_exclude") or [])["postprocess"]
    for spec in specs:  # the chain as it ranks before the fit: no fitted options
        for key in getattr(registry.factory(spec["name"]), "fitted_keys", ()):
            spec.pop(key, None)
    steps = build_steps(specs, registry)
    targets = fittable(steps)
    if not targets:
        return None
    for k in targets:
        found = ranking_step(specs, registry, k)
        if found and found[1] < steps[k].needs_top_k:
            raise ValueError(f"postprocess step {specs[k]['name']} matches {steps[k].needs_top_k} candidates a query, "
                             f"but {specs[found[0]]['name']} before it keeps {found[1]}: "
                             f"set its top_k to at least {steps[k].needs_top_k}")
    meta = read_metadata(cfg.data.root, require_identity=False)
    files = dict(zip(meta["image_id"].astype(str), meta["file"]))
    views = dict(zip(meta["image_id"].astype(str), meta["viewpoint"]))
    folds, truth = [], set()
    for members in groups:
        image_ids, scenarios = fold_scenarios(members[0][0])
        total = sum(w for _, w in members)
        if len(members) == 1:
            emb = read_oof(members[0][0], image_ids)
        else:  # as the bundle combines its models: each L2-normalised, scaled by sqrt(weight / sum), concatenated
            parts = [read_oof(run, image_ids) for run, _ in members]
            emb = np.concatenate([p / np.maximum(np.linalg.norm(p, axis=1, keepdims=True), 1e-12) * np.sqrt(w / total)
                                  for p, (_, w) in zip(parts, members)], 1).astype(np.float32)
        folds.append((scenarios, emb, {img: i for i, img in enumerate(image_ids)}))
        truth |= {(str(q), str(d)) for sc in scenarios for q, d in zip(sc.labels["query_id"], sc.labels["database_image_id"])}

    def rank() -> dict:
        scored = [(score_scenarios(predict(sc, emb, index, steps, views, files), sc), sum(len(s.queries) for s in sc))
                  for sc, emb, index in folds]
        n = sum(c for _, c in scored)
        names = sorted({name for s, _ in scored for name in s["scenarios"]})
        return {"mAP": sum(s["mAP"] * c for s, c in scored) / n,
                "scenarios": {name: float(np.mean([s["scenarios"][name] for s, _ in scored if name in s["scenarios"]]))
                              for name in names}}

    for k in targets:
        steps[k].record = []
    started = time.time()
    before = rank()
    seconds = time.time() - started
    fitted = []
    for k in targets:
        options = steps[k].fit(steps[k].record, truth)  # the step ranks with its options from here on
        steps[k].record = None
        fitted.append({"step": k, "name": specs[k]["name"], "options": options, **getattr(steps[k], "fit_pairs", {})})
    after = rank()
    ranked = [dict(s) for s in specs]
    for f in fitted:
        ranked[f["step"]].update(f["options"])
    return {"steps": fitted, "validation_before": before, "validation_after_in_sample": after,
            "queries": sum(len(s.queries) for sc, _, _ in folds for s in sc), "folds": len(folds),
            "members": sum(len(m) for m in groups), "rank_seconds": round(seconds, 2), "asked": specs, "chain": ranked}
