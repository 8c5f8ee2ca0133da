"""Every ``whaleid`` subcommand as its users run it: the installed console script in a subprocess, from a folder
that is neither the working tree nor the data's, with the default recipe's kind of bundle (``local_match`` in its
chain) and with a global-only one. The in-process tests elsewhere import ``plugins`` from the working tree before
a bundle is opened; a console process does not, which is how the first ``catalogue build`` failed from the console
with "unknown postprocess 'local_match'" while the suite passed.

``CASES`` names the test that runs each subcommand; ``test_every_subcommand_has_a_case`` reads the parser and
fails when one is added without a case, and ``test_every_documented_command_parses`` parses each ``whaleid``
command line of the README and docs/.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests.helpers import ROOT
from tests.catalogue.wildbook_rules import check as check_sheet

WHALEID = Path(sys.executable).parent / "whaleid"

CASES = {
    ("catalogue", "build"): "test_the_default_bundle_from_build_to_apply",
    ("calibrate",): "test_the_default_bundle_from_build_to_apply",
    ("identify",): "test_the_default_bundle_from_build_to_apply",
    ("catalogue", "export"): "test_the_default_bundle_from_build_to_apply",
    ("catalogue", "check"): "test_the_default_bundle_from_build_to_apply",
    ("review",): "test_the_default_bundle_from_build_to_apply",
    ("catalogue", "apply"): "test_the_default_bundle_from_build_to_apply",
    ("catalogue", "reembed"): "test_the_default_bundle_from_build_to_apply",
    ("import", "coco"): "test_import_coco_and_csv_then_build_with_a_global_only_bundle",
    ("import", "csv"): "test_import_coco_and_csv_then_build_with_a_global_only_bundle",
}


def whaleid(*args, cwd: Path, check: bool = True, timeout: int = 600) -> subprocess.CompletedProcess:
    """The console script ``whaleid`` with ``args`` in a fresh process in ``cwd``."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)  # nothing but the install finds the project
    proc = subprocess.run([str(WHALEID), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"whaleid {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


def elsewhere(tmp_path: Path) -> Path:
    where = tmp_path / "elsewhere"
    where.mkdir()
    return where


def leaf_commands(parser, prefix=()) -> list:
    import argparse

    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        return [prefix]
    out = []
    for name, child in subs[0].choices.items():
        out += leaf_commands(child, prefix + (name,))
    return out


def test_every_subcommand_has_a_case():
    from catalogue.cli import parser

    leaves = set(leaf_commands(parser()))
    assert leaves, "the parser has no subcommands?"
    missing = sorted(leaves - set(CASES))
    assert not missing, f"whaleid subcommands with no subprocess case in tests/test_commands.py: {missing}"
    assert not set(CASES) - leaves, f"cases for subcommands whaleid no longer has: {sorted(set(CASES) - leaves)}"
    here = globals()
    assert all(callable(here.get(name)) for name in CASES.values()), CASES


def documented_commands() -> list:
    """(file, line, argv) of every ``whaleid`` command line in a code block of the README and docs/*.md, with its
    continuation lines joined, ``# comments`` and ``[optional parts]`` taken out."""
    out = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines, inside = path.read_text().splitlines(), False
        i = 0
        while i < len(lines):
            line = lines[i]
            if line.lstrip().startswith("```"):
                inside = not inside
            elif inside and line.lstrip().startswith(("whaleid ", "$ whaleid ", ".venv/bin/whaleid ")):
                start, text = i + 1, line
                while text.rstrip().endswith("\\") and i + 1 < len(lines):
                    i += 1
                    text = text.rstrip()[:-1] + " " + lines[i].strip()
                text = re.sub(r"\s#.*$", "", text)
                text = re.sub(r"\[[^\]]*\]", "", text)
                argv = text.split()
                argv = argv[argv.index(next(a for a in argv if a.endswith("whaleid"))) + 1:]
                out.append((path.name, start, argv))
            i += 1
    return out


def test_every_documented_command_parses():
    from catalogue.cli import parser

    found = documented_commands()
    assert len(found) >= 10, found
    for name, line, argv in found:
        try:
            args = parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}:{line}: `whaleid {' '.join(argv)}` does not parse")
        path = tuple(v for v in (args.command, getattr(args, "action", None), getattr(args, "kind", None)) if v)
        assert path in CASES, f"{name}:{line}: {path} has no subprocess case"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(url: str, token: str | None = None, body: dict | None = None) -> tuple[int, bytes]:
    headers = {"X-Whaleid-Token": token} if token else {}
    data = None
    if body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_default_bundle_from_build_to_apply(command_bundles, fused_run, tiny_survey, tmp_path):
    """build (keypoints stored), build again (nothing twice), calibrate --local, identify (fused), every export,
    check, review (a decision through the running server), apply, reembed to the global-only bundle: each the
    console script from another folder."""
    cwd, train, db = elsewhere(tmp_path), tiny_survey / "train", tmp_path / "cat" / "c.sqlite"
    db.parent.mkdir()
    meta = pd.read_csv(train / "metadata.csv", dtype=str)
    early = meta[meta.date < "2019-01-01"]
    fused = command_bundles["fused"]

    out = whaleid("catalogue", "build", "--bundle", fused, "--data", train, "--db", db, "--before", "2019-01-01",
                  "--workers", "0", cwd=cwd).stdout
    assert f"added {len(early)} photos" in out and "keypoints of the" in out, out
    stored = list((db.parent / "c.sqlite.keypoints").rglob("*"))
    assert sum(p.is_file() for p in stored) >= len(early), "the keypoints of every photo added are stored"
    assert "0 to embed" in whaleid("catalogue", "build", "--bundle", fused, "--data", train, "--db", db,
                                   "--before", "2019-01-01", cwd=cwd).stdout

    # XFeat's keypoints (make identify-demo's), through the 2022 bundle's own local_match: its module loads the
    # learned detector from this installation by name
    out = whaleid("calibrate", "--db", db, "--run", fused_run, "--local", "--max-side", "256", "--detector", "xfeat",
                  cwd=cwd).stdout
    assert "local evidence: P = sigmoid(" in out, out
    from catalogue.records.store import Catalogue

    assert json.loads(Catalogue.open(db).meta["calibration"])["local"]["options"]["detector"] == "xfeat"
    ids = tmp_path / "ids.csv"
    out = whaleid("identify", "--bundle", fused, "--db", db, "--data", train, "--from", "2019-01-01", "--evaluate",
                  "--out", ids, "--workers", "0", "--max-error", "0.05", cwd=cwd).stdout
    assert "local evidence:" in out and "BAKS" in out, out  # identify fused the keypoint evidence
    assert "operating point at most 5.0% wrong decisions" in out and "--max-error 0.05: decided" in out, out
    result = pd.read_csv(ids, dtype=str)
    assert len(result) == (meta.date >= "2019-01-01").sum()

    for fmt, name in (("csv", "c.csv"), ("json", "c.json"), ("wildbook", "wb.csv"), ("capture-history", "ch.inp")):
        extra = ["--genus", "Delphinapterus", "--species", "leucas", "--copy-media"] if fmt == "wildbook" else []
        whaleid("catalogue", "export", "--db", db, "--out", tmp_path / name, "--format", fmt, *extra, cwd=cwd)
        assert (tmp_path / name).stat().st_size > 0, fmt
    assert check_sheet(tmp_path / "wb.csv") == []
    sheet = pd.read_csv(tmp_path / "wb.csv", dtype=str, keep_default_na=False)
    media = [v for c in sheet.columns if c.startswith("Encounter.mediaAsset") for v in sheet[c] if v]
    assert len(media) == len(early) and all((tmp_path / m).is_file() for m in media)  # copied beside the sheet
    assert len(pd.read_csv(tmp_path / "c.csv")) == len(early)
    assert "check passed" in whaleid("catalogue", "check", "--db", db, cwd=cwd).stdout

    # review: the server as started from the console; one photo accepted through its API, then apply adds it
    port, token = free_port(), "a-token-of-24-characters"
    server = subprocess.Popen([str(WHALEID), "review", "--db", str(db), "--port", str(port), "--token", token,
                               "--bundle", str(fused)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        line = server.stdout.readline()
        deadline = time.time() + 120
        while "reviewing" not in line and time.time() < deadline and server.poll() is None:
            line = server.stdout.readline()
        assert "reviewing" in line, line
        base = f"http://127.0.0.1:{port}"
        for _ in range(300):  # the address is printed just before uvicorn listens
            try:
                status, page = request(base + "/")
                break
            except urllib.error.URLError:
                time.sleep(0.1)
        assert status == 200 and b"<html" in page.lower()
        status, body = request(base + "/api/state?limit=500")
        assert status == 200, body
        items = json.loads(body)["items"]
        target = next(p for p in items if p["candidates"])
        status, png = request(f"{base}/photo/{target['image_id']}")
        assert status == 200 and len(png) > 100
        photo = target["candidates"][0]["photos"][0]["image_id"]
        status, png = request(f"{base}/heatmap/{target['image_id']}/{photo}")
        assert status == 200 and png[:4] == b"\x89PNG", png[:200]
        status, png = request(f"{base}/matches/{target['image_id']}/{photo}")
        assert status == 200 and png[:4] == b"\x89PNG", png[:200]
        status, body = request(base + "/api/decide", token, {"action": "accept", "query": target["image_id"],
                                                             "whale_id": target["candidates"][0]["whale_id"],
                                                             "who": "tester"})
        assert status == 200, body
    finally:
        server.terminate()
        server.wait(30)
    out = whaleid("catalogue", "apply", "--db", db, cwd=cwd).stdout
    assert "added 1 reviewed photos" in out, out

    out = whaleid("catalogue", "reembed", "--db", db, "--bundle", command_bundles["global"], cwd=cwd).stdout
    assert "check passed" in whaleid("catalogue", "check", "--db", db, cwd=cwd).stdout, out
    out = whaleid("identify", "--bundle", command_bundles["global"], "--db", db, "--data", train, "--from",
                  "2019-01-01", "--workers", "0", "--global-only", cwd=cwd).stdout
    assert " whales (" in out and "photos):" in out, out


def test_import_coco_and_csv_then_build_with_a_global_only_bundle(command_bundles, tiny_survey, tmp_path):
    """import coco and import csv of the tiny survey's photos (the folder given relative to the working folder),
    then a catalogue built from the imported survey with the global-only bundle still stores keypoints."""
    cwd = elsewhere(tmp_path)
    train = tiny_survey / "train"
    meta = pd.read_csv(train / "metadata.csv", dtype=str).head(24)
    shutil.copytree(train / "images", cwd / "photos")
    images, annotations = [], []
    for i, row in meta.iterrows():
        w, h = int(row.width), int(row.height)
        images.append({"id": i + 1, "file_name": Path(row.path).name, "width": w, "height": h,
                       "date_captured": row.date, "gps_lat_captured": -1, "gps_lon_captured": -1})
        annotations.append({"id": i + 1, "image_id": i + 1, "bbox": [0, 0, w, h], "name": row.whale_id,
                            "viewpoint": {"top": "up", "left": "left", "right": "right"}[row.viewpoint],
                            "uuid": f"ann-{i}"})
    (cwd / "export.json").write_text(json.dumps({"images": images, "annotations": annotations}))
    out = whaleid("import", "coco", "export.json", "--images", "photos", "--out", "surveys/coco", cwd=cwd).stdout
    assert "24" in out, out
    table = meta.assign(file=[Path(p).name for p in meta.path])[["file", "whale_id", "viewpoint", "date"]]
    table.to_csv(cwd / "sightings.csv", index=False)
    out = whaleid("import", "csv", "sightings.csv", "--images", "photos", "--out", "surveys/csv",
                  "--map", "path=file", cwd=cwd).stdout
    assert "24" in out, out
    for survey in ("coco", "csv"):
        assert len(pd.read_csv(cwd / "surveys" / survey / "metadata.csv")) == 24, survey

    out = whaleid("catalogue", "build", "--bundle", command_bundles["global"], "--data", "surveys/coco",
                  "--db", "c.sqlite", "--workers", "0", cwd=cwd).stdout
    assert "added 24 photos" in out and "keypoints of the 24 photos" in out, out


def test_a_missing_bundle_or_survey_is_a_clear_error(tmp_path):
    cwd = elsewhere(tmp_path)
    proc = whaleid("catalogue", "build", "--bundle", "nothing.zip", "--data", "nowhere", "--db", "c.sqlite",
                   cwd=cwd, check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr, proc.stderr
    assert not (cwd / "c.sqlite").exists()


def test_a_bundles_plugins_are_its_own_whatever_the_process_imported_first(command_bundles, tmp_path):
    """The root of the console failure: inside ``opened`` the bundle's plugin modules are the bundle's copies even
    when the working tree's were imported first; afterwards the working tree's are back and no module is left
    bound to the deleted folder."""
    import importlib
    import sys
    import zipfile

    from core.bundle import opened
    from core.plugins import build_registries

    ours = importlib.import_module("plugins.postprocess.knn")  # the working tree's, imported first
    marked = tmp_path / "marked.zip"
    with zipfile.ZipFile(command_bundles["global"]) as src, zipfile.ZipFile(marked, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename == "plugins/postprocess/knn.py":
                data += b"\nBUNDLE_COPY = True\n"
            dst.writestr(item, data)
    with opened(marked) as bundle:
        bundle.registries
        theirs = sys.modules["plugins.postprocess.knn"]
        assert theirs is not ours and getattr(theirs, "BUNDLE_COPY", False)
        assert Path(theirs.__file__).resolve().is_relative_to(bundle.folder.resolve()) and bundle.foreign == []
        folder = bundle.folder
    assert sys.modules["plugins.postprocess.knn"] is ours and not folder.exists()
    left = [n for n, m in list(sys.modules.items())
            if getattr(m, "__file__", None) and str(folder) in str(m.__file__)]
    assert left == [], left
    assert "local_match" in build_registries()["postprocess"].factories  # the working tree's plugins, all of them
