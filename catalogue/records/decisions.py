"""The decision log's rules: what a decision may say (``validate``) and what the log means now (``replay``).

Both are pure functions of their arguments, so the store calls them inside its write transaction and the
review server, ``catalogue check`` and the tests share one reading of the log.

``validate`` is strict: a decision is written only if it fits the current state (the photo is among identify's
proposals, a named whale exists, ids are non-empty strings of bounded length without control characters, the
scores shown are finite numbers). ``replay`` is forgiving: it never raises on a logged row. A row it cannot
apply (a reject naming no whale, an undo of nothing, a merge of a whale into itself: rows that an earlier
whaleid let in) is skipped and reported in ``skipped``, so a catalogue with such a row opens, exports and
identifies as if the row were not there.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Optional

from catalogue.records.errors import CatalogueError, Conflict
from catalogue.records.identity import IdError, Skeletons, normal

ACTIONS = ("accept", "reject", "new_whale", "merge", "undo")
MAX_ID = 200  # characters of a photo or whale id
MAX_WHO = 100  # characters of a reviewer's name
MAX_SCORES = 200  # whales in the scores a decision records as shown
ANY = object()  # decide(): no expectation about the log


def clean_text(value: Any, what: str, limit: int = MAX_ID) -> str:
    """``value`` in the normal form of ``catalogue.records.identity`` (NFKC, trimmed, non-empty, at most ``limit``
    characters, no control, invisible format or direction-override character, letters of one script)."""
    try:
        return normal(value, what, limit)
    except IdError as exc:
        raise CatalogueError(str(exc)) from None


def clean_scores(scores: Any) -> dict:
    """The scores a page showed, ``{whale: number or {name: number or null}}``, every number finite."""
    if scores is None:
        return {}
    if not isinstance(scores, dict):
        raise CatalogueError(f"scores must be an object of whale -> score, got {type(scores).__name__}")
    if len(scores) > MAX_SCORES:
        raise CatalogueError(f"scores name {len(scores)} whales; at most {MAX_SCORES} are allowed")
    out = {}
    for whale, value in scores.items():
        whale = clean_text(whale, "a whale id in scores")
        if isinstance(value, dict):
            if len(value) > 8:
                raise CatalogueError(f"scores of whale {whale!r} hold {len(value)} fields; at most 8 are allowed")
            out[whale] = {clean_text(k, "a score's name", 40): _finite(v, whale, allow_none=True) for k, v in value.items()}
        else:
            out[whale] = _finite(value, whale)
    return out


def _finite(value, whale, allow_none=False):
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise CatalogueError(f"the score of whale {whale!r} must be a finite number, got {value!r}")
    return float(value)


def optional_id(value: Any, what: str) -> Optional[int]:
    """A decision id (an integer, not a boolean) or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2 ** 62:
        raise CatalogueError(f"{what} must be a decision id (a whole number from 0) or null, got {ascii(value)[:40]}")
    return value


def validate(state: dict, proposed: bool, who, action, query, whale_id=None, other_whale=None, undoes=None,
             expect_last: Any = ANY) -> dict:
    """The decision as it will be written (ids stripped), or ``CatalogueError``/``Conflict`` saying why not.
    ``state``: ``replay`` of the log as it is inside the write transaction; ``proposed``: the photo is among
    identify's proposals."""
    if action not in ACTIONS:
        raise CatalogueError(f"unknown decision {action!r}; expected one of {', '.join(ACTIONS)}")
    who = clean_text(who, "who (the reviewer's name)", MAX_WHO)
    query = clean_text(query, "the photo id")
    if not proposed:
        raise CatalogueError(f"photo {query!r} is not among identify's proposals")
    if expect_last is not ANY:
        expect_last = optional_id(expect_last, "expect_last")
        last = state["last"].get(query)
        if (last["id"] if last else None) != expect_last:
            raise Conflict(f"photo {query} was decided meanwhile by {last['who']} at {last['at']} ({describe(last)}); "
                           "reload to see it" if last else
                           f"photo {query}: the decision you saw was undone meanwhile; reload to see it")
    whales, root = state["whales"], state["alias"]
    if action == "undo":
        if whale_id is not None or other_whale is not None:
            raise CatalogueError("an undo names the decision it undoes, not whales")
        undoes = optional_id(undoes, "the decision to undo")
        target = state["standing"].get(undoes)
        if target is None:
            raise Conflict(f"decision {undoes} is not standing (undone already, or an undo); reload to see it")
        if target["query"] != query:
            raise CatalogueError(f"decision {undoes} is about photo {target['query']}, not {query}")
        return dict(who=who, action=action, query=query, whale_id=None, other_whale=None, undoes=undoes)
    if undoes is not None:
        raise CatalogueError(f"only an undo names a decision to undo, not a {action}")
    whale_id = clean_text(whale_id, f"the whale id of a {action}")
    if action == "merge":
        other_whale = clean_text(other_whale, "the whale merged (other_whale)")
        if whale_id == other_whale:
            raise CatalogueError("a merge needs two different whales")
        for w in (whale_id, other_whale):
            if w not in whales:
                raise CatalogueError(f"whale {w!r} is not in the catalogue")
        if root.get(other_whale, other_whale) == root.get(whale_id, whale_id):
            raise Conflict(f"whales {whale_id!r} and {other_whale!r} are one whale already")
        return dict(who=who, action=action, query=query, whale_id=whale_id, other_whale=other_whale, undoes=None)
    if other_whale is not None:
        raise CatalogueError(f"only a merge names a second whale, not a {action}")
    if action == "new_whale":
        if whale_id in whales:
            raise Conflict(f"whale id {whale_id!r} exists already: accept or merge instead of creating it twice")
        twin = (state.get("names") or Skeletons(whales)).twin(whale_id)
        if twin is not None:
            raise Conflict(f"whale id {whale_id!r} is a look-alike of the existing whale {twin!r} (same letters after "
                           "normalising case, digits and look-alike characters): accept or merge into it instead")
    elif whale_id not in whales:
        raise CatalogueError(f"whale {whale_id!r} is not in the catalogue")
    return dict(who=who, action=action, query=query, whale_id=whale_id, other_whale=None, undoes=None)


def replay(log: list, catalogue_whales: set, proposals: Optional[set] = None, training: Optional[set] = None) -> dict:
    """The log (rows in id order) replayed over the whales of the catalogue's photos:

    ``standing`` (id -> decision neither undone nor an undo), ``last`` (photo -> its last standing decision),
    ``identity`` (photo -> whale it was accepted as or named), ``assigned`` (the same, merges followed),
    ``rejected`` (photo -> whales rejected for it and not accepted since), ``alias`` (merged whale -> the whale
    it joined, followed to the end), ``whales`` (every whale id known), ``skipped`` (rows not applied, with why).

    The rules of ``validate`` hold at replay too, so a row an earlier whaleid or a hand edit wrote is skipped
    rather than trusted: ids must be in normal form; with ``proposals`` (identify's photo ids) a decision must be
    about one of them, and with ``training`` (the catalogue's own photos) never about one of those; an accept,
    reject or merge names whales that exist at that point of the log; a new whale names none that exists, nor a
    look-alike of one.
    """
    skipped, by_id, undone = [], {d["id"]: d for d in log}, {}
    for d in log:
        if d["action"] != "undo":
            continue
        target = by_id.get(d["undoes"])
        why = ("it names no decision" if target is None else "it undoes an undo" if target["action"] == "undo"
               else "it undoes a later decision" if target["id"] > d["id"]
               else f"decision {target['id']} was undone already by {undone[target['id']]}" if target["id"] in undone
               else None)
        if why:
            skipped.append({"id": d["id"], "why": f"undo: {why}"})
        else:
            undone[target["id"]] = d["id"]
    standing, last, identity, rejected, parent = {}, {}, {}, {}, {}
    whales = set(catalogue_whales)
    names = Skeletons(sorted(w for w in whales if isinstance(w, str)))  # every whale by what it looks like (lazily)

    def root(w):
        seen = set()
        while w in parent and w not in seen:
            seen.add(w)
            w = parent[w]
        return w

    for d in log:
        if d["action"] == "undo" or d["id"] in undone:
            continue
        why = _unusable(d) or _against_state(d, whales, names, proposals, training)
        if why is None and d["action"] == "merge" and root(d["other_whale"]) == root(d["whale_id"]):
            why = "the two whales are one already"
        if why:
            skipped.append({"id": d["id"], "why": f"{d['action']}: {why}"})
            continue
        q, w = d["query"], d["whale_id"]
        standing[d["id"]] = d
        last[q] = d
        if d["action"] in ("accept", "new_whale"):
            identity[q] = w
            whales.add(w)
            names.note(w)
            rejected.get(q, set()).discard(w)
        elif d["action"] == "reject":
            rejected.setdefault(q, set()).add(w)
            if identity.get(q) == w:
                del identity[q]
        else:  # merge: the whale-level union, whichever photo it was made from
            whales.update((w, d["other_whale"]))
            names.note(w)
            names.note(d["other_whale"])
            parent[root(d["other_whale"])] = root(w)
    alias = {w: root(w) for w in parent}
    return {"standing": standing, "last": last, "identity": identity,
            "assigned": {q: alias.get(w, w) for q, w in identity.items()}, "rejected": rejected, "alias": alias,
            "whales": whales, "names": names, "skipped": sorted(skipped, key=lambda s: s["id"])}


def _against_state(d: dict, whales: set, names: Skeletons, proposals: Optional[set],
                   training: Optional[set]) -> Optional[str]:
    """Why a well-formed logged decision does not fit the state at its point of the log, or None."""
    q, w = d["query"], d["whale_id"]
    if training is not None and q in training:
        return f"photo {q!r} is one of the catalogue's own photos, not a proposal"
    if proposals is not None and q not in proposals:
        return f"photo {q!r} is not among identify's proposals"
    if d["action"] == "new_whale":
        if w in whales:
            return f"whale {w!r} exists already"
        twin = names.twin(w)
        if twin is not None:
            return f"whale {w!r} is a look-alike of the existing whale {twin!r}"
        return None
    for name in (w, d["other_whale"]) if d["action"] == "merge" else (w,):
        if name not in whales:
            return f"whale {name!r} is not in the catalogue"
    return None


def _unusable(d: dict) -> Optional[str]:
    """Why a logged decision cannot be applied whatever the state, or None."""
    if d["action"] not in ACTIONS:
        return "unknown action"
    if not _text(d["query"]):
        return "it names no photo"
    if not _text(d["whale_id"]):
        return "it names no whale"
    if d["action"] == "merge" and (not _text(d["other_whale"]) or d["other_whale"] == d["whale_id"]):
        return "it does not name two different whales"
    for what, value in (("photo", d["query"]), ("whale", d["whale_id"]), ("whale", d["other_whale"])):
        if value is not None and not _clean(value):
            return f"the {what} id {value!r} is not in normal form (as a write would store it)"
    return None


def _text(value) -> bool:
    return isinstance(value, str) and bool(value.strip())


@functools.lru_cache(maxsize=1 << 16)
def _clean(value) -> bool:
    """``value`` is an id already in normal form (what ``validate`` would have written). Every request replays the
    whole log, whose ids repeat: each distinct id is checked once per process."""
    try:
        return normal(value, "id", MAX_ID) == value
    except IdError:
        return False


def describe(d: dict) -> str:
    if d["action"] == "merge":
        return f"merge {d['other_whale']} into {d['whale_id']}"
    return f"{d['action']} {d['whale_id']}" if d["whale_id"] else d["action"]
