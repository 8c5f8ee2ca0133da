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
import dataclasses
import json
import logging
import sys
from pathlib import Path

import numpy as np

from catalogue.embedding.embed import DEVICE_HELP
from catalogue.records.photos import read_photos, refuse_lookalikes  # read_photos: tests import it here too
from catalogue.embedding.index import INDEX_ABOVE

log = logging.getLogger("whaleid")


def build(args) -> int:
    from catalogue.embedding.embed import bundle_hash, embed_files
    from catalogue.records.photos import add_photo_root
    from catalogue.records.store import Catalogue

    meta = read_photos(args.data, require_identity=True, before=args.before, labels=args.labels)
    linked = meta.attrs.get("linked_folders", [])
    digest = bundle_hash(args.bundle)
    cat = Catalogue.open(args.db, model_hash=digest) if args.db.exists() else None
    known = cat.known_ids() if cat else set()
    if cat is not None:
        refuse_lookalikes(meta, set(cat.state()["whales"]), str(args.data / "metadata.csv"))
    todo = meta[~meta["image_id"].isin(known)].reset_index(drop=True)
    print(f"{args.data}: {len(meta)} photos of {meta['whale_id'].nunique()} whales; {len(meta) - len(todo)} already "
          f"in {args.db}, {len(todo)} to embed", flush=True)
    if todo.empty:
        if cat is not None:
            add_photo_root(cat, args.data, linked)
            cat.close()
        return 0
    emb, ok = embed_files(args.bundle, list(todo["file"]), args.workers, getattr(args, "device", "auto"))
    for i in np.flatnonzero(~ok):
        print(f"warning: {todo['file'][i]} (row {todo['row'][i]} of {args.data / 'metadata.csv'}) cannot be read; "
              "not added", file=sys.stderr)
    if cat is None:
        cat = Catalogue.create(args.db, digest, args.bundle.name, emb.shape[1])
    add_photo_root(cat, args.data, linked)
    rows = [dict(r, path=r["file"]) for r in todo[ok].to_dict(orient="records")]
    added = cat.add_photos(rows, emb[ok], args.batch or args.data.name) if rows else 0
    print(f"added {added} photos; {args.db} holds {len(cat.known_ids())}")
    cat.close()
    if args.keypoints and rows:
        from catalogue.deciding.local import Evidence, keypoint_dir

        Evidence(args.db, bundle=args.bundle).extract([r["path"] for r in rows])
        print(f"keypoints of the {len(rows)} photos stored in {keypoint_dir(args.db)}")
    return 0


def export(args) -> int:
    from catalogue.exchange.exporting import write
    from catalogue.records.store import Catalogue

    fmt = args.format or ("json" if args.out.suffix == ".json" else "csv")
    cat = Catalogue.open(args.db)
    try:
        print(write(cat, args.out, fmt, args.period, args.media, args.genus, args.species, args.location_id,
                    args.submitter, args.undated_date, args.wildbook_names, args.copy_media))
    finally:
        cat.close()
    return 0


def check(args) -> int:
    from catalogue.records.check import main as check_main

    return check_main(args.db)


def apply(args) -> int:
    from catalogue.records.store import Catalogue

    from catalogue.deciding.local import Evidence, keypoint_dir

    cat = Catalogue.open(args.db)
    added = cat.apply_reviewed(args.batch)
    print(f"added {added} reviewed photos to the searchable catalogue; {args.db} holds {len(cat.known_ids())}")
    if added and keypoint_dir(args.db).is_dir():
        table, _ = cat.photos()
        Evidence(args.db).extract(list(table["path"].tail(added)))
    cat.close()
    return 0


def calibrate(args) -> int:
    from catalogue.deciding import calibration
    from catalogue.deciding import out_of_fold
    from catalogue.records.store import Catalogue

    out_of_fold.fold_runs(args.run)  # a clear error before the catalogue is read
    cat = Catalogue.open(args.db)
    table, emb = cat.photos()
    evidence = None
    if args.local:
        from catalogue.deciding.local import Evidence

        evidence = Evidence(args.db, {"detector": args.detector, "matcher": args.matcher, "max_side": args.max_side})
    folds = out_of_fold.folds(args.run, table, emb, getattr(args, "device", "cpu"), args.workers, db=args.db)
    cal = calibration.fit_folds(table, folds, how=args.how, method=args.method, per_viewpoint=args.per_viewpoint,
                                match_probability=args.match_probability, evidence=evidence)
    cat.set_calibration(cal.to_json())
    cat.close()
    print(calibration.summary(cal, args.run, args.db))
    return 0


def identify(args) -> int:
    from catalogue.embedding.embed import bundle_hash
    from catalogue.records.store import Catalogue

    from catalogue.deciding.identify import Request, identify as run_identify
    from catalogue.records.cells import safe_cells

    req = Request(**{f.name: getattr(args, f.name) for f in dataclasses.fields(Request)})
    cat = Catalogue.open(args.db, model_hash=bundle_hash(args.bundle))
    try:
        res = run_identify(cat, req, say=lambda line, warning: print(line, file=sys.stderr if warning else sys.stdout))
    finally:
        cat.close()
    if res.frame is None:
        return 1
    if args.out:  # a spreadsheet opens it: no cell runs as a formula
        safe_cells(res.frame.drop(columns=["path"])).to_csv(args.out, index=False)
    if args.metrics and res.metrics is not None:
        args.metrics.write_text(json.dumps(res.metrics, indent=1))
    return 0


def review(args) -> int:
    try:
        from catalogue.review.server import serve
    except ImportError as exc:
        raise ValueError(f"the review page needs its server ({exc.name} is not installed): pip install "
                         "'whaleid[review]'") from exc

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
    from catalogue.embedding.reembed import add_parser as add_reembed

    add_reembed(cat)
    from catalogue.exchange.exporting import add_parser as add_export

    add_export(cat, export)
    c = sub.add_parser("calibrate", help="fit P(same whale), the whale-level verifier, the new-whale threshold and "
                       "the operating points on RUN's held-out whales (every fold's, for a cross-validated RUN)")
    c.add_argument("--db", type=Path, required=True, help="a catalogue built from RUN's training data")
    c.add_argument("--run", type=Path, required=True, help="the run folder (its split.csv names the validation photos), "
                   "or a cross-validated run (data.fold=all): every fold's held-out whales, each scored by its model")
    c.add_argument("--method", choices=("logistic", "isotonic"), default="logistic", help="the calibration applied")
    c.add_argument("--how", choices=("max", "mean_top"), default="max", help="a whale's score from its photos'")
    c.add_argument("--per-viewpoint", action="store_true", help="a threshold per viewpoint where each has enough photos")
    c.add_argument("--match-probability", type=float, default=0.9, help="P(same) from which a photo is matched")
    c.add_argument("--local", action="store_true", help="also fit the fusion of the score with keypoint inliers "
                   "between the photo and each candidate's best photos (identify then decides by the fused P)")
    c.add_argument("--detector", default=None, help="with --local: keypoints, sift, orb or xfeat (learned: pip install "
                   "'whaleid[matchers]'; the step names the ones it has) (default: the local_match step's)")
    c.add_argument("--matcher", default=None, help="with --local: how keypoints are paired, nearest (the detector's "
                   "own) or lighterglue (a learned matcher for xfeat's keypoints, about 40x nearest's cost a pair) "
                   "(default: the local_match step's)")
    c.add_argument("--max-side", type=int, default=None, help="with --local: the photo's longer side for keypoints "
                   "(default: the local_match step's)")
    c.add_argument("--workers", type=int, default=None, help="a cross-validated RUN: image loading processes")
    c.add_argument("--device", default="auto", help="a cross-validated RUN: " + DEVICE_HELP)
    c.set_defaults(func=calibrate)
    i = sub.add_parser("identify", help="rank the catalogue's whales for new photos; match, review or new whale")
    i.add_argument("--bundle", type=Path, required=True, help="the bundle the catalogue was built with")
    i.add_argument("--db", type=Path, required=True)
    i.add_argument("--data", type=Path, required=True, help="a folder with metadata.csv of the photos to identify")
    i.add_argument("--from", dest="since", help="only photos dated on or after this day (YYYY-MM-DD)")
    i.add_argument("--how", choices=("max", "mean_top"), default="max", help="a whale's score from its photos'")
    i.add_argument("--top", type=int, default=5, help="candidate whales kept per photo")
    i.add_argument("--by", choices=("auto", "photo", "encounter"), default="auto",
                   help="decide per encounter (its photos pooled: each whale's best score over them, one whale per "
                   "encounter) or per photo; auto: per encounter when every photo has an encounter_id")
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
    i.add_argument("--max-error", type=float, default=None, help="decide alone at this rate of wrong decisions "
                   "(0.05: 5%%): match and new-whale thresholds chosen on the calibration's held-out photos; the rest "
                   "goes to review, most uncertain first (default: the calibration's threshold and --match-probability)")
    i.add_argument("--confidence", type=float, default=0.8, help="with --max-error: how sure the held-out photos "
                   "must make it that the error stays within it (0.8: the upper end of an 80%% interval; 0.5: the "
                   "held-out error itself)")
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
    from catalogue.exchange.import_cli import add_parser as add_import

    add_import(sub)
    return p


def main(argv=None) -> int:
    from catalogue.records.errors import CatalogueError
    from core.data import DataError
    from core.logs import setup_logging

    args = parser().parse_args(argv)
    setup_logging()
    try:
        return args.func(args)
    except (CatalogueError, DataError, ValueError, OSError) as exc:  # OSError: a file named that is missing or unreadable
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
