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

from catalogue.records import tables


def todo(cat) -> list:
    """(kind, image_id, path) of every embedding the catalogue holds that is not staged yet, in insertion order."""
    return tables.unstaged(cat)


def stage(cat, digest: str, name: str) -> int:
    """Prepare the staging table for ``digest``; returns how many embeddings it already holds (resumed)."""
    discarded = tables.open_staging(cat, digest, name)
    if discarded:  # a move to another model was left unfinished: start over
        print(f"note: an unfinished move to model {discarded[:12]} is discarded", file=sys.stderr)
    return tables.staged_count(cat)


def switch(cat, digest: str, name: str, dim: int) -> bool:
    """Swap every embedding for its staged one in one transaction; False (nothing changed) when some embedding is
    not staged yet (a photo added meanwhile)."""
    return tables.switch_model(cat, digest, name, dim)


def reembed(db: Path, bundle: Path, chunk: int = 2048, workers=None, device: str = "auto") -> int:
    from catalogue.embedding.embed import bundle_hash
    from catalogue.records.store import Catalogue
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
    from catalogue.embedding.embed import embed_opened
    from core.progress import progress

    resumed = stage(cat, digest, name)
    dim = None
    for attempt in range(3):
        work = todo(cat)
        total = len(work) + tables.staged_count(cat)
        print(f"{db}: {total} embeddings to move to {name}; {total - len(work)} done"
              + (f" (resumed: {resumed} from an earlier run)" if resumed and attempt == 0 else ""), flush=True)
        unreadable = []
        for start in progress(range(0, len(work), chunk), total=(len(work) + chunk - 1) // chunk, desc="reembed",
                              unit="chunk"):
            part = work[start:start + chunk]
            emb, ok = embed_opened(unpacked, [p for _, _, p in part], workers, device)
            dim = emb.shape[1]
            unreadable += [part[i] for i in np.flatnonzero(~ok)]
            # one chunk, one commit: a crash loses at most this chunk
            tables.stage_embeddings(cat, [(k, i, np.asarray(e, np.float32).tobytes())
                                          for (k, i, _), e, good in zip(part, emb, ok) if good])
        if unreadable:
            listed = "; ".join(f"{k} {i} ({p})" for k, i, p in unreadable[:10])
            raise ValueError(f"{len(unreadable)} photo(s) cannot be read, so the catalogue stays on its old model "
                             f"(what was embedded is kept for the next run): {listed}")
        if dim is None:
            dim = tables.staged_dim(cat) or int(cat.meta["dim"])
        old = cat.meta["model_hash"]
        if switch(cat, digest, name, dim):
            from catalogue.embedding.index import index_folder

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
    from catalogue.embedding.embed import DEVICE_HELP

    r = cat_sub.add_parser("reembed", help="move the catalogue to a new model: every embedding recomputed, decisions "
                           "kept; resumable, the switch atomic")
    r.add_argument("--db", type=Path, required=True, help="the catalogue file (SQLite); it stays usable throughout")
    r.add_argument("--bundle", type=Path, required=True, help="the new model's submission zip")
    r.add_argument("--chunk", type=int, default=2048, help="photos embedded and committed at a time")
    r.add_argument("--workers", type=int, default=None, help="image loading processes")
    r.add_argument("--device", default="auto", help=DEVICE_HELP)
    r.set_defaults(func=lambda a: reembed(a.db, a.bundle, a.chunk, a.workers, a.device))
