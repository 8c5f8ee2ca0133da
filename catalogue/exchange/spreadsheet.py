"""Reading a plain table of photos (CSV or tab-separated, one row per photo or per box) into
``catalogue.exchange.importing.Record``s, by a map from whaleid's fields to the table's column names."""

from __future__ import annotations

from pathlib import Path

from catalogue.exchange.importing import Record, SourceError

TABLE_FIELDS = ("path", "image_id", "whale_id", "viewpoint", "date", "encounter_id", "latitude", "longitude", "bbox",
                "theta", "species")


# the column names of the published tables users come from, used when the table has no column of the field's own
# name and --map does not name one: Happywhale's train.csv (image, species, individual_id) and the Kaggle humpback
# set's train.csv (Image, Id), as WildlifeDatasets' wildlife-datasets readers take them
ALIASES = {"path": ("image", "Image", "file_name", "filename"), "whale_id": ("individual_id", "Id")}


def read_table(table: Path, mapping: dict, keep=()) -> list:
    """Records from a CSV (or tab-separated) table; ``mapping`` names its column for each of TABLE_FIELDS
    (default: the field's own name where the table has it); ``keep``: other columns carried as they are into the
    survey's metadata.csv."""
    import pandas as pd

    table = Path(table)
    if not table.is_file():
        raise SourceError(f"{table}: no such file")
    unknown = set(mapping) - set(TABLE_FIELDS)
    if unknown:
        raise SourceError(f"--map: unknown field(s) {sorted(unknown)}; fields are {TABLE_FIELDS}")
    try:
        frame = pd.read_csv(table, dtype=str, keep_default_na=False, sep=None, engine="python")
    except Exception as exc:
        raise SourceError(f"{table}: cannot parse as CSV: {exc}") from exc
    cols = {f: mapping.get(f, f) for f in TABLE_FIELDS}
    for f, names in ALIASES.items():  # a published table's own column names, where --map does not say
        found = [c for c in names if c in frame.columns]
        if f not in mapping and cols[f] not in frame.columns and len(found) == 1:
            cols[f] = found[0]
    missing = [f"{f}={c}" for f, c in cols.items() if f in mapping and c not in frame.columns]
    if missing or cols["path"] not in frame.columns:
        raise SourceError(f"{table}: no column for {missing or ['path=' + cols['path']]}; it has {list(frame.columns)}")
    absent = [c for c in keep if c not in frame.columns]
    if absent:
        raise SourceError(f"{table}: --keep names columns it does not have: {absent}; it has {list(frame.columns)}")
    get = {f: (frame[c].tolist() if c in frame.columns else [None] * len(frame)) for f, c in cols.items()}
    kept = {c: frame[c].tolist() for c in keep}
    return [Record(row=f"row {i + 2}", image=get["path"][i], whale_id=get["whale_id"][i] or None,
                   viewpoint=get["viewpoint"][i] or "", date=get["date"][i] or "", encounter_id=get["encounter_id"][i] or "",
                   latitude=get["latitude"][i], longitude=get["longitude"][i], bbox=get["bbox"][i],
                   theta=get["theta"][i] or 0.0, species=get["species"][i] or "", image_id=get["image_id"][i] or "",
                   extra={c: v[i] for c, v in kept.items()})
            for i in range(len(frame))]
