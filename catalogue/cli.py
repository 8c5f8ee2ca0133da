"""``whaleid``: the photo-ID catalogue from the command line.

    whaleid catalogue build --bundle Z --data DIR --db C.sqlite [--before 2019-01-01] [--labels test_labels.csv]
    whaleid catalogue apply --db C.sqlite
    whaleid catalogue export --db C.sqlite --out FILE [--format csv|json|wildbook|capture-history]
    whaleid catalogue check --db C.sqlite
    whaleid catalogue reembed --db C.sqlite --bundle NEW.zip
    whaleid import coco ANNOTATIONS.json --images DIR --out SURVEY
    whaleid import csv TABLE --images DIR --out SURVEY --map path=...,whale_id=...
    whaleid calibrate --db C.sqlite --run RUN [--per-viewpoint]
    whaleid identify --bundle Z --db C.sqlite --data DIR [--from 2019-01-01] [--by encounter] [--evaluate]
    whaleid review --db C.sqlite [--port 8765]

``catalogue build`` embeds the photos of DIR (its metadata.csv, with whale_id, or identities recovered from a
competition ``--labels`` file) once with a bundle and stores them; run again on a new survey, it appends only
photos not yet there. ``calibrate`` fits P(same whale) and the "new whale" threshold on the time-aware open
set of RUN's validation whales (which the model never trained on) and stores them in the catalogue.
``identify`` ranks the catalogue's whales for each photo (or, ``--by encounter``, each encounter) of DIR not in
the catalogue and decides: ``new_whale`` (top score under the threshold), ``match`` (calibrated probability at
least ``--match-probability``) or ``review``; the proposals go into the catalogue for ``review``. With
``--evaluate`` (DIR's identities known) it scores those decisions as an open-set task (BAKS, BAUS, their
geometric mean, AUROC, ECE) beside the plain top-1 cosine baseline. ``review`` serves the review page on
127.0.0.1; every decision made there is appended to the catalogue's decision log, and ``catalogue apply``
adds the photos reviewers accepted or named to the searchable photos (merged whales count as one whale).
``import`` writes a survey folder from a Wild Me COCO export or a spreadsheet (crops, every skipped record
named); ``export --format wildbook|capture-history`` writes a Wildbook bulk-import sheet or capture histories for
mark-recapture; ``reembed`` moves a catalogue to a new model, resumable, the switch atomic.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from catalogue.embed import DEVICE_HELP
from catalogue.index import INDEX_ABOVE

log = logging.getLogger("whaleid")


def read_photos(data: Path, require_identity: bool, before: str | None = None, since: str | None = None,
                labels: Path | None = None):
    """DIR's metadata.csv rows (with ``file``, the photo's resolved path, which must lie inside DIR, and ``row``,
    its line in metadata.csv), optionally dated before / since a day; with ``labels`` (a competition
    test_labels.csv) the whale ids are recovered from it."""
    from catalogue.photos import resolve_inside
    from core.data import read_metadata

    meta = read_metadata(data, require_identity=require_identity and labels is None)
    if labels is not None:
        from catalogue.openset import identities_from_labels

        meta["whale_id"] = meta["image_id"].astype(str).map(identities_from_labels(data, labels))
    for col in ("encounter_id", "date", "whale_id", "latitude", "longitude"):
        if col not in meta.columns:
            meta[col] = None
    meta["row"] = np.arange(len(meta)) + 2  # the line in metadata.csv, its header being line 1
    meta["file"] = resolve_inside(data, zip(meta["row"], meta["path"]), str(data / "metadata.csv"))
    if before:
        meta = meta[meta["date"].astype(str) < before]
    if since:
        meta = meta[meta["date"].astype(str) >= since]
    return meta.reset_index(drop=True)


def build(args) -> int:
    from catalogue.embed import bundle_hash, embed_files
    from catalogue.photos import add_photo_root
    from catalogue.store import Catalogue

    meta = read_photos(args.data, require_identity=True, before=args.before, labels=args.labels)
    digest = bundle_hash(args.bundle)
    cat = Catalogue.open(args.db, model_hash=digest) if args.db.exists() else None
    known = cat.known_ids() if cat else set()
    todo = meta[~meta["image_id"].isin(known)].reset_index(drop=True)
    print(f"{args.data}: {len(meta)} photos of {meta['whale_id'].nunique()} whales; {len(meta) - len(todo)} already "
          f"in {args.db}, {len(todo)} to embed", flush=True)
    if todo.empty:
        if cat is not None:
            add_photo_root(cat, args.data)
            cat.close()
        return 0
    emb, ok = embed_files(args.bundle, list(todo["file"]), args.workers, getattr(args, "device", "auto"))
    for i in np.flatnonzero(~ok):
        print(f"warning: {todo['file'][i]} (row {todo['row'][i]} of {args.data / 'metadata.csv'}) cannot be read; "
              "not added", file=sys.stderr)
    if cat is None:
        cat = Catalogue.create(args.db, digest, args.bundle.name, emb.shape[1])
    add_photo_root(cat, args.data)
    rows = [dict(r, path=r["file"]) for r in todo[ok].to_dict(orient="records")]
    added = cat.add_photos(rows, emb[ok], args.batch or args.data.name) if rows else 0
    print(f"added {added} photos; {args.db} holds {len(cat.known_ids())}")
    cat.close()
    if args.keypoints and rows:
        from catalogue.local import Evidence, keypoint_dir

        Evidence(args.db).extract([r["path"] for r in rows])
        print(f"keypoints of the {len(rows)} photos stored in {keypoint_dir(args.db)}")
    return 0


def export(args) -> int:
    from catalogue.exporting import write
    from catalogue.store import Catalogue

    fmt = args.format or ("json" if args.out.suffix == ".json" else "csv")
    cat = Catalogue.open(args.db)
    try:
        print(write(cat, args.out, fmt, args.period, args.media, args.genus, args.species, args.location_id,
                    args.submitter))
    finally:
        cat.close()
    return 0


def check(args) -> int:
    from catalogue.check import main as check_main

    return check_main(args.db)


def apply(args) -> int:
    from catalogue.store import Catalogue

    from catalogue.local import Evidence, keypoint_dir

    cat = Catalogue.open(args.db)
    added = cat.apply_reviewed(args.batch)
    print(f"added {added} reviewed photos to the searchable catalogue; {args.db} holds {len(cat.known_ids())}")
    if added and keypoint_dir(args.db).is_dir():
        table, _ = cat.photos()
        Evidence(args.db).extract(list(table["path"].tail(added)))
    cat.close()
    return 0


def calibrate(args) -> int:
    import pandas as pd

    from catalogue import openset
    from catalogue.store import Catalogue

    split = args.run / "split.csv"
    if not split.is_file():
        raise ValueError(f"{split}: not found; calibrate needs a run folder that core/run.py wrote")
    held = pd.read_csv(split, dtype=str)
    held_out = set(held.loc[held["role"] == "val", "image_id"])
    if not held_out:
        raise ValueError(f"{split}: no validation photos (role val); calibrate needs a run with a validation fold")
    cat = Catalogue.open(args.db)
    table, emb = cat.photos()
    evidence = None
    if args.local:
        from catalogue.local import Evidence

        evidence = Evidence(args.db, {"detector": args.detector, "max_side": args.max_side})
    cal = openset.fit(table, emb, held_out, how=args.how, method=args.method, per_viewpoint=args.per_viewpoint,
                      match_probability=args.match_probability, source=str(args.run), evidence=evidence)
    with cat._write():
        cat.set_meta("calibration", cal.to_json())
    cat.close()
    f = cal.fitted_on
    print(f"{args.run}: {f['queries']} held-out photos from {f['cut']} on ({f['known']} of known whales, {f['new']} of "
          f"new ones), {f['pairs']} candidate pairs")
    print(f"ECE on those pairs: raw {f['ece_raw']:.4f}  logistic {f['ece_logistic']:.4f}  isotonic {f['ece_isotonic']:.4f}"
          f" (in sample); {cal.method} is used")
    print("new-whale threshold: " + ", ".join(f"{k} {v:.4f}" for k, v in cal.thresholds.items())
          + f"; baseline (top-1 cosine) {f['baseline_threshold']:.4f}; stored in {args.db}")
    if cal.local:
        lf, fu = cal.local["fitted_on"], cal.local["fusion"]
        print(f"local evidence: P = sigmoid({fu['a']:.3f} * score + {fu['b']:.3f} * log(1 + inliers) + {fu['c']:.3f}); "
              f"inliers {lf['inliers_mean_same']:.1f} on pairs of one whale, {lf['inliers_mean_other']:.1f} on others")
        print(f"fused: ECE logistic {lf['ece_logistic']:.4f}; new-whale threshold on P: "
              + ", ".join(f"{k} {v:.4f}" for k, v in cal.local["thresholds"].items()) + "; identify decides by it")
    return 0


def identify(args) -> int:
    from catalogue.embed import bundle_hash
    from catalogue.store import Catalogue

    cat = Catalogue.open(args.db, model_hash=bundle_hash(args.bundle))
    try:
        return identify_with(args, cat)
    finally:
        cat.close()


def identify_with(args, cat) -> int:
    import pandas as pd

    from catalogue import openset
    from catalogue.calibrate import NEW
    from catalogue.embed import embed_files
    from catalogue.match import pool_encounter, rank_whales
    from catalogue.photos import add_photo_root

    stored = cat.meta.get("calibration")
    cal = openset.Calibration.from_json(stored) if stored else None
    if cal is None:
        print(f"note: {args.db} is not calibrated (run `whaleid calibrate`): probabilities are the raw scores clipped "
              f"to [0, 1] and the new-whale threshold is --new-below {args.new_below}", file=sys.stderr)
    if args.match_probability is not None and cal is not None:
        cal.match_probability = args.match_probability
    table, cat_emb = cat.photos()
    table["whale_id"] = cat.current_whales(table["whale_id"])  # reviewers' merges count
    queries = read_photos(args.data, require_identity=args.evaluate, since=args.since, labels=args.labels)
    queries = queries[~queries["image_id"].isin(set(table["image_id"]))].reset_index(drop=True)
    if queries.empty:
        print(f"no photo of {args.data} to identify (all are in the catalogue, or none is dated from {args.since})")
        return 1
    emb, ok = embed_files(args.bundle, list(queries["file"]), args.workers, getattr(args, "device", "auto"))
    views = list(queries["viewpoint"])
    from catalogue.index import searcher

    search = searcher(args.db, cat.meta["model_hash"], list(table["image_id"]), cat_emb,
                      getattr(args, "index_above", INDEX_ABOVE))
    ranked = rank_whales(emb, views, cat_emb, list(table["whale_id"]), list(table["image_id"]), list(table["viewpoint"]),
                         how=args.how, top_n=args.top, search=search)
    if search is not None:
        print(f"searched through the {search.describe}: recall of the exact shortlist on a sample of the photos "
              f"{search.recall:.4f}")
    ranked = [r if ok[i] else [] for i, r in enumerate(ranked)]
    global_ranked, global_cal = ranked, cal
    if cal is not None and cal.local and not args.global_only:
        from catalogue.local import Evidence, evidence_for, fuse

        evidence = Evidence(args.db, cal.local["options"])
        evidence.extract(list(queries["file"]), desc="query keypoints")
        ranked = fuse(ranked, evidence_for(evidence, ranked, list(queries["file"]), views, table), cal.local["fusion"])
        cal = cal.fused()
        print(f"local evidence: {len(queries)} photos matched with their candidates' best photos; deciding by the "
              "fused P(same whale)")
    if args.by == "encounter":
        if queries["encounter_id"].isna().any():
            row = int(np.flatnonzero(queries["encounter_id"].isna())[0])
            raise ValueError(f"{args.data / 'metadata.csv'}: --by encounter needs encounter_id; photo "
                             f"{queries['image_id'][row]} has none")
        groups = queries.groupby("encounter_id", sort=False).indices
        for idx in groups.values():
            pooled = pool_encounter([ranked[i] for i in idx], top_n=args.top)
            for i in idx:
                ranked[i] = pooled

    def probability(score):
        return float(cal.probability([score])[0]) if cal else float(np.clip(score, 0, 1))

    out = []
    for i, cands in enumerate(ranked):
        top = cands[0] if cands else None
        score, prob = (top.score, probability(top.score)) if top else (-1.0, 0.0)
        if not ok[i]:
            decision = "unreadable"
        elif cal is not None:
            decision = cal.decide(score, prob, views[i])
        else:
            decision = "match" if score >= args.match_above else NEW if score < args.new_below else "review"
        shown = [{"whale_id": c.whale_id, "score": round(c.score, 4), "probability": round(probability(c.score), 4),
                  "photos": [[p, round(s, 4)] for p, s in c.photos], **({} if c.inliers is None else {"inliers": c.inliers})}
                 for c in cands]
        out.append({"image_id": queries["image_id"][i], "decision": decision, "whale_id": top.whale_id if top else "",
                    "score": round(score, 4), "probability": round(prob, 4), "candidates": json.dumps(shown),
                    "path": queries["file"][i], "viewpoint": views[i], "date": queries["date"][i],
                    "encounter_id": queries["encounter_id"][i], "latitude": queries["latitude"][i],
                    "longitude": queries["longitude"][i]})
    frame = pd.DataFrame(out)
    add_photo_root(cat, args.data)
    cat.add_proposals([dict(r, candidates=r["candidates"]) for r in out], emb, args.batch or args.data.name)
    if args.out:
        frame.drop(columns=["path"]).to_csv(args.out, index=False)
    counts = frame["decision"].value_counts().to_dict()
    grouped = f" in {queries['encounter_id'].nunique()} encounters" if args.by == "encounter" else ""
    print(f"{len(frame)} photos{grouped} against {table['whale_id'].nunique()} whales ({len(table)} photos): "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + f"; proposals stored in {args.db}")
    if args.evaluate:
        args.fused = global_cal is not cal
        metrics = evaluate_identified(args, table, cat_emb, queries, emb, ranked, cal)
        if global_cal is not cal:  # the same photos decided without the local evidence, for comparison
            from catalogue.local import workload

            known = set(table["whale_id"])
            truth = [w if w in known else NEW for w in queries["whale_id"]]
            split = {"ranked": global_ranked, "real": list(queries["whale_id"]), "truth": truth, "views": views}
            alone = openset.evaluate(split, global_cal)
            print(f"{'global score alone (calibrated)':42s} BAKS {alone['baks']:.4f}  BAUS {alone['baus']:.4f}  "
                  f"geometric mean {alone['geometric_mean']:.4f}  AUROC {alone['auroc']:.4f}")
            as_p = [[type(c)(c.whale_id, float(global_cal.probability([c.score])[0]), c.photos) for c in cands]
                    for cands in global_ranked]
            metrics["global_only"] = dict(alone, workload=workload(as_p, truth))
            metrics["whaleid"]["workload"] = workload(ranked, truth)
            print("decided without review at 1% / 5% wrong decisions: fused "
                  + " / ".join(f"{100 * v:.1f}%" for v in metrics["whaleid"]["workload"].values()) + ", global alone "
                  + " / ".join(f"{100 * v:.1f}%" for v in metrics["global_only"]["workload"].values()))
        if args.metrics:
            args.metrics.write_text(json.dumps(metrics, indent=1))
    return 0


def evaluate_identified(args, table, cat_emb, queries, emb, ranked, cal) -> dict:
    """Open-set scores of identify's decisions, and of the plain top-1 cosine baseline on the same photos."""
    from catalogue import openset
    from catalogue.calibrate import NEW
    from catalogue.match import rank_whales

    known = set(table["whale_id"])
    real = list(queries["whale_id"])
    split = {"ranked": ranked, "real": real, "truth": [w if w in known else NEW for w in real],
             "views": list(queries["viewpoint"])}
    if cal is not None:
        ours = openset.evaluate(split, cal)
        base_t = cal.fitted_on["baseline_threshold"]
    else:
        ours = openset.evaluate(split, None, args.new_below)
        base_t = args.new_below
    plain = rank_whales(emb, None, cat_emb, list(table["whale_id"]), list(table["image_id"]), list(table["viewpoint"]),
                        how="max", top_n=args.top)
    base = openset.evaluate(dict(split, ranked=plain), None, base_t)
    print(f"known {ours['known']} photos, new {ours['new']}")
    rows = [(("whaleid (calibrated, fused)" if getattr(args, "fused", False) else "whaleid (calibrated)") if cal
             else "whaleid (--new-below)", ours), ("top-1 cosine, threshold from validation"
                                                                                 if cal else "top-1 cosine", base)]
    for name, s in rows:
        print(f"{name:42s} BAKS {s['baks']:.4f}  BAUS {s['baus']:.4f}  geometric mean {s['geometric_mean']:.4f}  "
              f"AUROC {s['auroc']:.4f}")
    if cal is not None:
        print(f"ECE over the candidates shown: raw score {ours['ece_raw']:.4f}  logistic {ours['ece_logistic']:.4f}  "
              f"isotonic {ours['ece_isotonic']:.4f}  ({cal.method} is used)")
    from catalogue.calibrate import reliability

    scores, labels = openset.labelled_pairs(ranked, split["truth"])
    bins = {"raw": reliability(np.clip(scores, 0, 1), labels)}
    if cal is not None:
        bins[cal.method] = reliability(cal.probability(scores), labels)
    tops = {kind: [c[0].score for c, t in zip(ranked, split["truth"]) if c and (t == NEW) == (kind == "new")]
            for kind in ("known", "new")}
    return {"whaleid": ours, "baseline": base, "calibration": cal.fitted_on if cal else None,
            "thresholds": cal.thresholds if cal else {"all": args.new_below}, "reliability": bins, "top_scores": tops}


def review(args) -> int:
    from catalogue.review import serve

    serve(args.db, host=args.host, port=args.port, who=args.who, bundle=args.bundle, token=args.token)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="whaleid", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__.split("\n\n", 1)[1])
    sub = p.add_subparsers(dest="command", required=True)
    cat = sub.add_parser("catalogue", help="build, extend or export a catalogue").add_subparsers(dest="action", required=True)
    b = cat.add_parser("build", help="embed DIR's photos with a bundle into the catalogue (created, or appended to)")
    b.add_argument("--bundle", type=Path, required=True, help="a submission zip (submission.build makes one)")
    b.add_argument("--data", type=Path, required=True, help="a folder with metadata.csv (image_id, path, whale_id, ...)")
    b.add_argument("--db", type=Path, required=True, help="the catalogue file (SQLite)")
    b.add_argument("--before", help="only photos dated before this day (YYYY-MM-DD)")
    b.add_argument("--labels", type=Path, help="a competition test_labels.csv: whale ids recovered from its matches")
    b.add_argument("--batch", help="a name for this addition (default: DIR's name)")
    b.add_argument("--workers", type=int, default=None, help="image loading processes")
    b.add_argument("--device", default="auto", help=DEVICE_HELP)
    b.add_argument("--no-keypoints", dest="keypoints", action="store_false",
                   help="do not store the photos' keypoints (calibrate --local and identify then extract them)")
    b.set_defaults(func=build)
    a = cat.add_parser("apply", help="add the photos reviewers accepted or named to the searchable photos")
    a.add_argument("--db", type=Path, required=True)
    a.add_argument("--batch", default="reviewed", help="a name for this addition")
    a.set_defaults(func=apply)
    k = cat.add_parser("check", help="verify a catalogue: the file's integrity, the decision log's replay, photos "
                       "against decisions; exit 1 when something is wrong")
    k.add_argument("--db", type=Path, required=True)
    k.set_defaults(func=check)
    from catalogue.reembed import add_parser as add_reembed

    add_reembed(cat)
    e = cat.add_parser("export", help="the photos and identities as CSV or JSON (with the decisions), a Wildbook "
                       "bulk-import sheet, or capture histories for mark-recapture")
    e.add_argument("--db", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True, help="the file to write (capture-history to .inp: Program MARK)")
    e.add_argument("--format", choices=("csv", "json", "wildbook", "capture-history"),
                   help="default: json for a .json file, else csv")
    e.add_argument("--period", default="year", choices=("year", "month", "week", "day"),
                   help="capture-history: one sampling occasion per period with photos")
    e.add_argument("--media", choices=("name", "path"), default="name",
                   help="wildbook: the photos' file names (matched to the photos uploaded with the sheet) or full paths")
    e.add_argument("--genus", default="Delphinapterus", help="wildbook: Encounter.genus")
    e.add_argument("--species", default="leucas", help="wildbook: Encounter.specificEpithet")
    e.add_argument("--location-id", default="", help="wildbook: Encounter.locationID (one of the Wildbook's own)")
    e.add_argument("--submitter", default="", help="wildbook: Encounter.submitterID (a Wildbook user name)")
    e.set_defaults(func=export)
    c = sub.add_parser("calibrate", help="fit P(same whale) and the new-whale threshold on RUN's validation whales")
    c.add_argument("--db", type=Path, required=True, help="a catalogue built from RUN's training data")
    c.add_argument("--run", type=Path, required=True, help="the run folder (its split.csv names the validation photos)")
    c.add_argument("--method", choices=("logistic", "isotonic"), default="logistic", help="the calibration applied")
    c.add_argument("--how", choices=("max", "mean_top"), default="max", help="a whale's score from its photos'")
    c.add_argument("--per-viewpoint", action="store_true", help="a threshold per viewpoint where each has enough photos")
    c.add_argument("--match-probability", type=float, default=0.9, help="P(same) from which a photo is matched")
    c.add_argument("--local", action="store_true", help="also fit the fusion of the score with keypoint inliers "
                   "between the photo and each candidate's best photos (identify then decides by the fused P)")
    c.add_argument("--detector", choices=("sift", "orb"), default="sift", help="with --local: keypoints")
    c.add_argument("--max-side", type=int, default=512, help="with --local: the photo's longer side for keypoints")
    c.set_defaults(func=calibrate)
    i = sub.add_parser("identify", help="rank the catalogue's whales for new photos; match, review or new whale")
    i.add_argument("--bundle", type=Path, required=True, help="the bundle the catalogue was built with")
    i.add_argument("--db", type=Path, required=True)
    i.add_argument("--data", type=Path, required=True, help="a folder with metadata.csv of the photos to identify")
    i.add_argument("--from", dest="since", help="only photos dated on or after this day (YYYY-MM-DD)")
    i.add_argument("--how", choices=("max", "mean_top"), default="max", help="a whale's score from its photos'")
    i.add_argument("--top", type=int, default=5, help="candidate whales kept per photo")
    i.add_argument("--by", choices=("photo", "encounter"), default="photo",
                   help="decide per photo, or per encounter (its photos pooled: each whale's best score over them)")
    i.add_argument("--match-probability", type=float, default=None, help="P(same) from which a photo is matched "
                   "(default: the calibration's)")
    i.add_argument("--match-above", type=float, default=0.8, help="uncalibrated: top score from which a photo is matched")
    i.add_argument("--new-below", type=float, default=0.5, help="uncalibrated: top score under which a photo is new")
    i.add_argument("--labels", type=Path, help="a competition test_labels.csv: DIR's whale ids recovered from it")
    i.add_argument("--batch", help="a name for these proposals (default: DIR's name)")
    i.add_argument("--out", type=Path, help="a CSV of decisions and candidates")
    i.add_argument("--evaluate", action="store_true", help="DIR's whale ids are known: print open-set scores")
    i.add_argument("--metrics", type=Path, help="with --evaluate: write the scores to this JSON file")
    i.add_argument("--workers", type=int, default=None, help="image loading processes")
    i.add_argument("--device", default="auto", help=DEVICE_HELP)
    i.add_argument("--index-above", type=int, default=INDEX_ABOVE, help="search through the approximate index from "
                   f"this many catalogue photos (default {INDEX_ABOVE:,}; -1: always exact)")
    i.add_argument("--global-only", action="store_true", help="decide by the global score even when the calibration "
                   "has local evidence")
    i.set_defaults(func=identify)
    r = sub.add_parser("review", help="serve the review page on 127.0.0.1: confirm, correct, merge; every decision "
                       "logged")
    r.add_argument("--db", type=Path, required=True)
    r.add_argument("--host", default="127.0.0.1", help="the address to serve on (default: this machine only; any "
                   "other needs --token)")
    r.add_argument("--token", help="the secret every request must carry off loopback (`generate` makes one; the "
                   "address printed carries it); on loopback, writes carry a fresh one the page holds")
    r.add_argument("--port", type=int, default=8765)
    r.add_argument("--who", default=None, help="the reviewer's name in the log (default: $USER; ?who= in the URL wins)")
    r.add_argument("--bundle", type=Path, help="the catalogue's bundle: pair heatmaps on the page")
    r.set_defaults(func=review)
    from catalogue.import_cli import add_parser as add_import

    add_import(sub)
    return p


def main(argv=None) -> int:
    from catalogue.store import CatalogueError
    from core.data import DataError
    from core.logs import setup_logging

    args = parser().parse_args(argv)
    setup_logging()
    try:
        return args.func(args)
    except (CatalogueError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
