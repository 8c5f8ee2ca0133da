"""The review queue, a page at a time: identify's proposals under the page's filters, each with what the
reviewer needs to decide it. Reads only the columns it shows (never an embedding) and only the candidate photos
of the page it sends, so a page costs the same in a catalogue of a thousand photos or of a million.

"Undecided" means "has no identity yet": a photo with only rejects (or whose accept was undone) is undecided.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from catalogue.records import tables
from catalogue.records.decisions import describe
from catalogue.records.store import Catalogue

DECISIONS = ("match", "review", "new_whale", "unreadable")
VIEWPOINTS = ("top", "lateral")
MAX_PAGE = 500



def queue(cat: Catalogue, filters: dict, offset: int = 0, limit: int = 100, who: Optional[str] = None) -> dict:
    """``filters``: decision (one of DECISIONS), viewpoint (top or lateral), undecided (bool); the page of
    ``limit`` photos from ``offset`` in the filtered queue, plus the reviewer ``who``'s standing decisions."""
    state = cat.state()
    ids = tables.proposal_ids(cat, filters.get("decision") or None, filters.get("viewpoint") or None)
    if filters.get("undecided"):
        ids = [i for i in ids if i not in state["assigned"]]
    page = ids[offset:offset + limit]
    total = tables.counts(cat)["proposals"]
    undecided = total - tables.proposed_among(cat, list(state["assigned"]))
    items = _items(cat, state, page)
    mine = [{"id": d["id"], "query": d["query"], "what": describe(d), "at": d["at"]}
            for d in sorted(state["standing"].values(), key=lambda d: -d["id"]) if who and d["who"] == who][:20]
    return {"filters": {k: v for k, v in filters.items() if v}, "shown": len(ids), "total": total,
            "undecided": undecided, "offset": offset, "limit": limit, "items": items, "mine": mine,
            "new_whale_id": next_whale_id(state["whales"]),
            "model": {"name": cat.meta.get("model_name"), "hash": cat.meta.get("model_hash", "")[:12]}}


def _items(cat: Catalogue, state: dict, page: list) -> list[dict]:
    if not page:
        return []
    cols = ("image_id", "decision", "score", "probability", "viewpoint", "date", "encounter_id", "path", "candidates")
    rows = tables.proposals_of(cat, page, cols)
    candidates = {}
    for image_id, row in rows.items():
        try:
            candidates[image_id] = [c for c in json.loads(row["candidates"]) if isinstance(c, dict) and "whale_id" in c]
        except ValueError:
            candidates[image_id] = []
    wanted = sorted({str(p[0]) for cs in candidates.values() for c in cs for p in c.get("photos", [])})
    info = tables.photo_info(cat, wanted)
    alias, items = state["alias"], []
    for image_id in page:
        row = rows[image_id]
        identity, rejected = state["identity"].get(image_id), state["rejected"].get(image_id, set())
        shown = []
        for c in candidates[image_id]:
            photos = []
            for p in c.get("photos", []):
                date, encounter, path = info.get(str(p[0]), (None, None, None))
                photos.append({"image_id": str(p[0]), "similarity": p[1], "date": date, "encounter_id": encounter,
                               "filename": Path(str(path or "")).name})
            w = c["whale_id"]
            shown.append({"whale_id": w, "current": alias.get(w, w), "score": c.get("score"),
                          "probability": c.get("probability"), "inliers": c.get("inliers"), "photos": photos,
                          "why": _why(c.get("why")),
                          "accepted": identity is not None and alias.get(identity, identity) == alias.get(w, w),
                          "rejected": w in rejected})
        last = state["last"].get(image_id)
        items.append({"image_id": image_id, "decision": row["decision"], "score": row["score"],
                      "probability": row["probability"], "viewpoint": row["viewpoint"], "date": row["date"],
                      "encounter_id": row["encounter_id"], "filename": Path(str(row["path"] or "")).name,
                      "candidates": shown, "identity": identity, "assigned": state["assigned"].get(image_id),
                      "last": None if last is None else {k: last[k] for k in ("id", "at", "who", "action", "whale_id",
                                                                             "other_whale")}})
    return items


def _why(value) -> list:
    """identify's explanation of a candidate's P (``catalogue.deciding.verifier``): [name, contribution] pairs, the
    well-formed ones only."""
    if not isinstance(value, list):
        return []
    return [[str(v[0]), float(v[1])] for v in value[:9] if isinstance(v, list) and len(v) == 2
            and isinstance(v[1], (int, float)) and not isinstance(v[1], bool) and math.isfinite(v[1])]


def next_whale_id(whales) -> str:
    """A neutral id for a new whale: ``new-whale-<n>``, the first n not taken."""
    n = 1
    while f"new-whale-{n}" in whales:
        n += 1
    return f"new-whale-{n}"

