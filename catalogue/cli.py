"""``whaleid``: the photo-ID catalogue from the command line.

    whaleid catalogue build --bundle Z --data DIR --db C.sqlite [--before 2019-01-01] [--batch NAME]
    whaleid catalogue export --db C.sqlite --out C.csv|C.json
    whaleid identify --bundle Z --db C.sqlite --data DIR [--from 2019-01-01] [--out R.csv] [--evaluate]

``catalogue build`` embeds the photos of DIR (its metadata.csv, with whale_id) once with a bundle and stores
them; run again on a new survey, it appends only photos not yet there. ``identify`` ranks the catalogue's
whales for each photo of DIR not in the catalogue (``--from``: only those dated on or after), and decides:
``match`` (top score at least ``--match-above``), ``new_whale`` (below ``--new-below``) or ``review``. With
``--evaluate`` (DIR's photos have whale_id) it scores those decisions as an open-set task: a photo whose whale
is in the catalogue should be matched to it, one whose whale is not should be called new; BAKS, BAUS, their
geometric mean and AUROC are printed, and the best threshold on these photos beside the one used.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

log = logging.getLogger("whaleid")


def read_photos(data: Path, require_identity: bool, before: str | None = None, since: str | None = None):
    """DIR's metadata.csv rows (with ``file``, the photo's path), optionally dated before / since a day."""
    from core.data import read_metadata

    meta = read_metadata(data, require_identity=require_identity)
    for col in ("encounter_id", "date", "whale_id"):
        if col not in meta.columns:
            meta[col] = None
    if before:
        meta = meta[meta["date"].astype(str) < before]
    if since:
        meta = meta[meta["date"].astype(str) >= since]
    return meta.reset_index(drop=True)


def build(args) -> int:
    from catalogue.embed import bundle_hash, embed_files
    from catalogue.store import Catalogue

    meta = read_photos(args.data, require_identity=True, before=args.before)
    digest = bundle_hash(args.bundle)
    if args.db.exists():
        cat = Catalogue.open(args.db, model_hash=digest)
    else:
        cat = None
    known = cat.known_ids() if cat else set()
    todo = meta[~meta["image_id"].isin(known)].reset_index(drop=True)
    print(f"{args.data}: {len(meta)} photos of {meta['whale_id'].nunique()} whales; {len(meta) - len(todo)} already "
          f"in {args.db}, {len(todo)} to embed", flush=True)
    emb, ok = embed_files(args.bundle, list(todo["file"]), args.workers) if len(todo) else (np.zeros((0, 0)), np.zeros(0, bool))
    for i in np.flatnonzero(~ok):
        print(f"warning: {todo['file'][i]} (row {i + 2} of {args.data / 'metadata.csv'}) cannot be read; not added",
              file=sys.stderr)
    if cat is None:
        cat = Catalogue.create(args.db, digest, args.bundle.name, emb.shape[1] if len(todo) else 0)
    rows = [dict(r, path=r["file"]) for r in todo[ok].to_dict(orient="records")] if len(todo) else []
    added = cat.add_photos(rows, emb[ok], args.batch or args.data.name) if rows else 0
    print(f"added {added} photos; {args.db} holds {len(cat.known_ids())}")
    return 0


def export(args) -> int:
    from catalogue.store import Catalogue

    print(Catalogue.open(args.db).export(args.out))
    return 0


def identify(args) -> int:
    import pandas as pd

    from catalogue.calibrate import NEW, choose_threshold, open_set_scores
    from catalogue.embed import bundle_hash, embed_files
    from catalogue.match import rank_whales
    from catalogue.store import Catalogue

    cat = Catalogue.open(args.db, model_hash=bundle_hash(args.bundle))
    table, cat_emb = cat.photos()
    queries = read_photos(args.data, require_identity=args.evaluate, since=args.since)
    queries = queries[~queries["image_id"].isin(set(table["image_id"]))].reset_index(drop=True)
    if queries.empty:
        print(f"no photo of {args.data} to identify (all are in the catalogue, or none is dated from {args.since})")
        return 1
    emb, ok = embed_files(args.bundle, list(queries["file"]), args.workers)
    ranked = rank_whales(emb, list(queries.get("viewpoint", [None] * len(queries))), cat_emb, list(table["whale_id"]),
                         list(table["image_id"]), list(table["viewpoint"]), how=args.how, top_n=args.top)
    out = []
    for i, cands in enumerate(ranked):
        top = cands[0] if cands and ok[i] else None
        score = top.score if top else -1.0
        decision = "match" if score >= args.match_above else NEW if score < args.new_below else "review"
        out.append({"image_id": queries["image_id"][i], "decision": decision if ok[i] else "unreadable",
                    "whale_id": top.whale_id if top else "", "score": round(score, 4),
                    "candidates": json.dumps([[c.whale_id, round(c.score, 4), [p for p, _ in c.photos]] for c in cands])})
    frame = pd.DataFrame(out)
    if args.out:
        frame.to_csv(args.out, index=False)
    counts = frame["decision"].value_counts().to_dict()
    print(f"{len(frame)} photos against {table['whale_id'].nunique()} whales ({len(table)} photos): "
          + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.evaluate:
        known = set(table["whale_id"])
        truth = [w if w in known else NEW for w in queries["whale_id"]]
        used = open_set_scores(truth, list(frame["whale_id"]), list(frame["score"]), args.new_below, list(queries["whale_id"]))
        best = choose_threshold(truth, list(frame["whale_id"]), list(frame["score"]), list(queries["whale_id"]))
        print(f"known {sum(t != NEW for t in truth)} photos, new {sum(t == NEW for t in truth)}")
        for name, s in (("at --new-below", used), ("best threshold on these photos (optimistic)", best)):
            print(f"{name}: threshold {s['threshold']:.4f}  BAKS {s['baks']:.4f}  BAUS {s['baus']:.4f}  "
                  f"geometric mean {s['geometric_mean']:.4f}  AUROC {s['auroc']:.4f}")
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
    b.add_argument("--batch", help="a name for this addition (default: DIR's name)")
    b.add_argument("--workers", type=int, default=None, help="image loading processes")
    b.set_defaults(run=build)
    e = cat.add_parser("export", help="the photos and identities (and, to .json, the decisions) as a file")
    e.add_argument("--db", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True, help="a .csv or .json file")
    e.set_defaults(run=export)
    i = sub.add_parser("identify", help="rank the catalogue's whales for new photos; match, review or new whale")
    i.add_argument("--bundle", type=Path, required=True, help="the bundle the catalogue was built with")
    i.add_argument("--db", type=Path, required=True)
    i.add_argument("--data", type=Path, required=True, help="a folder with metadata.csv of the photos to identify")
    i.add_argument("--from", dest="since", help="only photos dated on or after this day (YYYY-MM-DD)")
    i.add_argument("--how", choices=("max", "mean_top"), default="max", help="a whale's score from its photos'")
    i.add_argument("--top", type=int, default=5, help="candidate whales kept per photo")
    i.add_argument("--match-above", type=float, default=0.8, help="top score from which a photo is matched")
    i.add_argument("--new-below", type=float, default=0.5, help="top score under which a photo is a new whale")
    i.add_argument("--out", type=Path, help="a CSV of decisions and candidates")
    i.add_argument("--evaluate", action="store_true", help="DIR's whale_id is known: print open-set scores")
    i.add_argument("--workers", type=int, default=None)
    i.set_defaults(run=identify)
    return p


def main(argv=None) -> int:
    from catalogue.store import CatalogueError
    from core.data import DataError
    from core.logs import setup_logging

    args = parser().parse_args(argv)
    setup_logging()
    try:
        return args.run(args)
    except (CatalogueError, DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
