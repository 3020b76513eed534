"""Repeated log lines folded into a count (:mod:`trio_chat.server.logfold`), with a fake
clock; and the message log's failed commits (a full disk) folded the same way."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import pytest
import trio

from trio_chat.server.history import MessageLog
from trio_chat.server.logfold import LogFold, repeated
from trio_chat.server.store import MemoryStore, Record, StoreError

logger = logging.getLogger("trio_chat.test.logfold")


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Collect(logging.Handler):
    """Keeps every record as ``LEVEL message``."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.levelname} {record.getMessage()}")


@pytest.fixture
def lines() -> Iterator[list[str]]:
    """What the package's loggers write from INFO up, as ``LEVEL message`` (a live list)."""
    package = logging.getLogger("trio_chat")
    level = package.level
    collect = Collect()
    package.addHandler(collect)
    package.setLevel(logging.INFO)
    yield collect.lines
    package.removeHandler(collect)
    package.setLevel(level)


def refuse(fold: LogFold, port: int, host: str = "203.0.113.7") -> None:
    """A refusal line as the server writes one: the key leaves the port out."""
    fold.log(
        logger,
        logging.INFO,
        f"{host}: refused GET /: 429 too many",
        "%s:%d: refused GET /: 429 too many",
        host,
        port,
    )


def test_the_first_line_is_written_and_the_rest_counted_until_the_window_ends(
    lines: list[str],
) -> None:
    clock = FakeClock()
    fold = LogFold(window=60, clock=clock)
    for port in range(40000, 40399):
        refuse(fold, port)
    assert lines == ["INFO 203.0.113.7:40000: refused GET /: 429 too many"]
    clock.now = 60
    refuse(fold, 41000)  # the window is over: the count, then a new first line
    assert lines[1:] == [
        "INFO 203.0.113.7: refused GET /: 429 too many … repeated 398 times",
        "INFO 203.0.113.7:41000: refused GET /: 429 too many",
    ]


def test_kinds_are_folded_apart(lines: list[str]) -> None:
    clock = FakeClock()
    fold = LogFold(clock=clock)
    refuse(fold, 1, "192.0.2.1")
    refuse(fold, 2, "192.0.2.2")
    refuse(fold, 3, "192.0.2.1")
    fold.flush()
    assert lines == [
        "INFO 192.0.2.1:1: refused GET /: 429 too many",
        "INFO 192.0.2.2:2: refused GET /: 429 too many",
        "INFO 192.0.2.1: refused GET /: 429 too many … repeated 1 time",
    ]
    assert len(fold) == 0


def test_an_ended_window_is_summarised_by_the_next_folded_line_or_flush_expired(
    lines: list[str],
) -> None:
    """No timer: any later folded line, or flush_expired, writes the count of a window
    that has ended; one that has not ended is left alone; a kind that did not repeat
    leaves no summary."""
    clock = FakeClock()
    fold = LogFold(window=10, clock=clock)
    refuse(fold, 1, "192.0.2.1")
    refuse(fold, 2, "192.0.2.1")
    clock.now = 5
    refuse(fold, 3, "192.0.2.2")
    refuse(fold, 4, "192.0.2.2")
    clock.now = 10
    fold.flush_expired()
    assert lines[-1] == "INFO 192.0.2.1: refused GET /: 429 too many … repeated 1 time"
    assert len(fold) == 1
    clock.now = 16
    refuse(fold, 5, "192.0.2.3")
    assert lines[-2:] == [
        "INFO 192.0.2.2: refused GET /: 429 too many … repeated 1 time",
        "INFO 192.0.2.3:5: refused GET /: 429 too many",
    ]
    clock.now = 100
    fold.flush_expired()
    assert lines[-1] == "INFO 192.0.2.3:5: refused GET /: 429 too many"
    assert len(fold) == 0


def test_memory_is_bounded_and_no_count_is_lost(lines: list[str]) -> None:
    """Past the limit of kinds, the oldest is summarised early."""
    fold = LogFold(limit=3, clock=FakeClock())
    for host in ("192.0.2.1", "192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"):
        refuse(fold, 1, host)
    assert len(fold) == 3
    assert lines[-1] == "INFO 192.0.2.1: refused GET /: 429 too many … repeated 1 time"


def test_a_level_that_is_not_logged_is_not_counted(lines: list[str]) -> None:
    fold = LogFold(clock=FakeClock())
    for _ in range(3):
        fold.log(logger, logging.DEBUG, "quiet", "quiet")
    fold.flush()
    assert lines == []


def test_the_summary_says_time_or_times() -> None:
    assert repeated("x", 1) == "x … repeated 1 time"
    assert repeated("x", 398) == "x … repeated 398 times"


class FullDisk(MemoryStore):
    """A memory store whose every write fails, as on a full disk."""

    async def write(self, records: Sequence[Record]) -> None:
        await trio.lowlevel.checkpoint()
        raise StoreError("database or disk is full")


async def test_failed_commits_on_a_full_disk_are_one_line_and_a_count(
    nursery: trio.Nursery, lines: list[str]
) -> None:
    """Fifty messages, each failing in a commit of its own: one ERROR line while it lasts,
    then one line with the count; every sender is told."""
    fold = LogFold(clock=FakeClock())
    log = MessageLog(FullDisk(history_limit=100), log_fold=fold)
    await log.open()
    await nursery.start(log.run)
    failures: list[StoreError] = []
    for _ in range(50):
        failed = trio.Event()

        def fail(error: StoreError, failed: trio.Event = failed) -> None:
            failures.append(error)
            failed.set()

        log.submit(
            lambda n: Record(n, "ts", "lobby", "alice", None, "hi", False, None),
            lambda record: None,
            fail,
        )
        with trio.fail_after(5):
            await failed.wait()
    assert len(failures) == 50
    assert lines == ["ERROR could not store 1 message(s): database or disk is full"]
    fold.flush()
    assert lines[1:] == [
        "ERROR could not store messages: database or disk is full … repeated 49 times"
    ]
