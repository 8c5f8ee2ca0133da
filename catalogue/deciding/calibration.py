"""A score that means P(same whale), and the "new whale" threshold, both fitted on a run's own held-out whales.

``fit_folds`` takes a catalogue and, per fold of a run, the catalogue embedded by that fold's model and the
fold's held-out photos (whales that model never trained on: every training whale once over a cross-validated
run, or one validation fold; ``catalogue.deciding.out_of_fold``), and makes a time-aware open set of each, as WildlifeDatasets' time-aware splits do: the fold's photos from its
latest year are queries, everything else in the catalogue is the reference, so a validation whale first seen
in that year is "new" and one seen before is "known" (the training whales are distractors). Each query's
candidate whales (``catalogue.deciding.match``) give labelled pairs, the candidate's score and whether it is the
query's whale, on which isotonic and logistic calibration are fitted; the threshold under which a photo is a
new whale is the one that maximises the geometric mean of BAKS and BAUS on those queries, optionally one per
viewpoint (top, lateral) where each has enough known and new queries. The folds' queries are pooled. On the
same pairs it fits the whale-level verifier (``catalogue.deciding.verifier``) and records, per query, the calibrated
P(top) of a verifier fitted without that query's fold, from which ``catalogue.deciding.operating`` chooses the
thresholds that hold an error rate.

``Calibration`` is what ``whaleid identify`` applies: P(same) per candidate, and the three-way decision
(``new_whale`` under the threshold, ``match`` from ``match_probability``, else ``review``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Optional

import numpy as np

from catalogue.deciding.calibrators import Isotonic, Logistic, ece
from catalogue.deciding.open_set import NEW, choose_threshold, open_set_scores
from catalogue.deciding.match import rank_whales, view_class

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
    operating: dict = field(default_factory=dict)  # per held-out query: calibrated P(top), truth (catalogue.deciding.operating)
    verifier: dict = field(default_factory=dict)  # the whale-level verifier and the fields above, on its P

    def fused(self) -> Optional["Calibration"]:
        """The calibration of the fused scores (``catalogue.deciding.local.fuse``), or None when fitted without them."""
        if not self.local:
            return None
        return self._of(self.local)

    def verified(self) -> Optional["Calibration"]:
        """The calibration of the whale-level verifier's P (``catalogue.deciding.verifier``), or None when it has none."""
        return self._of(self.verifier) if self.verifier else None

    def _of(self, part: dict) -> "Calibration":
        keep = ("method", "logistic", "isotonic", "thresholds", "fitted_on")
        return Calibration(**{k: part[k] for k in keep}, operating=part.get("operating", {}),
                           match_probability=self.match_probability)

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


def fit(table, emb: np.ndarray, held_out: set, source: str = "", **options) -> Calibration:
    """``fit_folds`` on one fold: the ``held_out`` photos scored by the catalogue's own embeddings ``emb``."""
    return fit_folds(table, [(source, emb, held_out)], **options)


def fold_split(table, emb: np.ndarray, held_out: set, source: str, how: str = "max") -> dict:
    """One fold's time-aware open set: its held-out photos from their latest year are queries, every other photo
    of the catalogue (embedded by ``emb``, that fold's model) the reference."""
    in_fold = table["image_id"].isin(held_out).to_numpy()
    if not in_fold.any():
        raise ValueError(f"the catalogue holds none of the {len(held_out)} held-out photos of {source or 'the run'}: "
                         "build it from the run's training data")
    cut = last_year_cut(table["date"][in_fold])
    mask = in_fold & (table["date"].astype(str) >= cut).to_numpy()
    split = open_set(table, emb, mask, how=how)
    split["plain"] = open_set(table, emb, mask, how="max", viewpoints=False)["ranked"]  # top-1 cosine baseline
    split["dates"] = list(table["date"].astype(str)[mask])
    split["reference"] = table[~mask]
    split["cut"], split["source"] = cut, source
    return split


def pooled(table, folds: list, how: str = "max", evidence=None) -> dict:
    """The folds' open sets pooled (``fold_split`` per fold; ``folds``: ``(source, embeddings of the catalogue by
    that fold's model, that fold's held-out photo ids)``), with the fold of each query, the inliers of every
    candidate and each query's keypoint count (with ``evidence``), and the verifier's feature rows."""
    from catalogue.deciding import verifier as vf

    splits = [fold_split(table, emb, held_out, source, how) for source, emb, held_out in folds]
    split = {k: [x for s in splits for x in s[k]] for k in ("ranked", "real", "truth", "views", "image_ids", "plain",
                                                              "dates")}
    split["fold"] = [k for k, s in enumerate(splits) for _ in s["truth"]]
    split["splits"], split["counts"], split["keypoints"] = splits, None, None
    if evidence is not None:
        from catalogue.deciding.local import evidence_for

        path_of = dict(zip(table["image_id"].astype(str), table["path"]))
        files = [path_of.get(i) for i in split["image_ids"]]
        split["counts"] = evidence_for(evidence, split["ranked"], files, split["views"], table)
        split["keypoints"] = evidence.keypoint_counts(files)
    rows, start, counts, keypoints = [], 0, split["counts"], split["keypoints"]
    for s in splits:  # each fold's candidates described against that fold's reference photos
        size = len(s["truth"])
        rows += vf.features(s["ranked"], counts[start:start + size] if counts is not None else None, s["views"],
                            s["dates"], vf.Context(s["reference"]), keypoints[start:start + size] if keypoints else None)
        start += size
    split["rows"], split["groups"] = rows, vf.default_groups(len(split["truth"]), split["fold"])
    return split


def fit_folds(table, folds: list, how: str = "max", method: str = "logistic", per_viewpoint: bool = False,
              match_probability: float = 0.9, min_per_side: int = 3, evidence=None) -> Calibration:
    """Calibration and "new whale" thresholds from the time-aware open sets of one or more folds (``pooled``;
    each fold's held-out whales are new to its model). Raises ValueError when the pool has no known or no new
    query. Also the whale-level verifier (``catalogue.deciding.verifier``: chosen against the plain score, or with
    ``evidence`` (``catalogue.deciding.local.Evidence``) against the fusion of the score with keypoint inliers, by held-out
    log-loss over the folds), and with ``evidence`` that fusion (``Calibration.local``)."""
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    from catalogue.deciding import verifier as vf

    split = pooled(table, folds, how, evidence)
    splits, truth, real, counts = split["splits"], split["truth"], split["real"], split["counts"]
    n_known, n_new = sum(t != NEW for t in truth), sum(t == NEW for t in truth)
    source = ", ".join(s["source"] for s in splits)
    if not n_known or not n_new:
        raise ValueError(f"{source}: the held-out photos of their latest year are {n_known} of known whales and "
                         f"{n_new} of new ones; calibrating needs both")
    baseline = choose_threshold(truth, [c[0].whale_id if c else "" for c in split["plain"]],
                                [c[0].score if c else -1.0 for c in split["plain"]], real)["threshold"]
    fitted = {"source": source, "baseline_threshold": baseline, "cut": ", ".join(sorted({s["cut"] for s in splits})),
              "queries": len(truth), "known": n_known, "new": n_new, "how": how, "folds": len(splits),
              "per_fold": [{"source": s["source"], "cut": s["cut"], "queries": len(s["truth"]),
                            "new": sum(t == NEW for t in s["truth"])} for s in splits]}
    calibration = Calibration(method, match_probability=match_probability,
                              **_fit_scores(split, split["ranked"], per_viewpoint, min_per_side, fitted, method))
    if evidence is not None:
        from catalogue.deciding.local import fit_whale_fusion, fuse

        n = [k for ks in counts for k in ks]
        _, same = labelled_pairs(split["ranked"], truth)
        fusion = fit_whale_fusion(split["ranked"], counts, truth)
        fused = _fit_scores(split, fuse(split["ranked"], counts, fusion), per_viewpoint, min_per_side,
                            dict(fitted, inliers_mean_same=float(np.mean([k for k, y in zip(n, same) if y] or [0])),
                                 inliers_mean_other=float(np.mean([k for k, y in zip(n, same) if not y] or [0]))), method)
        calibration.local = dict(fused, method=method, options=evidence.options, fusion=fusion)
    chosen = vf.choose(split["ranked"], split["rows"], truth, split["groups"], local=evidence is not None)
    honest = vf.with_scores(split["ranked"], chosen.pop("cross_fitted"), counts)
    calibration.verifier = dict(_fit_scores(split, honest, per_viewpoint, min_per_side,
                                            dict(fitted, held_out_log_loss=chosen["held_out_log_loss"]), method),
                                method=method, local=evidence is not None, **chosen)
    return calibration


def _fit_scores(split: dict, ranked, per_viewpoint: bool, min_per_side: int, fitted: dict,
                method: str = "logistic") -> dict:
    """Logistic and isotonic calibration of the candidates' scores, the new-whale thresholds on the top scores
    (per viewpoint where each side has ``min_per_side`` known and new queries), and per query the calibrated
    P(top) with its truth, from which ``catalogue.deciding.operating`` chooses operating points."""
    from catalogue.deciding import operating

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
    model = logi if method == "logistic" else iso
    p_top = [[type(c[0])(c[0].whale_id, float(model.predict([c[0].score])[0]))] if c else [] for c in ranked]
    return {"logistic": {"a": logi.a, "b": logi.b}, "isotonic": {"lefts": iso.lefts.tolist(), "values": iso.values.tolist()},
            "thresholds": thresholds, "fitted_on": fitted, "operating": operating.evidence(p_top, truth)}



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


def summary(cal: Calibration, run, db) -> str:
    """What ``whaleid calibrate`` prints of a fit."""
    f = cal.fitted_on
    folds = f" over {f['folds']} folds" if f.get("folds", 1) > 1 else ""
    lines = [f"{run}: {f['queries']} held-out photos from {f['cut']} on{folds} ({f['known']} of known whales, "
             f"{f['new']} of new ones), {f['pairs']} candidate pairs",
             f"ECE on those pairs: raw {f['ece_raw']:.4f}  logistic {f['ece_logistic']:.4f}  isotonic "
             f"{f['ece_isotonic']:.4f} (in sample); {cal.method} is used",
             "new-whale threshold: " + ", ".join(f"{k} {v:.4f}" for k, v in cal.thresholds.items())
             + f"; baseline (top-1 cosine) {f['baseline_threshold']:.4f}; stored in {db}"]
    if cal.local:
        lf, fu = cal.local["fitted_on"], cal.local["fusion"]
        lines.append(f"local evidence: P = sigmoid({fu['a']:.3f} * score + {fu['b']:.3f} * log(1 + inliers) + "
                     f"{fu['c']:.3f}); inliers {lf['inliers_mean_same']:.1f} on pairs of one whale, "
                     f"{lf['inliers_mean_other']:.1f} on others")
    if cal.verifier:
        v = cal.verifier
        losses = ", ".join(f"{k} {x:.4f}" for k, x in v["held_out_log_loss"].items())
        weights = ", ".join(f"{k} {w:+.2f}" for k, w in v["verifier"]["weights"].items() if w)
        lines.append(f"whale-level evidence: held-out log-loss {losses}: the {v['model']} is used ({weights}, on "
                     "standardised features); identify decides by its P")
        from catalogue.deciding import operating

        for rate in (0.01, 0.05):
            point = operating.fit(v["operating"], rate)
            lines.append(f"at most {rate:.0%} wrong decisions (identify --max-error {rate:g}): match from P "
                         f"{point['accept']:.3f}, new whale up to {point['new']:.3f}; on the held-out photos "
                         f"{point['expected_decided']:.1%} decided without review, {point['expected_error']:.1%} wrong")
    return "\n".join(lines)
