"""``whaleid review``: the review page, a Starlette app served by uvicorn on 127.0.0.1.

The page (``review.html``, plain HTML and JavaScript, no build step) shows each photo ``whaleid identify``
proposed beside its candidate whales, each with its best photos, the calibrated probability, date, encounter
and filename; zooming one photo zooms them all. Keys: ``j``/``k`` next/previous photo, ``1``-``9`` pick a
candidate, ``a`` accept it, ``r`` reject it, ``n`` new whale (asks for its id), ``m`` merge the picked whale into
the first candidate, ``u`` undo your last decision, ``+``/``-``/``0`` zoom. Filters (decision, viewpoint,
undecided only) are in the URL and always shown on the page.

The API is what the page uses: ``GET /api/state`` (the queue under the filters in force, each photo's last
standing decision), ``POST /api/decide`` and ``POST /api/undo`` (JSON; 409 with the reason when another reviewer
decided the photo since the page looked, a new whale's id exists, or the decision is undone already), and
``GET /photo/{image_id}``, and with ``--bundle`` ``GET /heatmap/{query}/{photo}`` (``h`` on the page: the pair
heatmap of the query and the picked candidate's best photo, as ``tools.explain`` draws it). Every decision is appended to the catalogue's log (``catalogue.store``) with who,
when, the model hash and the scores shown; nothing is kept in the server, so decisions survive a restart and
two servers on one catalogue see each other's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from catalogue.store import Catalogue, CatalogueError, Conflict

PAGE = Path(__file__).with_name("review.html")
FILTERS = ("decision", "viewpoint", "undecided")


def queue(cat: Catalogue, filters: dict) -> dict:
    """The proposals under ``filters`` with what the page shows of each, and the filters as applied."""
    from catalogue.match import view_class

    table, _ = cat.photos()
    info = {r["image_id"]: {k: _plain(v) for k, v in r.items()} for r in table.to_dict(orient="records")}
    state = cat.state()
    items, total = [], 0
    for p in cat.proposals():
        total += 1
        last = state["last"].get(p["image_id"])
        if filters.get("decision") and p["decision"] != filters["decision"]:
            continue
        if filters.get("viewpoint") and view_class(p["viewpoint"]) != filters["viewpoint"]:
            continue
        if filters.get("undecided") and last is not None:
            continue
        candidates = []
        for c in p["candidates"]:
            photos = [{"image_id": pid, "similarity": sim, "date": info.get(pid, {}).get("date"),
                       "encounter_id": info.get(pid, {}).get("encounter_id"),
                       "filename": Path(str(info.get(pid, {}).get("path") or "")).name} for pid, sim in c["photos"]]
            candidates.append({"whale_id": c["whale_id"], "current": state["alias"].get(c["whale_id"], c["whale_id"]),
                               "score": c["score"], "probability": c.get("probability"), "photos": photos})
        items.append({"image_id": p["image_id"], "decision": p["decision"], "score": p["score"],
                      "probability": p["probability"], "viewpoint": p["viewpoint"], "date": p["date"],
                      "encounter_id": p["encounter_id"], "filename": Path(str(p["path"] or "")).name,
                      "candidates": candidates, "assigned": state["assigned"].get(p["image_id"]),
                      "last": _public(last)})
    applied = {k: v for k, v in filters.items() if v}
    return {"filters": applied, "shown": len(items), "total": total, "items": items,
            "model": {"name": cat.meta.get("model_name"), "hash": cat.meta.get("model_hash", "")[:12]}}


def _plain(value):
    """None for a missing value (pandas' NaN is not JSON)."""
    return None if isinstance(value, float) and value != value else value


def _public(d: Optional[dict]) -> Optional[dict]:
    if d is None:
        return None
    return {k: d[k] for k in ("id", "at", "who", "action", "whale_id", "other_whale")}


class Heatmaps:
    """Pair heatmaps (``core.explain``) with the first model of the catalogue's own bundle, unpacked once."""

    def __init__(self, bundle: Path, model_hash: str):
        import tempfile
        import threading
        import zipfile

        from catalogue.embed import bundle_hash
        from core.inference import bundle_registries, load_bundle_model, load_manifest
        from submission.check import unsafe_entries

        if bundle_hash(bundle) != model_hash:
            raise CatalogueError(f"{bundle} is not the bundle that embedded this catalogue ({model_hash[:12]}); "
                                 "its heatmaps would explain another model")
        self.tmp = tempfile.TemporaryDirectory(prefix="whaleid_review_")
        with zipfile.ZipFile(bundle) as zf:
            bad = unsafe_entries(zf)
            if bad:
                raise CatalogueError(f"{bundle}: refused: {bad[0]}")
            zf.extractall(self.tmp.name)
        import sys

        sys.path.insert(0, self.tmp.name)  # the bundle's own plugin modules
        root = Path(self.tmp.name)
        manifest = load_manifest(root)
        self.model, self.cfg = load_bundle_model(root, manifest["models"][0], bundle_registries(manifest))
        self.lock = threading.Lock()

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


def app(db: Path, who: Optional[str] = None, bundle: Optional[Path] = None) -> Starlette:
    """The review app on catalogue ``db`` (opened per request: every answer reads the log as it is now); with
    ``bundle`` (the one that embedded the catalogue), pair heatmaps."""
    db = Path(db)
    cat = Catalogue.open(db)  # refuse a missing or newer catalogue before serving
    heatmaps = Heatmaps(Path(bundle), cat.meta["model_hash"]) if bundle else None
    cat.close()
    default_who = who or os.environ.get("USER") or "reviewer"

    def path_of(cat: Catalogue, image_id: str) -> Optional[str]:
        row = cat.conn.execute("SELECT path FROM photos WHERE image_id = ? UNION ALL "
                               "SELECT path FROM proposals WHERE image_id = ?", (image_id, image_id)).fetchone()
        return row[0] if row and row[0] and Path(row[0]).is_file() else None

    def opened() -> Catalogue:
        return Catalogue.open(db)

    async def page(request: Request):
        return HTMLResponse(PAGE.read_text())

    async def state(request: Request):
        filters = {k: request.query_params.get(k) for k in FILTERS}
        if filters["viewpoint"] and filters["viewpoint"] not in ("top", "lateral"):
            return JSONResponse({"error": f"viewpoint filter must be top or lateral, got {filters['viewpoint']!r}"}, 400)
        cat = opened()
        try:
            return JSONResponse(dict(queue(cat, filters), who=request.query_params.get("who") or default_who,
                                     heatmaps=heatmaps is not None))
        finally:
            cat.close()

    async def photo(request: Request):
        image_id = request.path_params["image_id"]
        cat = opened()
        try:
            path = path_of(cat, image_id)
        finally:
            cat.close()
        if path is None:
            return Response(f"no photo {image_id}", status_code=404)
        return FileResponse(path)

    async def heatmap(request: Request):
        from starlette.concurrency import run_in_threadpool

        if heatmaps is None:
            return Response("start whaleid review with --bundle for heatmaps", status_code=404)
        cat = opened()
        try:
            paths = [path_of(cat, request.path_params[k]) for k in ("query", "photo")]
        finally:
            cat.close()
        if None in paths:
            return Response("no such photo", status_code=404)
        return Response(await run_in_threadpool(heatmaps.png, *paths), media_type="image/png")

    async def decide(request: Request):
        body = await _json(request)
        if isinstance(body, Response):
            return body
        cat = opened()
        try:
            if cat.conn.execute("SELECT 1 FROM proposals WHERE image_id = ?", (str(body.get("query")),)).fetchone() is None:
                return JSONResponse({"error": f"photo {body.get('query')!r} is not among identify's proposals"}, 400)
            shown = body.get("scores") or {}
            did = cat.decide(body.get("who") or default_who, str(body.get("action")), str(body.get("query")),
                             body.get("whale_id"), body.get("other_whale"), scores=shown,
                             expect_last=body.get("expect_last"))
            return JSONResponse({"id": did})
        except Conflict as exc:
            return JSONResponse({"error": str(exc)}, 409)
        except CatalogueError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        finally:
            cat.close()

    async def undo(request: Request):
        body = await _json(request)
        if isinstance(body, Response):
            return body
        cat = opened()
        try:
            target = next((d for d in cat.decisions() if d["id"] == body.get("decision_id")), None)
            if target is None:
                return JSONResponse({"error": f"no decision {body.get('decision_id')}"}, 400)
            did = cat.decide(body.get("who") or default_who, "undo", target["query"], undoes=target["id"])
            return JSONResponse({"id": did})
        except Conflict as exc:
            return JSONResponse({"error": str(exc)}, 409)
        finally:
            cat.close()

    async def favicon(request: Request):
        return Response(status_code=204)

    return Starlette(routes=[Route("/", page), Route("/favicon.ico", favicon), Route("/api/state", state), Route("/photo/{image_id}", photo),
                             Route("/heatmap/{query}/{photo}", heatmap),
                             Route("/api/decide", decide, methods=["POST"]), Route("/api/undo", undo, methods=["POST"])])


async def _json(request: Request):
    try:
        body = json.loads(await request.body())
    except ValueError:
        return JSONResponse({"error": "the request body is not JSON"}, 400)
    if not isinstance(body, dict):
        return JSONResponse({"error": "the request body must be a JSON object"}, 400)
    return body


def serve(db: Path, host: str = "127.0.0.1", port: int = 8765, who: Optional[str] = None, bundle=None) -> None:
    import uvicorn

    application = app(db, who, bundle)
    print(f"reviewing {db} at http://{host}:{port}/ (Ctrl-C stops; every decision is already saved)", flush=True)
    uvicorn.run(application, host=host, port=port, log_level="warning")
