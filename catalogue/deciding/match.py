"""Identity-level matching: rank known whales, not photos, for a photo or a whole encounter.

A whale's score for a query is taken over its catalogue photos' cosine similarities: their ``max`` (as
Wildbook's individual scores), or ``mean_top`` (the mean of its best ``k`` photos, steadier when a whale has
many photos). Viewpoint-aware: a top-view query is scored against the whale's top-view photos and a lateral
(left/right) one against its lateral photos, when the whale has any of that kind; else against all of them.
An encounter pools its photos: each whale's score is the best over the encounter's photos. Each candidate
names its supporting catalogue photos, best first. The search behind it is ``core.search.exact_topk`` (in
bounded memory): only each query's ``shortlist`` most similar photos are looked at, so a whale with no photo
among them is not a candidate.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from core.search import exact_topk


def view_class(viewpoint) -> str:
    v = str(viewpoint or "").lower()
    return "top" if v == "top" else "lateral" if v in ("left", "right", "lateral") else "unknown"


@dataclass
class Candidate:
    whale_id: str
    score: float
    photos: list = field(default_factory=list)  # (image_id, similarity), best first
    inliers: Optional[int] = None  # keypoint inliers with the best supporting photo, when local evidence was used


def rank_whales(query_emb: np.ndarray, query_views: Sequence[str], cat_emb: np.ndarray, cat_whales: Sequence[str],
                cat_ids: Sequence[str], cat_views: Sequence[str], how: str = "max", k: int = 3, top_n: int = 10,
                shortlist: int = 200, exclude: Optional[Sequence[str]] = None, search=None) -> list[list[Candidate]]:
    """Per query, up to ``top_n`` candidate whales, best first. ``exclude``: per query, a catalogue image id
    never to use (the query's own photo when it is in the catalogue). ``search``: ``(queries, k) -> (similarities,
    positions)`` in place of exact search (``catalogue.embedding.index``; -1 positions are skipped)."""
    if how not in ("max", "mean_top"):
        raise ValueError(f"how must be max or mean_top, got {how!r}")
    if len(cat_emb) == 0:
        return [[] for _ in range(len(query_emb))]
    import pandas as pd

    cat_whales, cat_ids = np.asarray(cat_whales, dtype=object), np.asarray(cat_ids, dtype=object)
    text = pd.Series(list(cat_views), dtype=object).fillna("").astype(str).str.lower()  # view_class, vectorised
    views = np.where(text == "top", "top", np.where(text.isin(["left", "right", "lateral"]), "lateral", "unknown"))
    codes, _ = pd.factorize(pd.Series(cat_whales, dtype=object), use_na_sentinel=False)
    has_view = {}  # view class -> per whale code: the whale has a photo of that class
    for v in ("top", "lateral", "unknown"):
        has_view[v] = np.zeros(codes.max() + 1, bool)
        has_view[v][codes[views == v]] = True
    own = None
    if exclude is not None:
        where = {img: i for i, img in enumerate(cat_ids)}
        own = np.asarray([where.get(e, -1) for e in exclude], dtype=np.int64)
    if search is not None and own is not None:
        raise ValueError("rank_whales: exclude needs exact search")
    k_short = min(shortlist, len(cat_emb))
    sims, rows = search(query_emb, k_short) if search is not None else exact_topk(query_emb, cat_emb, k_short, own=own)
    out = []
    for qi in range(len(query_emb)):
        qv = view_class(query_views[qi]) if query_views is not None else "unknown"
        per: dict = {}
        for s, r in zip(sims[qi], rows[qi]):
            if r < 0:
                continue
            w = cat_whales[r]
            if qv != "unknown" and has_view[qv][codes[r]] and views[r] != qv:
                continue  # the whale has photos of the query's kind: compare like with like
            per.setdefault(w, []).append((str(cat_ids[r]), float(s)))
        cands = []
        for w, photos in per.items():
            top = [s for _, s in photos[:k]]
            score = photos[0][1] if how == "max" else float(np.mean(top))
            cands.append(Candidate(str(w), score, photos[:k]))
        cands.sort(key=lambda c: (-c.score, c.whale_id))
        out.append(cands[:top_n])
    return out


def pool_encounter(per_photo: list[list[Candidate]], top_n: int = 10) -> list[Candidate]:
    """One encounter's candidates from its photos' candidates: each whale's best score over the photos (and its
    most inliers, with local evidence), with the supporting photos of all of them, best first."""
    best: dict = {}
    for cands in per_photo:
        for c in cands:
            have = best.get(c.whale_id)
            if have is None:
                best[c.whale_id] = Candidate(c.whale_id, c.score, list(c.photos), inliers=c.inliers)
            else:
                have.score = max(have.score, c.score)
                if c.inliers is not None:  # the most keypoint inliers any of the photos has with the whale
                    have.inliers = max(have.inliers or 0, c.inliers)
                have.photos = sorted(set(have.photos) | set(c.photos), key=lambda p: -p[1])
    return sorted(best.values(), key=lambda c: (-c.score, c.whale_id))[:top_n]
