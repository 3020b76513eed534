"""The stores' accounts: the same behaviour from SQLite and memory (names unique in any
case, ids never given twice), and SQLite keeping them across a restart."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from trio_chat.server.store import AccountNameTaken, AccountRow, MemoryStore, SQLiteStore, Store

CREATED = "2026-12-01T12:00:00.000Z"


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each store kind, opened empty."""
    opened: Store = (
        SQLiteStore(tmp_path / "history.db", 5) if request.param == "sqlite" else MemoryStore(5)
    )
    await opened.open()
    yield opened
    await opened.aclose()


async def test_an_account_is_found_by_its_name_in_any_case(store: Store) -> None:
    assert await store.add_account("Alice", "hash-a", False, CREATED) == 1
    assert await store.add_account("bob", "hash-b", True, CREATED) == 2
    assert await store.get_account("ALICE") == AccountRow(1, "Alice", "hash-a", False, CREATED)
    assert await store.get_account("Bob") == AccountRow(2, "bob", "hash-b", True, CREATED)
    assert await store.get_account("carol") is None


async def test_a_name_is_unique_in_any_case(store: Store) -> None:
    await store.add_account("alice", "hash", False, CREATED)
    with pytest.raises(AccountNameTaken):
        await store.add_account("ALICE", "other", False, CREATED)
    assert [row.name for row in await store.list_accounts()] == ["alice"]


async def test_set_account_changes_what_is_given(store: Store) -> None:
    await store.add_account("alice", "hash-1", False, CREATED)
    assert await store.set_account("Alice", password_hash="hash-2") is True
    assert await store.get_account("alice") == AccountRow(1, "alice", "hash-2", False, CREATED)
    assert await store.set_account("alice", admin=True) is True
    assert await store.get_account("alice") == AccountRow(1, "alice", "hash-2", True, CREATED)
    assert await store.set_account("nobody", admin=True) is False


async def test_ids_are_never_given_twice(store: Store) -> None:
    """Removing the newest account and adding the name again gives a new id."""
    await store.add_account("alice", "h", False, CREATED)
    await store.add_account("bob", "h", False, CREATED)
    assert await store.remove_account("BOB") is True
    assert await store.remove_account("bob") is False
    assert await store.add_account("bob", "h", False, CREATED) == 3
    assert [(row.id, row.name) for row in await store.list_accounts()] == [(1, "alice"), (3, "bob")]


async def test_sqlite_keeps_accounts_and_their_last_id_across_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    first = SQLiteStore(path, 5)
    await first.open()
    await first.add_account("alice", "h", False, CREATED)
    await first.add_account("bob", "h", True, CREATED)
    await first.remove_account("bob")
    await first.aclose()
    second = SQLiteStore(path, 5)
    await second.open()
    assert await second.list_accounts() == [AccountRow(1, "alice", "h", False, CREATED)]
    assert await second.add_account("bob", "h", False, CREATED) == 3
    await second.aclose()


async def test_sqlite_adds_the_accounts_table_to_an_older_database(tmp_path: Path) -> None:
    """A history file from before accounts gets the table at open; its messages stay."""
    path = tmp_path / "history.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE messages (id INTEGER PRIMARY KEY, ts TEXT NOT NULL, room TEXT,"
        " sender TEXT, recipient TEXT, text TEXT NOT NULL, action INTEGER NOT NULL DEFAULT 0,"
        " dedupe TEXT);"
        "INSERT INTO messages VALUES (7, 'ts', 'lobby', 'alice', NULL, 'hi', 0, NULL);"
    )
    db.close()
    store = SQLiteStore(path, 5)
    assert await store.open() == 7
    assert await store.add_account("alice", "h", False, CREATED) == 1
    await store.aclose()
