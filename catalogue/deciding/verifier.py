"""Evidence at the whale level: P(same whale) from more than one cosine and one inlier count.

Per candidate whale of a photo, ``features`` reads what the ranking already knows: its global score, the mean
of its best photos' scores (``best_k``), its margin over the best other candidate, its keypoint inliers (kept
apart for a pair of one view class and a cross-view pair, top against lateral, which share no keypoints), its
inliers' margin over the best other candidate's (``inlier_margin``) and over the photo's median candidate's
(``inliers_over_median``), both on ``log(1 + inliers)``: a new whale's candidates share a level of chance
inliers that a photo's own whale stands out from, whatever that level is for the photo; whether the pair is
cross-view, the years between the photo and the whale's best photo, how many photos the whale has,
and (with local evidence) how many keypoints the photo has. The years and the photo count are left out by
default (``SPLIT_ARTEFACTS``: measured to separate whales in a time-aware split for a reason that does not hold
in use). ``Verifier`` is a logistic regression on the features, standardised, with a small ridge, fitted by Newton's method (``core.logistic.fit_logistic``) and
monotone where it must be: a weight on a score, a margin or an inlier count that comes out negative is dropped
and the rest refitted, so P never falls as the evidence rises. A logistic is chosen over boosted trees because
it is measured as good here (``tools.bench.verifier``) and explains itself: ``why`` lists each feature's
contribution to a decision's log-odds, which the review page shows.

``choose`` picks, by the log-loss on held-out groups (a run's folds, else five groups of photos), between the
verifier and the two-score fusion it generalises (the global score and the inliers alone); ``cross_fitted``
gives every pair the probability of a model fitted without its group, for honest thresholds.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from catalogue.deciding.match import Candidate, view_class
from core.logistic import fit_logistic

FEATURES = ("score", "best_k", "margin", "inliers_same_view", "inliers_cross_view", "cross_view", "years_apart",
            "photos", "query_keypoints", "inlier_margin", "inliers_over_median")
MONOTONE = ("score", "best_k", "margin", "inliers_same_view", "inliers_cross_view", "inlier_margin",
            "inliers_over_median")
LOCAL = ("inliers_same_view", "inliers_cross_view", "query_keypoints", "inlier_margin",
         "inliers_over_median")  # only with keypoint evidence
# computed, and not used by default: in a time-aware split (the calibration's, and the demo's test) the photo's own
# whale never has a photo from the photo's year nor its latest photos in the catalogue, while other whales do, so
# these two separate whales for a reason that fails in a survey whose season's earlier photos are catalogued
SPLIT_ARTEFACTS = ("years_apart", "photos")
DEFAULT = tuple(f for f in FEATURES if f not in SPLIT_ARTEFACTS)
TWO_SCORES = ("score", "inliers_same_view", "inliers_cross_view")  # the fusion the verifier generalises


def _years(a, b) -> float:
    try:
        return abs((np.datetime64(str(a)[:10]) - np.datetime64(str(b)[:10])).astype(int)) / 365.25
    except (ValueError, TypeError):
        return 0.0


def over_best_other(values) -> np.ndarray:
    """Each value minus the largest of the others (minus 0 where there are none): a candidate's margin."""
    v = np.asarray(values, np.float64)
    if len(v) < 2:
        return v.copy()
    top = np.sort(v)[::-1]
    return v - np.where(v == top[0], top[1], top[0])


class Context:
    """What ``features`` needs of the catalogue: each photo's viewpoint and date, each whale's photo count."""

    def __init__(self, table):
        ids = table["image_id"].astype(str)
        self.view_of = dict(zip(ids, table["viewpoint"]))
        self.date_of = dict(zip(ids, table["date"].astype(str)))
        self.photos_of = table["whale_id"].value_counts().to_dict()


def features(ranked: Sequence[list], counts: Optional[Sequence[list]], views: Sequence, dates: Sequence,
             context: Context, keypoints: Optional[Sequence[int]] = None) -> list[np.ndarray]:
    """Per photo, the [candidates, len(FEATURES)] feature rows of its candidates (``counts``: their inliers, or
    None without local evidence; ``keypoints``: the photo's keypoint count)."""
    out = []
    for q, cands in enumerate(ranked):
        rows = np.zeros((len(cands), len(FEATURES)))
        margins = over_best_other([c.score for c in cands])
        logs = np.log1p(np.asarray(counts[q], np.float64)) if counts is not None else np.zeros(len(cands))
        inlier_margins, median = over_best_other(logs), float(np.median(logs)) if len(logs) else 0.0
        for i, c in enumerate(cands):
            best_photo = c.photos[0][0] if c.photos else None
            cross = {view_class(views[q]), view_class(context.view_of.get(best_photo))} == {"top", "lateral"}
            n = logs[i]
            rows[i] = [c.score, np.mean([s for _, s in c.photos]) if c.photos else c.score,
                       margins[i], 0.0 if cross else n, n if cross else 0.0,
                       float(cross), np.log1p(_years(dates[q], context.date_of.get(best_photo, ""))),
                       np.log1p(context.photos_of.get(c.whale_id, 1)),
                       np.log1p(keypoints[q]) if keypoints is not None else 0.0,
                       inlier_margins[i], n - median]
        out.append(rows)
    return out


class Verifier:
    """A monotone logistic over ``use`` (a subset of FEATURES); ``to_dict``/``from_dict`` round-trip it as JSON."""

    def __init__(self, use: Sequence[str] = DEFAULT, ridge: float = 1e-2):
        unknown = set(use) - set(FEATURES)
        if unknown:
            raise ValueError(f"verifier features must be among {FEATURES}, got {sorted(unknown)}")
        self.use, self.ridge = tuple(use), float(ridge)
        self.weights, self.mean, self.scale, self.bias = {}, {}, {}, 0.0

    def _matrix(self, x: np.ndarray) -> np.ndarray:
        cols = [FEATURES.index(f) for f in self.use]
        return (x[:, cols] - np.asarray([self.mean[f] for f in self.use])) / np.asarray([self.scale[f] for f in self.use])

    def fit(self, x: np.ndarray, same: np.ndarray) -> "Verifier":
        cols = [FEATURES.index(f) for f in self.use]
        self.mean = {f: float(x[:, c].mean()) if len(x) else 0.0 for f, c in zip(self.use, cols)}
        self.scale = {f: float(x[:, c].std()) or 1.0 if len(x) else 1.0 for f, c in zip(self.use, cols)}
        w, b = fit_logistic(self._matrix(x), same, monotone=[f in MONOTONE for f in self.use], ridge=self.ridge)
        self.weights, self.bias = {f: float(v) for f, v in zip(self.use, w)}, float(b)
        return self

    def logit(self, x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros(0)
        return self._matrix(x) @ np.asarray([self.weights[f] for f in self.use]) + self.bias

    def probability(self, x: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-np.clip(self.logit(x), -60, 60)))

    def why(self, row: np.ndarray, top: int = 3) -> list:
        """The ``top`` features that moved this candidate's log-odds most from the average pair's, signed."""
        return self.why_rows(row[None], top)[0]

    def why_rows(self, x: np.ndarray, top: int = 3) -> list:
        """``why`` of every row of ``x``, the contributions worked out for all rows at once."""
        if not len(x):
            return []
        parts = self._matrix(x) * np.asarray([self.weights[f] for f in self.use])
        order = np.argsort(-np.abs(parts), axis=1)[:, :top]
        return [[[self.use[i], round(float(p[i]), 2)] for i in o if p[i] != 0] for p, o in zip(parts, order)]

    def to_dict(self) -> dict:
        return {"use": list(self.use), "ridge": self.ridge, "weights": self.weights, "mean": self.mean,
                "scale": self.scale, "bias": self.bias}

    @classmethod
    def from_dict(cls, d: dict) -> "Verifier":
        v = cls(d["use"], d.get("ridge", 1e-2))
        v.weights, v.mean, v.scale, v.bias = dict(d["weights"]), dict(d["mean"]), dict(d["scale"]), float(d["bias"])
        return v


def rescore(ranked: Sequence[list], rows: Sequence[np.ndarray], verifier: Verifier, counts=None) -> list[list]:
    """The candidates with the verifier's P(same whale) as their score, best first (inliers kept on each)."""
    return with_scores(ranked, [verifier.probability(x) if len(x) else [] for x in rows], counts)


def with_scores(ranked: Sequence[list], scores: Sequence, counts=None) -> list[list]:
    """The candidates with ``scores`` (per photo, per candidate) as their score, best first."""
    out = []
    for q, (cands, p) in enumerate(zip(ranked, scores)):
        new = [Candidate(c.whale_id, float(pi), list(c.photos),
                         inliers=int(counts[q][i]) if counts is not None else c.inliers)
               for i, (c, pi) in enumerate(zip(cands, p))]
        out.append(sorted(new, key=lambda c: (-c.score, c.whale_id)))
    return out


def pairs(ranked, rows, truth) -> tuple[np.ndarray, np.ndarray]:
    """All candidates' feature rows stacked, and whether each is the photo's whale."""
    x = np.concatenate([r for r in rows if len(r)]) if any(len(r) for r in rows) else np.zeros((0, len(FEATURES)))
    y = np.asarray([c.whale_id == t for cands, t in zip(ranked, truth) for c in cands], bool)
    return x, y


def _log_loss(p, y) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def cross_fitted(use, ranked, rows, truth, groups) -> list[np.ndarray]:
    """Per photo, its candidates' P(same) from a verifier fitted on the other groups' photos only."""
    groups = np.asarray(groups)
    out: list = [None] * len(ranked)
    for g in np.unique(groups):
        train = [i for i in range(len(ranked)) if groups[i] != g]
        x, y = pairs([ranked[i] for i in train], [rows[i] for i in train], [truth[i] for i in train])
        if not y.any() or y.all():
            x, y = pairs(ranked, rows, truth)  # a group's complement with one class only: the whole set
        model = Verifier(use).fit(x, y)
        for i in np.flatnonzero(groups == g):
            out[i] = model.probability(rows[i])
    return out


def default_groups(n: int, folds: Optional[Sequence[int]] = None, k: int = 5) -> np.ndarray:
    """A run's folds when there are two or more, else ``k`` groups of photos in turn."""
    if folds is not None and len(set(folds)) >= 2:
        return np.asarray(folds)
    return np.arange(n) % k


def choose(ranked, rows, truth, groups, local: bool) -> dict:
    """The verifier or the two-score fusion, whichever has the lower held-out log-loss; both losses recorded."""
    candidates = {"verifier": [f for f in DEFAULT if local or f not in LOCAL],
                  "two_scores": [f for f in TWO_SCORES if local or f not in LOCAL]}
    _, y = pairs(ranked, rows, truth)
    losses = {}
    for name, use in candidates.items():
        p = cross_fitted(use, ranked, rows, truth, groups)
        losses[name] = _log_loss(np.concatenate([v for v in p if len(v)]), y)
    name = min(losses, key=losses.get)
    x, _ = pairs(ranked, rows, truth)
    return {"model": name, "held_out_log_loss": losses, "verifier": Verifier(candidates[name]).fit(x, y).to_dict(),
            "cross_fitted": cross_fitted(candidates[name], ranked, rows, truth, groups)}
