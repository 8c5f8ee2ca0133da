"""Photo-ID data out: the catalogue's identities as CSV or JSON, as a Wildbook bulk-import sheet
(``catalogue.exchange.wildbook``), or as capture histories.

``--format capture-history``: one row per whale and one column per sampling occasion (1: photographed in it),
occasions being the periods (``--period year|month|week|day``) in which any catalogue photo was taken, and
``ch``, the history as one string of 0s and 1s, the form mark-recapture packages read (R's ``marked`` and
``RMark`` take a data frame with a character column ``ch``; Program MARK an ``.inp`` file, written when the
output ends in ``.inp``: ``/* whale */ 0101 1;`` per whale). Photos without a date cannot be placed and are
counted, not guessed.

Every CSV written here goes through ``safe_cells``: a spreadsheet opens it without running a formula.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from catalogue.records.cells import mark_comment, safe_cells
from catalogue.records.current import identities

PERIODS = {"year": "Y", "month": "M", "week": "W", "day": "D"}


def encounter_key(frame):
    """Each photo's encounter: its encounter_id, else its whale and day."""
    enc = frame["encounter_id"].fillna("").astype(str)
    return enc.where(enc != "", frame["current_whale"].astype(str) + "_" + frame["date"].fillna("").astype(str))


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

    table, path = identities(cat), Path(path)
    if (fmt or ("json" if path.suffix == ".json" else "csv")) == "json":
        path.write_text(json.dumps({"meta": cat.meta, "photos": table.to_dict(orient="records"),
                                    "decisions": cat.decisions()}, indent=1, default=str))
    else:
        safe_cells(table).to_csv(path, index=False)
    return path


def write(cat, out: Path, fmt: str, period: str = "year", media: str = "name", genus=None, species=None,
          location_id: str = "", submitter: str = "public", undated_date=None, names: str = "current",
          copy_media: bool = False) -> str:
    """Export ``cat`` to ``out`` in ``fmt``; returns the lines to print."""
    out = Path(out)
    if fmt in ("csv", "json"):
        return str(plain(cat, out, fmt))
    table = identities(cat)
    tmp = out.with_name(out.name + ".tmp")
    if fmt == "wildbook":
        from catalogue.exchange.wildbook import sheet as wildbook_sheet

        frame, left_out = wildbook_sheet(table, out, media, genus, species, location_id, submitter, undated_date, names,
                                         copy_media)
        safe_cells(frame).to_csv(tmp, index=False)
        tmp.replace(out)
        listed = out.with_name(out.stem + ".left-out.csv")
        if len(left_out):
            safe_cells(left_out).to_csv(listed, index=False)
        elif listed.exists():
            listed.unlink()
        whales = frame["MarkedIndividual.individualID"].nunique() if len(frame) else 0
        note = (f"\n{len(left_out)} encounters ({int(left_out['photos'].sum())} photos) without a date left out, "
                f"listed in {listed} (--undated-date dates them)") if len(left_out) else ""
        return f"{out}: {len(frame)} encounters of {whales} whales, Wildbook bulk-import columns ({names} names){note}"
    hist, undated = capture_history(table, period)
    if out.suffix == ".inp":
        tmp.write_text("".join(f"/* {mark_comment(w)} */ {ch} 1;\n" for w, ch in zip(hist["whale_id"], hist["ch"])))
    else:
        safe_cells(hist).to_csv(tmp, index=False)
    tmp.replace(out)
    note = f"; {undated} photos without a date left out" if undated else ""
    return f"{out}: capture histories of {len(hist)} whales over {len(hist.columns) - 3} occasions (by {period}){note}"


def add_parser(cat, run) -> None:
    """``whaleid catalogue export``'s arguments (``run`` does the work)."""
    e = cat.add_parser("export", help="the photos and identities as CSV or JSON (with the decisions), a Wildbook "
                       "bulk-import sheet, or capture histories for mark-recapture")
    e.add_argument("--db", type=Path, required=True)
    e.add_argument("--out", type=Path, required=True, help="the file to write (capture-history to .inp: Program MARK)")
    e.add_argument("--format", choices=("csv", "json", "wildbook", "capture-history"),
                   help="default: json for a .json file, else csv")
    e.add_argument("--period", default="year", choices=("year", "month", "week", "day"),
                   help="capture-history: one sampling occasion per period with photos")
    e.add_argument("--media", choices=("name", "relative"), default="name", help="wildbook: the photos as file names "
                   "(uploaded with the sheet) or as paths relative to the sheet's folder")
    e.add_argument("--copy-media", action="store_true", help="wildbook: copy the photos into <sheet>_media/ beside it")
    e.add_argument("--genus", help="wildbook: Encounter.genus where the photos' species is not a scientific name")
    e.add_argument("--species", help="wildbook: Encounter.specificEpithet, with --genus")
    e.add_argument("--location-id", default="", help="wildbook: Encounter.locationID (one of the Wildbook's own)")
    e.add_argument("--submitter", default="public", help="wildbook: Encounter.submitterID, a user of the Wildbook "
                   "(default: public)")
    e.add_argument("--undated-date", help="wildbook: YYYY-MM-DD given to photos without a date (default: their "
                   "encounters are left out and listed in <sheet>.left-out.csv)")
    e.add_argument("--wildbook-names", choices=("current", "legacy"), default="current", help="wildbook: the field "
                   "names of Wildbook's current bulk import (sighting) or of older releases (occurrence)")
    e.set_defaults(func=run)
