"""Validation with the competition metric on scenarios built from the held-out fold."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pandas as pd

from core.metric import map_score
from core.retrieval import embed_images, predict
from core.scenarios import Scenario, random_predictions


def score_scenarios(predictions: pd.DataFrame, scenarios: Sequence[Scenario], labels: pd.DataFrame | None = None,
                    details: bool = False):
    """``{"mAP": over all labelled queries, "scenarios": {name: mAP}}``; ``labels`` default to the scenarios' own.
    With ``details`` also the per-query table (query_id, scenario, ap) that these means are taken over."""
    if labels is None:
        labels = pd.concat([sc.labels for sc in scenarios], ignore_index=True)
    per_query = map_score(predictions, labels, per_query=True)
    by_scenario = {sc.name: float(per_query.reindex(sc.queries["query_id"]).fillna(0.0).mean()) for sc in scenarios}
    result = {"mAP": float(per_query.mean()), "scenarios": by_scenario}
    if not details:
        return result
    scenario_of = {q: sc.name for sc in scenarios for q in sc.queries["query_id"]}
    table = pd.DataFrame({"query_id": per_query.index.astype(str),
                          "scenario": [scenario_of.get(q, "") for q in per_query.index],
                          "ap": per_query.to_numpy(dtype=float)})
    return result, table


def random_baseline(scenarios: Sequence[Scenario], seed: int = 0, draws: int = 20,
                    labels: pd.DataFrame | None = None) -> dict:
    """The expected score of a random ranking: the mean over ``draws`` random rankings. One draw
    scatters (s.d. 0.02 mAP on a 41-image fold), too much to judge a run's lift over chance by."""
    results = [score_scenarios(random_predictions(list(scenarios), seed + k), scenarios, labels) for k in range(draws)]
    return {"mAP": float(np.mean([r["mAP"] for r in results])),
            "scenarios": {name: float(np.mean([r["scenarios"][name] for r in results])) for name in results[0]["scenarios"]},
            "draws": draws}


def evaluate(model, loader, image_ids: Sequence[str], scenarios: Sequence[Scenario], steps: Sequence[Callable],
             device, tta_flip: bool, gather: Callable | None = None, progress: bool = False,
             autocast_dtype=None, details: bool = False, viewpoints: dict | None = None):
    """Embed every image of ``loader`` once, rank every scenario, score it. With ``details``:
    ``(result, per-query table, embeddings [N, E] in the order of image_ids)``."""
    emb, _ = embed_images(model, loader, device, tta_flip, gather=gather, num_images=len(image_ids), progress=progress,
                          autocast_dtype=autocast_dtype)
    index = {img: i for i, img in enumerate(image_ids)}
    scored = score_scenarios(predict(scenarios, emb, index, steps, viewpoints), scenarios, details=details)
    return (*scored, emb) if details else scored
