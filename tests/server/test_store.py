"""The message stores: the same behaviour from SQLite and memory, and SQLite's durability
and start-up errors."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from trio_chat.server.store import MemoryStore, Record, SQLiteStore, Store, StoreError


def record(
    message_id: int,
    room: str | None = "lobby",
    sender: str | None = "alice",
    recipient: str | None = None,
    dedupe: str | None = None,
    *,
    principals: tuple[str | None, str | None] | None = None,
) -> Record:
    """A record; a private one (``room`` None) belongs, unless ``principals`` says
    otherwise, to the principals ``account:SENDER`` and ``account:RECIPIENT``."""
    if principals is None:
        principals = (f"account:{sender}", f"account:{recipient}") if room is None else (None, None)
    return Record(
        message_id,
        f"ts{message_id}",
        room,
        sender,
        recipient,
        f"text {message_id}",
        False,
        dedupe,
        *principals,
    )


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each store kind, opened empty with a retention of 5 records per room."""
    opened: Store = (
        SQLiteStore(tmp_path / "history.db", 5) if request.param == "sqlite" else MemoryStore(5)
    )
    assert await opened.open() == 0
    yield opened
    await opened.aclose()


async def test_recent_returns_a_rooms_last_records_oldest_first(store: Store) -> None:
    """recent() pages back through one room, oldest first, below ``before``."""
    await store.write([record(1), record(2, "dev"), record(3), record(4)])
    assert [r.id for r in await store.recent("lobby", 2)] == [3, 4]
    assert [r.id for r in await store.recent("lobby", 10, before=4)] == [1, 3]
    assert [r.id for r in await store.recent("dev", 10)] == [2]
    assert await store.recent("empty", 10) == []
    assert await store.recent("lobby", 1) == [record(4)]


async def test_retention_keeps_the_newest_per_room(store: Store) -> None:
    """Each room keeps its newest ``history_limit`` records; other rooms are untouched."""
    await store.write([record(n) for n in range(1, 8)] + [record(8, "dev")])
    await store.write([record(9)])
    assert [r.id for r in await store.recent("lobby", 100)] == [4, 5, 6, 7, 9]
    assert [r.id for r in await store.recent("dev", 100)] == [8]


async def test_since_covers_rooms_and_own_private_messages(store: Store) -> None:
    """since() returns what followed an id in the given rooms plus the private
    messages the principal sent or received, in id order, up to the limit: by principal
    id, never by nick (record 8 went to a nick "alice" held by another principal)."""
    await store.write(
        [
            record(1),
            record(2, "dev"),
            record(3, None, "bob", "Alice", principals=("account:bob", "account:alice")),
            record(4, None, "bob", "carol"),
            record(5, "other"),
            record(6, None, "ALICE", "bob", principals=("account:alice", "account:bob")),
            record(7),
            record(8, None, "bob", "alice", principals=("account:bob", "account:9")),
        ]
    )
    found = await store.since(1, {"lobby", "dev"}, "account:alice", 100)
    assert [r.id for r in found] == [2, 3, 6, 7]
    assert [r.id for r in await store.since(1, {"lobby", "dev"}, "account:alice", 2)] == [2, 3]
    assert [r.id for r in await store.since(0, {"lobby"}, None, 100)] == [1, 7]
    assert [r.id for r in await store.since(0, set(), "account:9", 100)] == [8]
    assert await store.since(0, set(), "alice", 100) == []  # a nick is not a principal


async def test_since_stops_below_before(store: Store) -> None:
    """since() with ``before`` leaves out that id and everything after it."""
    await store.write([record(1), record(2, None, "bob", "alice"), record(3), record(4)])
    alice = "account:alice"
    assert [r.id for r in await store.since(0, {"lobby"}, alice, 100, before=3)] == [1, 2]
    assert [r.id for r in await store.since(1, {"lobby"}, alice, 100, before=5)] == [2, 3, 4]
    assert await store.since(0, {"lobby"}, alice, 100, before=1) == []


async def test_recent_private_pages_back_through_one_principals_messages(store: Store) -> None:
    """recent_private() is the principal's own private messages (sent or received),
    oldest first, below ``before``; nobody else's, and no room's."""
    await store.write(
        [
            record(1, None, "alice", "bob"),
            record(2),
            record(3, None, "carol", "bob"),
            record(4, None, "bob", "alice"),
            record(5, None, "carol", "alice", principals=("account:carol", "account:9")),
            record(6, None, "carol", "alice"),
        ]
    )
    alice = "account:alice"
    assert [r.id for r in await store.recent_private(alice, 10)] == [1, 4, 6]
    assert [r.id for r in await store.recent_private(alice, 2)] == [4, 6]
    assert [r.id for r in await store.recent_private(alice, 10, before=6)] == [1, 4]
    assert [r.id for r in await store.recent_private("account:9", 10)] == [5]
    assert await store.recent_private("account:nobody", 10) == []


async def test_trimmed_is_the_highest_id_retention_dropped(store: Store) -> None:
    """trimmed() knows, per room and for private messages, the highest id that retention
    dropped (0 before any); rooms that kept everything report 0."""
    assert await store.trimmed(["lobby", None]) == 0
    await store.write([record(n) for n in range(1, 6)] + [record(6, "dev")])
    assert await store.trimmed(["lobby", "dev", None]) == 0  # 5 kept: nothing dropped yet
    await store.write([record(7), record(8)])
    assert await store.trimmed(["lobby"]) == 2
    assert await store.trimmed(["dev", None]) == 0
    privates = [record(n, None, "bob", "alice") for n in range(9, 16)]
    await store.write(privates)
    assert await store.trimmed([None]) == 10
    assert await store.trimmed(["lobby", "dev", None]) == 10
    assert await store.trimmed(["dev"]) == 0
    assert await store.trimmed([]) == 0


async def test_sqlite_remembers_what_it_trimmed_across_a_reopen(tmp_path: Path) -> None:
    """The trimmed marks are stored with the messages, so a restarted server still knows
    that a resume from before them misses something."""
    path = tmp_path / "history.db"
    first = SQLiteStore(path, 2)
    await first.open()
    await first.write([record(n) for n in range(1, 5)] + [record(5, None, "a", "b")])
    await first.aclose()
    second = SQLiteStore(path, 2)
    assert await second.open() == 5
    assert await second.trimmed(["lobby"]) == 2
    assert await second.trimmed([None]) == 0
    await second.aclose()


async def test_dedupe_keys_are_found(store: Store) -> None:
    """A stored resend key maps to its record's id."""
    await store.write([record(1, dedupe="alice\ncid-1")])
    assert await store.find_dedupe("alice\ncid-1") == 1
    assert await store.find_dedupe("alice\ncid-2") is None


async def test_sqlite_history_survives_a_reopen(tmp_path: Path) -> None:
    """What was written is there after closing and reopening, and ids continue."""
    path = tmp_path / "history.db"
    first = SQLiteStore(path, 100)
    await first.open()
    await first.write([record(1), record(2, None, "alice", "bob", "alice\nx")])
    await first.aclose()
    second = SQLiteStore(path, 100)
    assert await second.open() == 2
    assert await second.recent("lobby", 10) == [record(1)]
    private = record(2, None, "alice", "bob", "alice\nx")
    assert await second.since(0, set(), "account:bob", 10) == [private]
    await second.aclose()


async def test_sqlite_adds_the_principal_columns_to_an_older_database(tmp_path: Path) -> None:
    """A database made before principals gets their columns when opened; its private
    messages have none, so they are replayed to nobody, and new ones are kept with theirs."""
    path = tmp_path / "history.db"
    old = sqlite3.connect(path)
    old.executescript(
        """
        CREATE TABLE messages (
            id INTEGER PRIMARY KEY, ts TEXT NOT NULL, room TEXT, sender TEXT,
            recipient TEXT, text TEXT NOT NULL, action INTEGER NOT NULL DEFAULT 0,
            dedupe TEXT
        );
        INSERT INTO messages (id, ts, room, sender, recipient, text)
            VALUES (1, 'ts1', NULL, 'bob', 'alice', 'old secret'), (2, 'ts2', 'lobby', 'bob',
            NULL, 'old hello');
        """
    )
    old.close()
    store = SQLiteStore(path, 100)
    assert await store.open() == 2
    try:
        assert [r.text for r in await store.since(0, {"lobby"}, "account:alice", 10)] == [
            "old hello"
        ]
        assert await store.recent_private("account:alice", 10) == []
        await store.write([record(3, None, "bob", "alice")])
        assert await store.recent_private("account:alice", 10) == [record(3, None, "bob", "alice")]
    finally:
        await store.aclose()
    with closing(sqlite3.connect(path)) as db:
        columns = [row[1] for row in db.execute("PRAGMA table_info(messages)")]
    assert columns[-2:] == ["sender_principal", "recipient_principal"]


async def test_sqlite_refuses_a_database_another_server_holds(tmp_path: Path) -> None:
    """Two servers on one file: the second gets one clear error."""
    path = tmp_path / "history.db"
    first = SQLiteStore(path, 100)
    await first.open()
    try:
        with pytest.raises(StoreError, match=r"another server is using it \(database is locked\)"):
            await SQLiteStore(path, 100).open()
    finally:
        await first.aclose()


async def test_sqlite_refuses_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    """A corrupt (non-SQLite) file gets one clear error naming it."""
    path = tmp_path / "history.db"
    path.write_bytes(b"this is not a database, just some bytes" * 100)
    with pytest.raises(
        StoreError,
        match=rf"cannot use the history database {path}: it is not an SQLite database \(left",
    ):
        await SQLiteStore(path, 100).open()


async def test_sqlite_refuses_an_unusable_path(tmp_path: Path) -> None:
    """A path under a regular file cannot hold a database: one clear error."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match=f"cannot use the history database {blocker / 'h.db'}"):
        await SQLiteStore(blocker / "h.db", 100).open()


async def test_hostile_text_stored_by_an_older_server_is_replayed_clean(tmp_path: Path) -> None:
    """A database written before texts were cleaned: what is read back is cleaned."""
    path = tmp_path / "history.db"
    first = SQLiteStore(path, 5)
    await first.open()
    raw = Record(1, "ts1", "lobby", "alice", None, "a\x1b[2K\rb\u2028c\x07", False, None)
    await first.write([raw])
    await first.aclose()
    again = SQLiteStore(path, 5)
    await again.open()
    assert [r.text for r in await again.recent("lobby", 5)] == ["a\nb c"]
    await again.aclose()
