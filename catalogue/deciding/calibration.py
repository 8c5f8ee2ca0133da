"""A score that means P(same whale), and the "new whale" threshold, both fitted on a run's own held-out whales.

``fit_folds`` takes a catalogue and, per fold of a run, the catalogue embedded by that fold's model and the
fold's held-out photos (whales that model never trained on: every training whale once over a cross-validated
run, or one validation fold; ``catalogue.deciding.out_of_fold``), and makes a time-aware open set of each
(``catalogue.deciding.held_out``), as WildlifeDatasets' time-aware splits do: the fold's photos from its
latest year are queries, everything else in the catalogue is the reference, so a validation whale first seen
in that year is "new" and one seen before is "known" (the training whales are distractors). Each query's
candidate whales (``catalogue.deciding.match``) give labelled pairs, the candidate's score and whether it is the
query's whale, on which isotonic and logistic calibration are fitted; the threshold under which a photo is a
new whale is the one that maximises the geometric mean of BAKS and BAUS on those queries, optionally one per
viewpoint (top, lateral) where each has enough known and new queries. The folds' queries are pooled. On the
same pairs it fits the whale-level verifier (``catalogue.deciding.verifier``) and records, per query, the calibrated
P(top) of a verifier fitted without that query's fold, from which ``catalogue.deciding.operating`` chooses the
thresholds that hold an error rate. Where every held-out query has an encounter id, each of the three levels
(the global score, the fusion, the verifier) is fitted a second time on the queries pooled by encounter as
identify pools them (``catalogue.deciding.match.pool_encounter``: each whale's best score over the encounter's
photos), because a pooled top score is a maximum over photos and runs higher than one photo's: identify deciding
by encounter takes that fit (``Calibration.for_encounters``), so its thresholds and expected error rates are
those of pooled evidence.

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
from catalogue.deciding.held_out import encounter_groups, pool_by_encounter, pooled
from catalogue.deciding.match import view_class

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
    encounter: dict = field(default_factory=dict)  # the fields above fitted on queries pooled by encounter

    def fused(self) -> Optional["Calibration"]:
        """The calibration of the fused scores (``catalogue.deciding.local.fuse``), or None when fitted without them."""
        if not self.local:
            return None
        return self._of(self.local)

    def verified(self) -> Optional["Calibration"]:
        """The calibration of the whale-level verifier's P (``catalogue.deciding.verifier``), or None when it has none."""
        return self._of(self.verifier) if self.verifier else None

    def for_encounters(self) -> Optional["Calibration"]:
        """This level's calibration fitted on held-out queries pooled by encounter (the module's docstring), or None
        when the held-out photos had no encounter ids."""
        return self._of(self.encounter) if self.encounter else None

    def _of(self, part: dict) -> "Calibration":
        keep = ("method", "logistic", "isotonic", "thresholds", "fitted_on")
        return Calibration(**{k: part[k] for k in keep}, operating=part.get("operating", {}),
                           encounter=part.get("encounter", {}), match_probability=self.match_probability)

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


def labelled_pairs(ranked, truth) -> tuple[np.ndarray, np.ndarray]:
    """(score, same whale) for every candidate of every query."""
    scores, labels = [], []
    for cands, whale in zip(ranked, truth):
        for c in cands:
            scores.append(c.score)
            labels.append(c.whale_id == whale)
    return np.asarray(scores, np.float64), np.asarray(labels, bool)


def fit(table, emb: np.ndarray, held_out: set, source: str = "", **options) -> Calibration:
    """``fit_folds`` on one fold: the ``held_out`` photos scored by the catalogue's own embeddings ``emb``."""
    return fit_folds(table, [(source, emb, held_out)], **options)


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
    groups = encounter_groups(split)

    def fit_levels(ranked, fitted_on):
        """``_fit_scores`` of ``ranked``, and (with encounters) of ``ranked`` pooled by encounter."""
        part = _fit_scores(split, ranked, per_viewpoint, min_per_side, fitted_on, method)
        if groups:
            part["encounter"] = dict(_fit_scores(split, pool_by_encounter(ranked, groups), per_viewpoint, min_per_side,
                                                 dict(fitted_on, by="encounter", encounters=len(groups)), method),
                                     method=method)
        return part

    calibration = Calibration(method, match_probability=match_probability, **fit_levels(split["ranked"], fitted))
    if evidence is not None:
        from catalogue.deciding.local import fit_whale_fusion, fuse

        n = [k for ks in counts for k in ks]
        _, same = labelled_pairs(split["ranked"], truth)
        fusion = fit_whale_fusion(split["ranked"], counts, truth)
        fused = fit_levels(fuse(split["ranked"], counts, fusion),
                           dict(fitted, inliers_mean_same=float(np.mean([k for k, y in zip(n, same) if y] or [0])),
                                inliers_mean_other=float(np.mean([k for k, y in zip(n, same) if not y] or [0]))))
        calibration.local = dict(fused, method=method, options=evidence.options, fusion=fusion)
    chosen = vf.choose(split["ranked"], split["rows"], truth, split["groups"], local=evidence is not None)
    honest = vf.with_scores(split["ranked"], chosen.pop("cross_fitted"), counts)
    calibration.verifier = dict(fit_levels(honest, dict(fitted, held_out_log_loss=chosen["held_out_log_loss"])),
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
    chosen = choose_threshold(truth, top_whale, top_score, real)
    thresholds = {"all": chosen["threshold"]}
    if per_viewpoint:
        for view in ("top", "lateral"):
            idx = [i for i, v in enumerate(split["views"]) if view_class(v) == view]
            sub = [truth[i] for i in idx]
            if sum(t != NEW for t in sub) >= min_per_side and sum(t == NEW for t in sub) >= min_per_side:
                thresholds[view] = choose_threshold(sub, [top_whale[i] for i in idx], [top_score[i] for i in idx],
                                                    [real[i] for i in idx])["threshold"]
    fitted = dict(fitted, new_whale_within=chosen["within"], new_whale_standard_error=chosen["standard_error"],
                  pairs=int(len(labels)), ece_raw=ece(np.clip(scores, 0, 1), labels),
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
        within = v["fitted_on"].get("new_whale_within")
        if within:
            lines.append(f"new whale under P {v['thresholds']['all']:.3f}: the middle of the thresholds "
                         f"{within[0]:.3f} to {within[1]:.3f}, whose held-out BAKS/BAUS geometric mean is within one "
                         f"bootstrap standard error ({v['fitted_on']['new_whale_standard_error']:.3f}) of the best")
        from catalogue.deciding import operating

        for rate in (0.01, 0.05):
            point = operating.fit(v["operating"], rate)
            lines.append(f"at most {rate:.0%} wrong decisions (identify --max-error {rate:g}): match from P "
                         f"{point['accept']:.3f}, new whale up to {point['new']:.3f}; on the held-out photos "
                         f"{point['expected_decided']:.1%} decided without review, {point['expected_error']:.1%} wrong")
    return "\n".join(lines)
