"""Property tests of the boundaries (hypothesis, bounded example budgets):

- metadata.csv of any bytes: the dataset loads or raises DataError naming the file;
- image files of any bytes or shape: reading gives RGB or raises ImageError naming the file, and the
  inference loader never raises (a blank image, flagged);
- the submission's inference on random scenario files and images: a valid submission.csv for every query it
  could read (at most 20 rows, scores in [0, 1], never the query's own image).
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")  # a dev dependency: installed by `make test`
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from PIL import Image  # noqa: E402

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

COLUMNS = ["image_id", "path", "viewpoint", "date", "whale_id", "encounter_id", "height", "width"]
cell = st.one_of(st.text(max_size=12), st.sampled_from(["top", "left", "right", "img1", "", '"', "images/x.jpg",
                                                        "2019-01-01", "x" * 300, "\ufeff", "a,b", "\r\n"]))


@st.composite
def csv_bytes(draw, columns=COLUMNS):
    """A CSV with a random subset of columns, random cells, optional BOM, CRLF and non-UTF-8 bytes."""
    cols = draw(st.lists(st.sampled_from(columns), max_size=len(columns), unique=True))
    rows = draw(st.lists(st.lists(cell, min_size=len(cols), max_size=len(cols)), max_size=6))
    text = pd.DataFrame(rows, columns=cols).to_csv(index=False) if cols else ""
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    data = text.encode("utf-8", "surrogatepass") if text else b""
    if draw(st.booleans()):
        data = b"\xef\xbb\xbf" + data
    if draw(st.booleans()):
        data += draw(st.binary(max_size=20))  # stray bytes, possibly not UTF-8
    return data


@FAST
@given(data=st.one_of(csv_bytes(), st.binary(max_size=200)))
def test_any_metadata_loads_or_raises_a_data_error_naming_the_file(tmp_path_factory, data):
    from core.data import DataError
    from core.plugins import build_registries

    root = tmp_path_factory.mktemp("meta")
    (root / "metadata.csv").write_bytes(data)
    try:
        ds = build_registries()["dataset"].build({"name": "belugas", "cache": False}, root=str(root), image_size=[16, 16])
    except DataError as exc:
        assert str(root / "metadata.csv") in str(exc) or "image file not found" in str(exc)
    else:
        assert len(ds.metadata) >= 0 and set(["image_id", "whale_id"]) <= set(ds.metadata.columns)


def image_bytes():
    def encode(kind, w, h):
        buf = io.BytesIO()
        img = Image.new("RGB" if kind != "LA" else "LA", (w, h))
        img.save(buf, format="PNG" if kind in ("PNG", "LA") else "JPEG")
        return buf.getvalue()

    good = st.builds(encode, st.sampled_from(["JPEG", "PNG", "LA"]),
                     st.sampled_from([1, 2, 64, 20000]), st.sampled_from([1, 20, 64]))
    truncated = good.flatmap(lambda b: st.integers(0, max(0, len(b) - 1)).map(lambda n: b[:n]))
    return st.one_of(good, truncated, st.binary(max_size=64), st.just(b""))


@FAST
@given(data=image_bytes())
def test_any_image_bytes_read_as_rgb_or_fail_naming_the_file(tmp_path_factory, data):
    from core.data import EvalImages
    from core.images import ImageError, load_rgb

    path = tmp_path_factory.mktemp("img") / "photo.jpg"  # PNG bytes in a .jpg too
    path.write_bytes(data)
    try:
        img = load_rgb(path)
    except ImageError as exc:
        assert str(path) in str(exc)
        readable = False
    else:
        assert img.mode == "RGB"
        readable = True
    x, pos, ok = EvalImages([str(path)], (16, 16), on_error="blank")[0]
    assert x.shape == (3, 16, 16) and pos == 0 and ok == readable


# ---- main.py on hostile scenario files ------------------------------------------------------------

@pytest.fixture(scope="module")
def extracted_bundle(smoke_run, tmp_path_factory):
    from submission.build import build

    zip_path = tmp_path_factory.mktemp("pbundle") / "s.zip"
    build([smoke_run], zip_path)
    root = tmp_path_factory.mktemp("pbundle_x")
    zipfile.ZipFile(zip_path).extractall(root)
    return root


ids = st.sampled_from(["a", "b", "c", "d", "e", "missing", "x" * 200, "", " a"])


@st.composite
def data_folder(draw):
    """Scenario files with random rows (duplicates, unknown ids, empty files) and images (some broken)."""
    images = {}
    for name in ["a", "b", "c", "d", "e"]:
        images[name] = draw(st.one_of(st.just("good"), st.just("good"), st.sampled_from(["empty", "garbage", "tiny", "wide"])))
    scenarios = []
    for k in range(draw(st.integers(0, 3))):
        queries = draw(st.lists(ids, max_size=5))
        db = draw(st.lists(ids, max_size=6))
        scenarios.append((f"s{k}", queries, db, draw(st.sampled_from(["ok", "ok", "no_db_file", "bad_header"]))))
    return images, scenarios, draw(st.sampled_from(["ok", "ok", "missing", "bom_crlf"]))


def write_folder(root: Path, images, scenarios, meta_kind):
    (root / "images").mkdir(parents=True)
    (root / "queries").mkdir()
    (root / "databases").mkdir()
    for name, kind in images.items():
        path = root / "images" / f"{name}.jpg"
        if kind == "empty":
            path.write_bytes(b"")
        elif kind == "garbage":
            path.write_bytes(b"\xff\xd8\xff not a jpeg")
        else:
            Image.new("RGB", {"good": (48, 32), "tiny": (1, 1), "wide": (2000, 20)}[kind], (90, 120, 140)).save(path)
    meta = pd.DataFrame({"image_id": list(images), "path": [f"images/{n}.jpg" for n in images],
                         "viewpoint": ["top"] * len(images), "date": ["2020-01-01"] * len(images)})
    if meta_kind != "missing":
        text = meta.to_csv(index=False)
        data = (b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()) if meta_kind == "bom_crlf" else text.encode()
        (root / "metadata.csv").write_bytes(data)
    index = []
    for name, queries, db, kind in scenarios:
        q = pd.DataFrame({"query_id": [f"{name}-{i}-{j}" for j, i in enumerate(queries)], "query_image_id": queries})
        q.to_csv(root / "queries" / f"{name}.csv", index=False)
        if kind == "bad_header":
            (root / "databases" / f"{name}.csv").write_text("wrong\n" + "\n".join(db))
        elif kind == "ok":
            pd.DataFrame({"database_image_id": db}).to_csv(root / "databases" / f"{name}.csv", index=False)
        index.append((name, f"queries/{name}.csv", f"databases/{name}.csv"))
    pd.DataFrame(index, columns=["scenario_id", "queries_path", "database_path"]).to_csv(
        root / "query_scenarios.csv", index=False)


@SLOW
@given(folder=data_folder())
def test_main_always_writes_a_valid_file_for_every_readable_query(extracted_bundle, tmp_path_factory, folder):
    from core.inference import run
    from core.metric import MAX_ROWS_PER_QUERY, validate_predictions
    from core.scenarios import read_scenarios

    images, scenarios, meta_kind = folder
    root = tmp_path_factory.mktemp("data")
    write_folder(root, images, scenarios, meta_kind)
    out = root / "out" / "submission.csv"
    run(extracted_bundle, root, out, num_workers=0)
    assert out.is_file()
    pred = pd.read_csv(out, dtype={"query_id": str, "database_image_id": str}, keep_default_na=False)
    readable = read_scenarios(root, skip_broken=True)
    query_map = {q: i for sc in readable for q, i in zip(sc.queries["query_id"], sc.queries["query_image_id"])}
    validate_predictions(pred, query_map)  # <= 20 rows, scores in [0, 1], known queries, never the query's image
    answered = set(pred["query_id"])
    for sc in readable:  # a query with any other readable database image gets rows
        for qid, img in zip(sc.queries["query_id"], sc.queries["query_image_id"]):
            others = {d for d in sc.database["database_image_id"] if d != img and images.get(d) in ("good", "tiny", "wide")}
            assert not others or qid in answered, (qid, others)
    assert not len(pred) or pred.groupby("query_id").size().max() <= MAX_ROWS_PER_QUERY
    shutil.rmtree(root, ignore_errors=True)
