"""The catalogue file's SQLite schema, by version (``PRAGMA user_version``): 1 photos, decisions and the log's
append-only triggers; 2 identify's proposals; 3 ``photos.reviewed``; 4 latitude and longitude; 5 species. A file of an
older version is upgraded in place by the scripts after its version, in one transaction (``catalogue.records.store``).
"""

from __future__ import annotations

from typing import Iterable

SCHEMA_VERSION = 5
PHOTO_COLUMNS = ("image_id", "whale_id", "encounter_id", "viewpoint", "date", "path", "latitude", "longitude",
                 "species")
NUMERIC = ("latitude", "longitude")

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

# schema 3: which searchable photos came from review
SCHEMA_3 = """
ALTER TABLE photos ADD COLUMN reviewed INTEGER NOT NULL DEFAULT 0;
UPDATE photos SET reviewed = 1 WHERE image_id IN (SELECT image_id FROM proposals);
"""
# schema 4: where a photo was taken, carried from import to export (decimal degrees; NULL when unknown)
SCHEMA_4 = """
ALTER TABLE photos ADD COLUMN latitude REAL;
ALTER TABLE photos ADD COLUMN longitude REAL;
ALTER TABLE proposals ADD COLUMN latitude REAL;
ALTER TABLE proposals ADD COLUMN longitude REAL;
"""
# schema 5: the species of a photo's animal (from import's species column; NULL when unknown), for the Wildbook export
SCHEMA_5 = """
ALTER TABLE photos ADD COLUMN species TEXT;
ALTER TABLE proposals ADD COLUMN species TEXT;
"""
UPGRADES = (SCHEMA_2, SCHEMA_3, SCHEMA_4, SCHEMA_5)  # UPGRADES[v - 1:] takes a file of version v to SCHEMA_VERSION
INSERT_PHOTO = ("INSERT INTO photos (image_id, whale_id, encounter_id, viewpoint, date, path, latitude, longitude, "
                "species, embedding, batch, added_at, reviewed) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")


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
