"""``whaleid catalogue check``: is a catalogue file whole, and do its photos agree with its decision log?

Problems (exit 1) are what makes a catalogue wrong to search or serve: SQLite's integrity check, meta that
cannot be read, an embedding of the wrong size or not finite, a photo that ``apply`` made searchable under a
whale the log no longer gives it (``whaleid catalogue apply`` moves it), a photo path outside the folders the
catalogue was built from. Notes (exit 0) are what the catalogue survives: decision rows the replay skips (an
earlier whaleid let them in; they stay in the append-only log and count for nothing), decisions of another
model, reviewed photos not applied yet, photo files gone from disk.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from catalogue.records import tables
from catalogue.records.photos import photo_roots, servable
from catalogue.records.store import Catalogue


def check(path) -> tuple[list[str], list[str]]:
    """(problems, notes) of the catalogue at ``path``; opening errors raise ``CatalogueError``."""
    cat = Catalogue.open(path)
    try:
        return _check(cat)
    finally:
        cat.close()


def _check(cat: Catalogue) -> tuple[list[str], list[str]]:
    problems, notes = [], []
    integrity, dangling = tables.integrity(cat)
    if integrity != ["ok"]:
        problems += [f"SQLite integrity: {r}" for r in integrity[:10]]
    problems += [f"foreign key: decision {r} names a decision that is not there" for r in dangling]
    meta = cat.meta
    try:
        dim = int(meta["dim"])
        assert dim > 0 and len(meta["model_hash"]) == 64 and meta.get("model_name")
    except (KeyError, ValueError, AssertionError):
        problems.append(f"meta is incomplete or unreadable: {sorted(meta)} (needs model_hash, model_name, dim)")
        return problems, notes
    roots = photo_roots(cat)
    bad_size, bad_value, outside, missing = [], [], [], 0
    for image_id, blob, file in tables.photo_embeddings(cat):
        if blob is None or len(blob) != 4 * dim:
            bad_size.append(image_id)
        elif not np.isfinite(np.frombuffer(blob, np.float32)).all():
            bad_value.append(image_id)
        why = servable(file, roots)
        if why == "missing":
            missing += 1
        elif why:
            outside.append(f"{image_id} ({why})")
    problems += _listed(bad_size, f"photos whose embedding is not {dim} float32 values")
    problems += _listed(bad_value, "photos whose embedding is not finite")
    state = cat.state()
    for s in state["skipped"]:
        notes.append(f"decision {s['id']} is skipped by the replay ({s['why']}); it stays in the append-only log")
    other = tables.decisions_by_other_model(cat, meta["model_hash"])
    if other:
        notes.append(f"{other} decisions were made with another model's proposals")
    stale = [f"{i} (searchable as {w}, the log says {state['identity'].get(i) or 'no whale'})"
             for i, w in tables.reviewed_photos(cat)
             if state["identity"].get(i) != w]
    problems += _listed(stale, "reviewed photos that disagree with the decision log (`whaleid catalogue apply` "
                               "moves them)")
    searchable = cat.known_ids()
    waiting = [q for q in state["identity"] if q not in searchable]
    if waiting:
        notes.append(f"{len(waiting)} photos have an identity from review and are not searchable yet "
                     "(`whaleid catalogue apply` adds them)")
    unreadable = []
    for image_id, candidates, blob, file in tables.proposal_rows(cat):
        try:
            assert isinstance(json.loads(candidates), list)
        except (ValueError, AssertionError):
            unreadable.append(f"{image_id} (candidates)")
        if blob is not None and len(blob) != 4 * dim:
            unreadable.append(f"{image_id} (embedding)")
        why = servable(file, roots)
        if why == "missing":
            missing += 1
        elif why:
            outside.append(f"{image_id} ({why})")
    problems += _listed(unreadable, "proposals that cannot be read")
    problems += _listed(outside, "photos whose file is not served")
    if missing:
        notes.append(f"{missing} photo files are not on disk (moved or deleted since they were catalogued)")
    return problems, notes


def _listed(items: list, what: str) -> list[str]:
    if not items:
        return []
    more = f" and {len(items) - 5} more" if len(items) > 5 else ""
    return [f"{len(items)} {what}: {', '.join(map(str, items[:5]))}{more}"]


def main(db: Path) -> int:
    problems, notes = check(db)
    counts = Catalogue.open(db)
    try:
        n = tables.counts(counts)
        photos, decisions, proposals = n["photos"], n["decisions"], n["proposals"]
    finally:
        counts.close()
    print(f"{db}: {photos} searchable photos, {proposals} proposals, {decisions} decisions")
    for n in notes:
        print(f"note: {n}")
    for p in problems:
        print(f"problem: {p}")
    print("check passed" if not problems else f"check failed: {len(problems)} problems")
    return 0 if not problems else 1
