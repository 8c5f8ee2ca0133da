"""Postprocess ``local_match``: keypoints matched on the original photos, fused with the global score.

A re-ranking step after a ranking step (``knn`` with ``top_k`` at least ``shortlist``). For each query the first
``shortlist`` candidates of the global ranking are matched:

- **keypoints** (OpenCV: ``sift`` by default, or ``orb``; or the learned ``xfeat``, ``xfeat_keypoints.py``,
  which the 2022 runtime cannot run; at most ``max_keypoints``) on the photo
  file itself, converted to grey and resized so that its longer side is ``max_side`` px, not on the model's
  squashed input; computed once per file and kept for the run (``self.cache``, keyed by the file's path, size
  and modification time and by the options, so a changed photo or option is computed again), and on disk
  under ``cache_dir`` when one is given;
- **matching**: each query descriptor's two nearest candidate descriptors (L2 for SIFT, Hamming for the binary
  ones), kept when the nearest is under ``ratio`` times the second (Lowe's test); XFeat's descriptors are paired
  as its authors pair them, mutual nearest neighbours by cosine above ``min_cosine``; or, with ``matcher:
  lighterglue`` (XFeat only), by the learned matcher LighterGlue (``lighterglue_matcher.py``), pairs whose
  confidence is above ``min_confidence``;
- **verification**: RANSAC of a similarity transform (rotation, uniform scale, translation: OpenCV's "partial
  affine") over the kept matches, ``ransac_iters`` hypotheses from a fixed seed, a match an inlier within
  ``ransac_px`` px (at ``max_side``); written in numpy, so it gives the same count under every OpenCV;
- **mirrored views**: a left and a right view of one whale show its two sides, and the dorsal ridge seen from
  the other side is its mirror image, so with ``mirror: opposite`` (the default) a left query is matched
  against a right candidate (and the reverse) flipped left to right; photos of one side, and top views, are
  matched as they are; an unknown viewpoint is matched both ways and the better count kept. ``mirror: never``
  turns this off, ``always`` matches both ways for every pair.

The local score is the inlier count ``n``. The fused score is ``P = sigmoid(a * g + b * log(1 + n) + c)`` with
``g`` the global score the ranking step gave, ``a, b >= 0`` (so P rises with both), fitted on validation whales
(``fit``; ``fusion: {a, b, c}``); or, with ``fit_kind: mean``, WildFusion's mean of the two scores each
calibrated alone (``fusion: {kind: mean, g: {a, c}, n: {a, c}}``); or, with ``fit_kind: view``, one logistic
with the inliers' weight per view relation of the pair (``same`` view, a ``mirrored`` left/right pair, ``cross``:
top against lateral, which share no keypoints, or ``unknown``): ``P = sigmoid(a * g + b[relation] * log(1 + n) +
d[relation] + c)``, the global weight shared and each relation's own base rate ``d``, so a lateral query's
same-side and mirrored candidates are on one scale; a relation keeps its inliers' term only where it earns it on validation (a likelihood-ratio test at 5%)
and has enough validation pairs of both kinds, else its candidates are ranked by the global score alone
(``fusion: {kind: view, a, c, b: {relation: b}, d: {relation: d}}``). A photo without keypoints (flat, tiny, unreadable) has ``n = 0`` with every
candidate, so its candidates keep their global order. Candidates past the shortlist keep their global order
after the shortlist, with scores under its lowest. Without a fitted ``fusion`` the step passes the global
ranking through (cut to ``top_k``): it only ever ranks by what validation fitted. The runner fits it on the
run's validation whales after training (``core.training.fit``), and ``tools.fit_local`` fits it on a run that
was trained without it.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from core.hookspecs import hookimpl
from core.logistic import fit_logistic

log = logging.getLogger(__name__)
DETECTORS = ("sift", "orb", "xfeat")  # AKAZE left OpenCV's main package in 5.0
LEARNED = {"xfeat": "plugins.postprocess.xfeat_keypoints"}  # imported by name, only when asked for (below)
MATCHERS = {"nearest": None, "lighterglue": "plugins.postprocess.lighterglue_matcher"}  # nearest: the detector's own
MATCHER_DETECTORS = {"lighterglue": ("xfeat",)}  # the descriptors a learned matcher was trained on
MIRROR = ("opposite", "never", "always")
EMPTY = (np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8))


def _cv2():
    try:
        import cv2
    except ImportError as exc:  # the step is configured but OpenCV is missing: say what to install
        raise ImportError("postprocess 'local_match' needs OpenCV: pip install opencv-python-headless") from exc
    return cv2


class LocalMatch:
    def __init__(self, shortlist: int = 50, top_k: int = 20, detector: str = "sift", max_keypoints: int = 500,
                 max_side: int = 512, ratio: float = 0.8, ransac_px: float = 8.0, ransac_iters: int = 256,
                 mirror: str = "opposite", fusion: dict | None = None, fit_kind: str = "logistic",
                 cache_dir: str | None = None, workers: int | None = None, min_cosine: float = 0.82,
                 matcher: str = "nearest", min_confidence: float = 0.1):
        if detector not in DETECTORS:
            raise ValueError(f"postprocess 'local_match' detector must be one of {DETECTORS}, got {detector!r}")
        if matcher not in MATCHERS:
            raise ValueError(f"postprocess 'local_match' matcher must be one of {tuple(MATCHERS)}, got {matcher!r}")
        if matcher in MATCHER_DETECTORS and detector not in MATCHER_DETECTORS[matcher]:
            raise ValueError(f"postprocess 'local_match' matcher {matcher!r} matches the keypoints of "
                             f"{' or '.join(MATCHER_DETECTORS[matcher])} only, not detector {detector!r}")
        if mirror not in MIRROR:
            raise ValueError(f"postprocess 'local_match' mirror must be one of {MIRROR}, got {mirror!r}")
        if int(shortlist) < 1 or int(top_k) < 1:
            raise ValueError("postprocess 'local_match' shortlist and top_k must be at least 1")
        self.shortlist, self.top_k = int(shortlist), int(top_k)
        self.detector, self.max_keypoints, self.max_side = detector, int(max_keypoints), int(max_side)
        self.ratio, self.ransac_px, self.ransac_iters, self.mirror = float(ratio), float(ransac_px), int(ransac_iters), mirror
        self.min_cosine, self.matcher, self.min_confidence = float(min_cosine), matcher, float(min_confidence)
        if fit_kind not in FUSIONS:
            raise ValueError(f"postprocess 'local_match' fit_kind must be one of {FUSIONS}, got {fit_kind!r}")
        self.fit_kind = fit_kind
        self.fusion = check_fusion(fusion) if fusion else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.workers = int(workers) if workers else max(1, min(8, os.cpu_count() or 1))
        self.cache: dict = {}
        self.pairs_matched = 0  # the work done, for the tests and the cost figures
        self.record = None  # a list: every (query position, candidate position, g, n) is appended (for fit)

    # ---- keypoints ----------------------------------------------------------------------------------------

    def options_key(self) -> str:
        return f"{self.detector}-{self.max_keypoints}-{self.max_side}-u8"

    @staticmethod
    def runtime_requirements(options: dict) -> list:
        """What a step with ``options`` needs beyond numpy and OpenCV (``submission.build`` checks it against the
        2022 runtime): a learned detector's package. Its module is imported by name when the step first extracts
        with it, so a SIFT bundle carries none of its code, and a chain that asks for it is refused by the build."""
        return [r for name in LocalMatch.modules_for(options) for r in importlib.import_module(name).REQUIRES]

    @staticmethod
    def modules_for(options: dict) -> list:
        """The modules a step with ``options`` imports by name: a bundle for this installation carries them."""
        names = [LEARNED.get(str(options.get("detector", "sift"))), MATCHERS.get(str(options.get("matcher", "nearest")))]
        return [name for name in names if name]

    def features(self, path: str | None, flip: bool = False):
        """(keypoints float32 [n, 2] in px at ``max_side``, descriptors uint8 [n, d]: SIFT's 128 values, or the
        binary detectors' packed bits) of a photo file; none when the file is missing or unreadable. About 68 KB
        a photo for 500 SIFT keypoints."""
        if not path:
            return EMPTY
        try:
            st = os.stat(path)
        except OSError:
            return EMPTY
        key = (str(path), st.st_size, st.st_mtime_ns, flip, self.options_key())
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        disk = None
        if self.cache_dir is not None:
            disk = self.cache_dir / (hashlib.sha1(repr(key).encode()).hexdigest() + ".npz")
            if disk.is_file():
                with np.load(disk) as z:
                    hit = (z["xy"], z["desc"])
        if hit is None:
            hit = self.extract(path, flip)
            if disk is not None:
                disk.parent.mkdir(parents=True, exist_ok=True)
                # a file of its own per writer: two threads may extract one photo at once (the last rename wins)
                tmp = disk.with_name(f"{disk.stem}.{os.getpid()}.{threading.get_ident()}.tmp.npz")
                np.savez(tmp, xy=hit[0], desc=hit[1])
                os.replace(tmp, disk)
        self.cache[key] = hit
        return hit

    def extract(self, path: str, flip: bool):
        cv2 = _cv2()
        img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        if img is None or min(img.shape[:2]) < 8:
            return EMPTY
        scale = self.max_side / max(img.shape[:2])
        img = cv2.resize(img, (max(1, round(img.shape[1] * scale)), max(1, round(img.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        if flip:
            img = np.ascontiguousarray(img[:, ::-1])
        if self.detector in LEARNED:
            return importlib.import_module(LEARNED[self.detector]).keypoints(img, self.max_keypoints)
        if self.detector == "sift":
            det = cv2.SIFT_create(nfeatures=self.max_keypoints)
        else:
            det = cv2.ORB_create(nfeatures=self.max_keypoints)
        kps, desc = det.detectAndCompute(img, None)
        if desc is None or not kps:
            return EMPTY
        xy = np.array([k.pt for k in kps], np.float32)
        # stored as bytes: OpenCV's SIFT descriptors are whole numbers 0-255 in float32, the binary ones packed bits
        return xy, np.clip(np.rint(desc), 0, 255).astype(np.uint8)

    # ---- one pair -----------------------------------------------------------------------------------------

    def inliers(self, a, b) -> int:
        """RANSAC inliers of a similarity transform between two photos' ratio-test matches."""
        src, dst = self.matches(a, b)
        return ransac_similarity(src, dst, self.ransac_px, self.ransac_iters) if len(src) >= 3 else 0

    def inlier_mask(self, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """bool [m]: which of the matches ``src`` -> ``dst`` RANSAC keeps (what ``inliers`` counts)."""
        if len(src) < 3:
            return np.zeros(len(src), bool)
        return ransac_similarity(src, dst, self.ransac_px, self.ransac_iters, mask=True)

    def matches(self, a, b) -> tuple[np.ndarray, np.ndarray]:
        """(points in a, their matches in b): float32 [m, 2] each, the pairs that pass the ratio test."""
        (xa, da), (xb, db) = a, b
        if len(da) < 2 or len(db) < 2:
            return np.zeros((0, 2), np.float32), np.zeros((0, 2), np.float32)
        if MATCHERS[self.matcher]:
            i, j = importlib.import_module(MATCHERS[self.matcher]).matches(xa, da, xb, db, self.max_side,
                                                                           self.min_confidence)
            return xa[i], xb[j]
        if self.detector in LEARNED:
            i, j = importlib.import_module(LEARNED[self.detector]).mutual_matches(da, db, self.min_cosine)
            return xa[i], xb[j]
        da, db = self.as_vectors(da), self.as_vectors(db)
        # squared distances by one matrix product (Hamming = squared L2 on unpacked bits)
        d2 = (da * da).sum(1)[:, None] + (db * db).sum(1)[None, :] - 2.0 * da @ db.T
        two = np.argpartition(d2, 1, axis=1)[:, :2]
        first, second = np.take_along_axis(d2, two, 1).T
        swap = first > second
        nearest = np.where(swap, two[:, 1], two[:, 0])
        lo, hi = np.sqrt(np.maximum(np.minimum(first, second), 0)), np.sqrt(np.maximum(np.maximum(first, second), 0))
        keep = lo < self.ratio * hi
        return xa[keep], xb[nearest[keep]]

    def as_vectors(self, desc: np.ndarray) -> np.ndarray:
        """Stored descriptors as float32 vectors whose squared L2 distance is the detector's distance (for the
        binary ones, the bits unpacked: squared L2 of bits is the Hamming distance)."""
        return (desc if self.detector == "sift" else np.unpackbits(desc, axis=1)).astype(np.float32)

    def pair_score(self, query_file, query_view, db_file, db_view):
        """The local score of a query photo against a candidate photo: the most inliers over the orientations
        their viewpoints call for (``pair_flips``). A step matching with several detectors returns one per
        detector (``multi_match``)."""
        target = self.features(db_file)
        return max(self.inliers(self.features(query_file, flip), target) for flip in self.pair_flips(query_view, db_view))

    def pair_flips(self, qv, dv) -> tuple:
        """Which orientations of the query to match against a candidate, by their viewpoints."""
        if self.mirror == "never":
            return (False,)
        if self.mirror == "always" or qv not in ("top", "left", "right") or dv not in ("top", "left", "right"):
            return (False, True)
        return (True,) if {qv, dv} == {"left", "right"} else (False,)

    # ---- the step -----------------------------------------------------------------------------------------

    def __call__(self, ctx):
        if not ctx.ranked:
            raise RuntimeError("postprocess 'local_match' re-ranks: put a ranking step such as 'knn' before it")
        if self.fusion is None and self.record is None:  # not fitted: the global ranking stands
            ctx.ranked = [(np.asarray(i)[: self.top_k], np.asarray(s)[: self.top_k]) for i, s in ctx.ranked]
            return ctx
        files_q = ctx.query_files or [None] * len(ctx.query_ids)
        files_db = ctx.db_files or [None] * len(ctx.db_image_ids)
        views_q = ctx.query_viewpoints or ["unknown"] * len(ctx.query_ids)
        views_db = ctx.db_viewpoints or ["unknown"] * len(ctx.db_image_ids)
        jobs = [(qi, int(d)) for qi, (idx, _) in enumerate(ctx.ranked) for d in idx[: self.shortlist]]

        def count(job):
            qi, d = job
            return self.pair_score(files_q[qi], views_q[qi], files_db[d], views_db[d])
        try:
            with ThreadPoolExecutor(self.workers) as pool:
                counts = dict(zip(jobs, pool.map(count, jobs)))
        except Exception:  # OpenCV missing or broken: the global ranking stands, the file stays valid
            log.exception("postprocess 'local_match' failed on scenario %s; the global ranking is kept", ctx.scenario)
            return ctx
        self.pairs_matched += len(jobs)
        ranked = []
        for qi, (idx, scores) in enumerate(ctx.ranked):
            head = min(self.shortlist, len(idx))
            n = np.array([counts[(qi, int(d))] for d in idx[:head]], np.float64)
            by_view = self.record is not None or (self.fusion or {}).get("kind") == "view"
            rel = [relation(views_q[qi], views_db[int(d)]) for d in idx[:head]] if by_view else None
            if self.record is not None:
                self.record.append((ctx.query_ids[qi], [ctx.db_image_ids[int(d)] for d in idx[:head]],
                                    np.asarray(scores[:head], np.float64), n, rel))
            if self.fusion is None:  # recording for a fit: the global ranking stands
                ranked.append((np.asarray(idx)[: self.top_k], np.asarray(scores)[: self.top_k]))
                continue
            fused = self.probability(np.asarray(scores[:head], np.float64), n, rel)
            order = np.argsort(-fused, kind="stable")  # ties keep the global order
            tail = np.asarray(scores[head:], np.float64)
            tail = np.minimum(tail, (fused.min() if head else 1.0) * (1 - 1e-9)) if len(tail) else tail
            new_idx = np.concatenate([np.asarray(idx[:head])[order], np.asarray(idx[head:])]).astype(np.int64)
            new_scores = np.concatenate([fused[order], np.clip(tail, 0.0, 1.0)])
            ranked.append((new_idx[: self.top_k], new_scores[: self.top_k]))
        ctx.ranked = ranked
        return ctx

    # ---- fitted on validation whales (core.training.fit) --------------------------------------------------

    fitted_keys = ("fusion",)  # the options fit() returns: left out of the chain that ranks before the fit

    @property
    def needs_top_k(self) -> int:
        return self.shortlist

    def fit(self, records: list, truth: set) -> dict:
        """``{"fusion": {a, b, c}}`` fitted on what the step recorded over validation scenarios (``record``: per
        query, its id, the shortlist's database ids, global scores and inlier counts) and ``truth``, the
        (query id, database image id) pairs of one whale; a record may carry each pair's view relation as a fifth
        item (``relation``). The step ranks with the fitted fusion from then on."""
        g, n, same, rel = [], [], [], []
        for record in records:
            query, candidates, scores, counts = record[:4]
            g += list(scores)
            n += list(counts)
            same += [(str(query), str(c)) in truth for c in candidates]
            rel += list(record[4]) if len(record) > 4 else ["unknown"] * len(candidates)
        if not any(same) or all(same):
            raise ValueError(f"the validation shortlists hold {sum(same)} true pairs of {len(same)}; fitting the "
                             "fusion needs both kinds")
        self.fit_pairs = {"pairs": len(same), "true_pairs": int(sum(same)),
                          "photos": len(self.cache), "photos_with_keypoints": sum(1 for v in self.cache.values() if len(v[0]))}
        self.fusion = fit_fusion(g, n, same, self.fit_kind, rel)  # from here on the step ranks fused
        return {"fusion": self.fusion}

    def probability(self, g, n, relations=None) -> np.ndarray:
        """P(same whale) of global scores ``g`` and inlier counts ``n`` (and, for a ``view`` fusion, each pair's
        view ``relations``; without them the pooled fit)."""
        f, g, n = self.fusion, np.asarray(g, np.float64), np.log1p(np.asarray(n, np.float64))
        if f.get("kind") == "mean":  # WildFusion's: each score calibrated alone, the probabilities averaged
            return (sigmoid(f["g"]["a"] * g + f["g"]["c"]) + sigmoid(f["n"]["a"] * n + f["n"]["c"])) / 2
        if f.get("kind") == "view":
            return view_probability(dict(f, b={r: [v] for r, v in f["b"].items()}), g, n[:, None], relations)
        return sigmoid(f["a"] * g + f["b"] * n + f["c"])


def view_probability(fusion: dict, g, n, relations=None) -> np.ndarray:
    """P(same whale) of a ``view`` fusion (``b``: per relation, one weight per column of ``n``, the [pairs,
    detectors] ``log(1 + inliers)``); pairs without ``relations`` are ``unknown``. ``local_match`` and
    ``multi_match`` rank with it."""
    g = np.asarray(g, np.float64)
    n = np.asarray(n, np.float64).reshape(len(g), -1)
    rel = list(relations) if relations is not None else ["unknown"] * len(g)
    b = np.array([fusion["b"].get(r, [0.0] * n.shape[1]) for r in rel], np.float64).reshape(len(g), -1)
    d = np.array([fusion.get("d", {}).get(r, 0.0) for r in rel], np.float64)
    return sigmoid(fusion["a"] * g + np.sum(b * n, axis=1) + d + fusion["c"])


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


FUSIONS = ("logistic", "mean", "view")
RELATIONS = ("same", "mirrored", "cross", "unknown")
MIN_PAIRS = 20  # true and false validation pairs a view relation needs for an inliers' term of its own
MIN_WEIGHT = 1e-6  # a global weight under this would tie candidates without inliers: the global score alone ranks


def relation(qv, dv) -> str:
    """A pair's view relation: ``same`` (top and top, or one lateral side), ``mirrored`` (left and right),
    ``cross`` (top against lateral) or ``unknown``."""
    lateral = ("left", "right")
    if qv == dv and qv in ("top",) + lateral:
        return "same"
    if qv in lateral and dv in lateral:
        return "mirrored"
    if {qv, dv} <= {"top", "left", "right"}:
        return "cross"
    return "unknown"
RIDGE = 1e-3  # on the weights: finite on separable validation pairs


def check_fusion(fusion) -> dict:
    """A fitted fusion as given in a config: ``{a, b, c}`` (one logistic on both scores) or ``{kind: mean, g: {a,
    c}, n: {a, c}}`` (each calibrated alone, averaged); every weight on a score finite and non-negative."""
    fusion = {k: (dict(v) if hasattr(v, "items") else v) for k, v in dict(fusion).items()}
    try:
        if fusion.get("kind", "logistic") == "mean":
            parts = [(fusion[k]["a"], fusion[k]["c"]) for k in ("g", "n")]
            weights, values = [a for a, _ in parts], [x for p in parts for x in p]
        elif fusion.get("kind") == "view":
            fusion["b"] = {r: float(v) for r, v in dict(fusion["b"]).items()}
            fusion["d"] = {r: float(v) for r, v in dict(fusion.get("d") or {}).items()}
            if (set(fusion["b"]) | set(fusion["d"])) - set(RELATIONS):
                raise KeyError(sorted((set(fusion["b"]) | set(fusion["d"])) - set(RELATIONS)))
            weights = [fusion["a"]] + list(fusion["b"].values())
            values = weights + list(fusion["d"].values()) + [fusion["c"]]
        else:
            weights, values = [fusion["a"], fusion["b"]], [fusion["a"], fusion["b"], fusion["c"]]
        values = [float(v) for v in values]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"postprocess 'local_match' fusion must be {{a, b, c}}, {{kind: mean, g: {{a, c}}, "
                         f"n: {{a, c}}}} or {{kind: view, a, c, b: {{same|mirrored|cross|unknown: b}}, d: {{...: d}}}}, "
                         f"got {fusion}") from None
    if min(float(w) for w in weights) < 0 or not np.isfinite(values).all():
        raise ValueError(f"postprocess 'local_match' fusion needs finite weights a, b >= 0, got {fusion}")
    return fusion


def ransac_similarity(src: np.ndarray, dst: np.ndarray, px: float, iters: int, seed: int = 0, mask: bool = False):
    """The largest number of matches within ``px`` of one similarity transform ``dst = s R src + t``, over
    ``iters`` transforms each through two matches drawn with a fixed seed (points as complex numbers:
    ``w = alpha z + beta``); with ``mask``, the bool [m] of those matches instead."""
    if len(src) < 2:
        return np.zeros(len(src), bool) if mask else 0
    z = src[:, 0].astype(np.float64) + 1j * src[:, 1]
    w = dst[:, 0].astype(np.float64) + 1j * dst[:, 1]
    m = len(z)
    rng = np.random.RandomState(seed)
    i = rng.randint(0, m, iters)
    j = (i + 1 + rng.randint(0, m - 1, iters)) % m  # a second, different match
    dz = z[j] - z[i]
    ok = np.abs(dz) > 1e-6
    if not ok.any():
        return np.zeros(m, bool) if mask else 0
    alpha = (w[j][ok] - w[i][ok]) / dz[ok]
    beta = w[i][ok] - alpha * z[i][ok]
    within = np.abs(alpha[:, None] * z[None, :] + beta[:, None] - w[None, :]) <= px
    counts = within.sum(1)
    return within[int(np.argmax(counts))] if mask else int(counts.max())


def fit_fusion(g, n, same, kind: str = "logistic", relations=None) -> dict:
    """``kind`` logistic: ``{a, b, c}`` of P(same) = sigmoid(a g + b log(1 + n) + c); ``kind`` mean (WildFusion's
    "mean of calibrated scores"): each score's own logistic, ``{kind: mean, g: {a, c}, n: {a, c}}``. Fitted by
    the project's one logistic fitter (``core.logistic``: Newton's method, a small ridge keeps it finite on
    separable data) with every weight on a score ``>= 0``, so P never falls as a score rises."""
    y = np.asarray(same, np.float64)
    g, n = np.asarray(g, np.float64), np.log1p(np.asarray(n, np.float64))
    if kind == "view":
        return _fit_by_view(g, n, y, ["unknown"] * len(y) if relations is None else list(relations))
    if kind == "mean":
        (a, *_), c = fit_logistic(g[:, None], y, monotone=[True], ridge=RIDGE)
        (b, *_), d = fit_logistic(n[:, None], y, monotone=[True], ridge=RIDGE)
        return {"kind": "mean", "g": {"a": float(a), "c": c}, "n": {"a": float(b), "c": d}}
    (a, b), c = fit_logistic(np.stack([g, n], 1), y, monotone=[True, True], ridge=RIDGE)
    return {"a": float(a), "b": float(b), "c": c}


def _log_likelihood(x, y, w, c) -> float:
    p = np.clip(sigmoid(x @ w + c), 1e-12, 1 - 1e-12)
    return float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p)))


def _fit_by_view(g, n, y, relations) -> dict:
    """``{kind: view, a, c, b: {relation: b}, d: {relation: d}}``: one logistic on the global score (weight ``a``
    shared by every relation) with, per view relation, an offset ``d`` (its own base rate; the most common relation
    is the reference, ``d = 0``; relations short of ``MIN_PAIRS`` true and false validation pairs share one) and an
    inliers' term (``b >= 0`` on ``log(1 + n)``). The inliers' term is **shared** by every relation (the one
    logistic's) unless the validation pairs show that a relation differs: a relation with ``MIN_PAIRS`` true and
    false pairs takes a term of its own only where a likelihood-ratio test at 5% prefers it to the shared one
    (top-against-lateral pairs, whose inliers are noise, do; the reference, the most common relation, never splits).
    So a relation too small to tell apart (a survey's few mirrored lateral pairs) keeps the shared term, as the one
    logistic gives it, instead of losing its inliers for want of pairs. Each term then stays only where dropping it
    fails the same test; else its ``b`` is 0 and its candidates follow the global score. Where the global score
    gets no weight, the global-only logistic ranks every pair."""
    a, c, b, d = fit_view_terms(g, n[:, None], y, relations)
    return {"kind": "view", "a": a, "c": c, "b": {r: v[0] for r, v in b.items()}, "d": d}


CHI2_95 = {1: 3.841, 2: 5.991, 3: 7.815, 4: 9.488}  # the chi-square's 95% point by degrees of freedom


def fit_view_terms(g, n, y, relations) -> tuple:
    """(a, c, b: {relation: [weight per column of n]}, d: {relation: offset}): ``_fit_by_view``'s fit for one or
    more inlier counts a pair (``n``: [pairs, detectors] of ``log(1 + inliers)``; ``multi_match`` gives one column
    per detector). A relation splits off all its columns at once (a likelihood-ratio test with one degree of
    freedom per column); each (relation group, detector) term then stays only where dropping it fails the test at
    one degree of freedom."""
    n = np.asarray(n, np.float64).reshape(len(g), -1)
    cols = n.shape[1]
    rel = np.asarray(relations, dtype=object)
    size = {r: int((rel == r).sum()) for r in RELATIONS}
    counted = [r for r in RELATIONS if min(int(y[rel == r].sum()), int((1 - y[rel == r]).sum())) >= MIN_PAIRS]
    base = {r: [r] for r in counted}
    rest = [r for r in RELATIONS if r not in counted and size[r]]
    if rest:
        base["rest"] = rest
    member = {k: np.isin(rel, v) for k, v in base.items()}
    offsets = sorted(base, key=lambda k: -int(member[k].sum()))[1:]  # the most common one is the reference
    reference = max(counted, key=lambda r: size[r]) if counted else None

    def terms(split):  # (relations, column) per term: each split relation its own, the others one shared
        groups = [[r for r in RELATIONS if r not in split]] + [[r] for r in split]
        return [(tuple(v), j) for v in groups for j in range(cols)]

    def fit(ts):
        x = np.column_stack([g] + [np.where(np.isin(rel, v), n[:, j], 0.0) for v, j in ts]
                            + [member[k].astype(float) for k in offsets])
        w, c = fit_logistic(x, y, monotone=[True] * (1 + len(ts)) + [False] * len(offsets), ridge=RIDGE)
        return w, c, _log_likelihood(x, y, w, c)

    pooled = fit(terms([]))[2]
    split = [r for r in counted if r != reference and 2 * (fit(terms([r]))[2] - pooled) > CHI2_95[min(cols, 4)]]
    ts = terms(split)
    w, c, ll = fit(ts)
    keep = [t for j, t in enumerate(ts)
            if w[j + 1] > 0 and 2 * (ll - fit([u for u in ts if u != t])[2]) > CHI2_95[1]]
    w, c, _ = fit(keep)
    b, d = {r: [0.0] * cols for r in RELATIONS}, {r: 0.0 for r in RELATIONS}
    if w[0] <= MIN_WEIGHT:  # the global score gets no weight beside the rest (cross-view pairs whose true ones
        # score low can do that): candidates without inliers would tie, a tie the metric breaks at random; the
        # global score alone ranks every pair
        (a0,), c0 = fit_logistic(g[:, None], y, monotone=[True], ridge=RIDGE)
        return float(a0), float(c0), b, d
    for k, (v, j) in enumerate(keep):
        for r in v:
            b[r][j] = float(w[k + 1])
    d.update({r: float(w[1 + len(keep) + k]) for k, o in enumerate(offsets) for r in base[o]})
    return float(w[0]), float(c), b, d


@hookimpl
def register_postprocess(register):
    register("local_match", LocalMatch)
