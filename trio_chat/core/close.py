"""Close codes and reasons: how a connection ends, in the words both ends print.

Owns the codes (:class:`CloseCode`), the reasons that are part of the wire behaviour,
the mapping from why the chat lets a member go (:data:`Departure`) to a close frame,
and which closes a client should reconnect after.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = [
    "BANNED",
    "BINARY_NOT_SUPPORTED",
    "INTERNAL_ERROR",
    "INVALID_TOKEN",
    "LOGIN_TIMED_OUT",
    "MAX_REASON_BYTES",
    "PING_TIMEOUT",
    "RATE_LIMITED",
    "SERVER_FULL",
    "SERVER_SHUTTING_DOWN",
    "SESSION_TAKEN_OVER",
    "SLOW_CONSUMER",
    "TOKEN_EXPIRED",
    "CloseCode",
    "Departure",
    "Kicked",
    "Quitting",
    "TakenOver",
    "close_for",
    "describe_close",
    "fit_reason",
    "printable",
    "should_reconnect",
]


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server and client use (RFC 6455, section 7.4.1)."""

    NORMAL_CLOSURE = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS_RCVD = 1005
    ABNORMAL_CLOSURE = 1006
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013


# Close reasons are part of the wire behaviour: clients print them and tests match them.
SERVER_SHUTTING_DOWN = "server shutting down"
SLOW_CONSUMER = "slow consumer"
SERVER_FULL = "server full"
INTERNAL_ERROR = "internal error"
#: 1011 with this reason: the peer did not answer a heartbeat ping within --ping-timeout.
PING_TIMEOUT = "ping timeout"
BINARY_NOT_SUPPORTED = "binary messages are not supported; send text"
#: The HTTP 403 answer to a handshake from a banned address, nick or principal.
BANNED = "banned"
#: The most UTF-8 bytes a close frame's reason may hold (RFC 6455: 125 less the code).
MAX_REASON_BYTES = 123


def fit_reason(reason: str) -> str:
    """``reason`` cut to :data:`MAX_REASON_BYTES` UTF-8 bytes, at a character's end."""
    encoded = reason.encode()
    if len(encoded) <= MAX_REASON_BYTES:
        return reason
    return encoded[:MAX_REASON_BYTES].decode(errors="ignore")


#: A connection whose session another connection resumed (it was half-open, usually):
#: the client must not reconnect, or the two would take the session from each other.
SESSION_TAKEN_OVER = "session resumed by another connection"
#: 1008: a connection that logged in with a token did not hand in a new one in time.
TOKEN_EXPIRED = "token expired"
#: 1008: a connection that had to log in did not within ``--login-timeout``.
LOGIN_TIMED_OUT = "no login in time"
#: 1008: a client whose messages waiting for the rate limit passed ``--rate-backlog``.
RATE_LIMITED = "rate limited"
#: 1008: a bad token sent as the first command (at the handshake it gets HTTP 401).
INVALID_TOKEN = "invalid token"


def printable(text: str) -> str:
    """``text`` with every character that is not printable (line breaks, escapes and
    other control characters, bidi and other format characters) written as a Python
    escape: what a peer put in a close reason reaches a log or a terminal as one line
    that drives nothing."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else ascii(char)[1:-1] for char in text)


def describe_close(code: int | None, reason: str | None) -> str:
    """Render a close code and reason the way the client prints them.

    ``1001 server shutting down`` when there is a reason, ``1006 (abnormal closure)``
    when there is none, ``no close code`` when the peer sent none at all. The reason is
    the peer's, so it is shown :func:`printable`: one line, no escape sequence.
    """
    if code is None:
        return "no close code"
    if reason:
        return f"{code} {printable(reason)}"
    try:
        name = CloseCode(code).name.replace("_", " ").lower()
    except ValueError:
        return str(code)
    return f"{code} ({name})"


#: Close codes after which a client should reconnect (and 1008 ``slow consumer``).
RECONNECT_CODES = frozenset({1001, 1005, 1006, 1011, 1012, 1013})


def should_reconnect(code: int | None, reason: str | None) -> bool:
    """Whether a connection that ended with close ``code`` and ``reason`` is worth
    reconnecting after: when it was lost without a close frame (no code, 1005, 1006), the
    server is going away or restarting (1001, 1012), had an internal error (1011) or is
    overloaded (1013), or dropped us as a ``slow consumer`` (1008 with exactly that
    reason). Not after a normal close (1000), a kick (1008 with any other reason) or a
    protocol error (1002, 1003, 1007, 1009, 1010...)."""
    if code is None or code in RECONNECT_CODES:
        return True
    return code == CloseCode.POLICY_VIOLATION and reason == SLOW_CONSUMER


@dataclass(frozen=True, slots=True)
class Quitting:
    """The member said ``/quit``: a normal closure, once what is queued for it was sent."""


@dataclass(frozen=True, slots=True)
class Kicked:
    """The operator kicked the member: closed at once, with ``reason`` as sent."""

    reason: str


@dataclass(frozen=True, slots=True)
class TakenOver:
    """Another connection resumed the member's session: closed at once."""


#: Why the chat asks a connection to close (it never names a close code itself).
Departure = Quitting | Kicked | TakenOver
#: The close reason of a member that quit.
QUIT_REASON = "bye"


def close_for(departure: Departure) -> tuple[CloseCode, str, bool]:
    """The close code and reason for ``departure``, and whether what is queued for the
    client is sent first: 1000 ``bye`` after the queue for a quit, 1008 with the
    operator's reason at once for a kick, 1008 ``session resumed by another connection``
    at once for a session taken over."""
    match departure:
        case Quitting():
            return CloseCode.NORMAL_CLOSURE, QUIT_REASON, True
        case Kicked(reason=reason):
            return CloseCode.POLICY_VIOLATION, fit_reason(reason), False
        case TakenOver():
            return CloseCode.POLICY_VIOLATION, SESSION_TAKEN_OVER, False
