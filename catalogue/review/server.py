"""``whaleid review``: the review page, a Starlette app served by uvicorn (on 127.0.0.1 unless told otherwise).

The page (``review.html``, plain HTML and JavaScript, no build step) shows each photo ``whaleid identify``
proposed beside its candidate whales, each with its best photos, the calibrated probability, date, encounter
and filename; zooming one photo zooms them all. Every action is a button (keys are shortcuts, their legend
always in view); after an accept or a new whale the page moves on to the next photo without an identity.

The API is what the page uses: ``GET /api/state`` (a page of the queue under the filters in force, each photo's
identity and last standing decision, the reviewer's own standing decisions), ``POST /api/decide`` and
``POST /api/undo`` (JSON; 409 with the reason when another reviewer decided the photo since the page looked, a
new whale's id exists, or the decision is undone already), ``GET /photo/{image_id}``, and with ``--bundle``
``GET /heatmap/{query}/{photo}`` (the pair heatmap of the query and a candidate's photo, as ``tools.explain``
draws it), and ``GET /matches/{query}/{photo}`` (the two photos side by side with a line between each keypoint
pair that RANSAC kept, ``catalogue.deciding.local``). Every decision is validated and appended to the catalogue's log (``catalogue.records.store``) with who, when,
the model hash and the scores shown; nothing is kept in the server, so decisions survive a restart and two
servers on one catalogue see each other's.

What a request must be before anything is read or written is ``catalogue.review.guard``'s; which files may be served,
``catalogue.records.photos``'. The database is used from a thread pool, never on the event loop: a database another
process keeps locked answers 503 with ``Retry-After`` after ``busy_timeout`` seconds, and the page itself never
touches it.
"""

from __future__ import annotations

import contextlib
import html
import os
import secrets
import sqlite3
import threading
from pathlib import Path
from typing import Optional

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from catalogue.records import tables
from catalogue.records.decisions import ANY, MAX_ID, MAX_WHO, clean_text, optional_id
from catalogue.review.guard import Guard, check_token, is_loopback, is_wildcard, json_object
from catalogue.records.photos import on_private_copies, photo_roots, photo_type, read_served
from catalogue.review.slow_clients import HEADER_TIMEOUT, header_timeout_protocol
from catalogue.review.queue import DECISIONS, MAX_PAGE, VIEWPOINTS, queue
from catalogue.records.errors import CatalogueError, Conflict
from catalogue.records.store import Catalogue

PAGE = Path(__file__).with_name("review.html")
DECIDE_KEYS = ("who", "action", "query", "whale_id", "other_whale", "scores", "expect_last")
UNDO_KEYS = ("who", "decision_id")


class Heatmaps:
    """Pair heatmaps (``core.explain``) with the first model of the catalogue's own bundle, unpacked once."""

    def __init__(self, bundle: Path, model_hash: str):
        import threading

        from core.bundle import BundleError, bundle_hash, opened

        if bundle_hash(bundle) != model_hash:
            raise CatalogueError(f"{bundle} is not the bundle that embedded this catalogue ({model_hash[:12]}); "
                                 "its heatmaps would explain another model")
        try:  # the model is built inside the block; the unpacked copy and its modules go with it
            with opened(bundle, prefix="whaleid_review_") as unpacked:
                self.model, self.cfg = unpacked.model(0)
        except BundleError as exc:
            raise CatalogueError(str(exc)) from exc
        self.lock = threading.Lock()

    def close(self) -> None:
        self.model = None

    def png(self, path_a: str, path_b: str) -> bytes:
        import io

        from PIL import Image

        from core.explain import load_image, overlay, pair_heatmaps

        with self.lock:
            (xa, pa), (xb, pb) = load_image(path_a, self.cfg), load_image(path_b, self.cfg)
            heat_a, heat_b, _ = pair_heatmaps(self.model, xa, xb)
        both = np.concatenate([overlay(pa, heat_a), np.full((pa.shape[0], 6, 3), 255, np.uint8), overlay(pb, heat_b)], 1)
        buf = io.BytesIO()
        Image.fromarray(both).save(buf, format="PNG")
        return buf.getvalue()


def app(db: Path, who: Optional[str] = None, bundle: Optional[Path] = None, host: str = "127.0.0.1", port: int = 8765,
        token: Optional[str] = None, busy_timeout: float = 2.0) -> Starlette:
    """The review app on catalogue ``db`` (opened per request: every answer reads the log as it is now), served
    at ``host``:``port`` (the Host header must name it); ``token`` (default: a fresh one) is what a write must
    carry; with ``bundle`` (the one that embedded the catalogue), pair heatmaps."""
    db = Path(db)
    cat = Catalogue.open(db)  # refuse a missing or newer catalogue before serving
    heatmaps = Heatmaps(Path(bundle), cat.meta["model_hash"]) if bundle else None
    cat.close()
    default_who = clean_text(who or os.environ.get("USER") or "reviewer", "the reviewer's name", MAX_WHO)
    token = check_token(token) if token is not None else secrets.token_urlsafe(24)
    guard = Guard(host, port, token)
    page_html = PAGE.read_text().replace("{{token}}", html.escape(token, quote=True))

    def opened() -> Catalogue:
        return Catalogue.open(db, timeout=busy_timeout)

    def guarded(handler, write=False):
        async def endpoint(request: Request):
            refused = guard.refuse(request, write)
            if refused is not None:
                return refused
            try:
                return await handler(request)
            except Conflict as exc:  # a message may quote what was sent: lone surrogates escaped, never a 500
                return JSONResponse({"error": str(exc).encode("utf-8", "backslashreplace").decode()}, 409)
            except CatalogueError as exc:
                return JSONResponse({"error": str(exc).encode("utf-8", "backslashreplace").decode()}, 400)
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                return JSONResponse({"error": f"the catalogue is busy: another program holds its write lock for over "
                                              f"{busy_timeout:g} s ({db}; this server's own writes take turns and "
                                              "never hold it that long); try again"},
                                    503, headers={"Retry-After": "2"})
        return endpoint

    def with_catalogue(work, *args):
        cat = opened()
        try:
            return work(cat, *args)
        finally:
            cat.close()

    writing = threading.Lock()  # the server's own writes take turns: a 503 is always another program's lock

    def writes_catalogue(work, *args):
        with writing:
            return with_catalogue(work, *args)

    async def page(request: Request):
        return HTMLResponse(page_html, headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                                                "Content-Security-Policy": "frame-ancestors 'none'"})

    async def state(request: Request):
        q = request.query_params
        filters = {"decision": q.get("decision", ""), "viewpoint": q.get("viewpoint", ""),
                   "undecided": q.get("undecided", "") in ("1", "true", "on")}
        if filters["decision"] not in ("",) + DECISIONS:
            raise CatalogueError(f"the decision filter must be one of {', '.join(DECISIONS)}, got {filters['decision'][:40]!r}")
        if filters["viewpoint"] not in ("",) + VIEWPOINTS:
            raise CatalogueError(f"viewpoint filter must be top or lateral, got {filters['viewpoint'][:40]!r}")
        offset, limit = _count(q.get("offset", "0"), "offset", 10 ** 9), _count(q.get("limit", "100"), "limit", MAX_PAGE)
        reviewer = clean_text(q.get("who") or default_who, "who (the reviewer's name)", MAX_WHO)
        body = await run_in_threadpool(with_catalogue, queue, filters, offset, max(limit, 1), reviewer)
        return JSONResponse(dict(body, who=reviewer, heatmaps=heatmaps is not None), headers={"Cache-Control": "no-store"})

    def photo_bytes(cat: Catalogue, image_id: str) -> Optional[bytes]:
        path = tables.path_of(cat, image_id)  # read_served checks the file it opens, once
        return None if path is None else read_served(path, photo_roots(cat))

    async def photo(request: Request):
        image_id = clean_text(request.path_params["image_id"], "the photo id", MAX_ID)
        body = await run_in_threadpool(with_catalogue, photo_bytes, image_id)
        if body is None:
            return Response(f"no photo {image_id} in this catalogue", status_code=404)
        return Response(body, media_type=photo_type(body), headers={"X-Content-Type-Options": "nosniff",
                                                                     "Cache-Control": "no-store"})

    async def heatmap(request: Request):
        if heatmaps is None:
            return Response("start whaleid review with --bundle for heatmaps", status_code=404)
        ids = [clean_text(request.path_params[k], "the photo id", MAX_ID) for k in ("query", "photo")]

        def draw(cat):
            return on_private_copies([tables.path_of(cat, i) for i in ids], photo_roots(cat), heatmaps.png)
        try:  # drawn from private copies of the photos, read race-free
            png = await run_in_threadpool(with_catalogue, draw)
        except Exception as exc:  # an unreadable or undecodable photo: say so, the server goes on
            return Response(f"cannot draw the heatmap of {ids[0]} and {ids[1]}: {type(exc).__name__}: {exc}"[:400],
                            status_code=422)
        if png is None:
            return Response("no such photo in this catalogue", status_code=404)
        return Response(png, media_type="image/png")

    def local_evidence(cat: Catalogue):
        from catalogue.deciding.local import Evidence
        from catalogue.deciding.calibration import Calibration

        stored = cat.meta.get("calibration")
        local = Calibration.from_json(stored).local if stored else {}
        evidence = Evidence(db, local.get("options"), bundle=bundle)
        evidence.step.cache_dir = None  # it matches private copies: keep them out of the catalogue's keypoint store
        return evidence

    async def matches(request: Request):
        from catalogue.review.pictures import match_picture

        ids = [clean_text(request.path_params[k], "the photo id", MAX_ID) for k in ("query", "photo")]

        def work(cat):
            views, evidence = [tables.view_of(cat, i) for i in ids], local_evidence(cat)
            return on_private_copies([tables.path_of(cat, i) for i in ids], photo_roots(cat),
                                     lambda a, b: match_picture(evidence, a, views[0], b, views[1]))
        try:  # drawn from private copies of the photos, read race-free
            drawn = await run_in_threadpool(with_catalogue, work)
        except Exception as exc:  # an unreadable photo, or OpenCV missing: say so, the server goes on
            return Response(f"cannot match {ids[0]} and {ids[1]}: {type(exc).__name__}: {exc}"[:400], status_code=422)
        if drawn is None:
            return Response("no such photo in this catalogue", status_code=404)
        png, n = drawn
        return Response(png, media_type="image/png", headers={"X-Inliers": str(n)})

    async def decide(request: Request):
        body = await json_object(request, DECIDE_KEYS)
        if isinstance(body, Response):
            return body
        expect = body["expect_last"] if "expect_last" in body else ANY

        def work(cat):
            return cat.decide(body.get("who") or default_who, body.get("action"), body.get("query"),
                              body.get("whale_id"), body.get("other_whale"), scores=body.get("scores"),
                              expect_last=expect)
        return JSONResponse({"id": await run_in_threadpool(writes_catalogue, work)})

    async def undo(request: Request):
        body = await json_object(request, UNDO_KEYS)
        if isinstance(body, Response):
            return body
        target = optional_id(body.get("decision_id"), "decision_id")
        if target is None:
            raise CatalogueError("an undo names the decision it undoes (decision_id)")

        def work(cat):
            query = tables.decision_query(cat, target)
            if query is None:
                raise CatalogueError(f"no decision {target}")
            return cat.decide(body.get("who") or default_who, "undo", query, undoes=target)
        return JSONResponse({"id": await run_in_threadpool(writes_catalogue, work)})

    async def favicon(request: Request):
        return Response(status_code=204)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        try:
            yield
        finally:  # the unpacked bundle of the heatmaps goes with the server
            if heatmaps is not None:
                heatmaps.close()

    return Starlette(lifespan=lifespan, routes=[
        Route("/", guarded(page)), Route("/favicon.ico", favicon), Route("/api/state", guarded(state)),
        Route("/photo/{image_id}", guarded(photo)), Route("/heatmap/{query}/{photo}", guarded(heatmap)),
        Route("/matches/{query}/{photo}", guarded(matches)),
        Route("/api/decide", guarded(decide, write=True), methods=["POST"]),
        Route("/api/undo", guarded(undo, write=True), methods=["POST"])])


def _count(text: str, what: str, most: int) -> int:
    if not (text.isascii() and text.isdigit()) or len(text) > 10 or int(text) > most:
        raise CatalogueError(f"{what} must be a whole number from 0 to {most}, got {text[:20]!r}")
    return int(text)


def serve(db: Path, host: str = "127.0.0.1", port: int = 8765, who: Optional[str] = None, bundle=None,
          token: Optional[str] = None, header_timeout: float = HEADER_TIMEOUT) -> None:
    """Serve the review page. Off loopback a token is required: refuse to start without one."""
    import sys

    import uvicorn

    if not is_loopback(host) and not token:
        raise CatalogueError(f"--host {host} serves the catalogue beyond this machine, where anyone who reaches it "
                             "could read the photos and write decisions: give --token SECRET (or --token generate), "
                             "or serve on 127.0.0.1")
    if token == "generate":
        token = secrets.token_urlsafe(24)
    elif token is not None:
        check_token(token)
    application = app(db, who, bundle, host=host, port=port, token=token)
    shown = "127.0.0.1" if is_wildcard(host) else f"[{host}]" if ":" in host else host
    address = f"http://{shown}:{port}/" + ("" if is_loopback(host) else f"?token={token}")
    if not is_loopback(host):
        print("WARNING: serving beyond this machine" + (" on every interface" if is_wildcard(host) else f" on {host}")
              + ": anyone with the token can read the photos and write decisions, over plain HTTP (no TLS); a reviewer"
              " name is not an identity.", file=sys.stderr, flush=True)
    print(f"reviewing {db} at {address} (Ctrl-C stops; every decision is already saved)", flush=True)
    uvicorn.run(application, host=host, port=port, log_level="warning", http=header_timeout_protocol(header_timeout),
                timeout_keep_alive=5)
