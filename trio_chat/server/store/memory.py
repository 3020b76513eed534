"""A store that keeps messages (and accounts, bans, mutes, topics) in memory only:
``--db :memory:`` (nothing survives a restart) and fast tests. Same retention as the
durable store."""

from __future__ import annotations

import dataclasses
from collections import deque
from collections.abc import Collection, Sequence

import trio

from .base import AccountNameTaken, AccountRow, BanRow, MuteRow, Record, TopicRow

__all__ = ["MemoryStore"]


class MemoryStore:
    """Per-room deques of records, each capped at ``history_limit``."""

    def __init__(self, history_limit: int) -> None:
        self.history_limit = history_limit
        self._rooms: dict[str | None, deque[Record]] = {}
        self._dedupe: dict[str, int] = {}
        #: room (None: private messages) -> the highest id retention dropped from it.
        self._trimmed: dict[str | None, int] = {}
        #: folded name -> account, in the order they were added.
        self._accounts: dict[str, AccountRow] = {}
        #: The last account id given: ids are never given twice, as in SQLite's AUTOINCREMENT.
        self._last_account_id = 0
        self._bans: dict[tuple[str, str], BanRow] = {}
        self._mutes: dict[tuple[str, str], MuteRow] = {}
        self._topics: dict[str, TopicRow] = {}

    async def open(self) -> int:
        await trio.lowlevel.checkpoint()
        return max((r[-1].id for r in self._rooms.values() if r), default=0)

    async def write(self, records: Sequence[Record]) -> None:
        await trio.lowlevel.checkpoint()
        for record in records:
            room = self._rooms.setdefault(record.room, deque())
            room.append(record)
            if record.dedupe is not None:
                self._dedupe[record.dedupe] = record.id
            while len(room) > self.history_limit:
                dropped = room.popleft()
                self._trimmed[record.room] = dropped.id
                if dropped.dedupe is not None:
                    self._dedupe.pop(dropped.dedupe, None)

    async def recent(self, room: str | None, limit: int, before: int | None = None) -> list[Record]:
        await trio.lowlevel.checkpoint()
        records = [r for r in self._rooms.get(room, ()) if before is None or r.id < before]
        return records[-limit:] if limit > 0 else []

    async def since(
        self,
        after: int,
        rooms: Collection[str],
        principal_id: str | None,
        limit: int,
        before: int | None = None,
    ) -> list[Record]:
        await trio.lowlevel.checkpoint()
        below = before if before is not None else 2**63
        found = [
            record
            for room, records in self._rooms.items()
            if (room in rooms if room is not None else principal_id is not None)
            for record in records
            if after < record.id < below
            and (record.room is not None or _concerns(record, principal_id))
        ]
        found.sort(key=lambda record: record.id)
        return found[:limit]

    async def recent_private(
        self, principal_id: str, limit: int, before: int | None = None
    ) -> list[Record]:
        await trio.lowlevel.checkpoint()
        below = before if before is not None else 2**63
        found = [
            record
            for record in self._rooms.get(None, ())
            if record.id < below and _concerns(record, principal_id)
        ]
        return found[-limit:] if limit > 0 else []

    async def trimmed(self, rooms: Collection[str | None]) -> int:
        await trio.lowlevel.checkpoint()
        return max((self._trimmed.get(room, 0) for room in rooms), default=0)

    async def find_dedupe(self, dedupe: str) -> int | None:
        await trio.lowlevel.checkpoint()
        return self._dedupe.get(dedupe)

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    async def add_account(self, name: str, password_hash: str, admin: bool, created: str) -> int:
        await trio.lowlevel.checkpoint()
        folded = name.casefold()
        if folded in self._accounts:
            raise AccountNameTaken(name)
        self._last_account_id += 1
        self._accounts[folded] = AccountRow(
            self._last_account_id, name, password_hash, admin, created
        )
        return self._last_account_id

    async def get_account(self, name: str) -> AccountRow | None:
        await trio.lowlevel.checkpoint()
        return self._accounts.get(name.casefold())

    async def set_account(
        self, name: str, *, password_hash: str | None = None, admin: bool | None = None
    ) -> bool:
        await trio.lowlevel.checkpoint()
        folded = name.casefold()
        row = self._accounts.get(folded)
        if row is None:
            return False
        if password_hash is not None:
            row = dataclasses.replace(row, password_hash=password_hash)
        if admin is not None:
            row = dataclasses.replace(row, admin=admin)
        self._accounts[folded] = row
        return True

    async def remove_account(self, name: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._accounts.pop(name.casefold(), None) is not None

    async def list_accounts(self) -> list[AccountRow]:
        await trio.lowlevel.checkpoint()
        return list(self._accounts.values())

    async def put_ban(self, ban: BanRow) -> None:
        await trio.lowlevel.checkpoint()
        self._bans[ban.kind, ban.value] = ban

    async def remove_ban(self, kind: str, value: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._bans.pop((kind, value), None) is not None

    async def list_bans(self) -> list[BanRow]:
        await trio.lowlevel.checkpoint()
        return list(self._bans.values())

    async def put_mute(self, mute: MuteRow) -> None:
        await trio.lowlevel.checkpoint()
        self._mutes[mute.room, mute.nick] = mute

    async def remove_mute(self, room: str, nick: str) -> bool:
        await trio.lowlevel.checkpoint()
        return self._mutes.pop((room, nick), None) is not None

    async def list_mutes(self) -> list[MuteRow]:
        await trio.lowlevel.checkpoint()
        return list(self._mutes.values())

    async def put_topic(self, room: str, topic: TopicRow | None) -> None:
        await trio.lowlevel.checkpoint()
        if topic is None:
            self._topics.pop(room, None)
        else:
            self._topics[room] = topic

    async def list_topics(self) -> list[TopicRow]:
        await trio.lowlevel.checkpoint()
        return list(self._topics.values())


def _concerns(record: Record, principal_id: str | None) -> bool:
    """Whether private ``record`` was sent or received by principal ``principal_id``."""
    return principal_id is not None and principal_id in (
        record.sender_principal,
        record.recipient_principal,
    )
