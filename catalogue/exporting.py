"""Photo-ID data out: the catalogue's identities as a Wildbook bulk-import sheet or as capture histories.

``--format wildbook``: one row per encounter (a whale seen at one time: the photos' ``encounter_id``, else the
whale and the day), with Wildbook's bulk-import column names (the standard import of Wild Me's Wildbook,
https://github.com/WildMeOrg/Wildbook): ``Encounter.mediaAsset0``, ``Encounter.mediaAsset1``, ... (the photos'
file names, which the import matches against the photos uploaded with the sheet), ``MarkedIndividual.individualID``,
``Encounter.year`` / ``.month`` / ``.day``, ``Encounter.decimalLatitude`` / ``.decimalLongitude`` (the mean of the
encounter's photos that have a location), ``Encounter.locationID``, ``Encounter.genus`` and
``Encounter.specificEpithet`` (Delphinapterus leucas, the beluga, unless told), ``Encounter.occurrenceRemarks``.

``--format capture-history``: one row per whale and one column per sampling occasion (1: photographed in it),
occasions being the periods (``--period year|month|week|day``) in which any catalogue photo was taken, and
``ch``, the history as one string of 0s and 1s, the form mark-recapture packages read (R's ``marked`` and
``RMark`` take a data frame with a character column ``ch``; Program MARK an ``.inp`` file, written when the
output ends in ``.inp``: ``/* whale */ 0101 1;`` per whale). Photos without a date cannot be placed and are
counted, not guessed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PERIODS = {"year": "Y", "month": "M", "week": "W", "day": "D"}


def encounter_key(frame):
    """Each photo's encounter: its encounter_id, else its whale and day."""
    enc = frame["encounter_id"].fillna("").astype(str)
    return enc.where(enc != "", frame["current_whale"].astype(str) + "_" + frame["date"].fillna("").astype(str))


def wildbook(table, media: str = "name", genus: str = "Delphinapterus", species: str = "leucas",
             location_id: str = "", submitter: str = ""):
    """The Wildbook bulk-import sheet of ``table`` (``Catalogue.identities``) as a DataFrame."""
    import pandas as pd

    table = table[table["current_whale"].notna() & (table["current_whale"].astype(str) != "")].copy()
    table["encounter"] = encounter_key(table)
    rows = []
    for (whale, enc), group in table.groupby(["current_whale", "encounter"], sort=True):
        dates = sorted(d for d in group["date"].fillna("").astype(str) if len(d) >= 10)
        y, m, d = (dates[0][:4], dates[0][5:7], dates[0][8:10]) if dates else ("", "", "")
        lat = pd.to_numeric(group["latitude"], errors="coerce") if "latitude" in group else pd.Series(dtype=float)
        lon = pd.to_numeric(group["longitude"], errors="coerce") if "longitude" in group else pd.Series(dtype=float)
        where = lat.notna() & lon.notna()
        row = {"MarkedIndividual.individualID": whale, "Encounter.year": y, "Encounter.month": m.lstrip("0"),
               "Encounter.day": d.lstrip("0"),
               "Encounter.decimalLatitude": round(float(lat[where].mean()), 6) if where.any() else "",
               "Encounter.decimalLongitude": round(float(lon[where].mean()), 6) if where.any() else "",
               "Encounter.locationID": location_id, "Encounter.genus": genus, "Encounter.specificEpithet": species,
               "Encounter.occurrenceRemarks": f"whaleid encounter {enc}"}
        if submitter:
            row["Encounter.submitterID"] = submitter
        for i, path in enumerate(group["path"].astype(str)):
            row[f"Encounter.mediaAsset{i}"] = Path(path).name if media == "name" else path
        rows.append(row)
    frame = pd.DataFrame(rows)
    media_cols = sorted((c for c in frame.columns if c.startswith("Encounter.mediaAsset")),
                        key=lambda c: int(c[len("Encounter.mediaAsset"):]))
    return frame[media_cols + [c for c in frame.columns if c not in media_cols]].fillna("")


def capture_history(table, period: str = "year"):
    """(capture-history DataFrame: whale_id, ch, one 0/1 column per occasion, captures; photos without a date)."""
    import pandas as pd

    if period not in PERIODS:
        raise ValueError(f"--period must be one of {sorted(PERIODS)}, got {period!r}")
    table = table[table["current_whale"].notna() & (table["current_whale"].astype(str) != "")]
    when = pd.to_datetime(table["date"], errors="coerce", format="%Y-%m-%d")
    undated = int(when.isna().sum())
    dated = table[when.notna()]
    occasion = when[when.notna()].dt.to_period(PERIODS[period]).astype(str)
    occasions = sorted(set(occasion))
    seen = pd.crosstab(dated["current_whale"].astype(str), occasion).reindex(columns=occasions, fill_value=0)
    hist = (seen > 0).astype(int)
    out = pd.DataFrame({"whale_id": hist.index, "ch": ["".join(map(str, r)) for r in hist.to_numpy()]})
    out = pd.concat([out, hist.reset_index(drop=True)], axis=1)
    out["captures"] = hist.to_numpy().sum(1) if len(hist) else np.zeros(0, int)
    return out.sort_values("whale_id").reset_index(drop=True), undated


def write(cat, out: Path, fmt: str, period: str = "year", media: str = "name", genus: str = "Delphinapterus",
          species: str = "leucas", location_id: str = "", submitter: str = "") -> str:
    """Export ``cat`` to ``out`` in ``fmt``; returns the line to print."""
    out = Path(out)
    if fmt in ("csv", "json"):
        if out.suffix != f".{fmt}":
            out = out.with_suffix(f".{fmt}") if out.suffix in (".csv", ".json") else out
        return str(cat.export(out))
    table = cat.identities()
    tmp = out.with_name(out.name + ".tmp")
    if fmt == "wildbook":
        sheet = wildbook(table, media, genus, species, location_id, submitter)
        sheet.to_csv(tmp, index=False)
        tmp.replace(out)
        return f"{out}: {len(sheet)} encounters of {sheet['MarkedIndividual.individualID'].nunique() if len(sheet) else 0} " \
               "whales, Wildbook bulk-import columns"
    hist, undated = capture_history(table, period)
    if out.suffix == ".inp":
        tmp.write_text("".join(f"/* {w} */ {ch} 1;\n" for w, ch in zip(hist["whale_id"], hist["ch"])))
    else:
        hist.to_csv(tmp, index=False)
    tmp.replace(out)
    note = f"; {undated} photos without a date left out" if undated else ""
    return f"{out}: capture histories of {len(hist)} whales over {len(hist.columns) - 3} occasions (by {period}){note}"
