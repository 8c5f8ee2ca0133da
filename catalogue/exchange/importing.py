"""Photo-ID data in: a survey folder this project trains and catalogues from, written from someone else's records.

``whaleid import coco`` (``catalogue.exchange.coco``) and ``whaleid import csv`` turn each record (one annotation: a photo,
optionally a bounding box, an individual, a viewpoint, a date, an encounter, a location) into a ``Record`` and
``write_survey`` writes them out:

- ``SURVEY/metadata.csv`` and ``SURVEY/images/``: the records with a known individual, one row each, the photo
  cropped to its box widened by ``margin`` of the box's width and height on each side (clipped to the photo);
- ``SURVEY/unidentified/``: the records of unknown individuals, in the same layout (a survey of its own, for
  ``whaleid identify --data SURVEY/unidentified``);
- ``SURVEY/skipped.csv``: every record not written, with its source row and the reason.

Viewpoints are free labels (``viewpoint_label`` keeps the original); ``viewpoint`` is the competition's top,
left or right, by ``--viewpoint-map`` first and then by the label's words (up/top/dorsal: top; left; right). A
label that maps to none of the three is skipped, named, unless ``--unmapped-viewpoint`` says where it goes. The
folder is written beside SURVEY and renamed into place when complete: a crash leaves no half survey.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from catalogue.exchange.crops import ROTATED, crop_box, crop_rotated, outer_box, parse_bbox, parse_theta  # noqa: F401

VIEWS = ("top", "left", "right")
# labels that name no individual, in the published sets: Wild Me's "____", the Kaggle humpback set's "new_whale",
# and the usual words for none; compared trimmed and case-folded (``--unknown`` replaces the list)
UNKNOWN_NAMES = ("", "____", "new_whale", "unknown", "none", "nan", "na", "null")
COLUMNS = ("image_id", "path", "whale_id", "viewpoint", "viewpoint_label", "date", "timestamp", "encounter_id",
           "latitude", "longitude", "species", "source_image", "bbox", "theta", "source_row", "note")


class SourceError(ValueError):
    """The source cannot be imported at all (not one record): the message names the file."""


@dataclass
class Record:
    row: str  # where it came from, e.g. "annotation 12 (id 345)" or "row 7"
    image: str  # the photo's path, relative to the images folder
    whale_id: Optional[str] = None
    viewpoint: str = ""
    date: str = ""
    encounter_id: str = ""
    latitude: object = None
    longitude: object = None
    bbox: object = None  # [x, y, width, height] in pixels, or None: the whole photo
    theta: object = 0.0  # the box's rotation about its centre, radians (Wild Me's ``theta``)
    species: str = ""
    extra: dict = field(default_factory=dict)  # other columns the user asked to keep (``--keep``)
    image_id: str = ""
    notes: list = field(default_factory=list)
    problem: str = ""  # why the record cannot be imported, found while reading it


def parse_map(text: Optional[str], what: str) -> dict:
    """``a=b,c=d`` as a dict; a clear error naming ``what`` otherwise."""
    out = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise SourceError(f"{what}: {part!r} is not KEY=VALUE")
        out[key.strip()] = value.strip()
    return out


def map_viewpoint(label, mapping: dict, unmapped: Optional[str]) -> Optional[str]:
    """The competition viewpoint of a free label, or None when it maps to none of the three."""
    text = str(label or "").strip().lower()
    if text in mapping:
        return mapping[text]
    if text in VIEWS:
        return text
    words = set(re.findall(r"up|top|dorsal|above|left|right|port|starboard", text))
    if words & {"up", "top", "dorsal", "above"}:
        return "top"  # a drone's view from above, whichever side it leans to
    if words & {"left", "port"} and not words & {"right", "starboard"}:
        return "left"
    if words & {"right", "starboard"} and not words & {"left", "port"}:
        return "right"
    return unmapped


def clean_date(value) -> tuple[str, str]:
    """(YYYY-MM-DD or "", the timestamp as given) of a date or date-time."""
    text = str(value if value is not None else "").strip()
    if text.upper() in ("", "NA", "NAN", "NONE", "NULL"):
        return "", ""
    m = re.match(r"(\d{4})[-/:](\d{1,2})[-/:](\d{1,2})", text)
    if m:
        return f"{int(m[1]):04d}-{int(m[2]):02d}-{int(m[3]):02d}", text
    return "", text


def clean_location(lat, lon) -> tuple[Optional[float], Optional[float], str]:
    """(latitude, longitude, note): both finite and in range, else neither (Wild Me writes -1, -1 for none)."""
    try:
        la, lo = float(lat), float(lon)
    except (TypeError, ValueError):
        return None, None, "" if lat in (None, "") and lon in (None, "") else f"location {lat!r}, {lon!r} is not a number"
    if la == -1 and lo == -1 or not (math.isfinite(la) and math.isfinite(lo)):
        return None, None, ""
    if not (-90 <= la <= 90 and -180 <= lo <= 180):
        return None, None, f"location {la}, {lo} is out of range; left out"
    return la, lo, ""


SAFE_ID = re.compile(r"[^A-Za-z0-9._-]+")


def check_names(records: list) -> None:
    """Each known individual's name in normal form (``catalogue.records.identity``); a name that breaks the rule, or is a
    look-alike of another name of the same import (``whale0016`` and ``WHALE0016``, a zero-width space, a Cyrillic
    letter), marks its record as not importable, saying which."""
    from catalogue.records.identity import normal_names

    labels = [None if r.problem or r.whale_id is None else str(r.whale_id) for r in records]
    for r, (text, why, first) in zip(records, normal_names(labels, "the individual's name")):
        if why:
            r.problem = why
        elif first is not None:
            r.problem = (f"the individual's name {text!r} is a look-alike of {first!r}, named earlier in this "
                         "file (same after normalising case, digits and look-alike letters); correct one of them")
        elif text is not None:
            r.whale_id = text


def unique_ids(records: list) -> None:
    seen: dict = {}
    for r in records:
        base = SAFE_ID.sub("_", str(r.image_id or Path(r.image).stem)).strip("._") or "photo"
        n = seen.get(base, 0)
        seen[base] = n + 1
        r.image_id = base if n == 0 else f"{base}-{n + 1}"


def write_survey(records: list, images: Path, out: Path, margin: float = 0.1, viewpoint_map: Optional[dict] = None,
                 unmapped: Optional[str] = None, source: str = "", quality: int = 95, unknown=UNKNOWN_NAMES,
                 species: Optional[str] = None, rotated: str = "upright") -> dict:
    """Write ``records`` as a survey folder at ``out`` (see the module's doc); returns the counts and the skipped.
    ``unknown``: the labels that name no individual; ``species``: import only that species' records (the others
    are named in skipped.csv); ``rotated``: how a box with a rotation is cut (``catalogue.exchange.crops``)."""
    import pandas as pd
    from PIL import Image

    from catalogue.records.photos import resolved_inside
    from core.progress import progress

    out, images = Path(out), Path(images).resolve()
    if out.exists() and any(out.iterdir()):
        raise SourceError(f"{out} exists and is not empty; choose a new folder (nothing was written)")
    if not images.is_dir():
        raise SourceError(f"--images {images}: no such folder")
    mapping = {k.lower(): v for k, v in (viewpoint_map or {}).items()}
    bad = {k: v for k, v in mapping.items() if v not in VIEWS}
    if bad or (unmapped is not None and unmapped not in VIEWS):
        raise SourceError(f"viewpoints map onto {VIEWS}; got {bad or unmapped}")
    if rotated not in ROTATED:
        raise SourceError(f"--rotated must be one of {ROTATED}, got {rotated!r}")
    unknown = {str(u).strip().casefold() for u in unknown}
    unique_ids(records)
    if species is not None:
        wanted = species.strip().casefold()
        for r in records:
            if not r.problem and str(r.species or "").strip().casefold() != wanted:
                r.problem = (f"species {r.species!r}, not {species!r} (--species)" if str(r.species or "").strip()
                             else f"no species given; --species {species!r} imports only that species")
    for r in records:
        if r.whale_id is not None and str(r.whale_id).strip().casefold() in unknown:
            r.whale_id = None  # an unknown individual: unidentified/
    check_names(records)
    tmp = out.parent / f".{out.name}.importing-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "images").mkdir(parents=True)
    (tmp / "unidentified" / "images").mkdir(parents=True)
    kept, loose, skipped = [], [], []

    order = {id(r): i for i, r in enumerate(records)}

    def skip(r, reason):
        skipped.append({"order": order[id(r)], "source_row": r.row, "source_image": r.image, "reason": reason})

    by_image: dict = {}
    for r in records:
        if r.problem:
            skip(r, r.problem)
        else:
            by_image.setdefault(r.image, []).append(r)
    try:
        for rel, group in progress(by_image.items(), total=len(by_image), desc="import", unit="photo"):
            path = resolved_inside(images, rel)
            if path is None:
                for r in group:
                    skip(r, f"photo path {rel!r} is empty, absolute or leaves {images}")
                continue
            if not path.is_file():
                for r in group:
                    skip(r, f"image file not found: {path}")
                continue
            try:
                with Image.open(path) as img:
                    img.load()
                    photo = img.convert("RGB")
            except Exception as exc:  # any decoder error: the photo is named, the import goes on
                for r in group:
                    skip(r, f"cannot read image {path}: {exc}")
                continue
            for r in group:
                view = map_viewpoint(r.viewpoint, mapping, unmapped)
                if view is None:
                    skip(r, f"viewpoint {r.viewpoint!r} maps to none of {VIEWS} (--viewpoint-map LABEL=VIEW or "
                            "--unmapped-viewpoint)")
                    continue
                try:
                    box, theta = parse_bbox(r.bbox), parse_theta(r.theta)
                except (TypeError, ValueError) as exc:
                    skip(r, str(exc))
                    continue
                turned = box is not None and theta != 0.0
                outer = outer_box(box, theta) if turned else box
                if turned and rotated == "upright":
                    cut = crop_rotated(photo, box, theta, margin)
                else:
                    crop = (0, 0) + photo.size if box is None else crop_box(outer, photo.size, margin)
                    cut = None if crop is None else photo.crop(crop)
                if cut is None:
                    skip(r, f"bbox {box} lies outside the {photo.size[0]}x{photo.size[1]} photo")
                    continue
                notes = list(r.notes)
                if outer is not None and (outer[0] < 0 or outer[1] < 0 or outer[0] + outer[2] > photo.size[0]
                                          or outer[1] + outer[3] > photo.size[1]):
                    notes.append("bbox clipped to the photo" + (" (black beyond its edge)" if turned
                                                                  and rotated == "upright" else ""))
                if turned:
                    notes.append(f"rotated box ({theta:g} rad) cut " + ("upright" if rotated == "upright"
                                                                         else "by its outer box"))
                known = r.whale_id is not None
                folder = tmp if known else tmp / "unidentified"
                name = f"images/{r.image_id}.jpg"
                cut.save(folder / name, quality=quality)
                date, stamp = clean_date(r.date)
                la, lo, note = clean_location(r.latitude, r.longitude)
                notes += [note] if note else []
                row = {"image_id": r.image_id, "path": name, "whale_id": str(r.whale_id).strip() if known else "",
                       "viewpoint": view, "viewpoint_label": str(r.viewpoint or ""), "date": date, "timestamp": stamp,
                       "encounter_id": str(r.encounter_id or ""), "latitude": la, "longitude": lo,
                       "species": str(r.species or "").strip(), "source_image": rel,
                       "bbox": "" if box is None else " ".join(f"{v:g}" for v in box),
                       "theta": f"{theta:g}" if turned else "", "source_row": r.row, "note": "; ".join(notes),
                       **{k: v for k, v in r.extra.items() if k not in COLUMNS}}
                (kept if known else loose).append(row)
        for folder, rows in ((tmp, kept), (tmp / "unidentified", loose)):
            extra = sorted({k for row in rows for k in row} - set(COLUMNS))
            table = pd.DataFrame(rows, columns=list(COLUMNS) + extra)
            if table["encounter_id"].eq("").all():
                table = table.drop(columns=["encounter_id"])  # read_metadata then groups a whale's photos by day
            table = table.drop(columns=[c for c in ("species", "theta") if table[c].eq("").all()])
            table.to_csv(folder / "metadata.csv", index=False)
        skipped = [{k: v for k, v in s.items() if k != "order"} for s in sorted(skipped, key=lambda s: s["order"])]
        from catalogue.records.cells import safe_cells  # the sources' own text: no cell runs as a formula

        safe_cells(pd.DataFrame(skipped, columns=["source_row", "source_image", "reason"])).to_csv(tmp / "skipped.csv",
                                                                                                 index=False)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    whales = len({r["whale_id"] for r in kept})
    return {"source": source, "records": len(records), "imported": len(kept), "whales": whales,
            "unidentified": len(loose), "skipped": skipped}
