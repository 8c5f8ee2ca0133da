"""Progress on long loops: a tqdm bar on a terminal, plain log lines everywhere else.

A bar redirected to a file (a log, CI, a scheduler) is one line of thousands of carriage returns;
``progress`` gives such output a line every ``every`` items instead, with the rate and any postfix.
No tqdm import unless a terminal is attached, so the inference path does not need it.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable

log = logging.getLogger("whaleid")


def is_terminal(stream=None) -> bool:
    stream = stream if stream is not None else sys.stderr
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class PlainProgress:
    """Iterates ``iterable`` and logs ``desc: k/total (rate unit/s) postfix`` every ``every`` items and at the end."""

    def __init__(self, iterable: Iterable, total: int | None, desc: str, unit: str, every: int | None):
        self.iterable, self.desc, self.unit = iterable, desc, unit
        if total is None:
            try:
                total = len(iterable)  # type: ignore[arg-type]
            except TypeError:
                total = None
        self.total = total
        self.every = max(1, int(every) if every else (max(1, total // 10) if total else 100))
        self.postfix: dict = {}

    def set_postfix(self, **kwargs) -> None:
        self.postfix.update(kwargs)

    def line(self, count: int, started: float) -> str:
        rate = count / max(time.time() - started, 1e-9)
        where = f"{count}/{self.total}" if self.total else f"{count}"
        extra = "".join(f" {k} {v}" for k, v in self.postfix.items())
        return f"{self.desc}: {where} {self.unit} ({rate:.1f} {self.unit}/s){extra}"

    def __iter__(self):
        started, count, logged = time.time(), 0, 0
        for item in self.iterable:
            yield item  # a caller that stops at ``total`` still gets the last line: it is logged at ``total``
            count += 1
            if count % self.every == 0 or count == self.total:
                log.info(self.line(count, started))
                logged = count
        if count and logged != count:
            log.info(self.line(count, started))

    def close(self) -> None:
        pass


def progress(iterable: Iterable, total: int | None = None, desc: str = "", unit: str = "it",
             every: int | None = None, enabled: bool = True, leave: bool = False, terminal: bool | None = None):
    """``iterable`` with progress shown: a tqdm bar on a terminal, else a log line every ``every`` items
    (default: about ten lines per loop). ``enabled=False`` shows nothing (e.g. on non-main processes)."""
    if not enabled:
        return iterable
    if terminal if terminal is not None else is_terminal():
        from tqdm.auto import tqdm

        return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave)
    return PlainProgress(iterable, total, desc, unit, every)
