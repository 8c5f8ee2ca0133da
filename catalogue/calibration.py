"""A score that means P(same whale), and the "new whale" threshold, both fitted on a run's own held-out whales.

``fit`` takes a catalogue and the photos of a run's validation fold (whales the model never trained on) and
makes a time-aware open set of them, as WildlifeDatasets' time-aware splits do: the fold's photos from its
latest year are queries, everything else in the catalogue is the reference, so a validation whale first seen
in that year is "new" and one seen before is "known" (the training whales are distractors). Each query's
candidate whales (``catalogue.match``) give labelled pairs, the candidate's score and whether it is the
query's whale, on which isotonic and logistic calibration are fitted; the threshold under which a photo is a
new whale is the one that maximises the geometric mean of BAKS and BAUS on those queries, optionally one per
viewpoint (top, lateral) where each has enough known and new queries.

``Calibration`` is what ``whaleid identify`` applies: P(same) per candidate, and the three-way decision
(``new_whale`` under the threshold, ``match`` from ``match_probability``, else ``review``).
``identities_from_labels`` recovers test whales from a competition ``test_labels.csv`` (the photos that
label each other as matches are one whale) for scoring on data whose metadata carries no ``whale_id``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from catalogue.scores import NEW, Isotonic, Logistic, choose_threshold, ece, open_set_scores
from catalogue.match import rank_whales, view_class

METHODS = ("logistic", "isotonic")


@dataclass
class Calibration:
    method: str
    logistic: dict  # a, b
    isotonic: dict  # lefts, values
    thresholds: dict  # "all" and optionally "top" / "lateral": top score under which a photo is a new whale
    match_probability: float = 0.9
    fitted_on: dict = field(default_factory=dict)  # run, queries, pairs, cut, ECE before and after
    local: dict = field(default_factory=dict)  # with local evidence: options, fusion and the fields above, fused

    def fused(self) -> Optional["Calibration"]:
        """The calibration of the fused scores (``catalogue.local.fuse``), or None when fitted without them."""
        if not self.local:
            return None
        keep = ("method", "logistic", "isotonic", "thresholds", "fitted_on")
        return Calibration(**{k: self.local[k] for k in keep}, match_probability=self.match_probability)

    def probability(self, scores, method: Optional[str] = None) -> np.ndarray:
        method = method or self.method
        if method == "logistic":
            model = Logistic()
            model.a, model.b = self.logistic["a"], self.logistic["b"]
        elif method == "isotonic":
            model = Isotonic()
            model.lefts, model.values = np.asarray(self.isotonic["lefts"]), np.asarray(self.isotonic["values"])
        else:
            raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
        return model.predict(np.asarray(scores, np.float64))

    def threshold(self, viewpoint) -> float:
        return float(self.thresholds.get(view_class(viewpoint), self.thresholds["all"]))

    def decide(self, score: float, probability: float, viewpoint) -> str:
        return decide(score, probability, self.threshold(viewpoint), self.match_probability)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "Calibration":
        return cls(**json.loads(text))


def decide(score: float, probability: float, threshold: float, match_probability: float) -> str:
    """The three-way decision: a new whale under the threshold, a match from ``match_probability``, else review."""
    if score < threshold:
        return NEW
    return "match" if probability >= match_probability else "review"


def last_year_cut(dates) -> str:
    """The first day of the latest year among ``dates`` (YYYY-...): photos from then on are the open set's queries."""
    years = sorted({str(d)[:4] for d in dates if str(d)[:4].isdigit()})
    if len(years) < 2:
        raise ValueError(f"a time-aware split needs photos from two years or more; found {years or 'no dates'}")
    return f"{years[-1]}-01-01"


def labelled_pairs(ranked, truth) -> tuple[np.ndarray, np.ndarray]:
    """(score, same whale) for every candidate of every query."""
    scores, labels = [], []
    for cands, whale in zip(ranked, truth):
        for c in cands:
            scores.append(c.score)
            labels.append(c.whale_id == whale)
    return np.asarray(scores, np.float64), np.asarray(labels, bool)


def open_set(table, emb: np.ndarray, query_mask: np.ndarray, how: str = "max", top_n: int = 5,
             viewpoints: bool = True) -> dict:
    """Queries = rows of ``query_mask``, reference = every other row: per query, its ranked candidates, its truth
    (its whale when the reference has it, else NEW), its real whale id and its viewpoint. ``viewpoints=False``
    ignores viewpoints (with ``how="max"``: the plain top-1 cosine baseline)."""
    q, ref = np.flatnonzero(query_mask), np.flatnonzero(~query_mask)
    known = set(table["whale_id"].iloc[ref])
    ranked = rank_whales(emb[q], list(table["viewpoint"].iloc[q]) if viewpoints else None, emb[ref],
                         list(table["whale_id"].iloc[ref]),
                         list(table["image_id"].iloc[ref]), list(table["viewpoint"].iloc[ref]), how=how, top_n=top_n)
    real = list(table["whale_id"].iloc[q])
    return {"ranked": ranked, "real": real, "truth": [w if w in known else NEW for w in real],
            "views": list(table["viewpoint"].iloc[q]), "image_ids": list(table["image_id"].iloc[q])}


def fit(table, emb: np.ndarray, held_out: set, how: str = "max", method: str = "logistic", per_viewpoint: bool = False,
        match_probability: float = 0.9, min_per_side: int = 3, source: str = "", evidence=None) -> Calibration:
    """Calibration and "new whale" thresholds from the time-aware open set of the ``held_out`` photos (their
    latest year's photos are queries). Raises ValueError when that open set has no known or no new query. With
    ``evidence`` (``catalogue.local.Evidence``) also the fusion of the global score with keypoint inliers, fitted
    on the same pairs, and the calibration and thresholds of the fused score (``Calibration.local``)."""
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    in_fold = table["image_id"].isin(held_out).to_numpy()
    if not in_fold.any():
        raise ValueError(f"the catalogue holds none of the {len(held_out)} held-out photos of {source or 'the run'}: "
                         "build it from the run's training data")
    cut = last_year_cut(table["date"][in_fold])
    mask = in_fold & (table["date"].astype(str) >= cut).to_numpy()
    split = open_set(table, emb, mask, how=how)
    truth, real = split["truth"], split["real"]
    n_known, n_new = sum(t != NEW for t in truth), sum(t == NEW for t in truth)
    if not n_known or not n_new:
        raise ValueError(f"{source}: the held-out photos from {cut} on are {n_known} of known whales and {n_new} of new "
                         "ones; calibrating needs both")
    plain = open_set(table, emb, mask, how="max", viewpoints=False)  # the baseline: top-1 cosine, one threshold
    baseline = choose_threshold(truth, [c[0].whale_id if c else "" for c in plain["ranked"]],
                                [c[0].score if c else -1.0 for c in plain["ranked"]], real)["threshold"]
    fitted = {"source": source, "baseline_threshold": baseline, "cut": cut, "queries": len(truth), "known": n_known,
              "new": n_new, "how": how}
    calibration = Calibration(method, match_probability=match_probability,
                              **_fit_scores(split, split["ranked"], per_viewpoint, min_per_side, fitted))
    if evidence is not None:
        from catalogue.local import evidence_for, fit_whale_fusion, fuse

        path_of = dict(zip(table["image_id"].astype(str), table["path"]))
        counts = evidence_for(evidence, split["ranked"], [path_of.get(i) for i in split["image_ids"]], split["views"],
                              table)
        n = [k for ks in counts for k in ks]
        _, same = labelled_pairs(split["ranked"], truth)
        fusion = fit_whale_fusion(split["ranked"], counts, truth)
        fused = _fit_scores(split, fuse(split["ranked"], counts, fusion), per_viewpoint, min_per_side,
                            dict(fitted, inliers_mean_same=float(np.mean([k for k, y in zip(n, same) if y] or [0])),
                                 inliers_mean_other=float(np.mean([k for k, y in zip(n, same) if not y] or [0]))))
        calibration.local = dict(fused, method=method, options=evidence.options, fusion=fusion)
    return calibration


def _fit_scores(split: dict, ranked, per_viewpoint: bool, min_per_side: int, fitted: dict) -> dict:
    """Logistic and isotonic calibration of the candidates' scores, and the new-whale thresholds on the top
    scores (per viewpoint where each side has ``min_per_side`` known and new queries)."""
    truth, real = split["truth"], split["real"]
    scores, labels = labelled_pairs(ranked, truth)
    iso, logi = Isotonic().fit(scores, labels), Logistic().fit(scores, labels)
    top_whale = [c[0].whale_id if c else "" for c in ranked]
    top_score = [c[0].score if c else -1.0 for c in ranked]
    thresholds = {"all": choose_threshold(truth, top_whale, top_score, real)["threshold"]}
    if per_viewpoint:
        for view in ("top", "lateral"):
            idx = [i for i, v in enumerate(split["views"]) if view_class(v) == view]
            sub = [truth[i] for i in idx]
            if sum(t != NEW for t in sub) >= min_per_side and sum(t == NEW for t in sub) >= min_per_side:
                thresholds[view] = choose_threshold(sub, [top_whale[i] for i in idx], [top_score[i] for i in idx],
                                                    [real[i] for i in idx])["threshold"]
    fitted = dict(fitted, pairs=int(len(labels)), ece_raw=ece(np.clip(scores, 0, 1), labels),
                  ece_logistic=ece(logi.predict(scores), labels), ece_isotonic=ece(iso.predict(scores), labels))
    return {"logistic": {"a": logi.a, "b": logi.b}, "isotonic": {"lefts": iso.lefts.tolist(), "values": iso.values.tolist()},
            "thresholds": thresholds, "fitted_on": fitted}


def evaluate(split: dict, calibration: Optional[Calibration], threshold: Optional[float] = None) -> dict:
    """Open-set scores of an identified open set: with ``calibration``, its thresholds (per viewpoint when it has
    them) and ECE of its probabilities (and of the raw scores, clipped to [0, 1]) over every candidate shown;
    with ``threshold``, one threshold on the top score (the baseline)."""
    truth, real, ranked = split["truth"], split["real"], split["ranked"]
    top_whale = [c[0].whale_id if c else "" for c in ranked]
    top_score = [c[0].score if c else -1.0 for c in ranked]
    if calibration is not None:
        margin = [s - calibration.threshold(v) for s, v in zip(top_score, split["views"])]  # per-view cut at 0
        out = open_set_scores(truth, top_whale, margin, 0.0, real)
        out["threshold"] = calibration.thresholds
        scores, labels = labelled_pairs(ranked, truth)
        out["ece_raw"] = ece(np.clip(scores, 0, 1), labels)
        for method in METHODS:
            out[f"ece_{method}"] = ece(calibration.probability(scores, method), labels)
    else:
        out = open_set_scores(truth, top_whale, top_score, threshold, real)
    out["known"], out["new"] = sum(t != NEW for t in truth), sum(t == NEW for t in truth)
    return out


def identities_from_labels(test_dir, labels_csv) -> dict:
    """image id -> whale id for the photos of a competition test set, from its ``test_labels.csv``: a query and
    its database matches are one whale (the groups joined by union-find); a photo that no label links is a whale
    of its own. The ids are neutral, ``test-whale-<n>`` numbered in the order of the groups' first image ids:
    nothing in a whale's name points at one of its photos."""
    import pandas as pd

    from core.data import read_csv
    from core.scenarios import read_scenarios

    test_dir = Path(test_dir)
    images = read_csv(test_dir / "metadata.csv", ["image_id"], "metadata")["image_id"].astype(str)
    labels = read_csv(Path(labels_csv), ["query_id", "database_image_id"], "labels")
    query_image = pd.concat([s.queries for s in read_scenarios(test_dir)]).drop_duplicates("query_id")
    image_of = dict(zip(query_image["query_id"].astype(str), query_image["query_image_id"].astype(str)))
    parent = {i: i for i in images}

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for row, (q, d) in enumerate(zip(labels["query_id"].astype(str), labels["database_image_id"].astype(str))):
        a = image_of.get(q)
        if a is None or a not in parent or d not in parent:
            raise ValueError(f"{labels_csv}: row {row + 2} names {q if a is None or a not in parent else d}, "
                             f"which is not in {test_dir}")
        ra, rb = root(a), root(d)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    roots = sorted({root(i) for i in images})
    width = len(str(len(roots)))
    number = {r: f"test-whale-{n:0{width}d}" for n, r in enumerate(roots, 1)}
    return {i: number[root(i)] for i in images}
