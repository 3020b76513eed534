"""Per-address bookkeeping: what one address holds of the server, and how fast it asks.

One host must not be able to take every place (``--max-connections`` is a lock-out lever
otherwise), open handshakes without end, or hold the file descriptors with connections
that trickle their request. Three counts, each keyed by :func:`address_key`:

* :class:`AddressCounter`: how many of something an address holds at once (open
  connections; handshakes in progress), with a cap;
* :class:`ConnectRate`: how fast an address opens new connections, a rate per minute
  with a burst of the same size (GCRA: one number per address, the time at which its
  allowance is whole again);
* :class:`AddressLimits`: the server's rules on both, with the blocks that are exempt.

An IPv4 address is counted as itself (an IPv4-mapped IPv6 address too); an IPv6 address
by its /64, the block one subscriber is given: counting single IPv6 addresses would let
one host use 2**64 of them. Memory is bounded: an address is kept only while it holds
something, or while its rate allowance is not whole again (at most a minute), and at
most :data:`MAX_TRACKED` addresses are.

Pure bookkeeping with an injected clock: no I/O, no trio; not thread-safe (the server
calls it from its Trio thread only).
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "CONNECTIONS_RETRY_AFTER",
    "IPV6_PREFIX",
    "MAX_TRACKED",
    "AddressCounter",
    "AddressLimits",
    "ConnectRate",
    "Crowded",
    "HandshakeSlot",
    "HandshakeSlots",
    "Network",
    "Throttled",
    "address_key",
    "in_networks",
]

#: An address block (the same alias as the server's configuration).
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network

#: IPv6 addresses are counted per block of this prefix (a /64 is one subscriber's LAN).
IPV6_PREFIX = 64
#: Addresses whose rate allowance is tracked at most: past it the one tracked longest is
#: forgotten (its allowance starts whole again). A flood from that many addresses within
#: a minute is not one the per-address rule is for; this only bounds the memory.
MAX_TRACKED = 100_000
#: Seconds a client refused for holding too many connections is told to wait
#: (``Retry-After``): when one of its own closes is not known; soon enough for a person,
#: slow enough that a reconnecting program does not hammer.
CONNECTIONS_RETRY_AFTER = 10
#: Seconds in the period of ``--connect-rate-per-ip``.
MINUTE = 60.0
#: Seconds of float rounding forgiven when a burst is exactly a minute's allowance.
_TOLERANCE = 1e-6


def address_key(host: str) -> str:
    """What ``host`` (an IP address as text) is counted as: the IPv4 address (also when
    written as IPv4-mapped IPv6), or the IPv6 address's /64 (``2001:db8:0:1::/64``).
    Text that is not an IP address is its own key."""
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


def in_networks(host: str, networks: Sequence[Network]) -> bool:
    """True when ``host`` (an IP address as text; IPv4-mapped IPv6 as IPv4) is in one of
    ``networks``."""
    if not networks:
        return False
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in networks)


class AddressCounter:
    """How many of something each address holds at once, at most ``limit`` each.

    :meth:`take` counts one more when the address is under the limit; :meth:`give_back`
    counts one less. An address holding nothing is not kept."""

    __slots__ = ("_held", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._held: dict[str, int] = {}

    def __len__(self) -> int:
        """How many addresses hold something."""
        return len(self._held)

    def held(self, key: str) -> int:
        """How many the address ``key`` holds."""
        return self._held.get(key, 0)

    def take(self, key: str) -> bool:
        """Count one more for ``key``; False, counting nothing, when it holds ``limit``."""
        held = self._held.get(key, 0)
        if held >= self.limit:
            return False
        self._held[key] = held + 1
        return True

    def give_back(self, key: str) -> None:
        """Count one less for ``key`` (which must hold one)."""
        held = self._held[key] - 1
        if held:
            self._held[key] = held
        else:
            del self._held[key]


class ConnectRate:
    """At most ``per_minute`` new connections a minute from each address, in bursts of
    up to ``per_minute``: an address that opened none for a minute may open that many at
    once, then one every ``60 / per_minute`` seconds.

    GCRA (the generic cell rate algorithm): each address has the time at which its
    allowance is whole again; taking one moves it an interval later, and a take that would
    move it more than a minute ahead of now is refused. ``clock`` gives the time in
    seconds (any monotonic origin)."""

    __slots__ = ("_clock", "_interval", "_whole_at", "per_minute")

    def __init__(self, per_minute: int, clock: Callable[[], float]) -> None:
        self.per_minute = per_minute
        self._interval = MINUTE / per_minute
        self._clock = clock
        # Address -> when its allowance is whole again, least recently taken first.
        self._whole_at: OrderedDict[str, float] = OrderedDict()

    def __len__(self) -> int:
        """How many addresses are tracked (their allowance is not whole)."""
        return len(self._whole_at)

    def take(self, key: str) -> float:
        """Count a new connection from ``key``: 0 when it may open it, else the seconds
        it must wait before it may (nothing is counted then)."""
        now = self._clock()
        self._forget_whole(now)
        whole_at = max(self._whole_at.get(key, now), now) + self._interval
        ahead = whole_at - now - MINUTE
        if ahead > _TOLERANCE:
            return ahead
        self._whole_at[key] = whole_at
        self._whole_at.move_to_end(key)
        if len(self._whole_at) > MAX_TRACKED:
            self._whole_at.popitem(last=False)
        return 0.0

    def _forget_whole(self, now: float) -> None:
        # The front was taken from longest ago: its allowance is whole within a minute of
        # that, so everything taken more than a minute ago goes from here, in order.
        whole_at = self._whole_at
        while whole_at:
            key, when = next(iter(whole_at.items()))
            if when > now:
                break
            del whole_at[key]


@dataclass(frozen=True, slots=True)
class Throttled:
    """A new connection refused by a per-address rule: which (``connections`` or
    ``rate``), its limit, and the whole seconds to wait (``Retry-After``)."""

    rule: str
    limit: int
    retry_after: int


class AddressLimits:
    """The per-address rules of new connections, from one address as admitted (through
    trusted proxies): at most ``max_connections`` open at once and ``connect_rate`` new
    ones a minute (0: that rule is off), except from the ``exempt`` blocks.

    :meth:`admit` counts a connection in, :meth:`release` out again."""

    __slots__ = ("_exempt", "connections", "rate")

    def __init__(
        self,
        *,
        max_connections: int,
        connect_rate: int,
        exempt: Sequence[Network] = (),
        clock: Callable[[], float],
    ) -> None:
        self._exempt = tuple(exempt)
        #: Open connections per address (None: no cap).
        self.connections = AddressCounter(max_connections) if max_connections else None
        #: New connections per minute per address (None: no rate).
        self.rate = ConnectRate(connect_rate, clock) if connect_rate else None

    def exempt(self, host: str) -> bool:
        """Whether connections from ``host`` are under no per-address rule."""
        return in_networks(host, self._exempt)

    def admit(self, host: str | None) -> str | Throttled | None:
        """Count a new connection from ``host`` (None: not known, as over a memory
        stream, and then not counted): the key to :meth:`release` when it ends (None when
        it is not counted: exempt, or every rule off), or :class:`Throttled` when a rule
        refuses it (nothing counted then)."""
        if host is None or (self.connections is None and self.rate is None):
            return None
        if self.exempt(host):
            return None
        key = address_key(host)
        connections = self.connections
        if connections is not None and connections.held(key) >= connections.limit:
            return Throttled("connections", connections.limit, CONNECTIONS_RETRY_AFTER)
        if self.rate is not None:
            wait = self.rate.take(key)
            if wait:
                return Throttled("rate", self.rate.per_minute, max(1, math.ceil(wait)))
        if connections is None:
            return None
        connections.take(key)
        return key

    def release(self, key: str | None) -> None:
        """A connection :meth:`admit` counted (``key``) ended."""
        if key is not None and self.connections is not None:
            self.connections.give_back(key)


@dataclass(frozen=True, slots=True)
class Crowded:
    """A new TCP connection refused before its request is read: too many handshakes in
    progress in all (``rule`` ``handshakes``) or from its peer (``handshakes_per_ip``),
    ``limit`` being that cap."""

    rule: str
    limit: int


@dataclass(slots=True)
class HandshakeSlot:
    """One handshake in progress, as :meth:`HandshakeSlots.enter` counted it: the peer's
    key when it is counted per peer (None when not), and whether it has left."""

    key: str | None
    left: bool = False


class HandshakeSlots:
    """Handshakes in progress (from the TCP accept until the WebSocket is open or the
    request refused): at most ``total`` at once (0: no cap), and ``per_peer`` from one
    TCP peer (0: no cap), except from the ``exempt`` blocks (the operator's exempt ones,
    and the trusted proxies, whose connections carry many clients' handshakes); exempt
    peers still count in the total.

    Counted as the connection is accepted, before a byte of it is read, so a host that
    opens connections and trickles its requests holds at most ``per_peer`` descriptors."""

    __slots__ = ("_exempt", "_peers", "in_progress", "total")

    def __init__(self, *, total: int, per_peer: int, exempt: Sequence[Network] = ()) -> None:
        self.total = total
        self._exempt = tuple(exempt)
        self._peers = AddressCounter(per_peer) if per_peer else None
        #: Handshakes in progress now.
        self.in_progress = 0

    def enter(self, host: str | None) -> HandshakeSlot | Crowded:
        """Count a handshake from the TCP peer ``host`` (None: not known, counted in the
        total only): its slot, to give to :meth:`leave` once the handshake is over, or
        :class:`Crowded` when a cap refuses it (nothing counted then)."""
        if self.total and self.in_progress >= self.total:
            return Crowded("handshakes", self.total)
        key = None
        peers = self._peers
        if peers is not None and host is not None and not in_networks(host, self._exempt):
            key = address_key(host)
            if not peers.take(key):
                return Crowded("handshakes_per_ip", peers.limit)
        self.in_progress += 1
        return HandshakeSlot(key)

    def leave(self, slot: HandshakeSlot) -> None:
        """The handshake counted as ``slot`` is over; idempotent."""
        if slot.left:
            return
        slot.left = True
        self.in_progress -= 1
        if slot.key is not None and self._peers is not None:
            self._peers.give_back(slot.key)
