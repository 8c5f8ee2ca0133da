"""Local evidence in the catalogue: keypoints matched between a photo and each candidate whale's best photos,
fused with the whale's global score (``plugins/postprocess/local_match.py`` does the matching and the fusion).

The step comes from the plugin registry (``postprocess: local_match``), as a run's chain gets it. A whale's
local score for a query is the most RANSAC inliers between the query photo and any of the whale's supporting
photos (its best ``per_whale`` by cosine). ``fuse`` replaces each candidate's score by the fused
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
KEYED_BY = ("detector", "max_keypoints", "max_side", "ratio", "mirror")  # the options a keypoint store is kept for


def step_defaults() -> dict:
    """The registered ``local_match`` step's own defaults (its constructor's), the one source of them: the
    catalogue, ``whaleid calibrate`` and ``tools.fit_local`` take theirs from here."""
    import inspect

    from core.plugins import build_registries

    params = inspect.signature(build_registries()["postprocess"].factory("local_match")).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def local_step(**options):
    """The registered ``local_match`` postprocess step with ``options``."""
    from core.plugins import build_registries

    return build_registries()["postprocess"].build(dict(options, name="local_match"))


def fit_whale_fusion(ranked, counts, truth) -> dict:
    """The step's fusion fitted on whale-level pairs: every candidate whale of every query, its score, its
    inliers, and whether it is the query's whale (``truth``, per query)."""
    step = local_step()
    records = [(str(q), [c.whale_id for c in cands], [c.score for c in cands], list(n))
               for q, (cands, n) in enumerate(zip(ranked, counts))]
    return step.fit(records, {(str(q), w) for q, w in enumerate(truth)})["fusion"]


def keypoint_dir(db: Path) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".keypoints")


class Evidence:
    def __init__(self, db: Path, options: Optional[dict] = None, per_whale: int = 3):
        defaults = step_defaults()
        self.options = dict({k: defaults[k] for k in KEYED_BY}, **{k: v for k, v in (options or {}).items()
                                                                   if v is not None})
        self.step = local_step(cache_dir=str(keypoint_dir(db)), **self.options)
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

    def keypoint_counts(self, files: Sequence[Optional[str]]) -> list[int]:
        """How many keypoints each photo has (from the store; none for a missing file)."""
        return [len(self.step.features(f)[0]) for f in files]

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
    model = local_step(fusion=fusion)
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
    from catalogue.scores import NEW

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


def match_picture(evidence: Evidence, query_file: str, query_view, photo_file: str, photo_view) -> tuple[bytes, int]:
    """(PNG of the two photos side by side at the keypoints' resolution with a line between each RANSAC inlier
    pair, the inlier count). The query is drawn mirrored when it was matched mirrored (opposite lateral sides)."""
    import cv2

    step = evidence.step
    target = step.features(photo_file)
    best = None
    for flip in step.pair_flips(query_view, photo_view):
        src, dst = step.matches(step.features(query_file, flip), target)
        keep = step.inlier_mask(src, dst)
        if best is None or keep.sum() > best[3].sum():
            best = (flip, src, dst, keep)
    flip, src, dst, keep = best

    def load(path, mirrored):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise ValueError(f"cannot read {path}")
        scale = step.max_side / max(img.shape[:2])
        img = cv2.resize(img, (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        return np.ascontiguousarray(img[:, ::-1]) if mirrored else img

    a, b = load(query_file, flip), load(photo_file, False)
    gap = 8
    canvas = np.full((max(a.shape[0], b.shape[0]), a.shape[1] + gap + b.shape[1], 3), 255, np.uint8)
    canvas[:a.shape[0], :a.shape[1]] = a
    canvas[:b.shape[0], a.shape[1] + gap:] = b
    for (x0, y0), (x1, y1) in zip(src[keep], dst[keep]):
        p0, p1 = (int(round(x0)), int(round(y0))), (int(round(x1)) + a.shape[1] + gap, int(round(y1)))
        cv2.line(canvas, p0, p1, (60, 200, 60), 1, cv2.LINE_AA)
        cv2.circle(canvas, p0, 3, (40, 160, 255), 1, cv2.LINE_AA)
        cv2.circle(canvas, p1, 3, (40, 160, 255), 1, cv2.LINE_AA)
    ok, png = cv2.imencode(".png", canvas)
    if not ok:
        raise ValueError("cannot encode the picture")
    return png.tobytes(), int(keep.sum())
