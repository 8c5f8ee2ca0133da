"""Text as a spreadsheet will show it, never run it: every table the catalogue writes (identify's answers, an
import's skipped rows, exports) goes through ``safe_cells``; Program MARK comments through ``mark_comment``."""

from __future__ import annotations

import re

# OWASP "CSV Injection": a cell a spreadsheet would read as a formula begins with one of these (after any spaces);
# full-width forms too, which some spreadsheets fold. Such a text cell is written behind a single quote.
FORMULA_START = tuple("=+-@\t\r") + ("\uff1d", "\uff0b", "\uff0d", "\uff20")
PLAIN_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def safe_text(value):
    """``value`` as a spreadsheet will show it, never run it: a text beginning (after spaces) with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return gets a leading ``'``; numbers, and texts that are plain numbers, stay."""
    if not isinstance(value, str) or PLAIN_NUMBER.match(value.strip()):
        return value
    return "'" + value if value.lstrip(" ").startswith(FORMULA_START) else value


def safe_cells(frame):
    """``frame`` with every text cell (and column name) through ``safe_text``, for a CSV a spreadsheet opens."""
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    out = frame.copy()
    for col in out.columns:
        if not (is_numeric_dtype(out[col]) or is_bool_dtype(out[col])):
            out[col] = out[col].astype(object).map(safe_text)
    out.columns = [safe_text(c) if isinstance(c, str) else c for c in out.columns]
    return out


def mark_comment(text) -> str:
    """``text`` safe inside a Program MARK ``/* ... */`` comment: no ``*/`` or ``/*`` (which would end the comment
    and let the rest be read as a capture history), no line breaks or control characters."""
    text = re.sub(r"[\x00-\x1f\x7f\u2028\u2029]", " ", str(text))
    while "*/" in text or "/*" in text:
        text = text.replace("*/", "*_/").replace("/*", "/_*")
    return text
