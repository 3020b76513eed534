"""Folding repeated log lines: one line, then ``… repeated N times``.

A flood being refused, or a full disk failing every commit, would otherwise write one line
per attempt: thousands a second, and the one line that matters scrolls away. A
:class:`LogFold` writes the first line of a kind (its *key*: the line without what varies
from one attempt to the next, a peer's port, a count), keeps quiet about the same kind for
:data:`FOLD_WINDOW` seconds while counting, and then writes one summary:
``127.0.0.1: refused GET /: 429 … … repeated 398 times``.

When a summary is written (no timer, no task): when a line of any folded kind is logged
after the window of an earlier one has ended (the next attempt of the same kind then starts
a new window, with its own first line), when the server logs a connection coming or going
(:meth:`LogFold.flush_expired`), when more than :data:`MAX_FOLDED` kinds are being counted
(the oldest is summarised early), and at shutdown (:meth:`LogFold.flush`). So memory is
bounded (one small entry per kind seen within a window, at most :data:`MAX_FOLDED`), and no
count is ever lost: a line is either written or counted in a summary that is.

One :class:`LogFold` per server (a test's server sees no other's counts), used from its
Trio thread only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["FOLD_WINDOW", "MAX_FOLDED", "LogFold", "repeated"]

#: Seconds during which lines of one kind after the first are counted, not written: a
#: sustained flood writes two lines a minute of each kind (the first and a summary).
FOLD_WINDOW = 60.0
#: Kinds of line counted at once; past it the oldest is summarised early.
MAX_FOLDED = 1024


def repeated(key: str, times: int) -> str:
    """The summary of ``times`` lines of kind ``key`` that were not written."""
    return f"{key} … repeated {times} {'time' if times == 1 else 'times'}"


@dataclass(slots=True)
class _Window:
    """One kind of line being folded: where its summary goes, when its window ends and how
    many lines it kept quiet about."""

    logger: logging.Logger
    level: int
    ends: float
    repeats: int = 0


class LogFold:
    """Repeated log lines folded into a count (see the module's docstring).

    ``window`` is :data:`FOLD_WINDOW` and ``limit`` :data:`MAX_FOLDED` unless given;
    ``clock`` gives seconds (``time.monotonic`` by default; a fake one in tests)."""

    __slots__ = ("_clock", "_windows", "limit", "window")

    def __init__(
        self,
        *,
        window: float = FOLD_WINDOW,
        limit: int = MAX_FOLDED,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.limit = limit
        self._clock = clock
        # Key -> its window, in the order they began (so in the order they end: they all
        # last as long).
        self._windows: dict[str, _Window] = {}

    def log(self, logger: logging.Logger, level: int, key: str, msg: str, *args: object) -> None:
        """Log ``msg % args`` on ``logger`` at ``level``, unless a line of kind ``key`` was
        logged within the window: then only count it. ``key`` is what the summary says,
        so it reads as the line does without what varies (``203.0.113.7: refused ...``
        for ``203.0.113.7:50412: refused ...``)."""
        self.flush_expired()
        folding = self._windows.get(key)
        if folding is not None:
            folding.repeats += 1
            return
        if not logger.isEnabledFor(level):
            return
        logger.log(level, msg, *args)
        self._windows[key] = _Window(logger, level, self._clock() + self.window)
        if len(self._windows) > self.limit:
            oldest = next(iter(self._windows))
            self._summarize(oldest, self._windows.pop(oldest))

    def flush_expired(self) -> None:
        """Write the summary of every kind whose window has ended, and forget them."""
        windows = self._windows
        if not windows:
            return
        now = self._clock()
        while windows:
            key, folding = next(iter(windows.items()))
            if folding.ends > now:
                break
            del windows[key]
            self._summarize(key, folding)

    def flush(self) -> None:
        """Write every summary now (at shutdown), windows ended or not, and forget them."""
        windows, self._windows = self._windows, {}
        for key, folding in windows.items():
            self._summarize(key, folding)

    def __len__(self) -> int:
        """Kinds of line within their window."""
        return len(self._windows)

    @staticmethod
    def _summarize(key: str, folding: _Window) -> None:
        if folding.repeats:
            folding.logger.log(folding.level, "%s", repeated(key, folding.repeats))
