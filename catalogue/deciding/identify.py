"""``whaleid identify``'s work: rank the catalogue's whales for new photos, pool encounters, decide, store the
proposals, and (``evaluate``) score the decisions as an open-set task. A function of plain values
(``Request``, one field per flag of ``whaleid identify``) returning a ``Result`` (one row a photo, the lines to
show, the scores); ``catalogue.cli`` parses the flags, shows the lines and writes the files.

One decision policy: a ``Calibration`` (``catalogue.deciding.calibration``) when the catalogue is calibrated, else
``ScoreRule``, the same rule on the raw score (P = the score clipped to [0, 1], the new-whale threshold
``new_below``, a match from ``match_above``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from catalogue.deciding import operating
from catalogue.deciding.calibration import decide
from catalogue.deciding.open_set import NEW as NEW_WHALE
from catalogue.embedding.index import INDEX_ABOVE


@dataclass
class Request:
    """What identify is asked: the catalogue file, the bundle it was built with, the folder of photos, and how to
    decide (each field is the flag of the same name of ``whaleid identify``, whose help says more)."""
    db: Path
    bundle: Path
    data: Path
    since: Optional[str] = None
    labels: Optional[Path] = None
    evaluate: bool = False
    how: str = "max"
    top: int = 5
    by: str = "auto"
    match_probability: Optional[float] = None
    match_above: float = 0.8
    new_below: float = 0.5
    max_error: Optional[float] = None
    confidence: float = 0.8
    global_only: bool = False
    batch: Optional[str] = None
    workers: Optional[int] = None
    device: str = "auto"
    index_above: int = INDEX_ABOVE


@dataclass
class Result:
    """What identify did: ``frame``, one row a photo (decision, whale, score, P, candidates, ...; None when there
    was no photo to identify), ``lines`` shown as it went (``warnings`` for the error stream), ``by`` (photo or
    encounter, as decided), and with ``evaluate`` the open-set scores in ``metrics``."""
    frame: Any = None
    lines: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    by: str = "photo"
    metrics: Optional[dict] = None
    say: Optional[Callable[[str, bool], None]] = field(default=None, repr=False)

    def note(self, line: str, warning: bool = False) -> None:
        (self.warnings if warning else self.lines).append(line)
        if self.say is not None:
            self.say(line, warning)


class ScoreRule:
    """The uncalibrated policy, with a Calibration's interface."""

    def __init__(self, new_below: float, match_above: float):
        self.new_below, self.match_probability = float(new_below), float(match_above)

    def probability(self, scores) -> np.ndarray:
        return np.clip(np.asarray(scores, dtype=float), 0, 1)

    def threshold(self, viewpoint) -> float:
        return self.new_below

    def decide(self, score: float, probability: float, viewpoint) -> str:
        return decide(score, probability, self.threshold(viewpoint), self.match_probability)


def operating_point(policy, max_error: float, confidence: float = 0.8) -> dict:
    """The operating point holding ``max_error`` (with ``confidence``) on the calibration's held-out photos."""
    if not 0 < max_error < 1:
        raise ValueError(f"--max-error must be between 0 and 1 (0.05 for 5%), got {max_error}")
    if not getattr(policy, "operating", None):
        raise ValueError("--max-error needs a calibration with operating data: run `whaleid calibrate` again")
    return operating.fit(policy.operating, max_error, confidence)


def identify(cat, req: Request, say: Optional[Callable[[str, bool], None]] = None) -> Result:
    """Identify ``req.data``'s photos against catalogue ``cat`` (opened with ``req.bundle``'s model) and store the
    proposals; ``say(line, warning)`` gets each line of the result as it comes (the console prints them)."""
    import pandas as pd

    from catalogue.deciding import calibration
    from catalogue.deciding.held_out import pool_by_encounter
    from catalogue.deciding.match import rank_whales
    from catalogue.embedding.embed import embed_files
    from catalogue.embedding.index import searcher
    from catalogue.records.photos import add_photo_root, read_photos

    res = Result(say=say)
    stored = cat.meta.get("calibration")
    cal = calibration.Calibration.from_json(stored) if stored else None
    if cal is None:
        res.note(f"note: {req.db} is not calibrated (run `whaleid calibrate`): probabilities are the raw scores "
                 f"clipped to [0, 1] and the new-whale threshold is --new-below {req.new_below}", warning=True)
    if req.match_probability is not None and cal is not None:
        cal.match_probability = req.match_probability
    table, cat_emb = cat.photos()
    table["whale_id"] = cat.current_whales(table["whale_id"])  # reviewers' merges count
    queries = read_photos(req.data, require_identity=req.evaluate, since=req.since, labels=req.labels)
    linked = queries.attrs.get("linked_folders", [])
    queries = queries[~queries["image_id"].isin(set(table["image_id"]))].reset_index(drop=True)
    if queries.empty:
        res.note(f"no photo of {req.data} to identify (all are in the catalogue, or none is dated from {req.since})")
        return res
    emb, ok = embed_files(req.bundle, list(queries["file"]), req.workers, req.device)
    views = list(queries["viewpoint"])
    search = searcher(req.db, cat.meta["model_hash"], list(table["image_id"]), cat_emb, req.index_above)
    ranked = rank_whales(emb, views, cat_emb, list(table["whale_id"]), list(table["image_id"]), list(table["viewpoint"]),
                         how=req.how, top_n=req.top, search=search)
    if search is not None:
        res.note(f"searched through the {search.describe}: recall of the exact shortlist on a sample of the photos "
                 f"{search.recall:.4f}")
    ranked = [r if ok[i] else [] for i, r in enumerate(ranked)]
    global_ranked, global_cal = ranked, cal
    counts, keypoints, evidence = None, None, None
    use_local = cal is not None and cal.local and not req.global_only
    if use_local:
        from catalogue.deciding.local import Evidence, evidence_for, fuse

        evidence = Evidence(req.db, cal.local["options"], bundle=req.bundle)
        evidence.extract(list(queries["file"]), desc="query keypoints")
        counts = evidence_for(evidence, ranked, list(queries["file"]), views, table)
        keypoints = evidence.keypoint_counts(list(queries["file"]))
        res.note(f"local evidence: {len(queries)} photos matched with their candidates' best photos (the step of "
                 f"{evidence.source})")
    verifier = None
    if cal is not None and cal.verifier and (use_local or not cal.verifier.get("local")):
        from catalogue.deciding import verifier as vf

        verifier = vf.Verifier.from_dict(cal.verifier["verifier"])
        rows = vf.features(ranked, counts, views, list(queries["date"].astype(str)), vf.Context(table), keypoints)
        why = {(q, c.whale_id): w for q, (cands, r) in enumerate(zip(ranked, rows))
               for c, w in zip(cands, verifier.why_rows(r))}
        ranked, cal = vf.rescore(ranked, rows, verifier, counts), cal.verified()
        res.note(f"whale-level evidence: deciding by P(same whale) of the {global_cal.verifier['model'].replace('_', ' ')}"
                 f" chosen on held-out whales, from {', '.join(verifier.use)}")
    elif use_local:
        ranked = fuse(ranked, counts, global_cal.local["fusion"], bundle=req.bundle)
        cal = global_cal.fused()
        res.note("deciding by the fused P(same whale) of the global score and the inliers")
    rescored = cal is not global_cal  # decided by the verifier's or the fusion's P, not the global score's
    res.by = req.by
    if res.by == "auto":  # one whale per encounter unless the user says otherwise (--by photo)
        res.by = "encounter" if queries["encounter_id"].notna().all() else "photo"
    if res.by == "encounter":
        if queries["encounter_id"].isna().any():
            row = int(np.flatnonzero(queries["encounter_id"].isna())[0])
            raise ValueError(f"{req.data / 'metadata.csv'}: --by encounter needs encounter_id; photo "
                             f"{queries['image_id'][row]} has none")
        ranked = pool_by_encounter(ranked, list(queries.groupby("encounter_id", sort=False).indices.values()))
        if cal is not None and cal.for_encounters() is not None:
            cal = cal.for_encounters()
            res.note(f"deciding by encounter by the calibration of held-out photos pooled by encounter "
                     f"({cal.fitted_on.get('encounters', '?')} encounters)")
        elif cal is not None:
            res.note("note: the calibration was fitted on single photos (its held-out photos had no encounter ids); "
                     "a pooled score is the best of an encounter's photos', so the expected error rates may be "
                     "optimistic: calibrate on photos with encounter ids, or decide --by photo", warning=True)

    policy = cal if cal is not None else ScoreRule(req.new_below, req.match_above)
    point = operating_point(policy, req.max_error, req.confidence) if req.max_error is not None else None

    def probability(score):
        return float(policy.probability([score])[0])

    out = []
    for i, cands in enumerate(ranked):
        top = cands[0] if cands else None
        score, prob = (top.score, probability(top.score)) if top else (-1.0, 0.0)
        if not ok[i]:
            decision = "unreadable"
        elif point is not None:
            decision = operating.decide(prob, point)
        else:
            decision = policy.decide(score, prob, views[i])
        shown = [{"whale_id": c.whale_id, "score": round(c.score, 4), "probability": round(probability(c.score), 4),
                  "photos": [[p, round(s, 4)] for p, s in c.photos], **({} if c.inliers is None else {"inliers": c.inliers}),
                  **({"why": why.get((i, c.whale_id), [])} if verifier is not None else {})} for c in cands]
        out.append({"image_id": queries["image_id"][i], "decision": decision, "whale_id": top.whale_id if top else "",
                    "score": round(score, 4), "probability": round(prob, 4),
                    "review_value": round(operating.review_value(prob), 4), "candidates": json.dumps(shown),
                    "path": queries["file"][i], "viewpoint": views[i], "date": queries["date"][i],
                    "encounter_id": queries["encounter_id"][i], "latitude": queries["latitude"][i],
                    "longitude": queries["longitude"][i], "species": queries["species"][i]})
    if point is not None:
        res.note(f"operating point at most {req.max_error:.1%} wrong decisions: match from P {point['accept']:.3f}, new "
                 f"whale up to P {point['new']:.3f}; expected {point['expected_error']:.1%} wrong and "
                 f"{point['expected_decided']:.1%} decided without review (on {point['photos']} held-out photos)")
    res.frame = pd.DataFrame(out)
    add_photo_root(cat, req.data, linked)
    # the review queue in the order of how much a review would change, most first; decided photos after it
    order = sorted(range(len(out)), key=lambda k: (out[k]["decision"] != "review", -out[k]["review_value"], k))
    cat.add_proposals([out[k] for k in order], emb[order], req.batch or req.data.name)
    counted = res.frame["decision"].value_counts().to_dict()
    grouped = f" in {queries['encounter_id'].nunique()} encounters" if res.by == "encounter" else ""
    res.note(f"{len(res.frame)} photos{grouped} against {table['whale_id'].nunique()} whales ({len(table)} photos): "
             + ", ".join(f"{k} {v}" for k, v in sorted(counted.items())) + f"; proposals stored in {req.db}")
    if req.evaluate:
        res.metrics = evaluate_identified(req, table, cat_emb, queries, emb, ranked, cal, rescored, res.note)
        known = set(table["whale_id"])
        truth = [w if w in known else NEW_WHALE for w in queries["whale_id"]]
        if rescored:  # the same photos decided by the global score alone, for comparison
            from catalogue.deciding.open_set import workload

            split = {"ranked": global_ranked, "real": list(queries["whale_id"]), "truth": truth, "views": views}
            alone = calibration.evaluate(split, global_cal)
            res.note(f"{'global score alone (calibrated)':42s} BAKS {alone['baks']:.4f}  BAUS {alone['baus']:.4f}  "
                     f"geometric mean {alone['geometric_mean']:.4f}  AUROC {alone['auroc']:.4f}")
            as_p = [[type(c)(c.whale_id, float(global_cal.probability([c.score])[0]), c.photos) for c in cands]
                    for cands in global_ranked]
            res.metrics["global_only"] = dict(alone, workload=workload(as_p, truth))
            res.metrics["whaleid"]["workload"] = workload(ranked, truth)
            res.note("best share decidable on these labels at 1% / 5% wrong decisions (hindsight, not an operating "
                     "point): ours " + " / ".join(f"{100 * v:.1f}%" for v in res.metrics["whaleid"]["workload"].values())
                     + ", global alone " + " / ".join(f"{100 * v:.1f}%" for v in res.metrics["global_only"]["workload"].values()))
        res.metrics.update(operating.evaluate(policy, ranked, truth, [r["probability"] for r in out], ok, req.confidence,
                                              res.note))
    return res


def evaluate_identified(req: Request, table, cat_emb, queries, emb, ranked, cal, fused: bool = False,
                        note: Callable[[str], None] = lambda line: None) -> dict:
    """Open-set scores of identify's decisions, and of the plain top-1 cosine baseline on the same photos."""
    from catalogue.deciding import calibration
    from catalogue.deciding.match import rank_whales

    known = set(table["whale_id"])
    real = list(queries["whale_id"])
    split = {"ranked": ranked, "real": real, "truth": [w if w in known else NEW_WHALE for w in real],
             "views": list(queries["viewpoint"])}
    if cal is not None:
        ours = calibration.evaluate(split, cal)
        base_t = cal.fitted_on["baseline_threshold"]
    else:
        ours = calibration.evaluate(split, None, req.new_below)
        base_t = req.new_below
    plain = rank_whales(emb, None, cat_emb, list(table["whale_id"]), list(table["image_id"]), list(table["viewpoint"]),
                        how="max", top_n=req.top)
    base = calibration.evaluate(dict(split, ranked=plain), None, base_t)
    note(f"known {ours['known']} photos, new {ours['new']}")
    rows = [(("whaleid (calibrated, fused)" if fused else "whaleid (calibrated)") if cal
             else "whaleid (--new-below)", ours), ("top-1 cosine, threshold from validation"
                                                                                 if cal else "top-1 cosine", base)]
    for name, s in rows:
        note(f"{name:42s} BAKS {s['baks']:.4f}  BAUS {s['baus']:.4f}  geometric mean {s['geometric_mean']:.4f}  "
              f"AUROC {s['auroc']:.4f}")
    if cal is not None:
        note(f"ECE over the candidates shown: raw score {ours['ece_raw']:.4f}  logistic {ours['ece_logistic']:.4f}  "
              f"isotonic {ours['ece_isotonic']:.4f}  ({cal.method} is used)")
    from catalogue.deciding.calibrators import reliability

    scores, labels = calibration.labelled_pairs(ranked, split["truth"])
    bins = {"raw": reliability(np.clip(scores, 0, 1), labels)}
    if cal is not None:
        bins[cal.method] = reliability(cal.probability(scores), labels)
    tops = {kind: [c[0].score for c, t in zip(ranked, split["truth"]) if c and (t == NEW_WHALE) == (kind == "new")]
            for kind in ("known", "new")}
    return {"whaleid": ours, "baseline": base, "calibration": cal.fitted_on if cal else None,
            "thresholds": cal.thresholds if cal else {"all": req.new_below}, "reliability": bins, "top_scores": tops}
