"""The catalogue as a sheet Wildbook's bulk importer accepts (``whaleid catalogue export --format wildbook``).

Target: the bulk import of Wildbook's current code (WildMeOrg/Wildbook, ``src/main/java/org/ecocean/api/bulk``:
``BulkValidator.java`` names the fields it accepts, ``BulkImportUtil.validateRow`` checks each row, and
``BulkImporter.java`` builds encounters, sightings and individuals from them), checked against ``BulkValidator``
as of commit 3918cada. Older Wildbooks (the ``StandardImport`` servlet and the validator before sightings were
renamed from occurrences) read ``--wildbook-names legacy``: ``Encounter.occurrenceID`` and
``Encounter.occurrenceRemarks`` in place of ``Encounter.sightingID`` and ``Encounter.sightingRemarks``.

One row per encounter: a whale in one sighting. A sighting is the photos of one day at one place: located photos
of a day within 1 km of one another (single linkage, ``sighting_ids``) are one sighting, ``DAY-N``, and the day's
photos without a location are the sighting ``DAY``; so a mother and calf photographed together are two encounters
of one sighting, linked by ``Encounter.sightingID``. Photos that carry an ``encounter_id`` keep it as their
encounter. The columns, all in the validator's list:

- ``Encounter.mediaAsset0..N``: the photos, as file names (``--media name``: uploaded with the sheet; a name two
  photos share is prefixed with the photo's id) or paths relative to the sheet's folder (``--media relative``);
  ``--copy-media`` copies them into ``<sheet>_media/`` beside the sheet and names them there;
- ``MarkedIndividual.individualID``; ``Encounter.year``/``month``/``day`` (every row has a year: the importer
  needs one; an undated encounter is left out and listed in ``<sheet>.left-out.csv``, unless ``--undated-date``
  dates it); ``Encounter.decimalLatitude``/``decimalLongitude`` (both or neither, the mean of the located photos);
- ``Encounter.genus``/``specificEpithet`` (required): from the photos' species where it is a binomial ("Megaptera
  novaeangliae"); for the others ``--genus`` and ``--species``, and an export that would need a guess (a common
  name and no flags, or two common names) is refused, naming the flags;
- ``Encounter.submitterID`` (required; ``public`` unless ``--submitter`` names a user of the Wildbook);
- ``Encounter.sightingID``, ``Encounter.sightingRemarks`` (which whaleid encounter), ``Encounter.locationID``
  (with ``--location-id``; it must be one of the Wildbook's own).

A column with no value in any row is left out, as Wildbook's bulk-import guide asks.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from pathlib import Path
from typing import Optional

import numpy as np

NAMES = {"current": ("Encounter.sightingID", "Encounter.sightingRemarks"),
         "legacy": ("Encounter.occurrenceID", "Encounter.occurrenceRemarks")}
MEDIA = ("name", "relative")
SIGHTING_KM = 1.0  # photos of one day within this distance of one another (single linkage) are one sighting
BINOMIAL = re.compile(r"^([A-Z][a-z]+)[ _]([a-z][a-z-]+)$")
COMMON_NOUNS = {"whale", "whales", "dolphin", "dolpin", "porpoise", "seal", "shark", "ray", "orca"}


class ExportError(ValueError):
    """The sheet cannot be written as asked; nothing was written."""


def binomial(label) -> Optional[tuple]:
    """(genus, epithet) of a scientific name written "Genus epithet" (or with an underscore), else None."""
    m = BINOMIAL.match(str(label or "").strip())
    return (m[1], m[2]) if m and m[2] not in COMMON_NOUNS else None


def sheet(table, out: Path, media: str = "name", genus: Optional[str] = None, epithet: Optional[str] = None,
          location_id: str = "", submitter: str = "public", undated_date: Optional[str] = None,
          names: str = "current", copy_media: bool = False):
    """(the sheet as a DataFrame, the encounters left out as a DataFrame) of ``table`` (``Catalogue.identities``),
    for a sheet to be written at ``out``; with ``copy_media``, the photos are copied beside it."""
    import pandas as pd

    if media not in MEDIA or names not in NAMES:
        raise ExportError(f"--media must be one of {MEDIA} and --wildbook-names one of {tuple(NAMES)}")
    if undated_date is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", undated_date):
        raise ExportError(f"--undated-date must be YYYY-MM-DD, got {undated_date!r}")
    if not str(submitter or "").strip():
        raise ExportError("--submitter must name a user of the Wildbook, or be public (the importer needs one)")
    t = table[table["current_whale"].notna() & (table["current_whale"].astype(str) != "")].copy()
    t["current_whale"] = t["current_whale"].astype(str)
    day = t["date"].fillna("").astype(str).str[:10]
    t["day"] = day.where(day.str.match(r"^\d{4}-\d{2}-\d{2}$"), undated_date)
    lat = pd.to_numeric(t["latitude"], errors="coerce") if "latitude" in t else pd.Series(np.nan, index=t.index)
    lon = pd.to_numeric(t["longitude"], errors="coerce") if "longitude" in t else pd.Series(np.nan, index=t.index)
    located = lat.notna() & lon.notna() & lat.between(-90, 90) & lon.between(-180, 180)
    t["lat"], t["lon"] = lat.where(located), lon.where(located)
    t["sighting"] = sighting_ids(t["day"], t["lat"], t["lon"]).fillna("undated")
    enc = t["encounter_id"].fillna("").astype(str) if "encounter_id" in t else pd.Series("", index=t.index)
    t["encounter"] = enc.where(enc != "", t["current_whale"] + "_" + t["sighting"])
    t["species"] = t["species"].fillna("").astype(str).str.strip() if "species" in t else ""
    t["media"] = _media(t, out, media, copy_media)
    keys = ["current_whale", "encounter"]
    t = t.sort_values(keys + ["day"], kind="stable")
    groups = t.groupby(keys, sort=True)
    agg = groups.agg(day=("day", "min"), lat=("lat", "mean"), lon=("lon", "mean"), sighting=("sighting", "first"),
                     species=("species", lambda s: next((v for v in s if v), "")), photos=("media", "size"))
    undated = agg["day"].isna()
    left_out = pd.DataFrame({"whale_id": agg.index.get_level_values(0)[undated.to_numpy()],
                             "encounter": agg.index.get_level_values(1)[undated.to_numpy()],
                             "photos": agg["photos"][undated].to_numpy(),
                             "reason": "no date: Wildbook's importer needs a year (--undated-date YYYY-MM-DD dates them)"})
    t["n"] = groups.cumcount()
    assets = t.pivot(index=keys, columns="n", values="media").reindex(agg.index)
    assets.columns = [f"Encounter.mediaAsset{int(n)}" for n in assets.columns]
    keep = (~undated).to_numpy()
    agg, assets = agg[keep], assets[keep]
    taxa = _taxa(agg["species"], genus, epithet)
    day = agg["day"].astype(str)
    sighting_field, remarks_field = NAMES[names]
    frame = pd.DataFrame({"MarkedIndividual.individualID": agg.index.get_level_values(0),
                          "Encounter.year": day.str[:4].to_numpy(),
                          "Encounter.month": day.str[5:7].str.lstrip("0").to_numpy(),
                          "Encounter.day": day.str[8:10].str.lstrip("0").to_numpy(),
                          "Encounter.decimalLatitude": agg["lat"].round(6).to_numpy(),
                          "Encounter.decimalLongitude": agg["lon"].round(6).to_numpy(),
                          "Encounter.locationID": location_id or "",
                          "Encounter.genus": [g for g, _ in taxa], "Encounter.specificEpithet": [e for _, e in taxa],
                          "Encounter.submitterID": str(submitter).strip(),
                          sighting_field: agg["sighting"].to_numpy(),
                          remarks_field: ("whaleid encounter " + agg.index.get_level_values(1)).to_numpy()})
    frame = pd.concat([assets.reset_index(drop=True), frame], axis=1)
    frame = frame.astype(object).where(frame.notna(), "")
    empty = [c for c in frame.columns if frame[c].astype(str).str.strip().eq("").all()]
    return frame.drop(columns=empty), left_out


def sighting_ids(day, lat, lon, km: float = SIGHTING_KM):
    """Each photo's sighting: ``DAY-N`` for the N-th group of the day's located photos, a group being the photos
    within ``km`` of one another (single linkage, distances on the local flat projection), and ``DAY`` for the
    day's photos without a location; None without a day."""
    import pandas as pd

    out = pd.Series(day.to_numpy(), index=day.index, dtype=object)
    located = lat.notna() & lon.notna() & day.notna()
    for d, idx in lat[located].groupby(day[located]).groups.items():
        la, lo = lat[idx].to_numpy(float), lon[idx].to_numpy(float)
        y = la * 110.574
        x = lo * 111.320 * math.cos(math.radians(float(la.mean())))
        parent = list(range(len(idx)))

        def root(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        cells: dict = {}
        for i, (cx, cy) in enumerate(zip(np.floor(x / km).astype(int), np.floor(y / km).astype(int))):
            for dx in (-1, 0, 1):
                for dy in (-1, 0, 1):
                    for j in cells.get((cx + dx, cy + dy), ()):
                        if (x[i] - x[j]) ** 2 + (y[i] - y[j]) ** 2 <= km * km:
                            parent[root(i)] = root(j)
            cells.setdefault((cx, cy), []).append(i)
        number: dict = {}
        out[idx] = [f"{d}-{number.setdefault(root(i), len(number) + 1)}" for i in range(len(idx))]
    return out


def _taxa(species, genus: Optional[str], epithet: Optional[str]) -> list:
    """(genus, epithet) per encounter: its species' binomial, else the flags; refuses to guess."""
    out, need = [], set()
    for label in species:
        pair = binomial(label)
        if pair is None:
            need.add(label)
        out.append(pair)
    if need:
        if not (genus and epithet):
            shown = ", ".join(repr(x) for x in sorted(need)[:5]) or "none"
            raise ExportError(f"{sum(p is None for p in out)} encounters have no scientific species name (their "
                              f"species: {shown}); give --genus and --species (Encounter.genus, specificEpithet), "
                              "which Wildbook's importer requires; whaleid does not guess them")
        named = {x for x in need if x}
        if len(named) > 1:
            raise ExportError(f"encounters of several species without a scientific name ({', '.join(sorted(named))}): "
                              "--genus/--species would label them all one species; import and export one species at a "
                              "time (whaleid import --species)")
    return [p if p is not None else (genus, epithet) for p in out]


def _media(t, out: Path, media: str, copy: bool):
    """Each photo's media value: a file name unique in the sheet, or a path relative to the sheet's folder; with
    ``copy``, the photos copied into ``<sheet>_media/`` and named there."""
    paths = t["path"].astype(str)
    names = paths.map(lambda p: Path(p).name)
    shared = names.duplicated(keep=False) & ~paths.duplicated(keep=False)  # one name, several photos
    names = names.where(~shared, t["image_id"].astype(str) + "_" + names)
    if copy:
        folder = out.parent / f"{out.stem}_media"
        folder.mkdir(parents=True, exist_ok=True)
        for src, name in zip(paths, names):
            if Path(src).is_file() and not (folder / name).exists():
                shutil.copy2(src, folder / name)
        return (folder.name + "/" + names).to_numpy()
    if media == "relative":
        base = out.parent.resolve()
        return paths.map(lambda p: os.path.relpath(p, base)).to_numpy()
    return names.to_numpy()
