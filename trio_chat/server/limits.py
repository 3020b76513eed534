"""Flood limits: token buckets, whom each is kept for, and which commands cost more.

A :class:`TokenBucket` holds up to ``burst`` tokens and gains ``rate`` of them a second; a
message takes one. :class:`Allowances` keeps one :class:`Allowance` (a bucket for every
message, and a tighter one for the commands that cost: :func:`is_costly`) per key: a
principal's id for an account or a token subject, so that its devices share it and more
connections buy nothing; for guests, their address (a reconnecting guest is a new guest,
so only its address says it is the same sender; the connection asks for that key, and
keeps an allowance of its own where the address is unknown or exempt). Which messages
wait, and what is done past the backlog bound, is the connection reader's
(:mod:`trio_chat.server.connection`).

Pure but for the clock, which is injected (``trio.current_time`` in the server, a fake
one in tests): no trio, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from trio_chat.core.commands import Command, History, Join, Nick

__all__ = [
    "Allowance",
    "Allowances",
    "RateLimits",
    "TokenBucket",
    "is_costly",
]

#: A clock in seconds (monotonic): ``trio.current_time`` in the server.
Clock = Callable[[], float]

#: The registry is swept of full buckets once it has this many more entries than after
#: the last sweep (and twice as many): the sweeps cost O(1) per new entry, amortised.
_SWEEP_FLOOR = 64
#: A shortfall of tokens this small is float rounding, not a wait: waiting for it would
#: set a deadline that equals now, and wake to the same shortfall again.
_ROUNDING = 1e-9


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` a second; starts full.

    Time is passed in (``now``, from one clock), so the bucket is pure arithmetic.
    """

    __slots__ = ("_stamp", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a bucket needs a rate above 0 and a burst of at least 1")
        self.rate = rate
        self.burst = burst
        self._tokens = float(burst)
        self._stamp = now

    def _refill(self, now: float) -> float:
        if now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._tokens

    def tokens(self, now: float) -> float:
        """How many tokens it holds at ``now``."""
        return self._refill(now)

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until it holds a whole token (0: it holds one now)."""
        missing = 1.0 - self._refill(now)
        return 0.0 if missing <= _ROUNDING else missing / self.rate

    def take(self, now: float) -> None:
        """Take one token (:meth:`wait` said 0)."""
        self._refill(now)
        self._tokens = max(0.0, self._tokens - 1.0)

    def full(self, now: float) -> bool:
        """Whether it is full at ``now``: such a bucket is the same as a new one."""
        return self._refill(now) >= self.burst


@dataclass(frozen=True, slots=True)
class RateLimits:
    """The flood limits of one server (0: that limit is off)."""

    #: Messages a second one principal (or guest connection) may send, sustained.
    rate: float = 5.0
    #: Messages it may send at once before the rate applies.
    burst: int = 10
    #: Messages waiting for tokens beyond which the connection is closed (1008).
    backlog: int = 50
    #: Costly commands (:func:`is_costly`) a minute, sustained.
    command_rate: float = 20.0
    #: Costly commands at once.
    command_burst: int = 5

    @property
    def on(self) -> bool:
        """Whether any message ever waits."""
        return self.rate > 0 or self.command_rate > 0

    def announce(self) -> dict[str, Any]:
        """The rate fields of the ``welcome``'s ``limits``."""
        return {
            "rate": self.rate,
            "burst": self.burst if self.rate > 0 else 0,
            "backlog": self.backlog if self.on else 0,
            "commands_per_minute": self.command_rate,
            "command_burst": self.command_burst if self.command_rate > 0 else 0,
        }


def is_costly(command: Command, rooms: list[str]) -> bool:
    """Whether ``command`` from a member in ``rooms`` also takes a costly command's token:
    a ``join`` of a room it is not in, a ``nick`` change, a ``history`` page."""
    match command:
        case Join(room=room):
            return room not in rooms
        case Nick() | History():
            return True
    return False


class Allowance:
    """What one principal (or one guest connection) may still send: a bucket for every
    message, and one for costly commands (None when that limit is off)."""

    __slots__ = ("commands", "messages")

    def __init__(self, limits: RateLimits, now: float) -> None:
        self.messages = TokenBucket(limits.rate, limits.burst, now) if limits.rate > 0 else None
        self.commands = (
            TokenBucket(limits.command_rate / 60.0, limits.command_burst, now)
            if limits.command_rate > 0
            else None
        )

    def wait(self, now: float, costly: bool) -> float:
        """Seconds from ``now`` until one message (a costly one if ``costly``) may go."""
        wait = 0.0 if self.messages is None else self.messages.wait(now)
        if costly and self.commands is not None:
            wait = max(wait, self.commands.wait(now))
        return wait

    def take(self, now: float, costly: bool) -> None:
        """Spend the tokens of one message (:meth:`wait` said 0)."""
        if self.messages is not None:
            self.messages.take(now)
        if costly and self.commands is not None:
            self.commands.take(now)

    def full(self, now: float) -> bool:
        """Whether both buckets are full: dropping it then changes nothing."""
        return all(b is None or b.full(now) for b in (self.messages, self.commands))


class Allowances:
    """The allowance of every principal that sent lately, by principal id.

    A full allowance is the same as a new one, so the registry forgets those: it is
    swept of them whenever it doubled since the last sweep, which keeps it at about
    the principals that sent within the last ``burst / rate`` seconds.
    """

    __slots__ = ("_by_key", "_clock", "_swept_at", "limits")

    def __init__(self, limits: RateLimits, clock: Clock) -> None:
        self.limits = limits
        self._clock = clock
        self._by_key: dict[str, Allowance] = {}
        self._swept_at = 0

    def __len__(self) -> int:
        return len(self._by_key)

    @property
    def clock(self) -> Clock:
        return self._clock

    def new(self) -> Allowance:
        """An allowance of its own (a guest connection's), not kept here."""
        return Allowance(self.limits, self._clock())

    def of(self, key: str) -> Allowance:
        """The allowance shared by everything sending as ``key`` (a principal's id)."""
        allowance = self._by_key.get(key)
        if allowance is None:
            if len(self._by_key) >= max(_SWEEP_FLOOR, 2 * self._swept_at):
                self._sweep()
            allowance = self._by_key[key] = self.new()
        return allowance

    def _sweep(self) -> None:
        now = self._clock()
        for key in [key for key, allowance in self._by_key.items() if allowance.full(now)]:
            del self._by_key[key]
        self._swept_at = len(self._by_key)
