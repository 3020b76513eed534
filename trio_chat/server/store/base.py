"""The storage interface: what the server needs from wherever messages (and the
accounts of ``--accounts``, the bans, mutes and room topics of moderation) are kept."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from trio_chat.core.record import Record

__all__ = [
    "AccountNameTaken",
    "AccountRow",
    "BanRow",
    "MuteRow",
    "Record",
    "Store",
    "StoreError",
    "StoreLocked",
    "TopicRow",
]


class StoreError(Exception):
    """The store cannot be opened or used; the message says why, in one line."""


class StoreLocked(StoreError):
    """The store cannot be opened because another process (a running server) holds it."""


class AccountNameTaken(Exception):
    """:meth:`Store.add_account` was given a name an account already has (in any case)."""


@dataclass(frozen=True, slots=True)
class AccountRow:
    """One stored account. ``id`` is never reused, not even after the account is removed:
    the account's principal (``account:ID``) owns its private messages for good.
    ``password_hash`` is an argon2 hash string (never the password); ``created`` an ISO
    8601 UTC time."""

    id: int
    name: str
    password_hash: str
    admin: bool
    created: str


@dataclass(frozen=True, slots=True)
class BanRow:
    """One stored ban: ``kind`` (``nick``, ``address`` or ``principal``) and ``value`` (the
    folded nick, the network, the principal id) name whom it bans, and are its key.
    ``created`` and ``expires`` (None: for good) are ISO 8601 UTC times; ``by`` who made
    it (``operator`` or an admin's account name)."""

    kind: str
    value: str
    reason: str | None
    created: str
    expires: str | None
    by: str


@dataclass(frozen=True, slots=True)
class MuteRow:
    """One stored mute: ``nick`` (folded) may not speak in ``room`` until ``expires``
    (None: until unmuted), nor may ``principal``, who held the nick when it was muted
    (None: nobody in particular). Key: (room, nick)."""

    room: str
    nick: str
    principal: str | None
    created: str
    expires: str | None
    by: str


@dataclass(frozen=True, slots=True)
class TopicRow:
    """A room's topic, who set it (None: anonymous) and when (ISO 8601 UTC)."""

    room: str
    topic: str
    by: str | None
    set_at: str


class Store(Protocol):
    """Durable message storage. Every method may run in a worker thread or do network
    I/O; none may be called before :meth:`open` or after :meth:`aclose`."""

    async def open(self) -> int:
        """Open (creating if needed) and return the highest stored id, 0 when empty.
        Raises :class:`StoreError` when the store cannot be used."""
        ...

    async def write(self, records: Sequence[Record]) -> None:
        """Store ``records`` (ascending ids) durably, as one commit, then trim each
        room they touch to the retention limit. Returns once they are durable."""
        ...

    async def recent(self, room: str | None, limit: int, before: int | None = None) -> list[Record]:
        """The last ``limit`` records of ``room`` (None: private messages) with an id
        below ``before``, oldest first."""
        ...

    async def since(
        self,
        after: int,
        rooms: Collection[str],
        principal_id: str | None,
        limit: int,
        before: int | None = None,
    ) -> list[Record]:
        """Up to ``limit`` records with an id above ``after`` (and below ``before``), oldest
        first: those in ``rooms``, and the private ones whose sender or recipient
        principal is ``principal_id`` (none when it is None)."""
        ...

    async def recent_private(
        self, principal_id: str, limit: int, before: int | None = None
    ) -> list[Record]:
        """The last ``limit`` private records sent or received by principal
        ``principal_id`` with an id below ``before``, oldest first."""
        ...

    async def trimmed(self, rooms: Collection[str | None]) -> int:
        """The highest id that retention ever dropped from any of ``rooms`` (None: the
        private messages), 0 when none was dropped. Every record of such a room above
        that id is still kept (retention drops the oldest first)."""
        ...

    async def find_dedupe(self, dedupe: str) -> int | None:
        """The id of the stored record with this resend key, if any."""
        ...

    async def aclose(self) -> None:
        """Release the store; idempotent."""
        ...

    # --- accounts (``--accounts``): names unique in any case, ids never reused ----------------

    async def add_account(self, name: str, password_hash: str, admin: bool, created: str) -> int:
        """Store a new account and return its id, one never given before (not even to a
        removed account). Raises :class:`AccountNameTaken` when an account has ``name`` in
        any case. The name's validity is the caller's business."""
        ...

    async def get_account(self, name: str) -> AccountRow | None:
        """The account called ``name`` (in any case), if there is one."""
        ...

    async def set_account(
        self, name: str, *, password_hash: str | None = None, admin: bool | None = None
    ) -> bool:
        """Change what is given of the account called ``name`` (in any case); False when
        there is no such account."""
        ...

    async def remove_account(self, name: str) -> bool:
        """Remove the account called ``name`` (in any case); False when there is none. Its
        id is not given again."""
        ...

    async def list_accounts(self) -> list[AccountRow]:
        """Every account, in the order they were added."""
        ...

    # --- moderation: bans, mutes, topics; each write is one commit -----------------------------

    async def put_ban(self, ban: BanRow) -> None:
        """Store ``ban``, replacing the ban of the same (kind, value) if there is one."""
        ...

    async def remove_ban(self, kind: str, value: str) -> bool:
        """Remove the ban of (kind, value); False when there was none."""
        ...

    async def list_bans(self) -> list[BanRow]:
        """Every stored ban (expired ones too: their expiry is the caller's business)."""
        ...

    async def put_mute(self, mute: MuteRow) -> None:
        """Store ``mute``, replacing the mute of the same (room, nick) if there is one."""
        ...

    async def remove_mute(self, room: str, nick: str) -> bool:
        """Remove the mute of ``nick`` (folded) in ``room``; False when there was none."""
        ...

    async def list_mutes(self) -> list[MuteRow]:
        """Every stored mute (expired ones too)."""
        ...

    async def put_topic(self, room: str, topic: TopicRow | None) -> None:
        """Keep ``topic`` as the topic of ``room``; None clears it."""
        ...

    async def list_topics(self) -> list[TopicRow]:
        """Every room's topic."""
        ...
