"""Moving a catalogue to a new model: ``whaleid catalogue reembed --db C --bundle NEW``.

Every photo (and every proposal identify stored with an embedding) is embedded again with NEW, in chunks, each
committed to a staging table (``reembed``) of the same file: a crash or ``kill -9`` loses at most the chunk
under way, and the next run resumes where it stopped. Until the switch the catalogue is untouched and keeps
working with its old model (identify, review, apply). The switch is one SQLite transaction: every embedding
replaced, the model's hash, name and dimension recorded, the staging table dropped; a crash before its commit
leaves the old catalogue whole. Decisions, identities, proposals and keypoints are kept as they are (keypoints do
not depend on the model). A calibration was fitted to the old model's scores: it is set aside
(``calibration_previous``) and the catalogue is uncalibrated until ``whaleid calibrate`` is run again. Photos
added meanwhile (``apply``) are embedded before the switch. A photo whose file cannot be read stops the switch,
named, with nothing changed: restore it and run again.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np

STAGING = """CREATE TABLE IF NOT EXISTS reembed (kind TEXT NOT NULL, image_id TEXT NOT NULL, embedding BLOB NOT NULL,
PRIMARY KEY (kind, image_id))"""


def todo(cat) -> list:
    """(kind, image_id, path) of every embedding the catalogue holds that is not staged yet, in insertion order."""
    staged = {(k, i) for k, i in cat.conn.execute("SELECT kind, image_id FROM reembed")}
    rows = [("photo", i, p) for i, p in cat.conn.execute("SELECT image_id, path FROM photos ORDER BY rowid")]
    rows += [("proposal", i, p) for i, p in cat.conn.execute(
        "SELECT image_id, path FROM proposals WHERE embedding IS NOT NULL ORDER BY rowid")]
    return [r for r in rows if (r[0], r[1]) not in staged]


def stage(cat, digest: str, name: str) -> int:
    """Prepare the staging table for ``digest``; returns how many embeddings it already holds (resumed)."""
    with cat._write():
        cat.conn.execute(STAGING)
        target = cat.meta.get("reembed_target")
        if target and target != digest:
            cat.conn.execute("DELETE FROM reembed")  # a move to another model was left unfinished: start over
            print(f"note: an unfinished move to model {target[:12]} is discarded", file=sys.stderr)
        cat.set_meta("reembed_target", digest)
        cat.set_meta("reembed_target_name", name)
        return int(cat.conn.execute("SELECT COUNT(*) FROM reembed").fetchone()[0])


def switch(cat, digest: str, name: str, dim: int) -> bool:
    """Swap every embedding for its staged one in one transaction; False (nothing changed) when some embedding is
    not staged yet (a photo added meanwhile)."""
    with cat._write():
        missing = cat.conn.execute(
            "SELECT COUNT(*) FROM (SELECT 'photo' AS kind, image_id FROM photos UNION ALL SELECT 'proposal', image_id "
            "FROM proposals WHERE embedding IS NOT NULL) AS need WHERE NOT EXISTS (SELECT 1 FROM reembed r WHERE "
            "r.kind = need.kind AND r.image_id = need.image_id)").fetchone()[0]
        if missing:
            return False
        cat.conn.execute("UPDATE photos SET embedding = (SELECT r.embedding FROM reembed r WHERE r.kind = 'photo' "
                         "AND r.image_id = photos.image_id)")
        cat.conn.execute("UPDATE proposals SET embedding = (SELECT r.embedding FROM reembed r WHERE r.kind = "
                         "'proposal' AND r.image_id = proposals.image_id) WHERE embedding IS NOT NULL")
        meta = cat.meta
        cat.set_meta("reembedded_from", f"{meta['model_name']} {meta['model_hash']}")
        if "calibration" in meta:
            cat.set_meta("calibration_previous", meta["calibration"])
            cat.conn.execute("DELETE FROM meta WHERE key = 'calibration'")
        cat.set_meta("model_hash", digest)
        cat.set_meta("model_name", name)
        cat.set_meta("dim", str(int(dim)))
        cat.conn.execute("DELETE FROM meta WHERE key IN ('reembed_target', 'reembed_target_name')")
        cat.conn.execute("DROP TABLE reembed")
    return True


def reembed(db: Path, bundle: Path, chunk: int = 2048, workers=None, device: str = "auto") -> int:
    from catalogue.embed import bundle_hash
    from catalogue.store import Catalogue
    from core.bundle import opened

    digest, name = bundle_hash(bundle), Path(bundle).name
    cat = Catalogue.open(db)
    with contextlib.ExitStack() as stack:
        stack.callback(cat.close)
        if cat.meta["model_hash"] == digest:
            print(f"{db} is embedded by {name} already; nothing to do")
            return 0
        unpacked = stack.enter_context(opened(bundle))  # unpacked once for every chunk
        return _move(cat, db, unpacked, digest, name, chunk, workers, device)


def _move(cat, db: Path, unpacked, digest: str, name: str, chunk: int, workers, device) -> int:
    """Stage every embedding not staged yet with the opened bundle ``unpacked``, then switch (see the module)."""
    from catalogue.embed import embed_opened
    from core.progress import progress

    resumed = stage(cat, digest, name)
    dim = None
    for attempt in range(3):
        work = todo(cat)
        total = len(work) + int(cat.conn.execute("SELECT COUNT(*) FROM reembed").fetchone()[0])
        print(f"{db}: {total} embeddings to move to {name}; {total - len(work)} done"
              + (f" (resumed: {resumed} from an earlier run)" if resumed and attempt == 0 else ""), flush=True)
        unreadable = []
        for start in progress(range(0, len(work), chunk), total=(len(work) + chunk - 1) // chunk, desc="reembed",
                              unit="chunk"):
            part = work[start:start + chunk]
            emb, ok = embed_opened(unpacked, [p for _, _, p in part], workers, device)
            dim = emb.shape[1]
            unreadable += [part[i] for i in np.flatnonzero(~ok)]
            with cat._write():  # one chunk, one commit: a crash loses at most this chunk
                cat.conn.executemany("INSERT OR REPLACE INTO reembed VALUES (?, ?, ?)",
                                     [(k, i, np.asarray(e, np.float32).tobytes())
                                      for (k, i, _), e, good in zip(part, emb, ok) if good])
        if unreadable:
            listed = "; ".join(f"{k} {i} ({p})" for k, i, p in unreadable[:10])
            raise ValueError(f"{len(unreadable)} photo(s) cannot be read, so the catalogue stays on its old model "
                             f"(what was embedded is kept for the next run): {listed}")
        if dim is None:
            row = cat.conn.execute("SELECT embedding FROM reembed LIMIT 1").fetchone()
            dim = len(row[0]) // 4 if row else int(cat.meta["dim"])
        old = cat.meta["model_hash"]
        if switch(cat, digest, name, dim):
            from catalogue.index import index_folder

            stale = index_folder(db, old)  # the old model's search index serves no query any more
            if stale.is_dir():
                import shutil

                shutil.rmtree(stale, ignore_errors=True)
            print(f"{db} now holds {name}'s embeddings ({dim}-d); decisions, identities and proposals kept"
                  + ("; the calibration was fitted to the old model: run `whaleid calibrate` again"
                     if "calibration_previous" in cat.meta else ""))
            return 0
    raise ValueError(f"{db}: photos keep being added while re-embedding; run reembed again when they stop")


def add_parser(cat_sub) -> None:
    from catalogue.embed import DEVICE_HELP

    r = cat_sub.add_parser("reembed", help="move the catalogue to a new model: every embedding recomputed, decisions "
                           "kept; resumable, the switch atomic")
    r.add_argument("--db", type=Path, required=True, help="the catalogue file (SQLite); it stays usable throughout")
    r.add_argument("--bundle", type=Path, required=True, help="the new model's submission zip")
    r.add_argument("--chunk", type=int, default=2048, help="photos embedded and committed at a time")
    r.add_argument("--workers", type=int, default=None, help="image loading processes")
    r.add_argument("--device", default="auto", help=DEVICE_HELP)
    r.set_defaults(func=lambda a: reembed(a.db, a.bundle, a.chunk, a.workers, a.device))
