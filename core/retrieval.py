"""The one inference path: embed images once, combine models, rank databases, score queries.

Used by validation in ``core/run.py``, by ``submission/main.py`` and by the benchmarks, so what is
validated is what is submitted. No accelerate here: distributed callers pass a ``gather`` function.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

import numpy as np
import pandas as pd
import torch
from torch.nn import functional as F

from core.compat import autocast
from core.scenarios import distinct

log = logging.getLogger(__name__)


@torch.no_grad()
def embed_images(model: torch.nn.Module, loader: Iterable, device, tta_flip: bool = True,
                 gather: Callable | None = None, num_images: int | None = None, progress: bool = False,
                 autocast_dtype: torch.dtype | None = None, log_every: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(L2-normalised float32 [N, E] embeddings in position order, bool [N] image read fine).

    The loader yields ``(images [B, 3, h, w], positions [B], ok [B])`` (see ``core.data.EvalImages``).
    With ``tta_flip`` the embeddings of the image and its horizontal mirror are averaged before
    normalising (the seed's TTA). ``gather`` (e.g. ``accelerator.gather_for_metrics``) collects the
    batch from all processes; rows are placed by position, so duplicated padding rows do no harm.
    Progress: with ``progress`` a tqdm bar on a terminal and plain log lines otherwise (``core.progress``),
    or a log line every ``log_every`` batches.
    """
    model.eval()
    chunks, positions, oks = [], [], []
    batches = loader
    if progress:
        from core.progress import progress as show_progress

        batches = show_progress(loader, desc="embed", unit="batch")
    device_type = torch.device(device).type
    for images, pos, ok in batches:
        images = images.to(device, non_blocking=True)
        # autocast only when asked, through the API the installed torch has (1.8 in the 2022 runtime)
        amp = autocast(device_type, autocast_dtype) if autocast_dtype else contextlib.nullcontext()
        with amp:
            emb = model(images).float()
            if tta_flip:
                emb = (emb + model(torch.flip(images, dims=[3])).float()) / 2
        emb = F.normalize(emb, dim=1)
        pos, ok = pos.to(emb.device), ok.to(emb.device, torch.uint8)  # uint8: not every backend gathers bool
        if gather is not None:
            emb, pos, ok = gather((emb, pos, ok))
        chunks.append(emb.cpu())
        positions.append(pos.cpu())
        oks.append(ok.cpu())
        if log_every and len(chunks) % log_every == 0:
            log.info("embedded %d batches (%d images)", len(chunks), sum(len(c) for c in chunks))
    n = num_images if num_images is not None else (int(torch.cat(positions).max()) + 1 if positions else 0)
    if not chunks:
        return np.zeros((n, 0), np.float32), np.zeros(n, bool)
    emb, pos = torch.cat(chunks), torch.cat(positions).long()
    out = torch.zeros(n, emb.shape[1])
    out[pos] = emb
    good = torch.zeros(n, dtype=torch.bool)
    good[pos] = torch.cat(oks).bool()
    return out.numpy(), good.numpy()


def combine_embeddings(per_model: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """One [N, sum E_i] matrix whose inner products are the weighted mean of the models' cosines.

    With unit rows ``e_i``, ``sum_i w_i cos_i / sum w = <concat(sqrt(w_i / sum w) e_i), ...>``, so one
    kNN over the concatenation gives exactly the seed's per-model similarity average.
    """
    w = np.asarray(weights, dtype=np.float64)
    if len(per_model) != len(w) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"need one non-negative weight per model with a positive sum, got {list(weights)}")
    parts = [np.sqrt(wi / w.sum()).astype(np.float32) * e for wi, e in zip(w, per_model)]
    return np.concatenate(parts, axis=1).astype(np.float32)


VIEW_KINDS = ("top_top", "top_lateral", "lateral_top", "lateral_lateral", "mixed", "unknown")


def viewpoint_kind(query_views, db_views) -> str:
    """``top_top``, ``top_lateral``, ``lateral_top``, ``lateral_lateral`` when all queries and all database
    images are top or lateral (left/right), ``mixed`` otherwise, ``unknown`` when a viewpoint is unknown."""
    query_views, db_views = list(query_views), list(db_views)
    if not query_views or any(v not in ("top", "left", "right") for v in query_views + db_views):
        return "unknown"

    def side(views):
        tops = {v == "top" for v in views}
        return "top" if tops == {True} else "lateral" if tops == {False} else "mixed"

    q, d = side(query_views), side(db_views) if db_views else "top"
    return "mixed" if "mixed" in (q, d) else f"{q}_{d}"


@dataclass
class RetrievalContext:
    """One scenario's retrieval state, passed through the postprocess steps.

    query_ids [Q], query_image_ids [Q], db_image_ids [N]; query_emb float32 [Q, D] and db_emb
    float32 [N, D] (unit rows); after a ranking step, ``ranked[q]`` = (db positions int [k],
    scores float [k] in [0, 1], best first) and ``similarity[q]`` the raw similarities.
    """

    query_ids: list[str]
    query_image_ids: list[str]
    db_image_ids: list[str]
    query_emb: np.ndarray
    db_emb: np.ndarray
    scenario: str = ""
    ranked: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    similarity: list[np.ndarray] = field(default_factory=list)
    query_viewpoints: list[str] | None = None  # top | left | right per query, when the metadata says
    db_viewpoints: list[str] | None = None
    query_files: list[str] | None = None  # the photo files, for steps that read them (``local_match``)
    db_files: list[str] | None = None

    def kind(self) -> str:
        """The scenario's viewpoint kind (``viewpoint_kind``); 1st place switched its re-ranking on it."""
        if not self.query_viewpoints or self.db_viewpoints is None:
            return "unknown"
        return viewpoint_kind(self.query_viewpoints, self.db_viewpoints)

    def to_frame(self) -> pd.DataFrame:
        rows_q, rows_db, rows_s = [], [], []
        db = np.asarray(self.db_image_ids, dtype=object)
        for qid, (idx, scores) in zip(self.query_ids, self.ranked):
            rows_q += [qid] * len(idx)
            rows_db += list(db[idx])
            rows_s += list(map(float, scores))
        return pd.DataFrame({"query_id": rows_q, "database_image_id": rows_db, "score": rows_s})


def rank_scenario(ctx: RetrievalContext, steps: Sequence[Callable]) -> pd.DataFrame:
    """Apply the postprocess ``steps`` in order and return the scenario's prediction rows."""
    for step in steps:
        ctx = step(ctx)
    if len(ctx.ranked) != len(ctx.query_ids):
        raise RuntimeError(f"postprocess chain left {len(ctx.ranked)} rankings for {len(ctx.query_ids)} queries; "
                           "the chain needs a ranking step such as 'knn'")
    return ctx.to_frame()


def predict(scenarios: Iterable, embeddings: np.ndarray, image_index: dict[str, int],
            steps: Sequence[Callable], viewpoints: dict[str, str] | None = None,
            files: dict[str, str] | None = None) -> pd.DataFrame:
    """Prediction rows for every scenario. ``scenarios`` yield objects with ``name``, ``queries``
    (query_id, query_image_id) and ``database`` (database_image_id); ``image_index`` maps an image
    id to its row in ``embeddings``. Images missing from the index are dropped from databases, and a
    query with no embedding is ranked with a zero vector (all scores tie) so it still gets rows.
    ``viewpoints`` (image id -> top/left/right) lets viewpoint-aware steps see each scenario's kind; ``files``
    (image id -> photo file) lets steps read the photos themselves."""
    frames = []
    zero = np.zeros(embeddings.shape[1], np.float32)
    for sc in scenarios:
        queries, listed = distinct(sc)  # an id listed twice is ranked once
        db_ids = [i for i in listed if i in image_index]
        if len(db_ids) < len(listed):
            log.warning("scenario %s: %d database images have no embedding and are left out",
                        sc.name, len(listed) - len(db_ids))
        if len(queries) < len(sc.queries):
            log.warning("scenario %s: %d repeated query ids answered once", sc.name, len(sc.queries) - len(queries))
        q_ids = list(queries["query_id"])
        q_imgs = list(queries["query_image_id"])
        if not q_ids:
            log.warning("scenario %s has no queries; skipped", sc.name)
            continue
        q_emb = np.stack([embeddings[image_index[i]] if i in image_index else zero for i in q_imgs])
        db_emb = embeddings[[image_index[i] for i in db_ids]] if db_ids else np.zeros((0, embeddings.shape[1]), np.float32)
        ctx = RetrievalContext(q_ids, q_imgs, db_ids, q_emb, db_emb, scenario=sc.name)
        if viewpoints:
            ctx.query_viewpoints = [viewpoints.get(i, "unknown") for i in q_imgs]
            ctx.db_viewpoints = [viewpoints.get(i, "unknown") for i in db_ids]
        if files:
            ctx.query_files = [files.get(i) for i in q_imgs]
            ctx.db_files = [files.get(i) for i in db_ids]
        frames.append(rank_scenario(ctx, steps))
    if not frames:
        return pd.DataFrame(columns=["query_id", "database_image_id", "score"])
    return pd.concat(frames, ignore_index=True)


def build_steps(postprocess_specs: Sequence[dict], registry) -> list[Callable]:
    """The configured postprocess chain, built through the plugin registry."""
    return [registry.build(spec) for spec in postprocess_specs]
