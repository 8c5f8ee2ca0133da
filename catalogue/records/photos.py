"""Which files a catalogue may name and serve: a photo's path is resolved when it is catalogued (build, or
identify's proposals) and must lie inside the survey folder it came from, links resolved; the review server
serves a stored path only while it still resolves to itself inside one of those folders.

The folders are recorded in the catalogue's meta (``photo_roots``, a JSON list). A catalogue with no folder
recorded (written before they were, or through the Python API alone), and the photos a catalogue held when its
first folder was recorded (meta ``unrooted_photos``), are served only as files with a photo's suffix.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Optional

import numpy as np

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")


def resolve_inside(root: Path, rows, source: str, linked: Optional[set] = None) -> list[str]:
    """The resolved file of each ``(row number, path)`` in ``rows``, relative ``path`` under ``root``; raises
    ``ValueError`` naming every row (up to ten) whose path is absolute, has a ``..`` part, or resolves outside
    ``root`` and the folders that links inside it lead to (``resolved_inside``). ``linked`` collects those folders."""
    root = Path(root).resolve()
    out, bad = [], []
    for row, path in rows:
        target = resolved_inside(root, path, linked)
        if target is None:
            bad.append(f"row {row} ({str(path)!r})")
        out.append(str(target))
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(f"{source}: photo paths must be relative without '..' and stay inside {root} or a folder a "
                         f"link there leads to (a linked file must not leave them): {', '.join(bad[:10])}{more}; "
                         "nothing was catalogued")
    return out


def resolved_inside(root: Path, rel, linked: Optional[set] = None) -> Optional[Path]:
    """``root/rel`` resolved when ``rel`` is a non-empty relative path without ``..`` whose file lies inside
    ``root`` (already resolved) or inside a folder that a *folder* link on its way leads to (``SURVEY/images ->
    /mnt/nas/2019``, the usual layout for photos on a shared disk); else None. A link to the file itself must stay
    inside those folders; a folder link to ``/`` or to a folder holding ``root`` grants nothing. ``linked``
    collects the folders granted, for the catalogue to record."""
    text = str(rel)
    if not text or Path(text).is_absolute() or ".." in Path(text).parts:
        return None
    parts, allowed, here = Path(text).parts, [root], root
    for part in parts[:-1]:
        here = here / part
        if here.is_symlink():
            try:
                here = here.resolve(strict=True)
            except (OSError, RuntimeError):
                return None
            if here.is_dir() and here != Path(here.anchor) and not _inside(root, here):
                allowed.append(here)
    target = (here / parts[-1]).resolve()
    home = next((a for a in allowed if _inside(target, a)), None)
    if home is None:
        return None
    if linked is not None and home != root:
        linked.add(home)
    return target


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


def add_photo_root(cat, root: Path, linked=()) -> None:
    """Record the survey folder ``root`` (resolved) and the folders links inside it lead to (``linked``)."""
    roots = [str(p) for p in photo_roots(cat)[0]]
    new = [r for r in dict.fromkeys([str(Path(root).resolve()), *(str(Path(p)) for p in linked)]) if r not in roots]
    if new:
        from catalogue.records import tables

        tables.record_roots(cat, json.dumps(roots + new), unrooted=not roots and tables.has_photos(cat))


def servable(path: Optional[str], rules: tuple[list[Path], bool]) -> Optional[str]:
    """None when the stored ``path`` may be served; else why not ("missing" when the file is simply gone). A check
    of the path as it is now: ``read_served`` checks the file it actually opens."""
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
    why = _outside(real, rules)
    if why:
        return why
    if not real.is_file():
        return "missing"
    return None


def _outside(real: Path, rules: tuple[list[Path], bool]) -> Optional[str]:
    roots, unrooted = rules
    if not any(_inside(real, r) for r in roots):
        if not unrooted:
            return "outside the survey folders it was catalogued from"
        if real.suffix.lower() not in PHOTO_SUFFIXES:
            return "not a photo file"
    return None


MAX_PHOTO_BYTES = 256 << 20  # a photo larger than this is not served


def photo_type(body: bytes) -> str:
    """The image type of ``body`` by its first bytes (the stored name may say nothing); octet-stream otherwise."""
    for magic, kind in ((b"\xff\xd8\xff", "image/jpeg"), (b"\x89PNG\r\n\x1a\n", "image/png"), (b"GIF8", "image/gif"),
                        (b"II*\x00", "image/tiff"), (b"MM\x00*", "image/tiff"), (b"BM", "image/bmp")):
        if body.startswith(magic):
            return kind
    if body[:4] == b"RIFF" and body[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def on_private_copies(paths: list, rules: tuple[list[Path], bool], draw):
    """``draw(*files)`` on private copies of the stored ``paths``, each read by ``read_served`` (so a photo swapped
    for a link meanwhile is never drawn); None when one of them may not be served."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="whaleid_pair_") as tmp:
        files = []
        for n, path in enumerate(paths):
            body = read_served(path, rules) if path else None
            if body is None:
                return None
            copy = Path(tmp) / f"{n}{Path(path).suffix.lower()}"
            copy.write_bytes(body)
            files.append(str(copy))
        return draw(*files)


def read_served(path: Optional[str], rules: tuple[list[Path], bool]) -> Optional[bytes]:
    """The bytes of the stored ``path`` when it may be served, else None; race-free: the file is opened once (not
    following a link at its last part, never blocking on a FIFO), the *opened* file is checked (a regular file;
    on Linux its real path, read back from ``/proc/self/fd``, must be the stored path inside the recorded folders;
    elsewhere the path's file must be the one opened), and its bytes come from that descriptor. A file swapped for
    a link between the check and the read is refused, not followed. Hard links are outside this check: a hard
    link inside a survey folder *is* a file there (docs/usage.md says so)."""
    if not path or not Path(path).is_absolute() or _outside(Path(path), rules):
        return None  # a path outside the recorded folders is not even opened
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PHOTO_BYTES:
            return None
        if os.path.isdir("/proc/self/fd"):
            real = os.readlink(f"/proc/self/fd/{fd}")
        else:  # no /proc: the path must still name the file that was opened
            now = os.stat(path)
            real = os.path.realpath(path) if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) else ""
        if real != path or _outside(Path(real), rules):
            return None
        chunks, size = [], 0
        while True:
            block = os.read(fd, 1 << 20)
            if not block:
                break
            size += len(block)
            if size > MAX_PHOTO_BYTES:
                return None
            chunks.append(block)
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def refuse_lookalikes(meta, existing, source: str) -> None:
    """``ValueError`` naming the rows of ``meta`` whose whale id is a look-alike of another whale in ``existing``."""
    from catalogue.records.identity import Skeletons

    existing = {w for w in existing if isinstance(w, str)}
    names, twins = Skeletons(sorted(existing)), {}  # each distinct new id looked up once
    for w in meta["whale_id"]:
        if isinstance(w, str) and w not in existing and w not in twins:
            twins[w] = names.twin(w)
    bad = [f"row {row}: whale id {w!r} is a look-alike of the catalogue's whale {twins[w]!r}"
           for row, w in zip(meta["row"], meta["whale_id"]) if twins.get(w) is not None]
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(f"{source}: {'; '.join(bad[:10])}{more} (same after normalising case, digits and look-alike "
                         "letters); correct the table or use the catalogue's id; nothing was catalogued")


def check_ids(meta, source: str) -> None:
    """Photo ids and whale ids of ``meta`` (with ``row``) put in normal form in place (``catalogue.records.identity``);
    ``ValueError`` naming the file and rows (up to ten) when one breaks the rule, or two whale ids are look-alikes."""
    from catalogue.records.identity import IdError, normal_names, photo_id

    bad, images, firsts = [], [], {}
    for row, image in zip(meta["row"], meta["image_id"]):
        try:
            images.append(photo_id(str(image), "the photo id"))
        except IdError as exc:
            images.append(image)
            bad.append(f"row {row}: {exc}")
    given = [None if w is None or (isinstance(w, float) and np.isnan(w)) or str(w).strip() == "" else str(w)
             for w in meta["whale_id"]]
    whales = []
    for row, w, (text, why, first) in zip(meta["row"], meta["whale_id"], normal_names(given, "the whale id")):
        if why:
            bad.append(f"row {row}: {why}")
        elif first is not None:
            bad.append(f"row {row}: whale id {text!r} is a look-alike of {first!r} in row {firsts[first]} (same after "
                       "normalising case, digits and look-alike letters)")
        if text is not None:
            firsts.setdefault(text, row)
        whales.append(w if text is None else text)
    if bad:
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise ValueError(f"{source}: {'; '.join(bad[:10])}{more}; nothing was catalogued")
    meta["image_id"], meta["whale_id"] = images, whales


def read_photos(data: Path, require_identity: bool, before: str | None = None, since: str | None = None,
                labels: Path | None = None):
    """DIR's metadata.csv rows (with ``file``, the photo's resolved path, which must lie inside DIR, and ``row``,
    its line in metadata.csv), optionally dated before / since a day; with ``labels`` (a competition
    test_labels.csv) the whale ids are recovered from it."""
    from core.data import read_metadata

    meta = read_metadata(data, require_identity=require_identity and labels is None)
    if labels is not None:
        from catalogue.records.test_labels import identities_from_labels

        meta["whale_id"] = meta["image_id"].astype(str).map(identities_from_labels(data, labels))
    for col in ("encounter_id", "date", "whale_id", "latitude", "longitude", "species"):
        if col not in meta.columns:
            meta[col] = None
    meta["row"] = np.arange(len(meta)) + 2  # the line in metadata.csv, its header being line 1
    check_ids(meta, str(data / "metadata.csv"))
    linked: set = set()
    meta["file"] = resolve_inside(data, zip(meta["row"], meta["path"]), str(data / "metadata.csv"), linked)
    if before:
        meta = meta[meta["date"].astype(str) < before]
    if since:
        meta = meta[meta["date"].astype(str) >= since]
    meta = meta.reset_index(drop=True)
    meta.attrs["linked_folders"] = sorted(str(p) for p in linked)  # for add_photo_root
    return meta
