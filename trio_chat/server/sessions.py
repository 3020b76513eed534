"""Sessions: what lets a connection that dropped come back as itself.

Every JSON connection in the chat gets a session. Its **secret** (``welcome.session``,
:func:`secrets.token_urlsafe` of :data:`SECRET_BYTES` bytes) is sent once and never
kept: the server keeps only its SHA-256 digest (a 256-bit random secret needs no slow
hash; nothing about it can be guessed from the digest). A session is who the connection
acts as (its :class:`~trio_chat.core.identity.Principal`), the nick and rooms it had, the
member using it now, and, once that member is gone, until when it may be resumed: for
``--nick-hold`` seconds its nick stays **held** for it (nobody else may take it), and
whoever presents the secret (URL ``?session=``, or the ``resume`` command) comes back as
it, with its private messages.

Sessions live in memory: they survive a dropped connection, not a restart. Holds expire
lazily, checked against the chat's clock whenever someone asks for a held nick or
presents a secret (no timer task); expired holds are also swept, oldest first, whenever a
new one starts. At most ``max_held`` sessions are held at once: past that, the oldest
hold ends early (logged). Owned by the :class:`~trio_chat.server.chat.Chat`, which calls
everything here from the reader task of the connection concerned: no awaits, so every
change is atomic.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Generic, TypeVar

from trio_chat.core.identity import Principal

__all__ = ["SECRET_BYTES", "Session", "Sessions", "digest_of"]

logger = logging.getLogger(__name__)

#: Random bytes in a session secret: 256 bits, far beyond guessing.
SECRET_BYTES = 32

#: Whatever uses a session: the chat's member (this module does not need to know it,
#: and so does not import the chat, which imports it).
Member = TypeVar("Member")


def digest_of(secret: str) -> bytes:
    """What the server keeps of ``secret``: its SHA-256 digest."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


@dataclass(eq=False, slots=True)
class Session(Generic[Member]):
    """One resumable session. ``member`` is the member using it now (None while held);
    ``held_until`` is when its hold ends (None while a member uses it)."""

    digest: bytes
    principal: Principal
    member: Member | None = None
    #: The nick and rooms it had when its member left: what a resume comes back with.
    nick: str | None = None
    rooms: tuple[str, ...] = ()
    #: The last message id when its member left: a resume that names no ``since``
    #: replays what was said after it.
    left_after: int = 0
    held_until: datetime | None = field(default=None)


class Sessions(Generic[Member]):
    """The chat's sessions, by digest, and the nicks held for those whose member left.

    ``hold`` is how long a session outlives its connection (``--nick-hold``; 0: not at
    all), ``max_held`` how many may be held at once, ``clock`` the chat's clock.
    """

    def __init__(self, *, hold: float, max_held: int, clock: Callable[[], datetime]) -> None:
        self.hold_time = timedelta(seconds=hold)
        self.max_held = max_held
        self._clock = clock
        self._sessions: dict[bytes, Session[Member]] = {}
        # Held sessions, oldest hold first (every hold is as long: also soonest to end).
        self._held: OrderedDict[bytes, Session[Member]] = OrderedDict()
        # Folded nick -> the held session it is kept for.
        self._held_nicks: dict[str, Session[Member]] = {}

    def __len__(self) -> int:
        return len(self._sessions)

    @property
    def held_count(self) -> int:
        """How many sessions are held (their member gone, their hold not over)."""
        return len(self._held)

    def start(self, principal: Principal, member: Member) -> tuple[str, Session[Member]]:
        """A new session of ``principal``, used by ``member``, and its secret (for the
        welcome; not kept)."""
        secret = secrets.token_urlsafe(SECRET_BYTES)
        session: Session[Member] = Session(digest_of(secret), principal, member)
        self._sessions[session.digest] = session
        return secret, session

    def find(self, secret: str) -> Session[Member] | None:
        """The session ``secret`` opens: in use, or held and not expired. An expired
        one is ended here (lazily) and, like an unknown secret, gives None."""
        session = self._sessions.get(digest_of(secret))
        if session is None or self._expired(session):
            return None
        return session

    def holder(self, folded_nick: str) -> Session[Member] | None:
        """The held session that ``folded_nick`` is kept for, if its hold is not over."""
        session = self._held_nicks.get(folded_nick)
        if session is None or self._expired(session):
            return None
        return session

    def resume(self, session: Session[Member], member: Member) -> None:
        """``member`` uses ``session`` from now on (a resume; a takeover when another
        member still used it, which the caller closes): its hold, if any, is over."""
        self._unhold(session)
        session.member = member

    def hold(
        self, session: Session[Member], nick: str | None, rooms: tuple[str, ...], left_after: int
    ) -> None:
        """``session``'s member is gone (when ``left_after`` was the last message id):
        keep it (and ``nick`` for it) for the hold, or end it now when there is no hold.
        Expired holds are swept first; past ``max_held`` the oldest hold ends early."""
        self._unhold(session)
        session.member = None
        if not self.hold_time:
            self.end(session)
            return
        now = self._clock()
        while self._held:
            oldest = next(iter(self._held.values()))
            if not self._expired(oldest, now):
                break
        if len(self._held) >= self.max_held:
            oldest = next(iter(self._held.values()))
            logger.warning(
                "%d sessions held: the oldest hold (of %s) ends early",
                len(self._held),
                oldest.nick or "an anonymous session",
            )
            self.end(oldest)
        session.nick = nick
        session.rooms = rooms
        session.left_after = left_after
        session.held_until = now + self.hold_time
        self._held[session.digest] = session
        if nick is not None:
            self._held_nicks[nick.casefold()] = session

    def end(self, session: Session[Member]) -> None:
        """Forget ``session``: its secret opens nothing any more (a quit, a kick, an
        expired or evicted hold). Idempotent."""
        self._unhold(session)
        session.member = None
        if self._sessions.get(session.digest) is session:
            del self._sessions[session.digest]

    def end_principal(self, principal_id: str) -> int:
        """End every session of ``principal_id`` (a removed account: none of its secrets
        may bring it back); how many there were. Goes through every session: for rare
        operator actions, not for the chat's own paths."""
        sessions = [s for s in self._sessions.values() if s.principal.id == principal_id]
        for session in sessions:
            self.end(session)
        return len(sessions)

    def _unhold(self, session: Session[Member]) -> None:
        if session.held_until is None:
            return
        session.held_until = None
        self._held.pop(session.digest, None)
        if session.nick is not None:
            folded = session.nick.casefold()
            if self._held_nicks.get(folded) is session:
                del self._held_nicks[folded]

    def _expired(self, session: Session[Member], now: datetime | None = None) -> bool:
        """Whether ``session``'s hold is over; if so it is ended here."""
        if session.held_until is None:
            return False
        if (now or self._clock()) < session.held_until:
            return False
        self.end(session)
        return True
