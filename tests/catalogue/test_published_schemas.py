"""Import and export against the published schemas, not our own fixture. The files here are written by these tests
from the field lists of the tools users come from (none is copied from them):

- a Wild Me COCO export as WildMeOrg/wildbook-ia ``wbia/other/detectcore.py`` ``export_to_coco`` writes it:
  ``images`` (``file_name``, ``date_captured`` with ``NA``, ``gps_lat_captured``/``gps_lon_captured`` as text, -1
  for none), ``categories`` (the species), ``annotations`` (``bbox`` before rotation, ``theta`` in radians about the
  box's centre, ``segmentation`` the rotated polygon, ``segmentation_bbox`` its outer box, ``viewpoint`` such as
  ``up``, ``upleft``, ``front``, ``name`` with ``____`` for an unknown animal, ``individual_ids`` the annotation ids
  of the image's animals, ``uuid``, ``category_id``) and ``parts`` (with ``annot_id``, the whole they belong to);
- a Happywhale ``train.csv`` (``image,species,individual_id``: 30 species labels in the Kaggle "Happywhale" set,
  as WildlifeDatasets/wildlife-datasets' ``HappyWhale`` reader reads it);
- a Kaggle humpback ``train.csv`` (``Image,Id``, ``new_whale`` for an animal not identified, as wildlife-datasets'
  ``HumpbackWhaleID`` reader treats it);

and every Wildbook sheet written is checked by ``tests/catalogue/wildbook_rules.py``, the importer's own rules.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from catalogue.exchange.crops import corners, outer_box
from catalogue.records.store import Catalogue
from tests.catalogue.wildbook_rules import check as check_sheet

BRIGHT = 200


def animal_photo(path: Path, size, box, theta, seed: int) -> None:
    """A dark, noisy photo with one bright rotated rectangle: the animal of annotation ``box``/``theta``."""
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 60, (size[1], size[0], 3), dtype=np.uint8))
    ImageDraw.Draw(img).polygon(corners(box, theta), fill=(255, 255, 255))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=98)


def wildme_export(root: Path) -> dict:
    """A Wild Me beluga COCO file and its photos under ``root/images``; returns what each annotation should become."""
    images, anns, expect = [], [], {}
    size = (320, 240)
    rows = [  # name, viewpoint, bbox, theta, date, gps
        ("beluga-0001", "up", [100, 90, 120, 40], 0.0, "2019-08-03 14:22:10", ("61.215200", "-149.900100")),
        ("beluga-0001", "upleft", [110, 100, 110, 36], 0.7, "2019-08-03 14:25:00", ("61.215300", "-149.900200")),
        ("beluga-0002", "up", [90, 80, 140, 44], -1.1, "NA", ("-1.000000", "-1.000000")),
        ("beluga-0003", "up", [120, 95, 100, 34], 2.6, "2020-07-21 09:01:00", ("61.3", "-150.1")),
        ("____", "up", [105, 85, 115, 40], 0.4, "2020-07-21 09:05:00", ("-1", "-1")),
        (None, "up", [100, 90, 120, 40], 0.0, "2020-07-21 09:06:00", ("-1", "-1")),  # no name, individual_ids [55]
        ("beluga-0004", "front", [100, 90, 120, 40], 0.0, "2020-07-22 10:00:00", ("-1", "-1")),
    ]
    for i, (name, view, box, theta, date, (lat, lon)) in enumerate(rows):
        file = f"images/{i:03d}.jpg"
        animal_photo(root / file, size, box, theta, i)
        images.append({"id": i + 1, "file_name": file, "width": size[0], "height": size[1], "date_captured": date,
                       "gps_lat_captured": lat, "gps_lon_captured": lon, "uuid": f"img-{i}"})
        x, y, w, h = outer_box(box, theta)
        ann = {"bbox": box, "theta": theta, "viewpoint": view,
               "segmentation": [[round(v) for pt in corners(box, theta) for v in pt]],
               "segmentation_bbox": [max(0, round(x)), max(0, round(y)), round(w), round(h)], "area": round(w * h),
               "iscrowd": 0, "id": 50 + i, "image_id": i + 1, "category_id": 0, "uuid": f"ann-{i}",
               "individual_ids": [50 + i], "isinterest": 0}  # a lone animal: its own annotation id
        if name is not None:
            ann["name"] = name
        anns.append(ann)
        expect[f"ann-{i}"] = (name, view, box, theta)
    parts = [{"bbox": [150, 95, 30, 20], "theta": 0.0, "viewpoint": "up", "id": 7, "image_id": 1, "category_id": 0,
              "uuid": "part-0", "annot_id": 50, "individual_ids": [50]}]
    (root / "annotations.json").write_text(json.dumps({
        "info": {"description": "Wild Me beluga Dataset"}, "licenses": [],
        "categories": [{"id": 0, "name": "beluga_whale", "supercategory": "animal"}],
        "images": images, "annotations": anns, "parts": parts}))
    return expect


@pytest.fixture(scope="module")
def wildme(tmp_path_factory):
    root = tmp_path_factory.mktemp("wildme")
    return root, wildme_export(root)


def bright_pixels(path: Path) -> int:
    return int((np.asarray(Image.open(path).convert("L")) > BRIGHT).sum())


@pytest.mark.parametrize("rotated", ["upright", "outer"])
def test_a_wild_me_coco_export_imports_as_its_exporter_means_it(wildme, tmp_path, rotated):
    from catalogue.cli import main

    root, expect = wildme
    out = tmp_path / "survey"
    assert main(["import", "coco", str(root / "annotations.json"), "--images", str(root), "--out", str(out),
                 "--margin", "0.05", "--rotated", rotated]) == 0
    meta = pd.read_csv(out / "metadata.csv", dtype=str, keep_default_na=False)
    loose = pd.read_csv(out / "unidentified" / "metadata.csv", dtype=str, keep_default_na=False)
    skipped = pd.read_csv(out / "skipped.csv", dtype=str, keep_default_na=False)
    assert sorted(meta.image_id) == ["ann-0", "ann-1", "ann-2", "ann-3"]
    assert set(meta.whale_id) == {"beluga-0001", "beluga-0002", "beluga-0003"}  # individual_ids never a whale
    assert sorted(loose.image_id) == ["ann-4", "ann-5"]  # "____", and an annotation with no name
    reasons = dict(zip(skipped.source_row, skipped.reason))
    assert any("front" in r for r in reasons.values()) and any(k.startswith("part 0") and "part of annotation 50" in r
                                                                for k, r in reasons.items())
    assert set(meta.species) == {"beluga_whale"}
    by_id = meta.set_index("image_id")
    assert by_id.loc["ann-2", "date"] == "" and by_id.loc["ann-2", "latitude"] == ""  # NA and -1: none
    assert float(by_id.loc["ann-3", "latitude"]) == pytest.approx(61.3)
    for image_id, row in pd.concat([meta, loose]).set_index("image_id").iterrows():
        _, _, box, theta = expect[image_id]
        folder = out if image_id in set(meta.image_id) else out / "unidentified"
        whole = bright_pixels(root / f"images/{int(image_id[4:]):03d}.jpg")
        kept = bright_pixels(folder / row.path)
        # the crop holds the whole rotated box: (almost) every bright pixel of the animal, whichever way it is cut
        assert kept >= 0.97 * whole, (image_id, rotated, kept, whole)
        if theta and rotated == "upright":
            w, h = Image.open(folder / row.path).size
            assert (w, h) == (math.ceil(box[2] * 1.1), math.ceil(box[3] * 1.1)) or abs(w - box[2] * 1.1) <= 2
            assert "upright" in row.note


def test_theta_ignored_loses_most_of_a_rotated_animal(wildme):
    """What the reader did before: the bbox alone, cut without its rotation, keeps part of the animal."""
    root, expect = wildme
    _, _, box, theta = expect["ann-2"]
    photo = Image.open(root / "images/002.jpg")
    x, y, w, h = box
    cut = photo.crop((x, y, x + w, y + h))
    assert (np.asarray(cut.convert("L")) > BRIGHT).sum() < 0.8 * bright_pixels(root / "images/002.jpg")


def happywhale_table(root: Path) -> pd.DataFrame:
    rows = []
    for i, (species, whale) in enumerate([("humpback_whale", "a1b2c3d4e5f6"), ("humpback_whale", "a1b2c3d4e5f6"),
                                          ("humpback_whale", "0f9e8d7c6b5a"), ("beluga", "1234abcd5678"),
                                          ("killer_whale", "fedcba987654"), ("bottlenose_dolpin", "aa11bb22cc33")]):
        name = f"{i:014x}.jpg"
        animal_photo(root / "train_images" / name, (200, 120), [40, 30, 110, 50], 0.0, 100 + i)
        rows.append({"image": name, "species": species, "individual_id": whale})
    table = pd.DataFrame(rows)
    table.to_csv(root / "train.csv", index=False)
    return table


def test_a_happywhale_table_imports_one_species_on_request(tmp_path):
    from catalogue.cli import main

    table = happywhale_table(tmp_path)
    args = ["import", "csv", str(tmp_path / "train.csv"), "--images", str(tmp_path / "train_images"),
            "--unmapped-viewpoint", "top"]  # image and individual_id are known column names: no --map needed
    assert main(args + ["--out", str(tmp_path / "all")]) == 0
    every = pd.read_csv(tmp_path / "all" / "metadata.csv", dtype=str)
    assert sorted(every.species) == sorted(table.species)  # kept, not dropped
    assert main(args + ["--out", str(tmp_path / "humpback"), "--species", "humpback_whale"]) == 0
    meta = pd.read_csv(tmp_path / "humpback" / "metadata.csv", dtype=str)
    skipped = pd.read_csv(tmp_path / "humpback" / "skipped.csv", dtype=str)
    assert len(meta) == 3 and set(meta.species) == {"humpback_whale"} and meta.whale_id.nunique() == 2
    assert len(skipped) == 3 and skipped.reason.str.contains("--species").all()


def test_the_kaggle_humpback_tables_new_whale_is_no_whale(tmp_path):
    from catalogue.cli import main

    rows = []
    for i, whale in enumerate(["w_f48451c", "new_whale", "w_f48451c", "new_whale", "w_c3d896a", "New_Whale "]):
        name = f"{i:08x}.jpg"
        animal_photo(tmp_path / "train" / name, (160, 100), [20, 20, 100, 40], 0.0, 200 + i)
        rows.append({"Image": name, "Id": whale})
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    assert main(["import", "csv", str(tmp_path / "train.csv"), "--images", str(tmp_path / "train"), "--out",
                 str(tmp_path / "s"), "--unmapped-viewpoint", "top"]) == 0  # Image and Id: known column names
    meta = pd.read_csv(tmp_path / "s" / "metadata.csv", dtype=str)
    loose = pd.read_csv(tmp_path / "s" / "unidentified" / "metadata.csv", dtype=str)
    assert set(meta.whale_id) == {"w_f48451c", "w_c3d896a"} and len(loose) == 3
    assert main(["import", "csv", str(tmp_path / "train.csv"), "--images", str(tmp_path / "train"), "--out",
                 str(tmp_path / "t"), "--map", "path=Image,whale_id=Id", "--unmapped-viewpoint", "top",
                 "--unknown", "w_c3d896a"]) == 0  # --unknown replaces the list: new_whale is then a name
    assert set(pd.read_csv(tmp_path / "t" / "metadata.csv", dtype=str).whale_id) == {"w_f48451c", "new_whale"}
    skipped = pd.read_csv(tmp_path / "t" / "skipped.csv", dtype=str)  # and "New_Whale " is one of its look-alikes
    assert list(skipped.reason.str.contains("look-alike of 'new_whale'")) == [True]


def catalogue_of(tmp_path: Path, rows: list) -> Path:
    tmp_path.mkdir(parents=True, exist_ok=True)
    for r in rows:
        photo = tmp_path / "photos" / r.get("file", f"{r['image_id']}.jpg")
        if not photo.exists():
            animal_photo(photo, (64, 48), [8, 8, 40, 20], 0.0, len(r["image_id"]))
        r["path"] = str(photo)
    cat = Catalogue.create(tmp_path / "c.sqlite", "a" * 64, "m", 4)
    cat.add_photos(rows, np.eye(len(rows), 4, dtype=np.float32), "b")
    cat.close()
    return tmp_path / "c.sqlite"


def export(db: Path, out: Path, *extra) -> int:
    from catalogue.cli import main

    return main(["catalogue", "export", "--db", str(db), "--out", str(out), "--format", "wildbook", *extra])


def test_a_wildbook_sheet_the_current_importer_accepts(tmp_path, capsys):
    rows = [  # a mother and calf in one photo's two crops; the same whale on two days; an undated photo
        {"image_id": "m1", "whale_id": "mother", "date": "2019-08-03", "latitude": 61.2152, "longitude": -149.9,
         "species": "Delphinapterus leucas", "file": "a/IMG_0001.jpg"},
        {"image_id": "c1", "whale_id": "calf", "date": "2019-08-03", "latitude": 61.2153, "longitude": -149.9001,
         "species": "Delphinapterus leucas", "file": "b/IMG_0001.jpg"},
        {"image_id": "m2", "whale_id": "mother", "date": "2019-08-05", "species": "Delphinapterus leucas"},
        {"image_id": "m3", "whale_id": "mother", "date": "", "species": "Delphinapterus leucas"},
        {"image_id": "u1", "whale_id": "other", "date": "2019", "species": "Delphinapterus leucas"},
    ]
    db = catalogue_of(tmp_path, rows)
    out = tmp_path / "sheets" / "wb.csv"
    out.parent.mkdir()
    assert export(db, out) == 0
    printed = capsys.readouterr().out
    assert check_sheet(out) == [] and "2 encounters (2 photos) without a date left out" in printed
    sheet = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(sheet) == 3 and set(sheet["Encounter.genus"]) == {"Delphinapterus"}
    assert set(sheet["Encounter.specificEpithet"]) == {"leucas"} and set(sheet["Encounter.submitterID"]) == {"public"}
    same_day = sheet[sheet["Encounter.day"] == "3"]
    assert len(same_day) == 2 and same_day["Encounter.sightingID"].nunique() == 1  # mother and calf: one sighting
    assert set(same_day["Encounter.mediaAsset0"]) == {"m1_IMG_0001.jpg", "c1_IMG_0001.jpg"}  # names kept apart
    assert "Encounter.occurrenceRemarks" not in sheet and "Encounter.locationID" not in sheet
    left = pd.read_csv(tmp_path / "sheets" / "wb.left-out.csv", dtype=str)
    assert sorted(left.whale_id) == ["mother", "other"]

    assert export(db, out, "--undated-date", "2019-09-01", "--media", "relative") == 0
    assert check_sheet(out) == [] and not (tmp_path / "sheets" / "wb.left-out.csv").exists()
    sheet = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert len(sheet) == 5 and all((out.parent / p).is_file() for p in sheet["Encounter.mediaAsset0"])
    assert export(db, out, "--wildbook-names", "legacy") == 0
    assert {"Encounter.occurrenceID", "Encounter.occurrenceRemarks"} <= set(pd.read_csv(out).columns)


def test_a_wildbook_export_refuses_to_guess_a_species(tmp_path, capsys):
    rows = [{"image_id": "h1", "whale_id": "a", "date": "2019-01-02", "species": "humpback_whale"},
            {"image_id": "h2", "whale_id": "b", "date": "2019-01-02", "species": "beluga"},
            {"image_id": "h3", "whale_id": "c", "date": "2019-01-02", "species": ""}]
    db = catalogue_of(tmp_path, rows)
    out = tmp_path / "wb.csv"
    assert export(db, out) == 2
    assert "--genus and --species" in capsys.readouterr().err and not out.exists()
    assert export(db, out, "--genus", "Megaptera", "--species", "novaeangliae") == 2
    assert "several species" in capsys.readouterr().err and not out.exists()
    db2 = catalogue_of(tmp_path / "one", [dict(rows[0]), dict(rows[2], image_id="h4")])
    assert export(db2, out, "--genus", "Megaptera", "--species", "novaeangliae") == 0 and check_sheet(out) == []


def test_a_sighting_is_a_day_and_a_place_not_a_grid_cell():
    from catalogue.exchange.wildbook import sighting_ids

    day = pd.Series(["2019-08-03"] * 5 + [None])
    lat = pd.Series([60.5449, 60.5451, 60.5453, 60.60, np.nan, 60.5])  # 0.5 km apart across 60.545; 6 km away
    lon = pd.Series([-151.2451, -151.2449, -151.2447, -151.2451, np.nan, -151.2])
    ids = list(sighting_ids(day, lat, lon))
    assert ids[0] == ids[1] == ids[2] != ids[3] and ids[4] == "2019-08-03" and pd.isna(ids[5])
