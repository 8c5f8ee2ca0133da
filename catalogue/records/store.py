"""The photo-ID catalogue: one SQLite file of photos, their identities and embeddings, and a decision log.

One file, schema versioned (``PRAGMA user_version``), in WAL mode so that a reviewer and a batch job can work
at once. It records the model that embedded it (the bundle's SHA-256): a catalogue is only searched with
embeddings of the same model, and opening it with another is refused, naming both. Photos are added in one
transaction per batch: a crash (even ``kill -9``) mid-append leaves the catalogue as it was before the batch,
and a photo already there is never embedded or written again. ``decisions`` is append-only: a trigger
refuses UPDATE and DELETE, so an undo is a new row that names the row it undoes.

``proposals`` (schema 2) holds what ``whaleid identify`` proposed for each new photo: its candidates with
scores and calibrated probabilities and the three-way decision; the review page reads it and appends to
``decisions``. The current identities are the decision log replayed (``state``): accepted and new-whale
photos, merged whales, undone decisions skipped. ``decide`` takes the id of the last decision the reviewer
saw for that photo: when another reviewer has decided it since, it refuses (``Conflict``) and nothing is
written, so no decision is overwritten unseen. What a decision may say and what the log means are the rules of
``catalogue.records.decisions``: every decision is validated against the replayed state inside its write transaction,
and the replay never raises on a logged row (a row it cannot apply is skipped and reported).

``photos.reviewed`` (schema 3) marks the photos ``apply`` added from review: a later undo, reject or new whale on
such a photo moves (or removes) it in the searchable photos in the same transaction as the decision. Schema 1
and 2 files are upgraded in place when opened.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from catalogue.records.decisions import ANY, clean_scores, replay, validate
from catalogue.records.errors import CatalogueError
from catalogue.records.schema import (INSERT_PHOTO, NUMERIC, PHOTO_COLUMNS, SCHEMA, SCHEMA_VERSION, UPGRADES,  # noqa: F401
                              _statements)


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def connect(path, timeout: float = 30.0) -> sqlite3.Connection:
    """``timeout``: seconds to wait for another writer's lock before "database is locked"."""
    conn = sqlite3.connect(str(path), timeout=timeout, isolation_level=None)  # transactions are explicit
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")  # with WAL: a commit survives a process crash
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class Catalogue:
    def __init__(self, path, conn: sqlite3.Connection):
        self.path, self.conn = Path(path), conn

    @contextlib.contextmanager
    def _write(self):
        """One write transaction (BEGIN IMMEDIATE: one writer at a time), rolled back on any error."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # ---- opening ----------------------------------------------------------------------------------------

    @classmethod
    def create(cls, path, model_hash: str, model_name: str, dim: int) -> "Catalogue":
        path = Path(path)
        if path.exists():
            raise CatalogueError(f"{path} exists; open it to add photos, or choose another file")
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = connect(path)
        conn.execute("BEGIN IMMEDIATE")
        for statement in _statements(SCHEMA + "".join(UPGRADES)):  # not executescript: it would commit before the marker below
            conn.execute(statement)
        for key, value in (("model_hash", model_hash), ("model_name", model_name), ("dim", str(int(dim))),
                           ("created", now())):
            conn.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
        return cls(path, conn)

    @classmethod
    def open(cls, path, model_hash: Optional[str] = None, timeout: float = 30.0) -> "Catalogue":
        """Open an existing catalogue; with ``model_hash``, refuse one that another model embedded."""
        path = Path(path)
        if not path.is_file():
            raise CatalogueError(f"{path}: no such catalogue (build one with `whaleid catalogue build`)")
        conn = connect(path, timeout)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise CatalogueError(f"{path}: catalogue schema {version} is newer than this whaleid reads "
                                 f"({SCHEMA_VERSION}); upgrade whaleid to open it")
        if version < 1:
            conn.close()
            raise CatalogueError(f"{path}: not a whaleid catalogue (schema version {version})")
        if version < SCHEMA_VERSION:  # proposals, photos.reviewed, locations, species (schema.py); one transaction
            conn.execute("BEGIN IMMEDIATE")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]  # another process may have upgraded it
                for script in UPGRADES[version - 1:]:
                    for statement in _statements(script):
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                conn.close()
                raise
        self = cls(path, conn)
        if model_hash is not None and model_hash != self.meta["model_hash"]:
            raise CatalogueError(f"{path}: embedded by model {self.meta['model_name']} ({self.meta['model_hash'][:12]}), "
                                 f"not by the one given ({model_hash[:12]}); embeddings of two models cannot be "
                                 "compared: build a new catalogue with this model")
        return self

    def close(self) -> None:
        self.conn.close()

    @property
    def meta(self) -> dict:
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    # ---- photos -----------------------------------------------------------------------------------------

    def known_ids(self) -> set:
        return {r[0] for r in self.conn.execute("SELECT image_id FROM photos")}

    def add_photos(self, rows: Sequence[dict], embeddings: np.ndarray, batch: str) -> int:
        """Add ``rows`` (dicts with PHOTO_COLUMNS) with their embeddings in one transaction; photos already in
        the catalogue are skipped. Returns how many were added."""
        embeddings = np.asarray(embeddings, dtype=np.float32)
        dim = int(self.meta["dim"])
        if embeddings.ndim != 2 or embeddings.shape != (len(rows), dim):
            raise CatalogueError(f"{len(rows)} photos need embeddings of shape ({len(rows)}, {dim}), got {embeddings.shape}")
        if not np.isfinite(embeddings).all():
            bad = rows[int(np.flatnonzero(~np.isfinite(embeddings).all(1))[0])]["image_id"]
            raise CatalogueError(f"photo {bad}: its embedding is not finite; nothing was added")
        known, added, stamp = self.known_ids(), 0, now()
        with self._write():
            for row, emb in zip(rows, embeddings):
                if row["image_id"] in known:
                    continue
                self.conn.execute(INSERT_PHOTO, tuple((_number if c in NUMERIC else _text)(row.get(c)) for c in PHOTO_COLUMNS)
                                  + (emb.tobytes(), batch, stamp, 0))
                known.add(row["image_id"])
                added += 1
        return added

    def photos(self):
        """(table of PHOTO_COLUMNS + batch, embeddings float32 [N, D]) in insertion order."""
        import pandas as pd

        rows = self.conn.execute(f"SELECT {', '.join(PHOTO_COLUMNS)}, batch, embedding FROM photos ORDER BY rowid").fetchall()
        table = pd.DataFrame([r[:-1] for r in rows], columns=list(PHOTO_COLUMNS) + ["batch"])
        dim = int(self.meta["dim"])
        emb = np.frombuffer(b"".join(r[-1] for r in rows), dtype=np.float32).reshape(len(rows), dim) if rows else \
            np.zeros((0, dim), np.float32)
        return table, emb

    # ---- decisions --------------------------------------------------------------------------------------

    def set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def set_calibration(self, text: str) -> None:
        """Store ``whaleid calibrate``'s fit (a ``Calibration`` as JSON), in a write of its own."""
        with self._write():
            self.set_meta("calibration", text)

    def add_proposals(self, rows: Sequence[dict], embeddings: Optional[np.ndarray], batch: str) -> int:
        """Store identify's proposal per photo (a photo identified again gets its new proposal; its decisions stay)."""
        cols = ("image_id", "path", "viewpoint", "date", "encounter_id", "decision", "whale_id", "score", "probability",
                "candidates", "latitude", "longitude", "species")
        stamp = now()
        with self._write():
            for i, row in enumerate(rows):
                emb = None if embeddings is None else np.asarray(embeddings[i], np.float32).tobytes()
                self.conn.execute(f"INSERT OR REPLACE INTO proposals ({', '.join(cols)}, embedding, batch, added_at) "
                                  f"VALUES ({', '.join('?' * (len(cols) + 3))})",
                                  tuple(row.get(c) if c in ("score", "probability") else _number(row.get(c)) if c in NUMERIC
                                        else _text(row.get(c)) for c in cols)
                                  + (emb, batch, stamp))
        return len(rows)

    def proposals(self) -> list[dict]:
        cols = ("image_id", "path", "viewpoint", "date", "encounter_id", "decision", "whale_id", "score", "probability",
                "candidates", "batch", "added_at", "latitude", "longitude", "species")
        out = [dict(zip(cols, r)) for r in self.conn.execute(f"SELECT {', '.join(cols)} FROM proposals ORDER BY rowid")]
        for row in out:
            row["candidates"] = json.loads(row["candidates"])
        return out

    def decide(self, who: str, action: str, query: str, whale_id: Optional[str] = None, other_whale: Optional[str] = None,
               scores: Optional[dict] = None, undoes: Optional[int] = None, expect_last: Any = ANY) -> int:
        """Append one decision (who, when, the model, the scores shown) and return its id, all in one write
        transaction, after ``catalogue.records.decisions.validate`` has checked it against the state inside that
        transaction. ``expect_last``: the id of the last standing decision on ``query`` the reviewer saw (None:
        none); if the log holds another, ``Conflict`` names it and nothing is written. A photo that ``apply``
        made searchable moves with the decision (to its new whale, or out when it has none)."""
        shown = json.dumps(clean_scores(scores), allow_nan=False)
        with self._write():
            state = self.state()
            proposed = isinstance(query, str) and _storable(query) and self.conn.execute(
                "SELECT 1 FROM proposals WHERE image_id = ?", (query.strip(),)).fetchone() is not None
            d = validate(state, proposed, who, action, query, whale_id, other_whale, undoes, expect_last)
            cur = self.conn.execute(
                "INSERT INTO decisions (at, who, action, query, whale_id, other_whale, undoes, model_hash, scores) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now(), d["who"], d["action"], d["query"], d["whale_id"], d["other_whale"], d["undoes"],
                 self.meta["model_hash"], shown))
            if self.conn.execute("SELECT 1 FROM photos WHERE image_id = ? AND reviewed = 1", (d["query"],)).fetchone():
                self._sync_reviewed(self.state(), d["query"])  # replayed again only for a photo apply made searchable
        return int(cur.lastrowid)

    def decisions(self) -> list[dict]:
        cols = ("id", "at", "who", "action", "query", "whale_id", "other_whale", "undoes", "model_hash", "scores")
        return [dict(zip(cols, r)) for r in self.conn.execute(f"SELECT {', '.join(cols)} FROM decisions ORDER BY id")]

    def state(self) -> dict:
        """The log replayed over the catalogue's whales, proposals and own photos (``decisions.replay``)."""
        ids = [{r[0] for r in self.conn.execute(sql)} for sql in (
            "SELECT DISTINCT whale_id FROM photos WHERE whale_id IS NOT NULL AND reviewed = 0",
            "SELECT image_id FROM proposals", "SELECT image_id FROM photos WHERE reviewed = 0")]
        return replay(self.decisions(), *ids)  # whales, proposals, the catalogue's own photos

    def _sync_reviewed(self, state: dict, only: Optional[str] = None) -> int:
        """Make the photos ``apply`` added from review carry their identity in ``state``: moved to its whale, or
        removed while it has none (its embedding stays in ``proposals``, so a later accept and apply bring it
        back). Inside a write transaction. Returns how many rows changed."""
        sql, args = "SELECT image_id, whale_id FROM photos WHERE reviewed = 1", ()
        if only is not None:
            sql, args = sql + " AND image_id = ?", (only,)
        changed = 0
        for image_id, whale in self.conn.execute(sql, args).fetchall():
            now_whale = state["identity"].get(image_id)
            if now_whale is None:
                self.conn.execute("DELETE FROM photos WHERE image_id = ?", (image_id,))
            elif now_whale != whale:
                self.conn.execute("UPDATE photos SET whale_id = ? WHERE image_id = ?", (now_whale, image_id))
            changed += now_whale != whale
        return changed

    def apply_reviewed(self, batch: str = "reviewed") -> int:
        """Add the photos reviewers accepted or named as a new whale to the searchable photos, under their
        whale (merges are followed when searching), with the embedding identify stored, and move or remove the
        ones added before whose identity changed since: one transaction. Returns how many were added."""
        with self._write():
            state = self.state()
            self._sync_reviewed(state)
            known = self.known_ids()
            stamp, added = now(), 0
            dim = int(self.meta["dim"])
            for row in self.conn.execute("SELECT image_id, encounter_id, viewpoint, date, path, latitude, longitude, "
                                         "species, embedding FROM proposals ORDER BY rowid").fetchall():
                query, emb = row[0], row[-1]
                if query in known or query not in state["identity"] or emb is None or len(emb) != 4 * dim:
                    continue
                self.conn.execute(INSERT_PHOTO, (query, state["identity"][query], *row[1:-1], emb, batch, stamp, 1))
                added += 1
        return added

    def current_whales(self, whale_ids) -> list:
        """Each whale id as it is now: a merged whale's photos count for the whale it joined."""
        alias = self.state()["alias"]
        return [alias.get(w, w) for w in whale_ids]


def _storable(text: str) -> bool:
    """Whether SQLite can take ``text`` (a lone surrogate cannot be UTF-8): one that cannot is refused by
    ``validate`` as an id, never sent to SQLite."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _text(value) -> Optional[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def _number(value) -> Optional[float]:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if np.isfinite(x) else None
