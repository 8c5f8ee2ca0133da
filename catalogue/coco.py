"""Reading a Wild Me COCO export (what Wildbook and WBIA write, and the form the public Beluga ID 2022 release on
LILA takes) into ``catalogue.importing.Record``s.

The export's layout, as wildlife-datasets reads it (``create_catalogue_wildme``,
https://github.com/WildlifeDatasets/wildlife-datasets): ``images`` with ``id``, ``file_name``, ``date_captured``
("NA" when unknown) and ``gps_lat_captured`` / ``gps_lon_captured`` (-1 when unknown); ``annotations`` with
``image_id``, ``bbox`` ([x, y, width, height] in pixels), ``viewpoint`` (a free label such as "up", "left",
"frontright"), ``name`` (the individual; "____" for an unknown one) and often ``uuid``. Exports differ: every
field is looked up in the annotation first and then in its image, under the key ``--field`` gives. An annotation
with no ``bbox`` but a polygon ``segmentation`` is cropped to the polygon's bounding box.
"""

from __future__ import annotations

import json
from pathlib import Path

from catalogue.importing import Record, SourceError

FIELDS = {"individual": "name", "viewpoint": "viewpoint", "bbox": "bbox", "file_name": "file_name",
          "date": "date_captured", "encounter": "encounter_id", "latitude": "gps_lat_captured",
          "longitude": "gps_lon_captured", "id": "uuid"}


def polygon_box(segmentation):
    """[x, y, width, height] around a COCO polygon segmentation ([[x1, y1, x2, y2, ...], ...]); None otherwise."""
    try:
        points = [float(v) for poly in segmentation for v in poly]
    except (TypeError, ValueError):
        return None
    xs, ys = points[0::2], points[1::2]
    if not xs or len(xs) != len(ys):
        return None
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def read_coco(path: Path, fields: dict | None = None) -> list:
    """One ``Record`` per annotation of the COCO file at ``path``, in the file's order. An annotation whose
    image is not among ``images`` is still a record (its photo then cannot be found, and the import names it)."""
    path = Path(path)
    unknown = set(fields or {}) - set(FIELDS)
    if unknown:
        raise SourceError(f"--field: unknown field(s) {sorted(unknown)}; fields are {sorted(FIELDS)}")
    key = dict(FIELDS, **(fields or {}))
    if not path.is_file():
        raise SourceError(f"{path}: no such file")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SourceError(f"{path}: not a readable JSON file: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list) \
            or not isinstance(data.get("images"), list):
        raise SourceError(f"{path}: not a COCO file (it needs lists 'images' and 'annotations')")
    images = {}
    for i, img in enumerate(data["images"]):
        if isinstance(img, dict) and "id" in img:
            images[str(img["id"])] = img
    records = []
    for i, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict):
            records.append(Record(row=f"annotation {i}", image="", problem="the annotation is not a JSON object"))
            continue
        img = images.get(str(ann.get("image_id")))
        row = f"annotation {i}" + (f" (id {ann['id']})" if "id" in ann else "")
        if img is None:
            records.append(Record(row=row, image="", problem=f"its image_id {ann.get('image_id')!r} is not among the "
                                                              "file's images"))
            continue

        def get(field, default=None):
            k = key[field]
            return ann[k] if k in ann else img.get(k, default)

        name = get("individual")
        if name is None and isinstance(ann.get("individual_ids"), list) and len(ann["individual_ids"]) == 1:
            name = ann["individual_ids"][0]
        ident = get("id")
        box = ann.get(key["bbox"])
        if box is None:  # some exports carry only the polygon: its bounding box, as wildlife-datasets takes it
            box = polygon_box(ann.get("segmentation"))
        records.append(Record(row=row, image=str(img.get(key["file_name"], "") or ""),
                              whale_id=None if name is None else str(name), viewpoint=str(get("viewpoint", "") or ""),
                              date=get("date", ""), encounter_id=str(get("encounter", "") or ""),
                              latitude=get("latitude"), longitude=get("longitude"), bbox=box,
                              image_id=str(ident) if ident else f"{Path(str(img.get(key['file_name'], 'photo'))).stem}"
                                                                f"-a{ann.get('id', i)}"))
    return records
