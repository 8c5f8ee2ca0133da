"""Local evidence in the catalogue: keypoints matched between a photo and each candidate whale's best photos,
fused with the whale's global score (``plugins/postprocess/local_match.py`` does the matching and the fusion).

A whale's local score for a query is the most RANSAC inliers between the query photo and any of the whale's
supporting photos (its best ``per_whale`` by cosine). ``fuse`` replaces each candidate's score by the fused
P(same whale) and re-sorts, so everything downstream (the new-whale threshold, encounter pooling, the open-set
scores) works on the fused probability as it did on the cosine. Keypoints are stored beside the catalogue
(``<catalogue>.keypoints/``, one file per photo and option set): ``catalogue build`` extracts them for the
photos it adds, ``identify`` for its queries, so each photo is read for keypoints once.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from catalogue.match import Candidate

log = logging.getLogger("whaleid")
DEFAULTS = {"detector": "sift", "max_keypoints": 500, "max_side": 512, "ratio": 0.8, "mirror": "opposite"}


def keypoint_dir(db: Path) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".keypoints")


class Evidence:
    def __init__(self, db: Path, options: Optional[dict] = None, per_whale: int = 3):
        from plugins.postprocess.local_match import LocalMatch

        self.options = dict(DEFAULTS, **(options or {}))
        self.step = LocalMatch(cache_dir=str(keypoint_dir(db)), **self.options)
        self.per_whale = int(per_whale)

    def extract(self, files: Sequence[str], desc: str = "keypoints") -> int:
        """Keypoints of ``files`` into the store (each read once; a stored one is not read again)."""
        from concurrent.futures import ThreadPoolExecutor

        from core.progress import progress

        files = [f for f in files if f]
        with ThreadPoolExecutor(self.step.workers) as pool:
            for _ in progress(pool.map(self.step.features, files), total=len(files), desc=desc, unit="photo"):
                pass
        return len(files)

    def inliers(self, query_file: Optional[str], query_view, candidates: list[Candidate], path_of: dict,
                view_of: dict) -> list[int]:
        """Per candidate whale, the most inliers between the query and one of its supporting photos."""
        out = []
        for c in candidates:
            best = 0
            for image_id, _ in c.photos[: self.per_whale]:
                target = self.step.features(path_of.get(image_id))
                for flip in self.step.pair_flips(query_view, view_of.get(image_id, "unknown")):
                    best = max(best, self.step.inliers(self.step.features(query_file, flip), target))
            out.append(best)
        return out


def fuse(ranked: list[list[Candidate]], inliers: list[list[int]], fusion: dict) -> list[list[Candidate]]:
    """The candidates with the fused P(same whale) as their score, best first (inliers kept on each)."""
    from plugins.postprocess.local_match import LocalMatch

    model = LocalMatch(fusion=fusion)
    out = []
    for cands, counts in zip(ranked, inliers):
        p = model.probability([c.score for c in cands], counts) if cands else []
        fused = [Candidate(c.whale_id, float(pi), list(c.photos), inliers=int(n)) for c, pi, n in zip(cands, p, counts)]
        out.append(sorted(fused, key=lambda c: (-c.score, c.whale_id)))
    return out


def evidence_for(evidence: Evidence, ranked, query_files, query_views, table) -> list[list[int]]:
    """Inliers of every candidate of every query, the catalogue's photo files and viewpoints from ``table``."""
    from concurrent.futures import ThreadPoolExecutor

    path_of = dict(zip(table["image_id"].astype(str), table["path"]))
    view_of = dict(zip(table["image_id"].astype(str), table["viewpoint"]))
    jobs = list(zip(query_files, query_views, ranked))
    with ThreadPoolExecutor(evidence.step.workers) as pool:
        return list(pool.map(lambda j: evidence.inliers(j[0], j[1], j[2], path_of, view_of), jobs))


def workload(ranked, truth, rates=(0.01, 0.05)) -> dict:
    """The share of photos that could be decided without review at each rate of wrong decisions: each photo
    decided as its top whale when P(top) >= 0.5, else as new, the most confident first (confidence
    ``max(P, 1 - P)``); the largest share whose wrong decisions stay within the rate. Computed on labelled
    photos: how well the scores sort right from wrong, not a threshold to deploy."""
    from catalogue.calibrate import NEW

    p = np.asarray([min(max(c[0].score, 0.0), 1.0) if c else 0.0 for c in ranked], np.float64)
    said = [c[0].whale_id if c and pi >= 0.5 else NEW for c, pi in zip(ranked, p)]
    wrong = np.asarray([s != t for s, t in zip(said, truth)], np.float64)
    order = np.argsort(-np.maximum(p, 1 - p), kind="stable")
    rate = np.cumsum(wrong[order]) / np.arange(1, len(order) + 1) if len(order) else np.zeros(0)
    out = {}
    for r in rates:
        ok = np.flatnonzero(rate <= r)
        out[f"{r:g}"] = float((ok.max() + 1) / len(order)) if len(ok) else 0.0
    return out
