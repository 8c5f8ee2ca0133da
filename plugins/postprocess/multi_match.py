"""Postprocess ``multi_match``: several keypoint matchers fused with the global score by view relation (the
default), WildFusion's way, in one logistic, or whichever of the three ranks held-out validation queries better.

A re-ranking step like ``local_match`` (and built on it: the same shortlist, keypoint cache, mirrored views and
RANSAC), but each shortlist pair gets one inlier count per detector in ``detectors`` (default SIFT and the
learned XFeat, ``xfeat_keypoints.py``; ``xfeat+lighterglue`` is XFeat's keypoints paired by the learned matcher,
``lighterglue_matcher.py``). The fit (``core.training.fit``, on the run's validation whales) weighs

- ``mean``: each score calibrated alone to P(same whale) by a one-feature logistic (the global score, and each
  detector's ``log(1 + inliers)``), the probabilities averaged: WildFusion's fusion (Cermak et al., "WildFusion:
  Individual Animal Identification with Calibrated Similarity Fusion", ECCV 2024, which calibrates with isotonic
  regression; a logistic keeps the few validation pairs from overfitting steps);
- ``logistic``: one logistic on all the scores, every weight on a score ``>= 0``;
- ``view``: ``local_match``'s fusion by view relation with one inliers' term per detector (``fit_view_terms``: a
  top photo and a lateral one share no keypoints, so their inliers are split off where validation says they
  differ, and dropped where they add nothing);

``fit_kind`` names the one to fit, ``view`` by default; ``choose`` keeps the one whose re-ranked shortlists have
the higher mean average precision on validation queries it was not fitted on (``held_out_ap``: five groups of
queries, each ranked by the fusion fitted on the other four; a tie goes to the simpler kind), then fitted on every
query. ``view`` is the default because on the quality bench (docs/benchmarks.md, every survey of both renderers,
two seeds) ``choose`` kept the view fusion on 18 of 22 survey-seeds and on the other four the one logistic, level
on the survey means (-0.00002 mAP) but on three of those four 0.05 to 0.15 below the global ranking on the
cross-view scenarios, which validation queries ranked whole do not weigh apart.

``fusion: {kind, parts: [{a, c}, ...]}`` (mean; the global score first, then the detectors in order), ``{kind:
logistic, w: [...], c}`` or ``{kind: view, a, c, b: {relation: [one weight per detector]}, d: {relation: d}}``.
Unfitted, it passes the global ranking through. What it costs is the sum of its detectors' costs (``python -m
tools.bench.local_match --detector ...``). With ``xfeat`` among the detectors it runs on this installation only
(``submission.build --runtime here``), as ``local_match`` does.
"""

from __future__ import annotations

import numpy as np

from core.hookspecs import hookimpl
from core.logistic import fit_logistic
from plugins.postprocess.local_match import (DETECTORS, MATCHER_DETECTORS, RELATIONS, RIDGE, LocalMatch,
                                             fit_view_terms, sigmoid, view_probability)

KINDS = ("choose", "mean", "logistic", "view")
CHOOSE_FROM = ("mean", "logistic", "view")  # what ``choose`` weighs, simplest first
DEFAULT_DETECTORS = ("sift", "xfeat")
# a detector's keypoints paired by a learned matcher: ``xfeat+lighterglue``
CHOICES = tuple(DETECTORS) + tuple(f"{d}+{m}" for m, ds in MATCHER_DETECTORS.items() for d in ds)


def matcher_options(name: str) -> dict:
    """``local_match``'s options for one entry of ``detectors``: ``sift``, or ``xfeat+lighterglue``."""
    detector, _, matcher = str(name).partition("+")
    return {"detector": detector, "matcher": matcher} if matcher else {"detector": detector}


class MultiMatch(LocalMatch):
    def __init__(self, detectors=DEFAULT_DETECTORS, shortlist: int = 50, top_k: int = 20, max_keypoints: int = 500,
                 max_side: int = 512, mirror: str = "opposite", fusion: dict | None = None, fit_kind: str = "view",
                 cache_dir: str | None = None, workers: int | None = None):
        detectors = [str(d) for d in detectors]
        if not detectors or len(set(detectors)) != len(detectors) or set(detectors) - set(CHOICES):
            raise ValueError(f"postprocess 'multi_match' detectors must be distinct names of {CHOICES}, got {detectors}")
        if fit_kind not in KINDS:
            raise ValueError(f"postprocess 'multi_match' fit_kind must be one of {KINDS}, got {fit_kind!r}")
        super().__init__(shortlist=shortlist, top_k=top_k, max_keypoints=max_keypoints, max_side=max_side,
                         mirror=mirror, cache_dir=cache_dir, workers=workers, **matcher_options(detectors[0]))
        self.detectors, self.fit_kind = detectors, fit_kind
        self.matchers = [LocalMatch(shortlist=shortlist, top_k=top_k, max_keypoints=max_keypoints, max_side=max_side,
                                    mirror=mirror, cache_dir=cache_dir, workers=1, **matcher_options(d))
                         for d in detectors]
        self.fusion = check_fusion(fusion, len(detectors)) if fusion else None

    @staticmethod
    def runtime_requirements(options: dict) -> list:
        return list(dict.fromkeys(r for d in options.get("detectors", DEFAULT_DETECTORS)
                                  for r in LocalMatch.runtime_requirements(matcher_options(d))))

    @staticmethod
    def modules_for(options: dict) -> list:
        return list(dict.fromkeys(m for d in options.get("detectors", DEFAULT_DETECTORS)
                                  for m in LocalMatch.modules_for(matcher_options(d))))

    def pair_score(self, query_file, query_view, db_file, db_view):
        """One inlier count per detector."""
        return tuple(m.pair_score(query_file, query_view, db_file, db_view) for m in self.matchers)

    def fit(self, records: list, truth: set) -> dict:
        """``{"fusion": ...}`` fitted on the recorded validation shortlists (``LocalMatch.fit``'s records, each pair
        with one count per detector and, while recording, each pair's view relation): with ``fit_kind: choose`` the
        mean, the logistic and the view fusion fitted and the best by held-out mean average precision kept
        (``held_out_ap``; ``fit_pairs`` reports it beside the in-sample figure); else the kind asked."""
        g, n, same, queries, rel = [], [], [], [], []
        for k, (query, candidates, scores, counts, *more) in enumerate(records):
            g += list(scores)
            n += [list(c) for c in np.asarray(counts, np.float64).reshape(len(candidates), len(self.detectors))]
            same += [(str(query), str(c)) in truth for c in candidates]
            queries += [k] * len(candidates)
            rel += list(more[0]) if more and more[0] is not None else ["unknown"] * len(candidates)
        if not any(same) or all(same):
            raise ValueError(f"the validation shortlists hold {sum(same)} true pairs of {len(same)}; fitting the "
                             "fusion needs both kinds")
        x = np.column_stack([np.asarray(g, np.float64), np.log1p(np.asarray(n, np.float64))])
        y, queries = np.asarray(same, np.float64), np.asarray(queries)
        kinds = CHOOSE_FROM if self.fit_kind == "choose" else (self.fit_kind,)
        fits = {kind: fit_one_kind(kind, x, y, rel) for kind in kinds}
        ap = {kind: mean_ap(_probability(f, x, rel), y, queries) for kind, f in fits.items()}
        self.fit_pairs = {"pairs": len(same), "true_pairs": int(sum(same)), "mean_ap": ap}
        if len(kinds) > 1:  # chosen on queries each fit has not seen: the larger model's in-sample edge does not count
            held = held_out_ap(kinds, x, y, rel, queries)
            self.fit_pairs["held_out_mean_ap"] = held
            chosen = max(kinds, key=lambda kind: (held[kind], -kinds.index(kind)))  # a tie: the simpler kind
        else:
            chosen = kinds[0]
        self.fusion = fits[chosen]
        return {"fusion": self.fusion}

    def probability(self, g, n, relations=None) -> np.ndarray:
        g = np.asarray(g, np.float64)
        n = np.log1p(np.asarray(n, np.float64).reshape(len(g), len(self.detectors)))
        return _probability(self.fusion, np.column_stack([g, n]), relations)


def fit_one_kind(kind: str, x: np.ndarray, y: np.ndarray, rel: list) -> dict:
    """One fusion of ``kind`` fitted on ``x`` ([pairs, 1 + detectors]: the global score, then each detector's
    ``log(1 + inliers)``), ``y`` (1 for a pair of one whale) and each pair's view relation ``rel``."""
    if kind == "view":
        a, c, b, d = fit_view_terms(x[:, 0], x[:, 1:], y, rel)
        return {"kind": "view", "a": a, "c": c, "b": b, "d": d}
    if kind == "mean":
        parts = [fit_logistic(x[:, [j]], y, monotone=[True], ridge=RIDGE) for j in range(x.shape[1])]
        return {"kind": "mean", "parts": [{"a": float(w[0]), "c": float(c)} for w, c in parts]}
    w, c = fit_logistic(x, y, monotone=[True] * x.shape[1], ridge=RIDGE)
    return {"kind": "logistic", "w": [float(v) for v in w], "c": float(c)}


def held_out_ap(kinds, x: np.ndarray, y: np.ndarray, rel: list, queries: np.ndarray, folds: int = 5) -> dict:
    """Per kind, the mean average precision of its shortlists' re-ranking on validation queries it was not fitted
    on: the queries in ``folds`` groups (a fixed shuffle), each ranked by the fusion fitted on the others. A fold
    whose training part lacks true or false pairs is skipped."""
    ids = np.unique(queries)
    group = dict(zip(ids, np.random.default_rng(0).permutation(len(ids)) % folds))
    fold = np.array([group[q] for q in queries])
    rel = np.asarray(rel, dtype=object)
    p = {kind: np.full(len(y), np.nan) for kind in kinds}
    for k in range(folds):
        train, test = fold != k, fold == k
        if not test.any() or y[train].min() == y[train].max():
            continue
        for kind in kinds:
            f = fit_one_kind(kind, x[train], y[train], list(rel[train]))
            p[kind][test] = _probability(f, x[test], list(rel[test]))
    scored = ~np.isnan(p[kinds[0]])
    return {kind: mean_ap(p[kind][scored], y[scored], queries[scored]) for kind in kinds}


def _probability(fusion: dict, x: np.ndarray, relations=None) -> np.ndarray:
    if fusion["kind"] == "view":
        return view_probability(fusion, x[:, 0], x[:, 1:], relations)
    if fusion["kind"] == "mean":
        return np.mean([sigmoid(p["a"] * x[:, j] + p["c"]) for j, p in enumerate(fusion["parts"])], axis=0)
    return sigmoid(x @ np.asarray(fusion["w"], np.float64) + fusion["c"])


def mean_ap(p: np.ndarray, y: np.ndarray, queries: np.ndarray) -> float:
    """Mean over queries with a true pair in their shortlist of the average precision of ranking it by ``p``."""
    aps = []
    for q in np.unique(queries):
        m = queries == q
        if not y[m].any():
            continue
        hits = y[m][np.argsort(-p[m], kind="stable")]
        aps.append(float(np.sum(np.cumsum(hits) / np.arange(1, len(hits) + 1) * hits) / hits.sum()))
    return float(np.mean(aps)) if aps else 0.0


def check_fusion(fusion, detectors: int) -> dict:
    """A fitted fusion as a config gives it: ``{kind: mean, parts: [{a, c}] * (1 + detectors)}``, ``{kind:
    logistic, w: [...] (1 + detectors), c}`` or ``{kind: view, a, c, b: {relation: [...] (detectors)}, d:
    {relation: d}}``, every weight on a score finite and non-negative."""
    f = {k: v for k, v in dict(fusion).items()}
    try:
        if f["kind"] == "mean":
            parts = [{"a": float(p["a"]), "c": float(p["c"])} for p in f["parts"]]
            f, weights, values = {"kind": "mean", "parts": parts}, [p["a"] for p in parts], [
                v for p in parts for v in p.values()]
        elif f["kind"] == "logistic":
            f = {"kind": "logistic", "w": [float(v) for v in f["w"]], "c": float(f["c"])}
            weights, values = f["w"], f["w"] + [f["c"]]
        elif f["kind"] == "view":
            b = {str(r): [float(v) for v in w] for r, w in dict(f["b"]).items()}
            d = {str(r): float(v) for r, v in dict(f.get("d") or {}).items()}
            if (set(b) | set(d)) - set(RELATIONS) or any(len(w) != detectors for w in b.values()):
                raise KeyError("b")
            f = {"kind": "view", "a": float(f["a"]), "c": float(f["c"]), "b": b, "d": d}
            weights = [f["a"]] + [v for w in b.values() for v in w]
            values = weights + list(d.values()) + [f["c"]]
        else:
            raise KeyError(f["kind"])
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"postprocess 'multi_match' fusion must be {{kind: mean, parts: [{{a, c}}, ...]}}, "
                         f"{{kind: logistic, w: [...], c}} or {{kind: view, a, c, b: {{relation: [one weight >= 0 a "
                         f"detector]}}, d: {{relation: d}}}} (relations {RELATIONS}), got {fusion}") from None
    if (len(weights) != 1 + detectors and f["kind"] != "view") or min(weights) < 0 or not np.isfinite(values).all():
        raise ValueError(f"postprocess 'multi_match' fusion needs {1 + detectors} finite weights >= 0 (the global "
                         f"score, then each detector), got {fusion}")
    return f


@hookimpl
def register_postprocess(register):
    register("multi_match", MultiMatch)
