"""Who a connection acts as: the :class:`Principal`.

Private messages and their history belong to a principal, never to a nickname: every
access check (live delivery, resume, paging back) compares principal ids. A nickname is a
display name a principal holds for a while. Three kinds exist:

* a **guest**: a random id made for one connection (or one resumable guest session);
* an **account**: ``account:N``, where N is the account's row id, never reused, so that
  an account removed and registered again under the same name reads nothing old;
* a **token** subject: ``token:SUB``, the ``sub`` claim of a JWT another application
  signed (an e-mail or any other id; it is not a nickname).

Pure data: the server's authentication decides which principal a connection gets.
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass

__all__ = ["GUEST_ID_BYTES", "Principal", "PrincipalKind"]

#: Random bytes in a guest's id: as many as a session secret, so it cannot be guessed
#: or repeat across restarts.
GUEST_ID_BYTES = 16


class PrincipalKind(enum.Enum):
    GUEST = "guest"
    ACCOUNT = "account"
    TOKEN = "token"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection acts as.

    ``id`` is stable and never reused; it is what the store keeps with each private
    message. ``name`` is the account name or the token's subject, for logs and the
    operator (None for a guest). ``nick`` is the display name the principal arrives with
    (an account's name, a token's ``nick`` claim), None to arrive anonymous. ``rooms``
    limits the rooms it may be in (a token's ``rooms`` claim); None allows any. ``admin``
    may moderate any room from its own client.
    """

    id: str
    kind: PrincipalKind
    name: str | None = None
    nick: str | None = None
    admin: bool = False
    rooms: frozenset[str] | None = None

    @classmethod
    def guest(cls) -> Principal:
        """A new guest, unlike any other before or after."""
        return cls(f"guest:{secrets.token_hex(GUEST_ID_BYTES)}", PrincipalKind.GUEST)

    @classmethod
    def account(cls, account_id: int, name: str, *, admin: bool = False) -> Principal:
        """The principal of account row ``account_id`` called ``name``."""
        return cls(f"account:{account_id}", PrincipalKind.ACCOUNT, name, name, admin)

    @classmethod
    def token(
        cls,
        subject: str,
        *,
        nick: str | None,
        admin: bool = False,
        rooms: frozenset[str] | None = None,
    ) -> Principal:
        """The principal a verified token names: its ``sub`` claim."""
        return cls(f"token:{subject}", PrincipalKind.TOKEN, subject, nick, admin, rooms)

    def may_join(self, room: str) -> bool:
        """Whether this principal may be in ``room``."""
        return self.rooms is None or room in self.rooms
