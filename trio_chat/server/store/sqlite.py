"""The durable store: SQLite (stdlib ``sqlite3``) in WAL mode, driven from one worker
thread. It keeps the messages, the accounts of ``--accounts``, and the bans, mutes and room
topics of moderation.

One connection, used by one thread at a time (a capacity limiter of 1), so SQLite sees
a single writer and never waits on itself. ``synchronous=NORMAL`` in WAL mode makes a
commit survive the process being killed (``kill -9``); only a power failure can lose
the last commits. The database is opened in exclusive locking mode, so a second server
on the same file fails at start-up instead of interleaving writes.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import trio

from trio_chat.core.text import clean_text

from .base import (
    AccountNameTaken,
    AccountRow,
    BanRow,
    MuteRow,
    Record,
    Store,
    StoreError,
    StoreLocked,
    TopicRow,
)
from .memory import MemoryStore

__all__ = ["MEMORY", "SQLiteStore", "default_db_path", "describe_db", "open_store"]

MEMORY = ":memory:"  # the --db value that keeps messages in memory only
#: How long opening waits for another process's lock before giving up.
LOCK_TIMEOUT = 0.5

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    room TEXT,
    sender TEXT,
    recipient TEXT,
    text TEXT NOT NULL,
    action INTEGER NOT NULL DEFAULT 0,
    dedupe TEXT,
    sender_principal TEXT,
    recipient_principal TEXT
);
CREATE INDEX IF NOT EXISTS messages_by_room ON messages (room, id);
CREATE UNIQUE INDEX IF NOT EXISTS messages_by_dedupe ON messages (dedupe)
    WHERE dedupe IS NOT NULL;
CREATE TABLE IF NOT EXISTS trimmed (
    scope TEXT PRIMARY KEY NOT NULL,
    through INTEGER NOT NULL
);
-- AUTOINCREMENT: an id is never given twice, not even after its account is removed
-- (a plain INTEGER PRIMARY KEY may reuse the highest one). Names are ASCII (the
-- nickname rule), so NOCASE makes them unique in any case.
CREATE TABLE IF NOT EXISTS accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT NOT NULL,
    admin INTEGER NOT NULL DEFAULT 0,
    created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bans (
    kind TEXT NOT NULL,
    value TEXT NOT NULL,
    reason TEXT,
    created TEXT NOT NULL,
    expires TEXT,
    by TEXT NOT NULL,
    PRIMARY KEY (kind, value)
);
CREATE TABLE IF NOT EXISTS mutes (
    room TEXT NOT NULL,
    nick TEXT NOT NULL,
    principal TEXT,
    created TEXT NOT NULL,
    expires TEXT,
    by TEXT NOT NULL,
    PRIMARY KEY (room, nick)
);
CREATE TABLE IF NOT EXISTS topics (
    room TEXT PRIMARY KEY NOT NULL,
    topic TEXT NOT NULL,
    by TEXT,
    set_at TEXT NOT NULL
);
"""
#: The ``trimmed`` table's key for private messages (a room name is never empty).
PRIVATE_SCOPE = ""
COLUMNS = (
    "id, ts, room, sender, recipient, text, action, dedupe, sender_principal, recipient_principal"
)
#: Columns added to ``messages`` since its first version, and their SQL types: a
#: database made before them gets them (NULL in the old rows) when it is opened.
ADDED_COLUMNS = (("sender_principal", "TEXT"), ("recipient_principal", "TEXT"))
ACCOUNT_COLUMNS = "id, name, password_hash, admin, created"

T = TypeVar("T")

#: The first bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"


class _Refused(Exception):
    """The path cannot hold the history; the message says why (the file named by the caller)."""


def default_db_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/trio_chat/history.db`` (``$HOME/.local/share/...`` without it), read
    from ``environ`` (default: the process's environment)."""
    environ = os.environ if environ is None else environ
    base = environ.get("XDG_DATA_HOME") or str(
        Path(environ.get("HOME") or Path.home()) / ".local" / "share"
    )
    return Path(base) / "trio_chat" / "history.db"


def describe_db(db: str | None) -> str:
    """Where ``--db`` keeps messages, for the start-up log: the file, or ``in memory``."""
    if db == MEMORY:
        return "in memory"
    return str(default_db_path() if db is None else Path(db))


def open_store(db: str | None, history_limit: int, *, lock_timeout: float = LOCK_TIMEOUT) -> Store:
    """The store ``--db`` names: :class:`MemoryStore` for ``:memory:``, else SQLite; None is
    the default file, whose folder (alone) is created when missing. ``lock_timeout``: how
    long opening waits for another process's lock."""
    if db == MEMORY:
        return MemoryStore(history_limit)
    if db is None:
        return SQLiteStore(
            default_db_path(), history_limit, create_folder=True, lock_timeout=lock_timeout
        )
    return SQLiteStore(Path(db), history_limit, lock_timeout=lock_timeout)


def _record(row: tuple[object, ...]) -> Record:
    """A stored message as read back. Its text is cleaned (:func:`clean_text`) once more:
    a database written before the server stripped hostile text may hold escape
    sequences, and a replay must not deliver them (a clean text costs one check)."""
    id_, ts, room, sender, recipient, text, action, dedupe, sender_principal, recipient_p = row
    return Record(
        int(id_),  # type: ignore[call-overload]
        str(ts),
        room,  # type: ignore[arg-type]
        sender,  # type: ignore[arg-type]
        recipient,  # type: ignore[arg-type]
        clean_text(str(text)),
        bool(action),
        dedupe,  # type: ignore[arg-type]
        sender_principal,  # type: ignore[arg-type]
        recipient_p,  # type: ignore[arg-type]
    )


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Give a ``messages`` table made before :data:`ADDED_COLUMNS` those columns."""
    present = {row[1] for row in db.execute("PRAGMA table_info(messages)")}
    for name, kind in ADDED_COLUMNS:
        if name not in present:
            db.execute(f"ALTER TABLE messages ADD COLUMN {name} {kind}")


def _account(row: tuple[object, ...]) -> AccountRow:
    id_, name, password_hash, admin, created = row
    return AccountRow(
        int(id_),  # type: ignore[call-overload]
        str(name),
        str(password_hash),
        bool(admin),
        str(created),
    )


class SQLiteStore:
    """Messages in one SQLite file, each room (and private messages) capped at
    ``history_limit`` records."""

    def __init__(
        self,
        path: Path,
        history_limit: int,
        *,
        create_folder: bool = False,
        lock_timeout: float = LOCK_TIMEOUT,
    ) -> None:
        self.path = path
        self.lock_timeout = lock_timeout
        self.create_folder = create_folder
        self.history_limit = history_limit
        self._db: sqlite3.Connection | None = None
        self._limiter = trio.CapacityLimiter(1)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in the store's worker thread. Not abandoned on cancellation: a
        commit that has started finishes, so what was acknowledged stays stored."""
        db = self._db
        if db is None:
            raise StoreError("the history database is not open")

        def guarded() -> T:
            try:
                return work(db)
            except sqlite3.Error as exc:
                raise StoreError(f"history database {self.path}: {exc}") from exc

        return await trio.to_thread.run_sync(guarded, limiter=self._limiter)

    async def open(self) -> int:
        """Open the file (creating it when absent) and take its lock for good; return the
        highest stored id. Refuses, with a :class:`StoreError` naming the file, a missing
        folder (unless ``create_folder``), a file that is not an SQLite database (never
        written to), a read-only file or folder, and a file another server holds."""

        def connect() -> tuple[sqlite3.Connection, int]:
            self._check_path()
            db = sqlite3.connect(
                self.path,
                timeout=self.lock_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                db.execute("PRAGMA locking_mode = EXCLUSIVE")
                mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode != "wal":
                    raise sqlite3.OperationalError(f"cannot use WAL mode (got {mode})")
                db.execute("PRAGMA synchronous = NORMAL")
                db.execute("BEGIN IMMEDIATE")  # takes the exclusive lock, for good
                db.executescript(SCHEMA)  # commits
                _add_missing_columns(db)
                last = db.execute("SELECT COALESCE(MAX(id), 0) FROM messages").fetchone()[0]
            except BaseException:
                db.close()
                raise
            return db, int(last)

        try:
            self._db, last = await trio.to_thread.run_sync(connect, limiter=self._limiter)
        except _Refused as exc:
            raise StoreError(f"cannot use the history database {self.path}: {exc}") from None
        except (sqlite3.Error, OSError) as exc:
            reason = str(exc)
            if "locked" in reason:
                raise StoreLocked(
                    f"cannot use the history database {self.path}: another server is using "
                    "it (database is locked); give this server its own file with --db PATH, "
                    "or --db :memory:"
                ) from None
            if "readonly" in reason or "read-only" in reason:
                reason = "it is read-only"
            elif "not a database" in reason:
                reason = "it is not an SQLite database (left as it is)"
            raise StoreError(f"cannot use the history database {self.path}: {reason}") from None
        return last

    def _check_path(self) -> None:
        """What SQLite would report badly, or not at all, refused up front: SQLite takes a
        file shorter than its header for an empty database and overwrites it, and calls a
        read-only folder a "disk I/O error"."""
        folder = self.path.parent
        if self.create_folder:
            folder.mkdir(parents=True, exist_ok=True)
        if not folder.exists():
            raise _Refused(f"the folder {folder} does not exist")
        if not folder.is_dir():
            raise _Refused(f"{folder} is not a folder")
        if self.path.exists():
            if not self.path.is_file():
                raise _Refused("it is not a file")
            with self.path.open("rb") as file:
                header = file.read(len(SQLITE_HEADER))
            if header and header != SQLITE_HEADER:
                raise _Refused("it is not an SQLite database (left as it is)")
            if not os.access(self.path, os.W_OK):
                raise _Refused("it is read-only")
        # The lock and the write-ahead log live in files beside the database.
        if not os.access(folder, os.W_OK | os.X_OK):
            raise _Refused(f"its folder {folder} is read-only")

    async def write(self, records: Sequence[Record]) -> None:
        rows = [
            (
                r.id,
                r.ts,
                r.room,
                r.sender,
                r.recipient,
                r.text,
                int(r.action),
                r.dedupe,
                r.sender_principal,
                r.recipient_principal,
            )
            for r in records
        ]
        rooms = {r.room for r in records}
        keep = self.history_limit

        def insert(db: sqlite3.Connection) -> None:
            # One transaction: BEGIN ... COMMIT (ROLLBACK on error). OR IGNORE: a resend
            # key already stored must not fail the other senders' messages in the group.
            with db:
                db.execute("BEGIN")
                db.executemany(
                    f"INSERT OR IGNORE INTO messages ({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", rows
                )
                for room in rooms:
                    # Keep the newest `keep` records of the room: the newest one beyond
                    # them and everything older go (nothing when the room has no more).
                    row = db.execute(
                        "SELECT id FROM messages WHERE room IS ? ORDER BY id DESC LIMIT 1 OFFSET ?",
                        (room, keep),
                    ).fetchone()
                    if row is None:
                        continue
                    db.execute("DELETE FROM messages WHERE room IS ? AND id <= ?", (room, row[0]))
                    # Remembered in the same transaction: a resume from before it must
                    # be told that messages are missing.
                    db.execute(
                        "INSERT INTO trimmed (scope, through) VALUES (?, ?) ON CONFLICT (scope)"
                        " DO UPDATE SET through = max(through, excluded.through)",
                        (PRIVATE_SCOPE if room is None else room, row[0]),
                    )

        await self._run(insert)

    async def recent(self, room: str | None, limit: int, before: int | None = None) -> list[Record]:
        def query(db: sqlite3.Connection) -> list[Record]:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM messages WHERE room IS ? AND id < ?"
                " ORDER BY id DESC LIMIT ?",
                (room, before if before is not None else 2**63 - 1, limit),
            ).fetchall()
            return [_record(row) for row in reversed(rows)]

        return await self._run(query)

    async def since(
        self,
        after: int,
        rooms: Collection[str],
        principal_id: str | None,
        limit: int,
        before: int | None = None,
    ) -> list[Record]:
        room_list = sorted(rooms)
        placeholders = ",".join("?" * len(room_list))

        def query(db: sqlite3.Connection) -> list[Record]:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM messages WHERE id > ? AND id < ? AND ("
                f" room IN ({placeholders}) OR (room IS NULL AND ("
                "  sender_principal = ? OR recipient_principal = ?)))"
                " ORDER BY id LIMIT ?",
                (
                    after,
                    before if before is not None else 2**63 - 1,
                    *room_list,
                    principal_id,
                    principal_id,
                    limit,
                ),
            ).fetchall()
            return [_record(row) for row in rows]

        return await self._run(query)

    async def recent_private(
        self, principal_id: str, limit: int, before: int | None = None
    ) -> list[Record]:
        def query(db: sqlite3.Connection) -> list[Record]:
            rows = db.execute(
                f"SELECT {COLUMNS} FROM messages WHERE room IS NULL AND id < ?"
                " AND (sender_principal = ? OR recipient_principal = ?)"
                " ORDER BY id DESC LIMIT ?",
                (before if before is not None else 2**63 - 1, principal_id, principal_id, limit),
            ).fetchall()
            return [_record(row) for row in reversed(rows)]

        return await self._run(query)

    async def trimmed(self, rooms: Collection[str | None]) -> int:
        scopes = [PRIVATE_SCOPE if room is None else room for room in rooms]
        placeholders = ",".join("?" * len(scopes))

        def query(db: sqlite3.Connection) -> int:
            row = db.execute(
                f"SELECT COALESCE(MAX(through), 0) FROM trimmed WHERE scope IN ({placeholders})",
                scopes,
            ).fetchone()
            return int(row[0])

        return await self._run(query)

    async def find_dedupe(self, dedupe: str) -> int | None:
        def query(db: sqlite3.Connection) -> int | None:
            row = db.execute("SELECT id FROM messages WHERE dedupe = ?", (dedupe,)).fetchone()
            return None if row is None else int(row[0])

        return await self._run(query)

    async def add_account(self, name: str, password_hash: str, admin: bool, created: str) -> int:
        def insert(db: sqlite3.Connection) -> int:
            # One statement, committed on its own (the connection is in autocommit mode).
            try:
                cursor = db.execute(
                    "INSERT INTO accounts (name, password_hash, admin, created)"
                    " VALUES (?, ?, ?, ?)",
                    (name, password_hash, int(admin), created),
                )
            except sqlite3.IntegrityError:
                raise AccountNameTaken(name) from None
            assert cursor.lastrowid is not None
            return cursor.lastrowid

        return await self._run(insert)

    async def get_account(self, name: str) -> AccountRow | None:
        def query(db: sqlite3.Connection) -> AccountRow | None:
            row = db.execute(
                f"SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE name = ?", (name,)
            ).fetchone()
            return None if row is None else _account(row)

        return await self._run(query)

    async def set_account(
        self, name: str, *, password_hash: str | None = None, admin: bool | None = None
    ) -> bool:
        def update(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE accounts SET password_hash = coalesce(?, password_hash),"
                " admin = coalesce(?, admin) WHERE name = ?",
                (password_hash, None if admin is None else int(admin), name),
            )
            return cursor.rowcount > 0

        return await self._run(update)

    async def remove_account(self, name: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            cursor = db.execute("DELETE FROM accounts WHERE name = ?", (name,))
            return cursor.rowcount > 0

        return await self._run(delete)

    async def list_accounts(self) -> list[AccountRow]:
        def query(db: sqlite3.Connection) -> list[AccountRow]:
            rows = db.execute(f"SELECT {ACCOUNT_COLUMNS} FROM accounts ORDER BY id").fetchall()
            return [_account(row) for row in rows]

        return await self._run(query)

    async def put_ban(self, ban: BanRow) -> None:
        row = (ban.kind, ban.value, ban.reason, ban.created, ban.expires, ban.by)
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO bans (kind, value, reason, created, expires, by)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    async def remove_ban(self, kind: str, value: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            cursor = db.execute("DELETE FROM bans WHERE kind = ? AND value = ?", (kind, value))
            return cursor.rowcount > 0

        return await self._run(delete)

    async def list_bans(self) -> list[BanRow]:
        def query(db: sqlite3.Connection) -> list[BanRow]:
            rows = db.execute(
                "SELECT kind, value, reason, created, expires, by FROM bans ORDER BY created"
            ).fetchall()
            return [BanRow(*row) for row in rows]

        return await self._run(query)

    async def put_mute(self, mute: MuteRow) -> None:
        row = (mute.room, mute.nick, mute.principal, mute.created, mute.expires, mute.by)
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO mutes (room, nick, principal, created, expires, by)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                row,
            )
        )

    async def remove_mute(self, room: str, nick: str) -> bool:
        def delete(db: sqlite3.Connection) -> bool:
            cursor = db.execute("DELETE FROM mutes WHERE room = ? AND nick = ?", (room, nick))
            return cursor.rowcount > 0

        return await self._run(delete)

    async def list_mutes(self) -> list[MuteRow]:
        def query(db: sqlite3.Connection) -> list[MuteRow]:
            rows = db.execute(
                "SELECT room, nick, principal, created, expires, by FROM mutes ORDER BY created"
            ).fetchall()
            return [MuteRow(*row) for row in rows]

        return await self._run(query)

    async def put_topic(self, room: str, topic: TopicRow | None) -> None:
        def write(db: sqlite3.Connection) -> None:
            if topic is None:
                db.execute("DELETE FROM topics WHERE room = ?", (room,))
            else:
                db.execute(
                    "INSERT OR REPLACE INTO topics (room, topic, by, set_at) VALUES (?, ?, ?, ?)",
                    (room, topic.topic, topic.by, topic.set_at),
                )

        await self._run(write)

    async def list_topics(self) -> list[TopicRow]:
        def query(db: sqlite3.Connection) -> list[TopicRow]:
            rows = db.execute("SELECT room, topic, by, set_at FROM topics ORDER BY room").fetchall()
            return [TopicRow(*row) for row in rows]

        return await self._run(query)

    async def aclose(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await trio.to_thread.run_sync(db.close, limiter=self._limiter)
