"""The review server as a hostile client uses it: arbitrary JSON, content types, origins, hosts, tokens and
sizes to every endpoint (hypothesis), the request that once bricked a catalogue, a database another process
keeps locked, files outside the catalogue, and the store's rules underneath (validation before writing, a
replay that never raises, reviewed photos that move with later decisions)."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402

from catalogue.exchange.exporting import plain
from catalogue.records.check import check  # noqa: E402
from catalogue.records.decisions import ACTIONS, replay  # noqa: E402
from catalogue.records.photos import add_photo_root  # noqa: E402
from catalogue.review.server import app  # noqa: E402
from catalogue.records.errors import CatalogueError  # noqa: E402
from catalogue.records.store import Catalogue  # noqa: E402

TOKEN = "t0k-for-tests-0123456789"
HOST = "127.0.0.1:8765"
WHALES = ["w0", "w1", "w2"]
QUERIES = [f"q{i}" for i in range(6)]


def make_catalogue(folder: Path) -> Path:
    """Three whales of two photos each (real files in ``folder/survey``), six proposals, one file outside."""
    from PIL import Image

    survey = folder / "survey"
    (survey / "images").mkdir(parents=True)
    for name in [f"p{i}" for i in range(6)] + QUERIES:
        Image.new("RGB", (24, 40), (40 * len(name), 90, 120)).save(survey / "images" / f"{name}.jpg")
    (folder / "secret.txt").write_text("not a photo of this catalogue")
    cat = Catalogue.create(folder / "c.sqlite", "a" * 64, "m", 4)
    add_photo_root(cat, survey)
    photos = [{"image_id": f"p{i}", "whale_id": WHALES[i % 3], "encounter_id": f"e{i}", "viewpoint": "top",
               "date": "2019-06-01", "path": str((survey / "images" / f"p{i}.jpg").resolve())} for i in range(6)]
    photos.append({"image_id": "outside", "whale_id": "w0", "encounter_id": "e9", "viewpoint": "top", "date": "2019",
                   "path": str((folder / "secret.txt").resolve())})
    cat.add_photos(photos, np.eye(7, 4, dtype=np.float32)[np.arange(7) % 4], "2019")
    shown = json.dumps([{"whale_id": w, "score": 0.8, "probability": 0.7, "photos": [[f"p{i}", 0.8]]}
                        for i, w in enumerate(WHALES)])
    cat.add_proposals([{"image_id": q, "path": str((survey / "images" / f"{q}.jpg").resolve()), "viewpoint": "top",
                        "date": "2020-01-01", "encounter_id": f"e{q}", "decision": "review", "whale_id": "w0",
                        "score": 0.8, "probability": 0.7, "candidates": shown} for q in QUERIES],
                      np.eye(6, 4, dtype=np.float32)[np.arange(6) % 4], "2020")
    cat.close()
    return folder / "c.sqlite"


@pytest.fixture(scope="module")
def catalogue_file(tmp_path_factory) -> Path:
    return make_catalogue(tmp_path_factory.mktemp("hostile"))


def client(db: Path, **kw) -> TestClient:
    return TestClient(app(db, "ana", host="127.0.0.1", port=8765, token=TOKEN, **kw), base_url=f"http://{HOST}",
                      raise_server_exceptions=False)


def good_headers(**extra) -> dict:
    return dict({"content-type": "application/json", "x-whaleid-token": TOKEN, "origin": f"http://{HOST}"}, **extra)


def assert_whole(db: Path) -> None:
    """The log replays without a skipped row and ``catalogue check`` finds no problem but the file planted
    outside the survey folder."""
    cat = Catalogue.open(db)
    try:
        assert cat.state()["skipped"] == []
    finally:
        cat.close()
    problems, _ = check(db)
    assert problems == [PLANTED]


PLANTED = "1 photos whose file is not served: outside (outside the survey folders it was catalogued from)"
junk = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=30), lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)
odd = st.sampled_from([2 ** 63, -2 ** 63 - 1, 10 ** 30, 1e300, "\ud800", "q0\x00", "\u202e", 0.5, -1])
ids = st.sampled_from(QUERIES + WHALES + ["", "   ", "nope", "x" * 300, "q0\n"]) | junk | odd
decision_bodies = st.fixed_dictionaries({}, optional={
    "who": st.sampled_from(["ana", "bob", "", "  ", "e" * 150]) | junk, "action": st.sampled_from(ACTIONS) | junk,
    "query": ids, "whale_id": ids, "other_whale": ids, "expect_last": st.none() | st.integers(-2, 40) | junk | odd,
    "scores": st.dictionaries(st.sampled_from(WHALES), st.floats(allow_nan=False, allow_infinity=False)
                              | st.fixed_dictionaries({"score": st.floats(allow_nan=False, allow_infinity=False)}))
    | junk})
undo_bodies = st.fixed_dictionaries({}, optional={"who": st.sampled_from(["ana", "bob"]) | junk,
                                                  "decision_id": st.integers(-1, 40) | junk | odd})
raw_bodies = st.sampled_from([b"", b"{", b"[]", b"null", b'{"action": NaN}', b'{"query": Infinity}', b"\xff\xfe",
                              b'{"decision_id": ' + b"9" * 5000 + b"}", b'{"query": "\\ud800", "action": "accept"}',
                              b'{"expect_last": 1e999, "query": "q0", "action": "accept", "whale_id": "w0"}',
                              b"[" * 30000 + b"]" * 30000, b'{"who": "' + b"a" * 70000 + b'"}'])
requests = st.one_of(
    st.tuples(st.just("POST"), st.sampled_from(["/api/decide"]), decision_bodies.map(lambda b: json.dumps(b).encode())),
    st.tuples(st.just("POST"), st.sampled_from(["/api/undo"]), undo_bodies.map(lambda b: json.dumps(b).encode())),
    st.tuples(st.just("POST"), st.sampled_from(["/api/decide", "/api/undo"]), raw_bodies | junk.map(
        lambda b: json.dumps(b).encode())),
    st.tuples(st.just("GET"), st.sampled_from(["/api/state", "/api/state?undecided=1&limit=2&offset=1",
                                               "/api/state?decision=%00", "/api/state?limit=-1", "/api/state?who=" + "z" * 300,
                                               "/photo/p1", "/photo/outside", "/photo/..%2F..%2Fetc%2Fpasswd",
                                               "/photo/" + "x" * 400, "/heatmap/q0/p0", "/", "/photo/%ED%A0%80", "/matches/q0/p1",
                                               "/api/state?offset=99999999999", "/api/state?who=%ED%A0%80",
                                               "/api/state?decision=review&viewpoint=lateral"]), st.just(b"")))
headers = st.fixed_dictionaries({}, optional={
    "content-type": st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                     "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""]),
    "x-whaleid-token": st.sampled_from([TOKEN, "wrong", "", TOKEN + "x"]),
    "origin": st.sampled_from([f"http://{HOST}", "http://evil.example", "null", f"https://{HOST}",
                               "http://localhost:8765"]),
    "host": st.sampled_from([HOST, "evil.example", "127.0.0.1:1", "localhost:8765", "[::1]:8765", "", "127.0.0.1"]),
    "sec-fetch-site": st.sampled_from(["same-origin", "cross-site", "same-site", "none"])})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(st.lists(st.tuples(requests, headers), min_size=1, max_size=6))
def test_no_request_breaks_the_catalogue(catalogue_file, tmp_path_factory, calls):
    """Never a 500; a write that gets 2xx is the log's newest row, any other writes nothing; the log always
    replays whole and the catalogue checks clean."""
    db = tmp_path_factory.mktemp("h") / "c.sqlite"
    db.write_bytes(catalogue_file.read_bytes())
    with client(db) as c:
        for (method, path, body), hdrs in calls:
            before = len(Catalogue.open(db).decisions())
            r = c.request(method, path, content=body if method == "POST" else None, headers=hdrs)
            assert r.status_code < 500, (method, path, body[:200], hdrs, r.status_code, r.text[:300])
            log = Catalogue.open(db).decisions()
            if method == "POST" and r.status_code < 300:
                assert len(log) == before + 1 and log[-1]["id"] == r.json()["id"]
            else:
                assert len(log) == before
    assert_whole(db)


def test_the_request_that_bricked_a_catalogue_is_refused_and_an_old_bricked_log_opens(catalogue_file, tmp_path):
    db = tmp_path / "c.sqlite"
    db.write_bytes(catalogue_file.read_bytes())
    with client(db) as c:
        r = c.post("/api/decide", json={"query": "q0", "action": "reject"}, headers=good_headers())
        assert r.status_code == 400 and "whale id of a reject" in r.json()["error"]
        for bad in ({"query": "q0", "action": "reject", "whale_id": "w-none"}, {"query": "q0", "action": "new_whale",
                    "whale_id": "   "}, {"query": "q0", "action": "accept", "whale_id": ["w0"]},
                    {"query": "q0", "action": "accept", "whale_id": "w0", "who": {"a": 1}},
                    {"query": "q0", "action": "accept", "whale_id": "w0", "who": "a" * 101}):
            r = c.post("/api/decide", json=bad, headers=good_headers())
            assert r.status_code == 400, (bad, r.text)
        r = c.post("/api/decide", content=b'{"query": "q0", "action": "accept", "whale_id": "w0", "scores": {"w0": NaN}}',
                   headers=good_headers())
        assert r.status_code == 400 and "NaN" in r.json()["error"]
    assert Catalogue.open(db).decisions() == []
    # a catalogue bricked by an earlier whaleid: the bad row is in the append-only log for good
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO decisions (at, who, action, query, whale_id, other_whale, undoes, model_hash, scores) "
                 "VALUES ('2026', 'eve', 'reject', 'q0', NULL, NULL, NULL, ?, '{}')", ("a" * 64,))
    conn.commit()
    conn.close()
    cat = Catalogue.open(db)
    assert cat.state()["skipped"] == [{"id": 1, "why": "reject: it names no whale"}]
    cat.decide("ana", "accept", "q0", whale_id="w1", expect_last=None)  # the skipped row is not the photo's last
    assert cat.apply_reviewed() == 1
    exported = json.loads(plain(cat, tmp_path / "c.json").read_text())
    assert [p["current_whale"] for p in exported["photos"] if p["image_id"] == "q0"] == ["w1"]
    problems, notes = check(db)
    assert problems == [PLANTED] and any("decision 1 is skipped" in n for n in notes)
    with client(db) as c:
        assert c.get("/api/state", headers={"host": HOST}).status_code == 200


def test_only_the_servers_own_page_can_write(catalogue_file, tmp_path):
    db = tmp_path / "c.sqlite"
    db.write_bytes(catalogue_file.read_bytes())
    body = json.dumps({"query": "q1", "action": "accept", "whale_id": "w1"})
    with client(db) as c:
        page = c.get("/", headers={"host": HOST}).text
        assert f'content="{TOKEN}"' in page  # the page carries the token its writes need
        cases = {  # what a page on another origin can send, and what a rebinding page can
            "form, text/plain": ({"content-type": "text/plain", "origin": "http://evil.example"}, 403),
            "no-cors fetch, no token": ({"content-type": "text/plain", "origin": f"http://{HOST}"}, 403),
            "cross-site with token": (good_headers(origin="http://evil.example"), 403),
            "sec-fetch-site cross-site": (good_headers(**{"sec-fetch-site": "cross-site"}), 403),
            "wrong token": (good_headers(**{"x-whaleid-token": "guess"}), 403),
            "text/plain with token": (good_headers(**{"content-type": "text/plain"}), 415),
            "rebinding Host": (good_headers(host="evil.example:8765", origin="http://evil.example:8765"), 400),
        }
        for name, (hdrs, status) in cases.items():
            r = c.post("/api/decide", content=body, headers=hdrs)
            assert r.status_code == status, (name, r.status_code, r.text)
        assert c.get("/api/state", headers={"host": "evil.example"}).status_code == 400
        assert c.get("/", headers={"host": "evil.example:8765"}).status_code == 400
        assert Catalogue.open(db).decisions() == []
        r = c.post("/api/decide", content=body, headers=good_headers(**{"sec-fetch-site": "same-origin"}))
        assert r.status_code == 200
        big = c.post("/api/decide", content=b'{"who": "' + b"a" * 70_000 + b'"}', headers=good_headers())
        assert big.status_code == 413
        deep = c.post("/api/decide", content=b"[" * 30_000 + b"]" * 30_000, headers=good_headers())
        assert deep.status_code == 400
        # only catalogue photos are served: a row naming a file outside the survey folder is not
        assert c.get("/photo/p1", headers={"host": HOST}).status_code == 200
        assert c.get("/photo/outside", headers={"host": HOST}).status_code == 404
        assert c.get("/photo/..%2F..%2Fc.sqlite", headers={"host": HOST}).status_code == 404
    assert [d["action"] for d in Catalogue.open(db).decisions()] == ["accept"]


def test_off_loopback_a_token_is_required_for_every_request(catalogue_file, tmp_path, capsys):
    from catalogue.review.server import serve

    with pytest.raises(CatalogueError, match="--token"):
        serve(catalogue_file, host="0.0.0.0")
    c = TestClient(app(catalogue_file, "ana", host="0.0.0.0", port=8765, token=TOKEN), base_url="http://10.1.2.3:8765",
                   raise_server_exceptions=False)
    assert c.get("/").status_code == 403 and c.get("/api/state").status_code == 403
    assert c.get("/photo/p1").status_code == 403
    assert c.get(f"/?token={TOKEN}").status_code == 200 and c.get(f"/photo/p1?token={TOKEN}").status_code == 200
    assert c.get("/api/state", headers={"x-whaleid-token": TOKEN}).status_code == 200


def test_a_locked_database_answers_503_and_the_page_does_not_wait(catalogue_file, tmp_path):
    db = tmp_path / "c.sqlite"
    db.write_bytes(catalogue_file.read_bytes())
    holder = sqlite3.connect(db, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with client(db, busy_timeout=0.3) as c:
            started = time.monotonic()
            assert c.get("/", headers={"host": HOST}).status_code == 200
            assert c.get("/api/state", headers={"host": HOST}).status_code == 200  # WAL: readers are not blocked
            r = c.post("/api/decide", json={"query": "q1", "action": "accept", "whale_id": "w1"}, headers=good_headers())
            assert r.status_code == 503 and r.headers["retry-after"] == "2" and "busy" in r.json()["error"]
            assert time.monotonic() - started < 10
            waited = []

            def slow_decide():
                waited.append(c.post("/api/decide", json={"query": "q2", "action": "accept", "whale_id": "w1"},
                                     headers=good_headers()).status_code)
            t = threading.Thread(target=slow_decide)
            t.start()
            assert c.get("/", headers={"host": HOST}).status_code == 200  # while a write waits for the lock
            t.join()
            assert waited == [503]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert Catalogue.open(db).decisions() == []


def test_the_queue_comes_a_page_at_a_time_without_embeddings(catalogue_file, tmp_path, monkeypatch):
    db = tmp_path / "c.sqlite"
    db.write_bytes(catalogue_file.read_bytes())

    def no_embeddings(self):
        raise AssertionError("the queue loaded the catalogue's embeddings")
    monkeypatch.setattr(Catalogue, "photos", no_embeddings)
    cat = Catalogue.open(db)
    cat.decide("ana", "accept", "q0", whale_id="w1", expect_last=None)
    cat.decide("ana", "reject", "q1", whale_id="w0", expect_last=None)
    cat.close()
    with client(db) as c:
        pages = [c.get(f"/api/state?limit=4&offset={o}&who=ana", headers={"host": HOST}).json() for o in (0, 4)]
        assert [i["image_id"] for p in pages for i in p["items"]] == QUERIES and pages[0]["shown"] == 6
        first = pages[0]["items"]
        assert [c["accepted"] for c in first[0]["candidates"]] == [False, True, False]
        assert first[1]["identity"] is None and [c["rejected"] for c in first[1]["candidates"]] == [True, False, False]
        undecided = c.get("/api/state?undecided=1", headers={"host": HOST}).json()
        assert "q1" in [i["image_id"] for i in undecided["items"]]  # a reject gives no identity
        assert "q0" not in [i["image_id"] for i in undecided["items"]] and undecided["undecided"] == 5
        assert [m["query"] for m in pages[0]["mine"]] == ["q1", "q0"]  # the server knows who did what
        assert pages[0]["new_whale_id"] == "new-whale-1"


def test_corrections_after_apply_move_the_photo_and_export_lists_it_once(catalogue_file, tmp_path):
    db = tmp_path / "c.sqlite"
    db.write_bytes(catalogue_file.read_bytes())
    cat = Catalogue.open(db)
    accepted = cat.decide("ana", "accept", "q0", whale_id="w1", expect_last=None)
    cat.decide("ana", "new_whale", "q1", whale_id="new-whale-1", expect_last=None)
    assert cat.apply_reviewed() == 2

    def searchable():
        table, _ = cat.photos()
        return dict(zip(table.image_id, table.whale_id))
    assert searchable()["q0"] == "w1" and searchable()["q1"] == "new-whale-1"
    undo = cat.decide("ana", "undo", "q0", undoes=accepted)
    assert "q0" not in searchable()  # no identity: out of the searchable catalogue at once
    cat.decide("bob", "new_whale", "q0", whale_id="new-whale-2", expect_last=None)
    assert cat.apply_reviewed() == 1 and searchable()["q0"] == "new-whale-2"
    cat.decide("bob", "merge", "q0", whale_id="w2", other_whale="new-whale-2")
    assert cat.current_whales(["new-whale-2"]) == ["w2"]
    exported = plain(cat, tmp_path / "c.csv").read_text().splitlines()
    rows = [r.split(",") for r in exported[1:]]
    assert len([r for r in rows if r[0] == "q0"]) == 1 and len(rows) == len({r[0] for r in rows})
    assert [r[-1] for r in rows if r[0] == "q0"] == ["w2"]
    assert undo > accepted
    cat.close()
    assert_whole(db)


def test_a_killed_server_loses_no_acknowledged_decision(catalogue_file, tmp_path):
    """``kill -9`` of ``whaleid review`` during a burst of 200 decisions from two reviewers: every decision it
    acknowledged is in the log, and the catalogue checks clean."""
    import signal
    import urllib.error
    import urllib.request

    from tests.catalogue.test_review import Server

    db = tmp_path / "c.sqlite"
    db.write_bytes(catalogue_file.read_bytes())
    server = Server(db).start()
    acked, stop = [], threading.Event()

    def burst(who, queries):
        for n in range(100):
            q = queries[n % len(queries)]
            try:
                item = next(i for i in server.get(f"/api/state?who={who}")["items"] if i["image_id"] == q)
                body = {"who": who, "query": q, "expect_last": item["last"]["id"] if item["last"] else None,
                        "action": "reject" if item["identity"] else "accept",
                        "whale_id": item["identity"] or WHALES[n % 3]}
                code, answer = server.post("/api/decide", body)
            except (OSError, urllib.error.URLError, ValueError):  # the server is gone: the burst ends
                return
            if code == 200:
                acked.append(answer["id"])
            if stop.is_set():
                return

    threads = [threading.Thread(target=burst, args=(w, qs)) for w, qs in (("ana", QUERIES[:3]), ("bob", QUERIES[3:]))]
    for t in threads:
        t.start()
    deadline = time.time() + 60
    while len(acked) < 60 and time.time() < deadline:
        time.sleep(0.01)
    os.kill(server.proc.pid, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(timeout=60)
    server.proc.wait(timeout=30)
    assert len(acked) >= 60
    logged = {d["id"] for d in Catalogue.open(db).decisions()}
    assert set(acked) <= logged
    assert_whole(db)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({
    "action": st.sampled_from(ACTIONS + ("bogus",)), "query": st.sampled_from(["q0", "q1", "", None]),
    "whale_id": st.sampled_from(["w0", "w1", "w2", "", None]), "other_whale": st.sampled_from(["w0", "w1", None]),
    "undoes": st.none() | st.integers(0, 12)}), max_size=12))
def test_the_replay_never_raises_on_any_log(rows):
    log = [dict(r, id=i + 1, who="x", at="t") for i, r in enumerate(rows)]
    state = replay(log, {"w0", "w1"})
    assert set(state["standing"]) | {s["id"] for s in state["skipped"]} <= {d["id"] for d in log}
    assert all(state["alias"].get(w, w) not in state["alias"] for w in state["alias"])  # merges end somewhere


def test_a_heatmap_that_cannot_be_drawn_is_a_422_not_a_500(catalogue_file, tmp_path, monkeypatch):
    import catalogue.review.server as review

    class Unreadable:
        def __init__(self, bundle, model_hash):
            pass

        def png(self, a, b):
            raise OSError(f"cannot identify image file {a!r}")
    monkeypatch.setattr(review, "Heatmaps", Unreadable)
    c = TestClient(app(catalogue_file, "ana", bundle=tmp_path / "b.zip", port=8765, token=TOKEN),
                   base_url=f"http://{HOST}", raise_server_exceptions=False)
    r = c.get("/heatmap/q0/p0")
    assert r.status_code == 422 and "cannot draw the heatmap of q0 and p0" in r.text
    assert c.get("/heatmap/q0/outside").status_code == 404  # a file outside the survey is not even opened


def test_photos_catalogued_before_folders_were_recorded_are_served_only_as_photo_files(tmp_path):
    from catalogue.records.photos import photo_roots, servable

    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old_photo, old_text, new_photo = tmp_path / "old" / "a.jpg", tmp_path / "old" / "a.txt", tmp_path / "new" / "b.jpg"
    for f in (old_photo, old_text, new_photo):
        f.write_bytes(b"x")
    cat = Catalogue.create(tmp_path / "c.sqlite", "a" * 64, "m", 4)
    assert servable(str(old_photo), photo_roots(cat)) is None and servable(str(old_text), photo_roots(cat))
    cat.add_photos([{"image_id": "a", "whale_id": "w", "path": str(old_photo)}], np.ones((1, 4)), "old")
    add_photo_root(cat, tmp_path / "new")
    rules = photo_roots(cat)
    assert rules == ([(tmp_path / "new").resolve()], True)
    assert servable(str(old_photo), rules) is None and servable(str(new_photo), rules) is None
    assert servable(str(old_text), rules) == "not a photo file"
    fresh = Catalogue.create(tmp_path / "f.sqlite", "a" * 64, "m", 4)
    add_photo_root(fresh, tmp_path / "new")  # recorded before any photo: only that folder
    assert servable(str(old_photo), photo_roots(fresh)) == "outside the survey folders it was catalogued from"


def test_the_matched_keypoints_of_a_pair_are_drawn(catalogue_file):
    pytest.importorskip("cv2")
    with client(catalogue_file) as c:
        r = c.get("/matches/q0/p0", headers={"host": HOST})
        assert r.status_code == 200 and r.headers["content-type"] == "image/png" and int(r.headers["x-inliers"]) >= 0
        assert r.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert c.get("/matches/q0/outside", headers={"host": HOST}).status_code == 404  # never opened
        assert c.get("/matches/q0/nope", headers={"host": HOST}).status_code == 404


def test_a_lone_surrogate_in_an_id_is_refused_before_sqlite_sees_it(catalogue_file, tmp_path):
    """A JSON body may escape a lone surrogate (``"\\ud800"``), which UTF-8 cannot carry: the store looked the
    photo up in SQLite before validating it, and SQLite's encoder raised (a 500, found by the property test above).
    Now it is a 400 naming the id, and nothing is written."""
    db = tmp_path / "c.sqlite"
    db.write_bytes(catalogue_file.read_bytes())
    with client(db) as c:
        for body in (b'{"query": "\\ud800", "action": "accept", "whale_id": "w0"}',
                     b'{"query": "q0\\udfff", "action": "new_whale"}'):
            r = c.post("/api/decide", content=body, headers=good_headers())
            assert r.status_code == 400 and "surrogate" in r.json()["error"], (body, r.status_code, r.text)
    assert Catalogue.open(db).decisions() == []
