"""Local evidence in the catalogue: keypoints matched between a photo and each candidate whale's best photos,
fused with the whale's global score (``plugins/postprocess/local_match.py`` does the matching and the fusion).

The step is the one the catalogue's bundle carries (``postprocess: local_match`` in the bundle's own plugin
modules) wherever a command opens that bundle (``catalogue build``, ``identify``, ``review --bundle``); a bundle
without it, and the commands that open none (``calibrate``, ``apply``), take this installation's registered
step (``Evidence.source`` says which). It offers what ``core.contracts.LocalMatching`` states. A whale's
local score for a query is the most RANSAC inliers between the query photo and any of the whale's supporting
photos (its best ``per_whale`` by cosine). ``fuse`` replaces each candidate's score by the fused
P(same whale) and re-sorts, so everything downstream (the new-whale threshold, encounter pooling, the open-set
scores) works on the fused probability as it did on the cosine. Keypoints are stored beside the catalogue
(``<catalogue>.keypoints/``, one file per photo and option set): ``catalogue build`` extracts them for the
photos it adds, ``identify`` for its queries, so each photo is read for keypoints once.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Optional, Sequence

from catalogue.deciding.match import Candidate

log = logging.getLogger("whaleid")
# the options a calibration keeps for its keypoint evidence (the store itself is keyed by the keypoints' own)
KEYED_BY = ("detector", "matcher", "max_keypoints", "max_side", "ratio", "mirror", "min_cosine", "min_confidence")


@functools.lru_cache(maxsize=8)
def step_factory(bundle: Optional[str] = None) -> tuple:
    """(the ``local_match`` factory, where it comes from): the bundle's own when ``bundle`` (a zip's path) carries
    the step, else this installation's registered one."""
    if bundle:
        from core.bundle import opened

        with opened(bundle) as b:
            registry = b.registries["postprocess"]
            if "local_match" in registry.factories:
                return registry.factory("local_match"), f"the bundle {Path(bundle).name}"
    from core.plugins import build_registries

    return build_registries()["postprocess"].factory("local_match"), "this installation's plugins"


def step_defaults(bundle: Optional[str] = None) -> dict:
    """The ``local_match`` step's own defaults (its constructor's), the one source of them: the catalogue,
    ``whaleid calibrate`` and ``tools.fit_local`` take theirs from here."""
    import inspect

    params = inspect.signature(step_factory(bundle)[0]).parameters
    return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


def local_step(bundle: Optional[str] = None, **options):
    """The ``local_match`` step with ``options`` (``step_factory``: the bundle's when it carries it); an option
    the step does not take is refused by name."""
    from core.plugins import check_options

    factory = step_factory(str(bundle) if bundle else None)[0]
    check_options(factory, options, "postprocess 'local_match'")
    return factory(**options)


def fit_whale_fusion(ranked, counts, truth, bundle: Optional[str] = None) -> dict:
    """The step's fusion fitted on whale-level pairs: every candidate whale of every query, its score, its
    inliers, and whether it is the query's whale (``truth``, per query)."""
    step = local_step(bundle)
    records = [(str(q), [c.whale_id for c in cands], [c.score for c in cands], list(n))
               for q, (cands, n) in enumerate(zip(ranked, counts))]
    return step.fit(records, {(str(q), w) for q, w in enumerate(truth)})["fusion"]


def keypoint_dir(db: Path) -> Path:
    db = Path(db)
    return db.with_name(db.name + ".keypoints")


class Evidence:
    """Keypoint evidence for catalogue ``db``: the step (``local_step``; from ``bundle`` when it carries one) with
    the keypoint ``options`` the catalogue was calibrated with, its keypoints stored beside the file."""

    def __init__(self, db: Path, options: Optional[dict] = None, per_whale: int = 3, bundle: Optional[Path] = None):
        bundle = str(bundle) if bundle else None
        defaults, here = step_defaults(bundle), step_defaults()
        self.source = step_factory(bundle)[1]
        given = {k: v for k, v in (options or {}).items() if v is not None}
        # a bundle packed before an option existed has no such option: where the calibration asked for what this
        # installation's step does by default (matcher: nearest), the bundle's step does the same without it
        given = {k: v for k, v in given.items() if k in defaults or k not in here or here[k] != v}
        missing = {k: v for k, v in given.items() if k in KEYED_BY and k not in defaults}
        if missing:
            raise ValueError(f"the keypoint evidence asks for {', '.join(f'{k}: {v}' for k, v in missing.items())}, "
                             f"which the local_match step of {self.source} does not offer (packed before it "
                             "existed): calibrate again without it, or pack the bundle again with this installation")
        self.options = dict({k: defaults[k] for k in KEYED_BY if k in defaults}, **given)
        self.step = local_step(bundle, cache_dir=str(keypoint_dir(db)), **self.options)
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


def fuse(ranked: list[list[Candidate]], inliers: list[list[int]], fusion: dict,
         bundle: Optional[Path] = None) -> list[list[Candidate]]:
    """The candidates with the fused P(same whale) as their score, best first (inliers kept on each)."""
    model = local_step(bundle, fusion=fusion)
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
