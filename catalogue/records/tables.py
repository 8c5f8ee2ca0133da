"""The catalogue's SQL that is not the store's own (``catalogue/records/store.py``): the reads of the check, the review
queue and the review server, the move to a new model's staging table, the recorded photo folders. With
``store.py`` the only module that touches the SQLite connection (``tests/test_structure.py`` says so): a
reader of the catalogue finds every statement in these two files, each function named for what it reads or
writes, the tables in ``catalogue/records/schema.py``.
"""

from __future__ import annotations

from typing import Iterator, Optional

VIEW_CLASS_SQL = ("CASE lower(coalesce(viewpoint, '')) WHEN 'top' THEN 'top' WHEN 'left' THEN 'lateral' "
                  "WHEN 'right' THEN 'lateral' WHEN 'lateral' THEN 'lateral' ELSE 'unknown' END")
STAGING = """CREATE TABLE IF NOT EXISTS reembed (kind TEXT NOT NULL, image_id TEXT NOT NULL, embedding BLOB NOT NULL,
PRIMARY KEY (kind, image_id))"""


def _chunks(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _marks(n: int) -> str:
    return ", ".join("?" * n)


# ---- counts and integrity (catalogue check) -------------------------------------------------------------------

def counts(cat) -> dict:
    return {t: cat.conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in ("photos", "proposals", "decisions")}


def integrity(cat) -> list:
    """SQLite's integrity check (``["ok"]`` when whole) and the decisions whose foreign key names no decision."""
    return [r[0] for r in cat.conn.execute("PRAGMA integrity_check")], \
        [r[1] for r in cat.conn.execute("PRAGMA foreign_key_check")]


def photo_embeddings(cat) -> Iterator[tuple]:
    """(image_id, embedding bytes, path) of every searchable photo."""
    return cat.conn.execute("SELECT image_id, embedding, path FROM photos")


def proposal_rows(cat) -> Iterator[tuple]:
    """(image_id, candidates JSON, embedding bytes or None, path) of every proposal."""
    return cat.conn.execute("SELECT image_id, candidates, embedding, path FROM proposals")


def decisions_by_other_model(cat, model_hash: str) -> int:
    return cat.conn.execute("SELECT COUNT(*) FROM decisions WHERE model_hash != ?", (model_hash,)).fetchone()[0]


def reviewed_photos(cat) -> Iterator[tuple]:
    """(image_id, whale_id) of the photos ``catalogue apply`` added from review."""
    return cat.conn.execute("SELECT image_id, whale_id FROM photos WHERE reviewed = 1")


def has_photos(cat) -> bool:
    return bool(cat.conn.execute("SELECT EXISTS (SELECT 1 FROM photos) OR EXISTS (SELECT 1 FROM proposals)").fetchone()[0])


# ---- the review queue and the server ----------------------------------------------------------------------------

def proposal_ids(cat, decision: Optional[str] = None, view_class: Optional[str] = None) -> list:
    """The proposals' image ids in the order identify stored them, under the filters."""
    sql, args = "SELECT image_id FROM proposals WHERE 1", []
    if decision:
        sql, args = sql + " AND decision = ?", args + [decision]
    if view_class:
        sql, args = sql + f" AND {VIEW_CLASS_SQL} = ?", args + [view_class]
    return [r[0] for r in cat.conn.execute(sql + " ORDER BY rowid", args)]


def proposed_among(cat, image_ids: list) -> int:
    """How many of ``image_ids`` have a proposal."""
    return sum(cat.conn.execute(f"SELECT COUNT(*) FROM proposals WHERE image_id IN ({_marks(len(c))})", c).fetchone()[0]
               for c in _chunks(list(image_ids), 500))


def proposals_of(cat, image_ids: list, cols: tuple) -> dict:
    """image id -> {col: value} of the proposals of ``image_ids``."""
    out = {}
    for chunk in _chunks(list(image_ids), 500):
        out.update({r[0]: dict(zip(cols, r)) for r in cat.conn.execute(
            f"SELECT {', '.join(cols)} FROM proposals WHERE image_id IN ({_marks(len(chunk))})", chunk)})
    return out


def photo_info(cat, image_ids: list) -> dict:
    """image id -> (date, encounter_id, path) of the searchable photos among ``image_ids``."""
    out = {}
    for chunk in _chunks(list(image_ids), 500):
        out.update({r[0]: r[1:] for r in cat.conn.execute(
            f"SELECT image_id, date, encounter_id, path FROM photos WHERE image_id IN ({_marks(len(chunk))})", chunk)})
    return out


def path_of(cat, image_id: str) -> Optional[str]:
    """The stored file of a searchable photo or of a proposal."""
    row = cat.conn.execute("SELECT path FROM photos WHERE image_id = ? UNION ALL "
                           "SELECT path FROM proposals WHERE image_id = ?", (image_id, image_id)).fetchone()
    return row[0] if row else None


def view_of(cat, image_id: str) -> str:
    row = cat.conn.execute("SELECT viewpoint FROM photos WHERE image_id = ? UNION ALL "
                           "SELECT viewpoint FROM proposals WHERE image_id = ?", (image_id, image_id)).fetchone()
    return row[0] if row else "unknown"


def decision_query(cat, decision_id: int) -> Optional[str]:
    """The photo a logged decision is about, None when there is no such decision."""
    row = cat.conn.execute("SELECT query FROM decisions WHERE id = ?", (decision_id,)).fetchone()
    return row[0] if row else None


# ---- the recorded photo folders -----------------------------------------------------------------------------------

def record_roots(cat, roots_json: str, unrooted: bool) -> None:
    """Store the survey folders photos may be served from, in one write (``unrooted``: photos were catalogued
    before folders were recorded)."""
    with cat._write():
        if unrooted:
            cat.set_meta("unrooted_photos", "1")
        cat.set_meta("photo_roots", roots_json)


# ---- moving to a new model (catalogue reembed) ------------------------------------------------------------------

def unstaged(cat) -> list:
    """(kind, image_id, path) of every embedding the catalogue holds that is not staged yet, in insertion order."""
    staged = {(k, i) for k, i in cat.conn.execute("SELECT kind, image_id FROM reembed")}
    rows = [("photo", i, p) for i, p in cat.conn.execute("SELECT image_id, path FROM photos ORDER BY rowid")]
    rows += [("proposal", i, p) for i, p in cat.conn.execute(
        "SELECT image_id, path FROM proposals WHERE embedding IS NOT NULL ORDER BY rowid")]
    return [r for r in rows if (r[0], r[1]) not in staged]


def staged_count(cat) -> int:
    return int(cat.conn.execute("SELECT COUNT(*) FROM reembed").fetchone()[0])


def open_staging(cat, digest: str, name: str) -> Optional[str]:
    """The staging table ready for ``digest`` (one write); returns the target of an unfinished move to another
    model, whose staged embeddings were discarded, else None."""
    with cat._write():
        cat.conn.execute(STAGING)
        target = cat.meta.get("reembed_target")
        discarded = target if target and target != digest else None
        if discarded:
            cat.conn.execute("DELETE FROM reembed")
        cat.set_meta("reembed_target", digest)
        cat.set_meta("reembed_target_name", name)
    return discarded


def stage_embeddings(cat, rows: list) -> None:
    """(kind, image_id, embedding bytes) into the staging table, one commit."""
    with cat._write():
        cat.conn.executemany("INSERT OR REPLACE INTO reembed VALUES (?, ?, ?)", rows)


def staged_dim(cat) -> Optional[int]:
    row = cat.conn.execute("SELECT embedding FROM reembed LIMIT 1").fetchone()
    return len(row[0]) // 4 if row else None


def switch_model(cat, digest: str, name: str, dim: int) -> bool:
    """Every embedding swapped for its staged one, the new model recorded and the calibration set aside, in one
    transaction; False (nothing changed) when some embedding is not staged yet."""
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
