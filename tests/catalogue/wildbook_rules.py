"""The rules Wildbook's bulk importer applies to a sheet, written from its source (WildMeOrg/Wildbook,
``src/main/java/org/ecocean/api/bulk/BulkValidator.java`` at commit 3918cada, and ``BulkImportUtil.validateRow``):
every column name is one of ``FIELD_NAMES`` or an indexed name (``Encounter.mediaAsset0``, ...); the required
fields (``Encounter.genus``, ``Encounter.specificEpithet``) and a year (``validateRow``: a row needs a year or a
date in milliseconds) hold a value in every row, and ``Encounter.submitterID`` too (``BulkImporter`` sets the
owner from it: a user name or ``public``); a year is a whole number from 1000 and not in the future, a month 1 to
12, a day 1 to 31 and within its month; latitude and longitude come both or neither, in range. And what the
bulk-import guide asks of a sheet: no column without a value. ``check(path)`` returns the broken rules, one line
each with the row, for every sheet the suite exports; whaleid's own code is not used here.
"""

from __future__ import annotations

import calendar
import csv
import datetime
import re
from pathlib import Path

FIELD_NAMES = {
    "Encounter.alternateID", "Encounter.behavior", "Encounter.catalogNumber", "Encounter.country",
    "Encounter.dateInMilliseconds", "Encounter.day", "Encounter.decimalLatitude", "Encounter.decimalLongitude",
    "Encounter.depth", "Encounter.distinguishingScar", "Encounter.elevation", "Encounter.genus", "Encounter.groupRole",
    "Encounter.hour", "Encounter.id", "Encounter.identificationRemarks", "Encounter.individualID",
    "Encounter.latitude", "Encounter.lifeStage", "Encounter.livingStatus", "Encounter.locationID",
    "Encounter.longitude", "Encounter.minutes", "Encounter.month", "Encounter.sightingID", "Encounter.sightingRemarks",
    "Encounter.otherCatalogNumbers", "Encounter.patterningCode", "Encounter.project", "Encounter.researcherComments",
    "Encounter.sex", "Encounter.specificEpithet", "Encounter.state", "Encounter.submitterID", "Encounter.submitterName",
    "Encounter.submitterOrganization", "Encounter.verbatimLocality", "Encounter.year", "MarkedIndividual.individualID",
    "MarkedIndividual.name", "MarkedIndividual.nickName", "MarkedIndividual.nickname", "Membership.role",
    "Sighting.comments", "Sighting.day", "Sighting.decimalLatitude", "Sighting.decimalLongitude", "Sighting.month",
    "Sighting.sightingID", "Sighting.year", "Survey.comments", "Survey.id", "Survey.vessel",
}
INDEXED = [re.compile(p) for p in (r"^Encounter\.mediaAsset\d+$", r"^Encounter\.keyword\d+$",
                                   r"^Encounter\.mediaAsset\d+\.keywords$", r"^Encounter\.quality\d+$")]
REQUIRED = ("Encounter.genus", "Encounter.specificEpithet", "Encounter.submitterID")


def valid_name(name: str) -> bool:
    return name in FIELD_NAMES or any(p.match(name) for p in INDEXED)


def check(path: Path) -> list:
    """The rules ``path`` breaks (empty: the importer would accept every row)."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
        fh.seek(0)
        header = next(csv.reader(fh), [])
    broken = [f"column {c!r} is not a field Wildbook's bulk importer knows" for c in header if not valid_name(c)]
    broken += [f"column {c!r} has no value in any row" for c in header if rows and all(not r[c].strip() for r in rows)]
    for c in REQUIRED:
        if c not in header:
            broken.append(f"required column {c!r} is missing")
    for n, row in enumerate(rows, start=2):
        for c in REQUIRED:
            if c in row and not row[c].strip():
                broken.append(f"row {n}: {c} is empty")
        year = row.get("Encounter.year", "").strip()
        if not year and not row.get("Encounter.dateInMilliseconds", "").strip():
            broken.append(f"row {n}: no year (and no date in milliseconds)")
        y = _int(year, n, "Encounter.year", broken)
        m = _int(row.get("Encounter.month", ""), n, "Encounter.month", broken)
        d = _int(row.get("Encounter.day", ""), n, "Encounter.day", broken)
        if y is not None and not 1000 <= y <= datetime.date.today().year:
            broken.append(f"row {n}: year {y} out of range")
        if m is not None and not 1 <= m <= 12:
            broken.append(f"row {n}: month {m} out of range")
        if d is not None and not 1 <= d <= 31:
            broken.append(f"row {n}: day {d} out of range")
        if None not in (y, m, d) and 1 <= (m or 0) <= 12 and d > calendar.monthrange(y, m)[1]:
            broken.append(f"row {n}: day {d} is not in month {m} of {y}")
        lat, lon = row.get("Encounter.decimalLatitude", "").strip(), row.get("Encounter.decimalLongitude", "").strip()
        if bool(lat) != bool(lon):
            broken.append(f"row {n}: latitude and longitude must come together")
        if lat and not -90 <= float(lat) <= 90 or lon and not -180 <= float(lon) <= 180:
            broken.append(f"row {n}: location {lat}, {lon} out of range")
        sub = row.get("Encounter.submitterID", "").strip()
        if sub and sub.startswith(("=", "+", "-", "@", "'")):
            broken.append(f"row {n}: submitterID {sub!r} is not a user name")
    return broken


def _int(text: str, n: int, field: str, broken: list):
    text = (text or "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        broken.append(f"row {n}: {field} {text!r} is not a whole number")
        return None
