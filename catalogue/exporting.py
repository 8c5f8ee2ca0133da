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

import re
from pathlib import Path

import numpy as np

PERIODS = {"year": "Y", "month": "M", "week": "W", "day": "D"}
# OWASP "CSV Injection": a cell a spreadsheet would read as a formula begins with one of these (after any spaces);
# full-width forms too, which some spreadsheets fold. Such a text cell is written behind a single quote.
FORMULA_START = tuple("=+-@\t\r") + ("\uff1d", "\uff0b", "\uff0d", "\uff20")
PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def safe_text(value):
    """``value`` as a spreadsheet will show it, never run it: a text beginning (after spaces) with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return gets a leading ``'``; numbers, and texts that are plain numbers, stay."""
    if not isinstance(value, str) or PLAIN_NUMBER.match(value.strip()):
        return value
    return "'" + value if value.lstrip(" ").startswith(FORMULA_START) else value


def safe_cells(frame):
    """``frame`` with every text cell (and column name) through ``safe_text``, for a CSV a spreadsheet opens."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    out = frame.copy()
    for col in out.columns:
        if not (is_numeric_dtype(out[col]) or is_bool_dtype(out[col])):
            out[col] = out[col].astype(object).map(safe_text)
    out.columns = [safe_text(c) if isinstance(c, str) else c for c in out.columns]
    return out


def mark_comment(text) -> str:
    """``text`` safe inside a Program MARK ``/* ... */`` comment: no ``*/`` or ``/*`` (which would end the comment
    and let the rest be read as a capture history), no line breaks or control characters."""
    text = re.sub(r"[\x00-\x1f\x7f\u2028\u2029]", " ", str(text))
    while "*/" in text or "/*" in text:
        text = text.replace("*/", "*_/").replace("/*", "/_*")
    return text


def identities(cat):
    """The photos of catalogue ``cat`` with their identity now (no embeddings): the searchable photos and the
    reviewed photos not applied yet, ``current_whale`` following merges."""
    import pandas as pd

    table, _ = cat.photos()
    state, known = cat.state(), set(table["image_id"])
    table["current_whale"] = [state["alias"].get(w, w) for w in table["whale_id"]]
    decided = pd.DataFrame([{"image_id": q, "whale_id": None, "encounter_id": p["encounter_id"],
                             "viewpoint": p["viewpoint"], "date": p["date"], "path": p["path"], "batch": p["batch"],
                             "latitude": p["latitude"], "longitude": p["longitude"],
                             "current_whale": state["assigned"][q]}
                            for p in cat.proposals() for q in [p["image_id"]]
                            if q in state["assigned"] and q not in known])
    return pd.concat([table, decided], ignore_index=True) if len(decided) else table


def encounter_key(frame):
    """Each photo's encounter: its encounter_id, else its whale and day."""
    enc = frame["encounter_id"].fillna("").astype(str)
    return enc.where(enc != "", frame["current_whale"].astype(str) + "_" + frame["date"].fillna("").astype(str))


def wildbook(table, media: str = "name", genus: str = "Delphinapterus", species: str = "leucas",
             location_id: str = "", submitter: str = ""):
    """The Wildbook bulk-import sheet of ``table`` (``Catalogue.identities``) as a DataFrame."""
    import pandas as pd

    t = table[table["current_whale"].notna() & (table["current_whale"].astype(str) != "")].copy()
    t["current_whale"] = t["current_whale"].astype(str)
    t["encounter"] = encounter_key(t)
    lat = pd.to_numeric(t["latitude"], errors="coerce") if "latitude" in t else pd.Series(np.nan, index=t.index)
    lon = pd.to_numeric(t["longitude"], errors="coerce") if "longitude" in t else pd.Series(np.nan, index=t.index)
    located = lat.notna() & lon.notna()  # a photo's location counts only with both coordinates
    t["lat"], t["lon"] = lat.where(located), lon.where(located)
    day = t["date"].fillna("").astype(str).str[:10]
    t["day"] = day.where(day.str.match(r"^\d{4}-\d{2}-\d{2}$"))
    t["media"] = t["path"].astype(str).map(lambda p: Path(p).name) if media == "name" else t["path"].astype(str)
    keys = ["current_whale", "encounter"]
    t = t.sort_values(keys, kind="stable")
    groups = t.groupby(keys, sort=True)
    agg = groups.agg(day=("day", "min"), lat=("lat", "mean"), lon=("lon", "mean"))
    t["n"] = groups.cumcount()
    assets = t.pivot(index=keys, columns="n", values="media").reindex(agg.index)
    assets.columns = [f"Encounter.mediaAsset{int(n)}" for n in assets.columns]
    day = agg["day"].fillna("")
    frame = pd.DataFrame({"MarkedIndividual.individualID": agg.index.get_level_values(0),
                          "Encounter.year": day.str[:4].to_numpy(),
                          "Encounter.month": day.str[5:7].str.lstrip("0").to_numpy(),
                          "Encounter.day": day.str[8:10].str.lstrip("0").to_numpy(),
                          "Encounter.decimalLatitude": agg["lat"].round(6).to_numpy(),
                          "Encounter.decimalLongitude": agg["lon"].round(6).to_numpy(),
                          "Encounter.locationID": location_id, "Encounter.genus": genus,
                          "Encounter.specificEpithet": species,
                          "Encounter.occurrenceRemarks": ("whaleid encounter " + agg.index.get_level_values(1)).to_numpy()})
    if submitter:
        frame["Encounter.submitterID"] = submitter
    frame = pd.concat([assets.reset_index(drop=True), frame], axis=1)
    return frame.astype(object).where(frame.notna(), "")


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


def plain(cat, path, fmt=None) -> Path:
    """The photos and identities (no embeddings) as ``fmt``: csv (text cells ``safe_cells``) or json (with the meta
    and the decisions; default for a .json ``path``)."""
    import json

    table, path = cat.identities(), Path(path)
    if (fmt or ("json" if path.suffix == ".json" else "csv")) == "json":
        path.write_text(json.dumps({"meta": cat.meta, "photos": table.to_dict(orient="records"),
                                    "decisions": cat.decisions()}, indent=1, default=str))
    else:
        safe_cells(table).to_csv(path, index=False)
    return path


def write(cat, out: Path, fmt: str, period: str = "year", media: str = "name", genus: str = "Delphinapterus",
          species: str = "leucas", location_id: str = "", submitter: str = "") -> str:
    """Export ``cat`` to ``out`` in ``fmt``; returns the line to print."""
    out = Path(out)
    if fmt in ("csv", "json"):
        return str(cat.export(out, fmt))
    table = cat.identities()
    tmp = out.with_name(out.name + ".tmp")
    if fmt == "wildbook":
        sheet = wildbook(table, media, genus, species, location_id, submitter)
        safe_cells(sheet).to_csv(tmp, index=False)
        tmp.replace(out)
        return f"{out}: {len(sheet)} encounters of {sheet['MarkedIndividual.individualID'].nunique() if len(sheet) else 0} " \
               "whales, Wildbook bulk-import columns"
    hist, undated = capture_history(table, period)
    if out.suffix == ".inp":
        tmp.write_text("".join(f"/* {mark_comment(w)} */ {ch} 1;\n" for w, ch in zip(hist["whale_id"], hist["ch"])))
    else:
        safe_cells(hist).to_csv(tmp, index=False)
    tmp.replace(out)
    note = f"; {undated} photos without a date left out" if undated else ""
    return f"{out}: capture histories of {len(hist)} whales over {len(hist.columns) - 3} occasions (by {period}){note}"
