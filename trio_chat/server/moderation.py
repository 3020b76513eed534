"""Bans, mutes and room topics: checked in memory, kept in the store.

:class:`Moderation` holds every ban and mute in memory, indexed for the checks that run
on every handshake, ``/nick``, login, resume and room message (a dictionary lookup each;
an address is looked up once per distinct prefix length among the address bans), and
writes every change to the store before it takes effect, so bans, mutes and topics
survive a restart. Expiry is lazy: an expired entry is dropped when a check or a list
meets it (and from the store at the next change or start-up). Times are the injected
wall clock's (UTC), since they must mean the same after a restart.

What a ban does to connections already open (they are closed) is the caller's: the
chat (:meth:`~trio_chat.server.chat.Chat.enforce_ban`). Bounded: at most
:data:`MAX_ENTRIES` bans and as many mutes; past that a new one is refused.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from trio_chat.core.bans import BanKind, BanTarget
from trio_chat.core.events import timestamp

from .store import BanRow, MuteRow, Store, TopicRow

__all__ = ["MAX_ENTRIES", "OPERATOR", "Ban", "Moderation", "ModerationError", "Mute"]

#: Bans (and, apart, mutes) kept at most: operators and admins make them by hand, so this
#: is far above any real list, and keeps a runaway script from filling memory.
MAX_ENTRIES = 100_000
#: Who a ban or mute made at the console or over the control socket is by.
OPERATOR = "operator"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ModerationError(Exception):
    """A ban or mute that cannot be made; the message says why, in one line."""


def _parse_time(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True, slots=True)
class Ban:
    """A ban in force: its stored row, and its target and expiry parsed."""

    row: BanRow
    target: BanTarget
    until: datetime | None

    @classmethod
    def from_row(cls, row: BanRow) -> Ban:
        return cls(row, BanTarget(BanKind(row.kind), row.value), _parse_time(row.expires))

    def describe(self) -> dict[str, object]:
        """The ban as the control socket and ``/bans`` give it."""
        return {
            "target": str(self.target),
            "kind": self.row.kind,
            "reason": self.row.reason,
            "by": self.row.by,
            "created": self.row.created,
            "expires": self.row.expires,
        }


@dataclass(frozen=True, slots=True)
class Mute:
    """A mute in force: its stored row and its expiry parsed."""

    row: MuteRow
    until: datetime | None


class Moderation:
    """Every ban and mute, and the topics of rooms, for one server."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime]) -> None:
        self.store = store
        self._clock = clock
        self._bans: dict[tuple[BanKind, str], Ban] = {}
        #: (IP version, prefix length) -> the banned networks of that length, compact.
        self._networks: dict[tuple[int, int], set[str]] = {}
        self._mutes: dict[tuple[str, str], Mute] = {}
        #: (room, principal id) -> the key of its mute there: a mute follows the principal
        #: that held the nick, and a message must not scan every mute to find it.
        self._muted_principals: dict[tuple[str, str], tuple[str, str]] = {}
        #: Room -> its topic; a room made again (its last member left) gets it back.
        self.topics: dict[str, TopicRow] = {}

    async def load(self) -> None:
        """Read the bans, mutes and topics from the store (replacing what is held);
        expired bans and mutes are dropped from it."""
        now = self._clock()
        self._bans.clear()
        self._networks.clear()
        self._mutes.clear()
        self._muted_principals.clear()
        for row in await self.store.list_bans():
            ban = Ban.from_row(row)
            if ban.until is not None and ban.until <= now:
                await self.store.remove_ban(row.kind, row.value)
            else:
                self._hold_ban(ban)
        for mute_row in await self.store.list_mutes():
            mute = Mute(mute_row, _parse_time(mute_row.expires))
            if mute.until is not None and mute.until <= now:
                await self.store.remove_mute(mute_row.room, mute_row.nick)
            else:
                self._hold_mute(mute)
        self.topics = {row.room: row for row in await self.store.list_topics()}

    # --- the checks ----------------------------------------------------------------------

    def banned(
        self,
        *,
        nick: str | None = None,
        principal: str | None = None,
        address: str | None = None,
    ) -> Ban | None:
        """The ban in force on ``nick``, ``principal`` (an id) or ``address`` (a host,
        without port), whichever is given and banned first; None when none is."""
        if nick is not None:
            ban = self._live(self._bans.get((BanKind.NICK, nick.casefold())))
            if ban is not None:
                return ban
        if principal is not None:
            ban = self._live(self._bans.get((BanKind.PRINCIPAL, principal)))
            if ban is not None:
                return ban
        if address is not None and self._networks:
            return self._address_ban(address)
        return None

    def _address_ban(self, host: str) -> Ban | None:
        try:
            ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        except ValueError:
            return None
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # ::ffff:203.0.113.7 is 203.0.113.7
        for (version, length), networks in list(self._networks.items()):
            if version != ip.version:
                continue
            network = ipaddress.ip_network((ip, length), strict=False).compressed
            if network in networks:
                ban = self._live(self._bans.get((BanKind.ADDRESS, network)))
                if ban is not None:
                    return ban
        return None

    def _live(self, ban: Ban | None) -> Ban | None:
        """``ban`` if it is still in force; an expired one is dropped (from memory: the
        store forgets it at the next start or change)."""
        if ban is None or ban.until is None or ban.until > self._clock():
            return ban
        self._drop_ban(ban.target)
        return None

    def bans(self) -> list[Ban]:
        """Every ban in force, oldest first."""
        live = [self._live(ban) for ban in list(self._bans.values())]
        return sorted((ban for ban in live if ban is not None), key=lambda ban: ban.row.created)

    def matches(
        self, ban: Ban, nick: str | None, principal: str | None, address: str | None
    ) -> bool:
        """Whether ``ban`` applies to a connection with this nick, principal and address."""
        target = ban.target
        match target.kind:
            case BanKind.NICK:
                return nick is not None and nick.casefold() == target.value
            case BanKind.PRINCIPAL:
                return principal == target.value
            case BanKind.ADDRESS:
                return address is not None and _in_network(address, target.value)
        return False

    # --- changes -------------------------------------------------------------------------

    async def ban(
        self, target: BanTarget, *, seconds: int | None, reason: str | None, by: str
    ) -> Ban:
        """Ban ``target`` (a nick, address or principal: an account name is resolved
        before) for ``seconds`` (None: for good), replacing a ban of the same target.
        Stored first: raises :class:`~trio_chat.server.store.StoreError`, changing
        nothing, when it cannot be. Cancelled while it is being stored, the write still
        completes (the store never abandons one) and the ban holds from the next start."""
        if target.kind is BanKind.ACCOUNT:
            raise ValueError("resolve an account:NAME target to its principal first")
        key = (target.kind, target.value)
        if key not in self._bans and len(self._bans) >= MAX_ENTRIES:
            raise ModerationError(f"too many bans (at most {MAX_ENTRIES}); lift some first")
        now = self._clock()
        until = None if seconds is None else now + timedelta(seconds=seconds)
        row = BanRow(
            target.kind.value,
            target.value,
            reason,
            timestamp(now),
            None if until is None else timestamp(until),
            by,
        )
        await self.store.put_ban(row)
        self._drop_ban(target)
        ban = Ban(row, target, until)
        self._hold_ban(ban)
        return ban

    async def unban(self, target: BanTarget) -> Ban | None:
        """Lift the ban on ``target``; the ban lifted, or None when there was none (or
        it had expired)."""
        ban = self._live(self._bans.get((target.kind, target.value)))
        if ban is None:
            return None
        await self.store.remove_ban(target.kind.value, target.value)
        self._drop_ban(target)
        return ban

    def _hold_ban(self, ban: Ban) -> None:
        target = ban.target
        self._bans[target.kind, target.value] = ban
        if target.kind is BanKind.ADDRESS:
            network = ipaddress.ip_network(target.value)
            self._networks.setdefault((network.version, network.prefixlen), set()).add(target.value)

    def _drop_ban(self, target: BanTarget) -> None:
        self._bans.pop((target.kind, target.value), None)
        if target.kind is BanKind.ADDRESS:
            network = ipaddress.ip_network(target.value)
            key = (network.version, network.prefixlen)
            networks = self._networks.get(key)
            if networks is not None:
                networks.discard(target.value)
                if not networks:
                    del self._networks[key]

    # --- mutes ---------------------------------------------------------------------------

    def muted(self, room: str, nick: str | None, principal: str | None) -> Mute | None:
        """The mute in force on ``nick`` in ``room``, or on ``principal`` there (who held
        a muted nick when it was muted: a new nick does not lift it); None when none."""
        if not self._mutes:
            return None
        if nick is not None:
            mute = self._live_mute(self._mutes.get((room, nick.casefold())))
            if mute is not None:
                return mute
        if principal is not None:
            key = self._muted_principals.get((room, principal))
            if key is not None:
                return self._live_mute(self._mutes.get(key))
        return None

    def _live_mute(self, mute: Mute | None) -> Mute | None:
        if mute is None or mute.until is None or mute.until > self._clock():
            return mute
        self._drop_mute(mute.row.room, mute.row.nick)
        return None

    def _hold_mute(self, mute: Mute) -> None:
        row = mute.row
        self._drop_mute(row.room, row.nick)  # the mute it replaces, if any
        self._mutes[row.room, row.nick] = mute
        if row.principal is not None:
            self._muted_principals[row.room, row.principal] = (row.room, row.nick)

    def _drop_mute(self, room: str, nick: str) -> None:
        mute = self._mutes.pop((room, nick), None)
        principal = None if mute is None else mute.row.principal
        if principal is not None and self._muted_principals.get((room, principal)) == (room, nick):
            del self._muted_principals[room, principal]

    def mutes(self, room: str | None = None) -> list[Mute]:
        """The mutes in force (in ``room``, when given), oldest first."""
        live = [self._live_mute(mute) for mute in list(self._mutes.values())]
        return sorted(
            (m for m in live if m is not None and (room is None or m.row.room == room)),
            key=lambda mute: mute.row.created,
        )

    async def mute(
        self, room: str, nick: str, principal: str | None, *, seconds: int | None, by: str
    ) -> Mute:
        """Mute ``nick`` (and ``principal``, its holder now, if any) in ``room`` for
        ``seconds`` (None: until unmuted). Stored first."""
        key = (room, nick.casefold())
        if key not in self._mutes and len(self._mutes) >= MAX_ENTRIES:
            raise ModerationError(f"too many mutes (at most {MAX_ENTRIES}); lift some first")
        now = self._clock()
        until = None if seconds is None else now + timedelta(seconds=seconds)
        row = MuteRow(
            room,
            nick.casefold(),
            principal,
            timestamp(now),
            None if until is None else timestamp(until),
            by,
        )
        await self.store.put_mute(row)
        mute = Mute(row, until)
        self._hold_mute(mute)
        return mute

    async def unmute(self, room: str, nick: str) -> bool:
        """Lift the mute of ``nick`` in ``room``; False when there was none."""
        mute = self._live_mute(self._mutes.get((room, nick.casefold())))
        if mute is None:
            return False
        await self.store.remove_mute(room, nick.casefold())
        self._drop_mute(room, nick.casefold())
        return True

    # --- topics --------------------------------------------------------------------------

    async def set_topic(self, room: str, topic: str | None, by: str | None) -> None:
        """Keep ``topic`` (None: cleared) as ``room``'s, set by ``by``. Stored first."""
        row = None if topic is None else TopicRow(room, topic, by, timestamp(self._clock()))
        await self.store.put_topic(room, row)
        if row is None:
            self.topics.pop(room, None)
        else:
            self.topics[room] = row


def _in_network(host: str, network: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip in ipaddress.ip_network(network)
