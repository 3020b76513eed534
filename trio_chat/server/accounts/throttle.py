"""Failed logins slow down, per (account name, address) pair and per address.

Guessing passwords must get slow, but nobody may lock an account out by failing on
purpose: a lockout would let anyone shut anyone out. So what is counted is failures of
one name *from one address* (the pair) and failures from one address (over every name):

* every attempt waits a delay before it is answered, growing (doubling) with the pair's
  failures, and, more slowly, with the address's: an address guessing many names gets
  slower without any one name being locked;
* after ``failures`` failures of a pair, that pair is refused without checking the
  password for ``lockout`` seconds. The same name from another address still logs in.

An attempt counts as a failure from the moment it starts until it succeeds: attempts
made at once (many connections, one burst) cannot slip past the lockout together. A
success clears its pair. Unknown names are counted like known ones, so the throttle
tells nobody which names exist.

Counts are forgotten ``lockout`` seconds after their last failure, and at most
:data:`MAX_TRACKED` pairs and addresses are remembered (the oldest go first), so the
memory it takes is bounded however many names and addresses are tried.

Time comes from the ``clock`` function given (``trio.current_time`` in the server,
a fake in tests); the throttle itself never sleeps: it says how long to wait.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = [
    "ADDRESS_STEP",
    "BASE_DELAY",
    "DEFAULT_LOCKOUT",
    "DEFAULT_LOGIN_FAILURES",
    "MAX_DELAY",
    "MAX_TRACKED",
    "NAME_KEY_LENGTH",
    "Attempt",
    "LoginThrottle",
]

logger = logging.getLogger("trio_chat.server.accounts")

#: Failures of one (name, address) pair before that pair is locked out.
DEFAULT_LOGIN_FAILURES = 5
#: Seconds a locked-out pair stays locked (and a count is remembered after its last failure).
DEFAULT_LOCKOUT = 900.0
#: The delay after the first failure, in seconds; each further failure doubles it.
BASE_DELAY = 0.5
#: The longest delay: long enough to make guessing slow, short enough that a person who
#: mistyped a few times (or shares an address with a guesser) is not left waiting long.
MAX_DELAY = 10.0
#: Failures from one address (over every name) that count as one failure of a pair for
#: the delay: many people may share an address (a NAT, an office), so it weighs less.
ADDRESS_STEP = 5
#: Pairs, and addresses, remembered at most: about 200 bytes each.
MAX_TRACKED = 100_000
K = TypeVar("K")

#: How much of a name the counts key on: longer than any account name (32), and short
#: enough that the counts stay small whatever a client sends as a name.
NAME_KEY_LENGTH = 64
#: How much of a name a log line shows (names that fail may be anything a client sent).
LOGGED_NAME_LENGTH = 40


@dataclass(slots=True)
class _Count:
    """Failures (including attempts under way) and when the last one happened."""

    failures: int = 0
    last: float = 0.0
    #: The pair is refused until then (clock time); 0: not locked.
    locked_until: float = 0.0


@dataclass(frozen=True, slots=True)
class Attempt:
    """One login attempt the throttle let through (``locked_for`` is None) or refused
    (``locked_for``: the seconds the pair stays locked). Wait ``delay`` seconds before
    answering it either way; then tell the throttle how it ended
    (:meth:`LoginThrottle.succeeded`, :meth:`~LoginThrottle.failed`, or
    :meth:`~LoginThrottle.abandoned`)."""

    name: str
    address: str
    delay: float
    locked_for: float | None = None


def _delay(failures: int) -> float:
    """The delay before answering after ``failures`` failures: none, then doubling."""
    if failures <= 0:
        return 0.0
    return min(BASE_DELAY * 2.0 ** min(failures - 1, 32), MAX_DELAY)


def _pair_key(name: str, address: str) -> tuple[str, str]:
    """What a pair's count is kept under: the name in any case, cut short, and the address."""
    return name[:NAME_KEY_LENGTH].casefold(), address


def _shown(name: str) -> str:
    """A name as a log line shows it: quoted, escaped, and cut short."""
    if len(name) > LOGGED_NAME_LENGTH:
        name = name[:LOGGED_NAME_LENGTH] + "..."
    return ascii(name)


class LoginThrottle:
    """Counts failed logins and says how long to wait, or that a pair is locked out."""

    def __init__(
        self,
        *,
        failures: int = DEFAULT_LOGIN_FAILURES,
        lockout: float = DEFAULT_LOCKOUT,
        clock: Callable[[], float],
        max_tracked: int = MAX_TRACKED,
    ) -> None:
        self.failures = failures
        self.lockout = lockout
        self.max_tracked = max_tracked
        self._clock = clock
        # Insertion order is age order: a count is moved to the end when it changes,
        # so the first one is the one to forget when there are too many.
        self._pairs: dict[tuple[str, str], _Count] = {}
        self._addresses: dict[str, _Count] = {}

    def begin(self, name: str, address: str) -> Attempt:
        """Start an attempt to log in as ``name`` from ``address``.

        Refused at once (logged, one line) when the pair is locked out, or when its
        attempts under way already make ``failures``; else counted as a failure until it
        succeeds. Either way the attempt says how long to wait before answering."""
        now = self._clock()
        key = _pair_key(name, address)
        pair = self._current(self._pairs, key, now)
        place = self._current(self._addresses, address, now)
        delay = max(_delay(pair.failures), _delay(place.failures // ADDRESS_STEP))
        if pair.locked_until > now or pair.failures >= self.failures:
            # Attempts under way that fill the quota will lock it when they fail.
            locked_for = pair.locked_until - now if pair.locked_until > now else self.lockout
            logger.warning(
                "login refused for %s from %s: locked out for %d s more",
                _shown(name),
                address,
                round(locked_for),
            )
            return Attempt(name, address, delay, locked_for)
        self._count(self._pairs, key, pair, now)
        self._count(self._addresses, address, place, now)
        return Attempt(name, address, delay)

    def succeeded(self, attempt: Attempt) -> None:
        """``attempt`` logged in: its pair starts afresh (the address's count stays, so
        one good login does not hide a guesser's many failures at other names)."""
        self._pairs.pop(_pair_key(attempt.name, attempt.address), None)
        self._uncount(self._addresses, attempt.address)

    def failed(self, attempt: Attempt) -> None:
        """``attempt`` failed (an unknown name or a wrong password; never told apart):
        logged, one line without the password; the pair is locked out for ``lockout``
        seconds when that was its ``failures``-th."""
        pair = self._pairs.get(_pair_key(attempt.name, attempt.address))
        failures = 0 if pair is None else pair.failures
        if pair is not None and failures >= self.failures:
            pair.locked_until = self._clock() + self.lockout
            logger.warning(
                "failed login for %s from %s (%d in a row): locked out for %g s",
                _shown(attempt.name),
                attempt.address,
                failures,
                self.lockout,
            )
            return
        logger.info(
            "failed login for %s from %s (%d in a row)",
            _shown(attempt.name),
            attempt.address,
            failures,
        )

    def abandoned(self, attempt: Attempt) -> None:
        """``attempt`` was never answered (its connection went, or it was cancelled): it
        counts for nothing, since whoever made it learnt nothing."""
        self._uncount(self._pairs, _pair_key(attempt.name, attempt.address))
        self._uncount(self._addresses, attempt.address)

    def locked_for(self, name: str, address: str) -> float | None:
        """The seconds the pair stays locked out, None when it is not."""
        pair = self._pairs.get(_pair_key(name, address))
        now = self._clock()
        if pair is None or pair.locked_until <= now:
            return None
        return pair.locked_until - now

    @property
    def tracked(self) -> int:
        """Pairs and addresses remembered (for tests of the bound)."""
        return len(self._pairs) + len(self._addresses)

    # --- the counts -------------------------------------------------------------------------

    def _current(self, counts: dict[K, _Count], key: K, now: float) -> _Count:
        """The count for ``key`` as of ``now``: a new one when there is none, when its
        lockout is over (counted afresh), or when it last changed ``lockout`` seconds ago."""
        count = counts.get(key)
        if count is None:
            return _Count()
        if count.locked_until:
            return _Count() if count.locked_until <= now else count
        return _Count() if now - count.last >= self.lockout else count

    def _count(self, counts: dict[K, _Count], key: K, count: _Count, now: float) -> None:
        """One more failure for ``key``, kept as the newest; the oldest forgotten past
        the bound."""
        count.failures += 1
        count.last = now
        counts.pop(key, None)
        counts[key] = count
        while len(counts) > self.max_tracked:
            del counts[next(iter(counts))]

    def _uncount(self, counts: dict[K, _Count], key: K) -> None:
        """One failure fewer for ``key`` (an attempt that turned out not to be one)."""
        count = counts.get(key)
        if count is not None and count.failures > 0:
            count.failures -= 1
