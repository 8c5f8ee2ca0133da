"""Which files a catalogue may name and serve: a photo's path is resolved when it is catalogued (build, or
identify's proposals) and must lie inside the survey folder it came from, links resolved; the review server
serves a stored path only while it still resolves to itself inside one of those folders.

The folders are recorded in the catalogue's meta (``photo_roots``, a JSON list). A catalogue with no folder
recorded (written before they were, or through the Python API alone), and the photos a catalogue held when its
first folder was recorded (meta ``unrooted_photos``), are served only as files with a photo's suffix.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def resolve_inside(root: Path, rows, source: str) -> list[str]:
    """The resolved file of each ``(row number, path)`` in ``rows``, relative ``path`` under ``root``; raises
    ``ValueError`` naming every row (up to ten) whose path is absolute or leaves ``root`` (links resolved)."""
    root = Path(root).resolve()
    out, bad = [], []
    for row, path in rows:
        target = resolved_inside(root, path)
        if target is None:
            bad.append(f"row {row} ({str(path)!r})")
        out.append(str(target))
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(f"{source}: photo paths must be relative and stay inside {root} (links resolved): "
                         f"{', '.join(bad[:10])}{more}; nothing was catalogued")
    return out


def resolved_inside(root: Path, rel) -> Optional[Path]:
    """``root/rel`` resolved (links followed) when ``rel`` is a non-empty relative path that stays inside ``root``
    (already resolved), else None."""
    text = str(rel)
    if not text or Path(text).is_absolute():
        return None
    target = (root / text).resolve()
    return target if _inside(target, root) else None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def photo_roots(cat) -> tuple[list[Path], bool]:
    """(the survey folders recorded, whether photos catalogued before any was recorded may be elsewhere)."""
    meta = cat.meta
    roots = [Path(p) for p in json.loads(meta.get("photo_roots") or "[]")]
    return roots, not roots or meta.get("unrooted_photos") == "1"


def add_photo_root(cat, root: Path) -> None:
    roots = [str(p) for p in photo_roots(cat)[0]]
    root = str(Path(root).resolve())
    if root not in roots:
        with cat._write():
            if not roots and cat.conn.execute("SELECT EXISTS (SELECT 1 FROM photos) OR EXISTS "
                                              "(SELECT 1 FROM proposals)").fetchone()[0]:
                cat.set_meta("unrooted_photos", "1")
            cat.set_meta("photo_roots", json.dumps(roots + [root]))


def servable(path: Optional[str], rules: tuple[list[Path], bool]) -> Optional[str]:
    """None when the stored ``path`` may be served; else why not ("missing" when the file is simply gone)."""
    if not path:
        return "missing"
    p = Path(path)
    if not p.is_absolute():
        return "not an absolute path"
    try:
        real = p.resolve(strict=True)
    except (OSError, RuntimeError):
        return "missing"
    if real != p:
        return "a link or a path that no longer resolves to itself"
    roots, unrooted = rules
    if not any(_inside(real, r) for r in roots):
        if not unrooted:
            return "outside the survey folders it was catalogued from"
        if real.suffix.lower() not in PHOTO_SUFFIXES:
            return "not a photo file"
    if not real.is_file():
        return "missing"
    return None


def read_photos(data: Path, require_identity: bool, before: str | None = None, since: str | None = None,
                labels: Path | None = None):
    """DIR's metadata.csv rows (with ``file``, the photo's resolved path, which must lie inside DIR, and ``row``,
    its line in metadata.csv), optionally dated before / since a day; with ``labels`` (a competition
    test_labels.csv) the whale ids are recovered from it."""
    from core.data import read_metadata

    meta = read_metadata(data, require_identity=require_identity and labels is None)
    if labels is not None:
        from catalogue.calibration import identities_from_labels

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
