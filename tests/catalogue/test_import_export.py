"""Photo-ID data in and out: a Wild Me COCO export and a plain table imported into a survey that trains and
catalogues; the catalogue exported as a Wildbook bulk-import sheet and as capture histories, read back."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from catalogue.exchange.importing import crop_box, map_viewpoint
from tests.helpers import SMOKE, run_core
from tests.catalogue.wildbook_rules import check as check_sheet


def wildme_coco(train: Path, out: Path) -> pd.DataFrame:
    """A COCO file shaped like a Wild Me export of ``train``'s photos (one box per photo, viewpoints as Wild Me
    labels them, -1 for an unknown location), and six awkward annotations: a missing photo, an unknown
    individual, a box outside its photo, a viewpoint outside the three, a box over the photo's edge, an
    annotation of no image."""
    meta = pd.read_csv(train / "metadata.csv", dtype=str)
    images, anns = [], []
    label = {"top": "up", "left": "left", "right": "frontright"}
    for i, r in meta.iterrows():
        w, h = int(r.width), int(r.height)
        located = i % 3 == 0
        images.append({"id": i + 1, "file_name": r.path, "width": w, "height": h, "date_captured": r.timestamp,
                       "gps_lat_captured": f"{60.5 + i / 1000:.6f}" if located else "-1.000000",
                       "gps_lon_captured": f"{-151.2 - i / 1000:.6f}" if located else "-1.000000", "uuid": f"img-{i}"})
        anns.append({"id": 100 + i, "image_id": i + 1, "bbox": [2, 3, w - 6, h - 8], "name": r.whale_id,
                     "viewpoint": label[r.viewpoint], "uuid": f"ann-{i}", "segmentation": [[2, 3, w - 4, 3, w - 4, h - 5]]})
    n = len(meta)
    images.append({"id": n + 1, "file_name": "images/missing.jpg", "date_captured": "NA"})
    anns += [
        {"id": 9001, "image_id": n + 1, "bbox": [0, 0, 10, 10], "name": "whale0001", "viewpoint": "up"},
        {"id": 9002, "image_id": 1, "bbox": [1, 1, 20, 30], "name": "____", "viewpoint": "up", "uuid": "unknown-1"},
        {"id": 9003, "image_id": 2, "bbox": [5000, 5000, 10, 10], "name": "whale0002", "viewpoint": "left"},
        {"id": 9004, "image_id": 3, "bbox": [0, 0, 20, 20], "name": "whale0003", "viewpoint": "front"},
        {"id": 9005, "image_id": 4, "bbox": [-10, -10, 40, 40], "name": meta.whale_id[3], "viewpoint": "upleft",
         "uuid": "clipped-1"},
        {"id": 9006, "image_id": 999999, "bbox": [0, 0, 5, 5], "name": "whale0004", "viewpoint": "up"},
        {"id": 9007, "image_id": 5, "segmentation": [[3, 4, 23, 4, 23, 34, 3, 34]], "name": meta.whale_id[4],
         "viewpoint": "left", "uuid": "polygon-1"},  # no bbox: the polygon's box
    ]
    out.write_text(json.dumps({"info": {}, "images": images, "annotations": anns,
                               "categories": [{"id": 0, "name": "beluga_whale"}]}))
    return meta


@pytest.fixture(scope="module")
def imported(tiny_survey, tmp_path_factory):
    from catalogue.cli import main

    tmp = tmp_path_factory.mktemp("coco")
    meta = wildme_coco(tiny_survey / "train", tmp / "export.json")
    survey = tmp / "survey"
    assert main(["import", "coco", str(tmp / "export.json"), "--images", str(tiny_survey / "train"),
                 "--out", str(survey)]) == 0
    return survey, meta


def test_viewpoints_are_free_labels_mapped_onto_the_competitions_three():
    assert [map_viewpoint(v, {}, None) for v in ("up", "Top", "upleft", "frontright", "backleft", "port side")] == \
        ["top", "top", "top", "right", "left", "left"]
    assert map_viewpoint("front", {}, None) is None and map_viewpoint("front", {}, "left") == "left"
    assert map_viewpoint("front", {"front": "top"}, None) == "top"
    assert map_viewpoint("leftright", {}, None) is None  # both sides named: not guessed
    assert crop_box([10, 10, 20, 40], (100, 100), 0.1) == (8, 6, 32, 54)
    assert crop_box([-5, -5, 20, 20], (100, 100), 0.0) == (0, 0, 15, 15)
    assert crop_box([200, 0, 20, 20], (100, 100), 0.1) is None


def test_a_wild_me_export_imports_with_crops_and_every_skipped_row_named(imported, tiny_survey, capsys):
    survey, meta = imported
    table = pd.read_csv(survey / "metadata.csv", dtype=str, keep_default_na=False)
    assert len(table) == len(meta) + 2 and set(table.viewpoint) <= {"top", "left", "right"}
    assert table.set_index("image_id").loc["polygon-1", "bbox"] == "3 4 20 30"
    first = table.set_index("image_id").loc["ann-0"]
    assert (first.whale_id, first.viewpoint_label, first.date) == (meta.whale_id[0], "up", meta.date[0])
    assert float(first.latitude) == pytest.approx(60.5) and table.set_index("image_id").loc["ann-1", "latitude"] == ""
    w, h = int(meta.width[0]), int(meta.height[0])  # the crop: the box widened by 10% a side, clipped to the photo
    left, top, right, bottom = crop_box([2, 3, w - 6, h - 8], (w, h), 0.1)
    assert Image.open(survey / first.path).size == (right - left, bottom - top)
    clipped = table.set_index("image_id").loc["clipped-1"]
    assert clipped.viewpoint == "top" and "clipped" in clipped.note
    unknown = pd.read_csv(survey / "unidentified" / "metadata.csv", dtype=str, keep_default_na=False)
    assert list(unknown.image_id) == ["unknown-1"] and (survey / "unidentified" / unknown.path[0]).is_file()
    skipped = pd.read_csv(survey / "skipped.csv", dtype=str)
    n = len(meta)
    reasons = dict(zip(skipped.source_row, skipped.reason))
    assert list(skipped.source_row) == [f"annotation {n} (id 9001)", f"annotation {n + 2} (id 9003)",
                                        f"annotation {n + 3} (id 9004)", f"annotation {n + 5} (id 9006)"]
    assert "image file not found" in reasons[f"annotation {n} (id 9001)"]
    assert "outside" in reasons[f"annotation {n + 2} (id 9003)"]
    assert "'front'" in reasons[f"annotation {n + 3} (id 9004)"]
    assert "999999" in reasons[f"annotation {n + 5} (id 9006)"]
    # every annotation is accounted for: imported, unidentified or skipped
    assert len(table) + len(unknown) + len(skipped) == n + 7


def test_the_imported_survey_trains_catalogues_and_exports_to_wildbook_and_capture_histories(
        imported, smoke_run, tmp_path, capsys):
    from catalogue.cli import main
    from catalogue.records.store import Catalogue
    from submission.build import build

    survey, meta = imported
    run_core(SMOKE + [f"data.root={survey}", f"output_dir={tmp_path / 'run'}"])  # core/run.py trains on it
    assert (tmp_path / "run" / "metrics.json").is_file()
    zip_path = tmp_path / "s.zip"
    build([smoke_run], zip_path)
    db = tmp_path / "c.sqlite"
    assert main(["catalogue", "build", "--bundle", str(zip_path), "--data", str(survey), "--db", str(db),
                 "--workers", "0", "--no-keypoints"]) == 0
    table = pd.read_csv(survey / "metadata.csv", dtype=str, keep_default_na=False)
    cat = Catalogue.open(db)
    photos, _ = cat.photos()
    cat.close()
    assert len(photos) == len(table)
    located = photos.set_index("image_id").loc["ann-0"]
    assert located.latitude == pytest.approx(60.5) and located.longitude == pytest.approx(-151.2)
    capsys.readouterr()

    sheet_path = tmp_path / "wildbook.csv"
    assert main(["catalogue", "export", "--db", str(db), "--out", str(sheet_path), "--format", "wildbook"]) == 2
    assert "--genus and --species" in capsys.readouterr().err and not sheet_path.exists()  # no species: no guess
    assert main(["catalogue", "export", "--db", str(db), "--out", str(sheet_path), "--format", "wildbook",
                 "--genus", "Delphinapterus", "--species", "leucas"]) == 0
    assert check_sheet(sheet_path) == []
    sheet = pd.read_csv(sheet_path, dtype=str, keep_default_na=False)
    assert set(sheet["Encounter.submitterID"]) == {"public"} and "Encounter.locationID" not in sheet  # no empty column
    media = [c for c in sheet.columns if c.startswith("Encounter.mediaAsset")]
    assert media[0] == "Encounter.mediaAsset0"
    read_back = {row[c]: row["MarkedIndividual.individualID"] for _, row in sheet.iterrows() for c in media if row[c]}
    assert read_back == {Path(p).name: w for p, w in zip(table.path, table.whale_id)}  # every photo, its whale
    year = sheet.set_index("Encounter.sightingRemarks")["Encounter.year"]
    assert set(year) <= {d[:4] for d in table.date}
    first = sheet[sheet["Encounter.mediaAsset0"].eq("ann-0.jpg") | sheet[media].eq("ann-0.jpg").any(axis=1)].iloc[0]
    assert float(first["Encounter.decimalLatitude"]) == pytest.approx(
        table[(table.whale_id == first["MarkedIndividual.individualID"]) & (table.latitude != "")
              & table.path.map(lambda p: Path(p).name).isin(set(first[media]))].latitude.astype(float).mean(), abs=1e-6)

    ch_path = tmp_path / "ch.csv"
    assert main(["catalogue", "export", "--db", str(db), "--out", str(ch_path), "--format", "capture-history"]) == 0
    hist = pd.read_csv(ch_path, dtype={"ch": str, "whale_id": str})
    years = sorted({d[:4] for d in table.date})
    assert list(hist.columns) == ["whale_id", "ch"] + years + ["captures"]
    for _, row in hist.iterrows():
        seen = {d[:4] for d in table.date[table.whale_id == row.whale_id]}
        assert row.ch == "".join("1" if y in seen else "0" for y in years)
        assert row.captures == len(seen)
    assert set(hist.whale_id) == set(table.whale_id)
    as_json = tmp_path / "photos.txt"  # --format wins over the file's suffix
    assert main(["catalogue", "export", "--db", str(db), "--out", str(as_json), "--format", "json"]) == 0
    assert len(json.loads(as_json.read_text())["photos"]) == len(table)
    inp = tmp_path / "ch.inp"
    assert main(["catalogue", "export", "--db", str(db), "--out", str(inp), "--format", "capture-history",
                 "--period", "month"]) == 0
    lines = inp.read_text().splitlines()
    assert len(lines) == len(hist) and all(line.startswith("/* ") and line.endswith(" 1;") for line in lines)


def test_a_plain_table_imports_by_its_column_map(tiny_survey, tmp_path, capsys):
    from catalogue.cli import main

    train = tiny_survey / "train"
    src = tmp_path / "sightings.csv"
    src.write_text("Photo,ID,Side,Date,Lat,Lon,Box\n"
                   'images/train00000.jpg,W1,Dorsal,2020/05/01,61.1,-150,"1 2 30 40"\n'
                   "images/train00001.jpg,,left,2020-05-02,,,\n"
                   "images/nope.jpg,W2,right,2020-05-02,,,\n"
                   "../metadata.csv,W2,right,,,,\n"
                   'images/train00002.jpg,W2,port side,2020-05-03,95,0,"0 0 0 5"\n'
                   "images/train00003.jpg,W3,starboard,2020-05-03,95,2,\n")
    out = tmp_path / "survey"
    args = ["import", "csv", str(src), "--images", str(train), "--out", str(out),
            "--map", "path=Photo,whale_id=ID,viewpoint=Side,date=Date,latitude=Lat,longitude=Lon,bbox=Box"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "6 records: 2 photos of 2 whales" in printed and "3 skipped" in printed
    for row in ("row 4", "row 5", "row 6"):
        assert f"skipped {row} " in printed
    table = pd.read_csv(out / "metadata.csv", dtype=str, keep_default_na=False)
    assert list(table.whale_id) == ["W1", "W3"] and list(table.viewpoint) == ["top", "right"]
    assert table.date[0] == "2020-05-01" and table.latitude[1] == "" and "out of range" in table.note[1]
    assert Image.open(out / table.path[0]).size == (34, 46)  # 30x40 box at (1, 2), 3 and 4 px a side, clipped at 0
    # nothing is written over: a second import into the same folder is refused, and the survey is untouched
    before = (out / "metadata.csv").read_bytes()
    assert main(args) == 2 and "not empty" in capsys.readouterr().err
    assert (out / "metadata.csv").read_bytes() == before
    # a column the map names but the table lacks, and a file that is not COCO: clear errors naming the file
    assert main(["import", "csv", str(src), "--images", str(train), "--out", str(tmp_path / "x"),
                 "--map", "path=Picture"]) == 2
    assert "path=Picture" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": 3}')
    assert main(["import", "coco", str(bad), "--images", str(train), "--out", str(tmp_path / "y")]) == 2
    assert f"{bad}: not a COCO file" in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
