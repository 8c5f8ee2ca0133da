"""One rule for the ids people give: whale ids, reviewer names and photo ids, wherever they come in (the review
server, import, catalogue build, identify) and when the decision log is replayed.

- **Normal form**: Unicode NFKC (full-width ``ｗhale0016`` is ``whale0016``), trimmed.
- **Refused characters**: control characters (category Cc), format characters (Cf: zero width space U+200B, the
  byte order mark U+FEFF, the bidirectional overrides and isolates U+202A..U+202E, U+2066..U+2069), surrogates,
  line and paragraph separators. They are invisible or reorder the text a reviewer reads.
- **One script**: the letters of an id come from one script (Latin, Cyrillic, Greek, ...; Han with kana or hangul
  counts as one), as Unicode's security mechanisms (UTS #39, "restriction levels") advise for identifiers: a
  Cyrillic ``е`` inside a Latin id is refused.
- **Look-alikes**: ``skeleton`` is the id case-folded, every decimal digit as its ASCII digit (Arabic-Indic
  ``٠١٦`` is ``016``), accents dropped, and the Cyrillic and Greek letters that look like Latin ones read as those
  (a short table after UTS #39's confusables). Two ids with one skeleton are one whale: a new id whose skeleton
  is an existing whale's is refused, naming that whale.

``photo_id`` also refuses what a URL path segment cannot carry as a photo (``/``, ``\\``, ``.``, ``..``): the review
page shows a photo at ``/photo/<id>``.
"""

from __future__ import annotations

import unicodedata
from typing import Iterable, Optional

# Cyrillic and Greek letters that render like Latin ones (lower case; UTS #39 confusables.txt maps these)
LOOKALIKE = str.maketrans({
    "а": "a", "в": "b", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "р": "p", "с": "c", "т": "t",
    "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "ԁ": "d", "һ": "h", "ӏ": "l", "ԛ": "q", "ԝ": "w",
    "α": "a", "β": "b", "ε": "e", "η": "n", "ι": "i", "κ": "k", "ν": "v", "ο": "o", "ρ": "p", "τ": "t", "υ": "u",
    "χ": "x", "ω": "w", "ς": "c",
})
REFUSED_CATEGORIES = {"Cc": "a control character", "Cf": "an invisible format character (zero width, byte order "
                      "mark or a direction override)", "Cs": "a lone surrogate", "Zl": "a line separator",
                      "Zp": "a paragraph separator", "Co": "a private-use character", "Cn": "an unassigned character"}
EAST_ASIAN = {"CJK", "HIRAGANA", "KATAKANA", "HANGUL", "IDEOGRAPHIC", "HALFWIDTH"}


class IdError(ValueError):
    """An id that breaks the rule; the message says which character and why."""


def normal(value, what: str, limit: int) -> str:
    """``value`` in normal form (NFKC, trimmed), or ``IdError`` saying why it cannot be an id."""
    if not isinstance(value, str):
        raise IdError(f"{what} must be a string, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise IdError(f"{what} is not valid Unicode (a lone surrogate)") from None
    text = unicodedata.normalize("NFKC", value).strip()
    if not text:
        raise IdError(f"{what} must not be empty")
    if len(text) > limit:
        raise IdError(f"{what} is {len(text)} characters long; at most {limit} are allowed")
    for c in text:
        why = REFUSED_CATEGORIES.get(unicodedata.category(c))
        if why:
            raise IdError(f"{what} holds {why}, U+{ord(c):04X}")
    scripts = sorted({s for s in map(_script, text) if s})
    if len(scripts) > 1:
        raise IdError(f"{what} {text!r} mixes the scripts {' and '.join(scripts)} (a look-alike of another id?); "
                      "write it in one script")
    return text


def photo_id(value, what: str = "the photo id", limit: int = 200) -> str:
    """A photo id in normal form that a URL path segment can carry."""
    text = normal(value, what, limit)
    if "/" in text or "\\" in text or text in (".", ".."):
        raise IdError(f"{what} {text!r} holds '/' or '\\' or is '.' or '..'; a photo id names one photo, not a path")
    return text


def skeleton(text: str) -> str:
    """What ``text`` looks like: case-folded, digits as ASCII, accents dropped, Cyrillic/Greek look-alikes read as
    Latin. Two ids with one skeleton are one whale."""
    folded = unicodedata.normalize("NFKC", text).casefold()
    out = []
    for c in unicodedata.normalize("NFD", folded):
        if unicodedata.category(c) == "Mn":
            continue
        d = unicodedata.decimal(c, None)
        out.append(str(d) if d is not None else c)
    return "".join(out).translate(LOOKALIKE)


class Skeletons:
    """Ids seen so far by skeleton (each id's skeleton worked out once, and only when a look-alike is first asked
    for): ``twin`` names the id a new one is a look-alike of, ``add`` also records it, ``note`` records one."""

    def __init__(self, ids: Iterable[str] = ()):
        self.by_key: dict[str, str] = {}
        self.keys: dict[str, str] = {}  # id -> its skeleton
        self._pending = list(ids)

    def _key(self, text: str) -> str:
        key = self.keys.get(text)
        if key is None:
            key = self.keys[text] = skeleton(text)
        return key

    def _flush(self) -> None:
        for text in self._pending:
            if isinstance(text, str):
                self.by_key.setdefault(self._key(text), text)
        self._pending = []

    def note(self, text: str) -> None:
        """Record ``text`` (its skeleton is worked out when ``twin`` or ``add`` next needs it)."""
        self._pending.append(text)

    def twin(self, text: str) -> Optional[str]:
        """The id seen so far (not ``text`` itself) that ``text`` is a look-alike of, or None; ``text`` not added."""
        self._flush()
        first = self.by_key.get(self._key(text))
        return None if first is None or first == text else first

    def add(self, text: str) -> Optional[str]:
        """Record ``text``; the earlier id it is a look-alike of, or None."""
        self._flush()
        first = self.by_key.setdefault(self._key(text), text)
        return None if first == text else first


def normal_names(labels, what: str, limit: int = 200) -> list:
    """For each label in order (None: no name), ``(normal form or None, why it cannot be a name or None, the earlier
    name it is a look-alike of or None)``; each distinct label is worked out once (a survey repeats its names)."""
    seen: dict = {}
    names, out = Skeletons(), []
    for label in labels:
        if label is None:
            out.append((None, None, None))
            continue
        if label not in seen:
            try:
                seen[label] = (normal(label, what, limit), None)
            except IdError as exc:
                seen[label] = (None, str(exc))
        text, why = seen[label]
        out.append((text, why, None if text is None else names.add(text)))
    return out


def _script(c: str) -> Optional[str]:
    """The script of a letter (the first word of its Unicode name; East Asian scripts as one), None otherwise."""
    if not unicodedata.category(c).startswith("L"):
        return None
    name = unicodedata.name(c, "")
    word = name.split(" ")[0].split("-")[0]
    return "CJK" if word in EAST_ASIAN else word or None
