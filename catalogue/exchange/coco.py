"""Reading a Wild Me COCO export (what Wildbook and WBIA write, and the form the public Beluga ID 2022 release on
LILA takes) into ``catalogue.exchange.importing.Record``s.

The fields, as Wild Me's exporter writes them (WildMeOrg/wildbook-ia, ``wbia/other/detectcore.py``,
``export_to_coco``) and WildlifeDatasets' ``create_catalogue_wildme`` reads them: ``images`` with ``id``,
``file_name``, ``date_captured`` ("NA" when unknown) and ``gps_lat_captured`` / ``gps_lon_captured`` (-1 when
unknown, sometimes text); ``categories`` naming each ``category_id``'s species; ``annotations`` with ``image_id``,
``bbox`` ([x, y, width, height] in pixels, before rotation), ``theta`` (the rotation in radians about the box's
centre), ``segmentation`` (the rotated box as a polygon), ``segmentation_bbox`` (its outer box), ``viewpoint`` (a
free label such as "up", "left", "frontright"), ``name`` (the individual; "____" for an unknown one),
``individual_ids`` and ``uuid``; and ``parts`` (a fluke, a head: each with ``annot_id``, the annotation it is part
of). Exports differ: every field is looked up in the annotation first and then in its image, under the key
``--field`` gives.

- **The box**: ``bbox`` with its ``theta`` (cut as ``--rotated`` says, ``catalogue.exchange.crops``); without ``bbox``,
  ``segmentation_bbox`` (already the outer box: no rotation); without either, the polygon ``segmentation``'s box.
- **The individual** is ``name`` alone. ``individual_ids`` lists the *annotation* ids of the animals seen with this
  one (Wild Me's exporter fills it from the annotation's image), not an individual's id: it is not read.
- **Parts** (the file's ``parts`` list, or an annotation naming its whole in ``annot_id`` or ``parent_id``) are
  not whole animals: each is skipped and named.
- **Species**: the annotation's ``species`` if it has one, else its category's name.
"""

from __future__ import annotations

import json
from pathlib import Path

from catalogue.exchange.importing import Record, SourceError

FIELDS = {"individual": "name", "viewpoint": "viewpoint", "bbox": "bbox", "file_name": "file_name",
          "date": "date_captured", "encounter": "encounter_id", "latitude": "gps_lat_captured",
          "longitude": "gps_lon_captured", "id": "uuid", "theta": "theta", "species": "species"}
PARENT_KEYS = ("annot_id", "parent_id")  # an annotation that names its whole is a part


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
    categories = {str(c.get("id")): c.get("name") for c in data.get("categories") or [] if isinstance(c, dict)}
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
        parent = next((ann[k] for k in PARENT_KEYS if ann.get(k) is not None), None)
        if parent is not None:
            records.append(Record(row=row, image=str(img.get(key["file_name"], "") or ""),
                                  problem=f"a part of annotation {parent}, not a whole animal"))
            continue

        def get(field, default=None):
            k = key[field]
            return ann[k] if k in ann else img.get(k, default)

        name = get("individual")
        ident = get("id")
        box, theta = ann.get(key["bbox"]), get("theta", 0.0)
        if box is None:  # the outer box of the rotated box: axis-aligned already
            box, theta = ann.get("segmentation_bbox"), 0.0
        if box is None:  # some exports carry only the polygon: its bounding box, as wildlife-datasets takes it
            box = polygon_box(ann.get("segmentation"))
        species = get("species")
        if species is None:
            species = categories.get(str(ann.get("category_id")))
        records.append(Record(row=row, image=str(img.get(key["file_name"], "") or ""),
                              whale_id=None if name is None else str(name), viewpoint=str(get("viewpoint", "") or ""),
                              date=get("date", ""), encounter_id=str(get("encounter", "") or ""),
                              latitude=get("latitude"), longitude=get("longitude"), bbox=box, theta=theta,
                              species="" if species is None else str(species),
                              image_id=str(ident) if ident else f"{Path(str(img.get(key['file_name'], 'photo'))).stem}"
                                                                f"-a{ann.get('id', i)}"))
    for j, part in enumerate(data.get("parts") or []):
        whole = part.get("annot_id") if isinstance(part, dict) else None
        img = images.get(str(part.get("image_id"))) if isinstance(part, dict) else None
        records.append(Record(row=f"part {j}" + (f" (id {part['id']})" if isinstance(part, dict) and "id" in part
                                                 else ""),
                              image=str((img or {}).get(key["file_name"], "") or ""),
                              problem=f"a part of annotation {whole}, not a whole animal"))
    return records
