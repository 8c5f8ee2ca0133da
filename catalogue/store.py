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
written, so no decision is overwritten unseen. A schema 1 file is upgraded in place when opened.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

SCHEMA_VERSION = 2
ACTIONS = ("accept", "reject", "new_whale", "merge", "undo")
PHOTO_COLUMNS = ("image_id", "whale_id", "encounter_id", "viewpoint", "date", "path")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE photos (
    image_id TEXT PRIMARY KEY,
    whale_id TEXT,
    encounter_id TEXT,
    viewpoint TEXT,
    date TEXT,
    path TEXT,
    embedding BLOB NOT NULL,
    batch TEXT NOT NULL,
    added_at TEXT NOT NULL
);
CREATE INDEX photos_whale ON photos (whale_id);
CREATE TABLE decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    who TEXT NOT NULL,
    action TEXT NOT NULL,
    query TEXT NOT NULL,
    whale_id TEXT,
    other_whale TEXT,
    undoes INTEGER REFERENCES decisions (id),
    model_hash TEXT NOT NULL,
    scores TEXT NOT NULL
);
CREATE TRIGGER decisions_no_update BEFORE UPDATE ON decisions BEGIN
    SELECT RAISE(ABORT, 'the decision log is append-only');
END;
CREATE TRIGGER decisions_no_delete BEFORE DELETE ON decisions BEGIN
    SELECT RAISE(ABORT, 'the decision log is append-only');
END;
"""

# schema 2: what identify proposed for each new photo (SCHEMA_2 alone upgrades a schema 1 file)
SCHEMA_2 = """
CREATE TABLE proposals (
    image_id TEXT PRIMARY KEY,
    path TEXT,
    viewpoint TEXT,
    date TEXT,
    encounter_id TEXT,
    decision TEXT NOT NULL,
    whale_id TEXT,
    score REAL,
    probability REAL,
    candidates TEXT NOT NULL,
    embedding BLOB,
    batch TEXT NOT NULL,
    added_at TEXT NOT NULL
);
"""


ANY = object()  # decide(): no expectation about the log


class CatalogueError(ValueError):
    """A catalogue file that cannot be used as asked: newer schema, another model, bad rows."""


class Conflict(CatalogueError):
    """A decision refused because the log moved on since the reviewer looked (or it would duplicate a whale)."""


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def connect(path) -> sqlite3.Connection:
    conn = sqlite3.connect(str(path), timeout=30.0, isolation_level=None)  # transactions are explicit
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
        for statement in _statements(SCHEMA + SCHEMA_2):  # not executescript: it would commit before the marker below
            conn.execute(statement)
        for key, value in (("model_hash", model_hash), ("model_name", model_name), ("dim", str(int(dim))),
                           ("created", now())):
            conn.execute("INSERT INTO meta VALUES (?, ?)", (key, value))
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
        return cls(path, conn)

    @classmethod
    def open(cls, path, model_hash: Optional[str] = None) -> "Catalogue":
        """Open an existing catalogue; with ``model_hash``, refuse one that another model embedded."""
        path = Path(path)
        if not path.is_file():
            raise CatalogueError(f"{path}: no such catalogue (build one with `whaleid catalogue build`)")
        conn = connect(path)
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.close()
            raise CatalogueError(f"{path}: catalogue schema {version} is newer than this whaleid reads "
                                 f"({SCHEMA_VERSION}); upgrade whaleid to open it")
        if version < 1:
            conn.close()
            raise CatalogueError(f"{path}: not a whaleid catalogue (schema version {version})")
        if version == 1:  # schema 1 -> 2: the proposals table, in one transaction
            conn.execute("BEGIN IMMEDIATE")
            if conn.execute("PRAGMA user_version").fetchone()[0] == 1:  # another process may have upgraded it
                for statement in _statements(SCHEMA_2):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
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
                self.conn.execute("INSERT INTO photos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                  tuple(_text(row.get(c)) for c in PHOTO_COLUMNS) + (emb.tobytes(), batch, stamp))
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

    def add_proposals(self, rows: Sequence[dict], embeddings: Optional[np.ndarray], batch: str) -> int:
        """Store identify's proposal per photo (a photo identified again gets its new proposal; its decisions stay)."""
        cols = ("image_id", "path", "viewpoint", "date", "encounter_id", "decision", "whale_id", "score", "probability",
                "candidates")
        stamp = now()
        with self._write():
            for i, row in enumerate(rows):
                emb = None if embeddings is None else np.asarray(embeddings[i], np.float32).tobytes()
                self.conn.execute(f"INSERT OR REPLACE INTO proposals ({', '.join(cols)}, embedding, batch, added_at) "
                                  f"VALUES ({', '.join('?' * (len(cols) + 3))})",
                                  tuple(row.get(c) if c in ("score", "probability") else _text(row.get(c)) for c in cols)
                                  + (emb, batch, stamp))
        return len(rows)

    def proposals(self) -> list[dict]:
        cols = ("image_id", "path", "viewpoint", "date", "encounter_id", "decision", "whale_id", "score", "probability",
                "candidates", "batch", "added_at")
        out = [dict(zip(cols, r)) for r in self.conn.execute(f"SELECT {', '.join(cols)} FROM proposals ORDER BY rowid")]
        for row in out:
            row["candidates"] = json.loads(row["candidates"])
        return out

    def decide(self, who: str, action: str, query: str, whale_id: Optional[str] = None, other_whale: Optional[str] = None,
               scores: Optional[dict] = None, undoes: Optional[int] = None, expect_last: Any = ANY) -> int:
        """Append one decision (who, when, the model, the scores shown) and return its id, all in one write
        transaction. ``expect_last``: the id of the last standing decision on ``query`` the reviewer saw (None:
        none); if the log holds another, ``Conflict`` names it and nothing is written. A new whale's id must be
        new, a merge must join two different known whales, an undo must undo a standing decision."""
        if action not in ACTIONS:
            raise CatalogueError(f"unknown decision {action!r}; expected one of {ACTIONS}")
        if not who:
            raise CatalogueError("a decision needs who made it")
        with self._write():
            state = self.state()
            last = state["last"].get(query)
            if expect_last is not ANY and (last["id"] if last else None) != expect_last:
                raise Conflict(f"photo {query} was decided meanwhile by {last['who']} at {last['at']} "
                               f"({_describe(last)}); reload to see it" if last else
                               f"photo {query}: the decision you saw was undone meanwhile; reload to see it")
            if action == "new_whale":
                if not whale_id:
                    raise CatalogueError("a new whale needs an id")
                if whale_id in state["whales"]:
                    raise Conflict(f"whale id {whale_id!r} exists already: accept or merge instead of creating it twice")
            if action == "merge":
                if not whale_id or not other_whale or whale_id == other_whale:
                    raise CatalogueError("a merge needs two different whales")
                for w in (whale_id, other_whale):
                    if w not in state["whales"]:
                        raise CatalogueError(f"whale {w!r} is not in the catalogue")
                if state["alias"].get(other_whale, other_whale) == state["alias"].get(whale_id, whale_id):
                    raise Conflict(f"whales {whale_id!r} and {other_whale!r} are one whale already")
            if action == "accept" and whale_id not in state["whales"]:
                raise CatalogueError(f"whale {whale_id!r} is not in the catalogue")
            if action == "undo":
                target = state["standing"].get(undoes)
                if target is None:
                    raise Conflict(f"decision {undoes} is not standing (undone already, or an undo); reload to see it")
            cur = self.conn.execute(
                "INSERT INTO decisions (at, who, action, query, whale_id, other_whale, undoes, model_hash, scores) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now(), who, action, query, whale_id, other_whale, undoes, self.meta["model_hash"], json.dumps(scores or {})))
        return int(cur.lastrowid)

    def decisions(self) -> list[dict]:
        cols = ("id", "at", "who", "action", "query", "whale_id", "other_whale", "undoes", "model_hash", "scores")
        return [dict(zip(cols, r)) for r in self.conn.execute(f"SELECT {', '.join(cols)} FROM decisions ORDER BY id")]

    def state(self) -> dict:
        """The decision log replayed: ``standing`` (id -> decision not undone), ``last`` (photo -> its last
        standing decision), ``assigned`` (photo -> whale, accepted or new), ``alias`` (merged whale -> whale it
        joined, followed to the end), ``whales`` (every whale id known: catalogue, new and merged)."""
        log = self.decisions()
        undone = {d["undoes"] for d in log if d["action"] == "undo"}
        standing = {d["id"]: d for d in log if d["action"] != "undo" and d["id"] not in undone}
        last, assigned, alias = {}, {}, {}
        whales = {r[0] for r in self.conn.execute("SELECT DISTINCT whale_id FROM photos WHERE whale_id IS NOT NULL")}
        for d in standing.values():
            last[d["query"]] = d
            if d["action"] in ("accept", "new_whale"):
                assigned[d["query"]] = d["whale_id"]
                whales.add(d["whale_id"])
            elif d["action"] == "reject" and assigned.get(d["query"]) == d["whale_id"]:
                assigned.pop(d["query"])
            elif d["action"] == "merge":
                alias[d["other_whale"]] = d["whale_id"]
        for w in list(alias):
            seen, target = {w}, alias[w]
            while target in alias and target not in seen:
                seen.add(target)
                target = alias[target]
            alias[w] = target
        assigned = {q: alias.get(w, w) for q, w in assigned.items()}
        return {"standing": standing, "last": last, "assigned": assigned, "alias": alias, "whales": whales}

    def apply_reviewed(self, batch: str = "reviewed") -> int:
        """Add the photos reviewers accepted or named as a new whale to the searchable photos, under their
        current whale (merges followed), with the embedding identify stored: one transaction. Returns how many."""
        with self._write():
            state = self.state()
            known = self.known_ids()
            stamp, added = now(), 0
            dim = int(self.meta["dim"])
            for row in self.conn.execute("SELECT image_id, encounter_id, viewpoint, date, path, embedding FROM proposals "
                                         "ORDER BY rowid").fetchall():
                query = row[0]
                if query in known or query not in state["assigned"] or row[5] is None or len(row[5]) != 4 * dim:
                    continue
                self.conn.execute("INSERT INTO photos VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                                  (query, state["assigned"][query], row[1], row[2], row[3], row[4], row[5], batch, stamp))
                added += 1
        return added

    def current_whales(self, whale_ids) -> list:
        """Each whale id as it is now: a merged whale's photos count for the whale it joined."""
        alias = self.state()["alias"]
        return [alias.get(w, w) for w in whale_ids]

    # ---- export -----------------------------------------------------------------------------------------

    def export(self, path) -> Path:
        """The photos and identities (no embeddings) as CSV, or JSON when ``path`` ends in .json."""
        import pandas as pd

        table, _ = self.photos()
        state = self.state()
        table["current_whale"] = [state["alias"].get(w, w) for w in table["whale_id"]]
        decided = pd.DataFrame([{"image_id": q, "whale_id": None, "encounter_id": p["encounter_id"],
                                 "viewpoint": p["viewpoint"], "date": p["date"], "path": p["path"], "batch": p["batch"],
                                 "current_whale": state["assigned"][q]}
                                for p in self.proposals() for q in [p["image_id"]] if q in state["assigned"]])
        table = pd.concat([table, decided], ignore_index=True) if len(decided) else table
        path = Path(path)
        if path.suffix == ".json":
            path.write_text(json.dumps({"meta": self.meta, "photos": table.to_dict(orient="records"),
                                        "decisions": self.decisions()}, indent=1, default=str))
        else:
            table.to_csv(path, index=False)
        return path


def _describe(d: dict) -> str:
    if d["action"] == "merge":
        return f"merge {d['other_whale']} into {d['whale_id']}"
    return f"{d['action']} {d['whale_id']}" if d["whale_id"] else d["action"]


def _text(value) -> Optional[str]:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return str(value)


def _statements(script: str) -> Iterable[str]:
    """The statements of SCHEMA, triggers kept whole (their bodies hold semicolons)."""
    out, buf = [], []
    for line in script.strip().splitlines():
        buf.append(line)
        text = "\n".join(buf).strip()
        if text.endswith(";") and (not text.upper().startswith("CREATE TRIGGER") or text.upper().endswith("END;")):
            out.append(text)
            buf = []
    return out
