"""The sans-I/O core: close codes, chat events and how they read on the wire.

Nothing here touches a socket, a channel or the clock, so every rule about what a
client sees can be tested with plain function calls. The transport
(:mod:`trio_chat.connection`) and the fan-out (:mod:`trio_chat.bus`) only move the
objects defined here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = [
    "BINARY_NOT_SUPPORTED",
    "SERVER_SHUTTING_DOWN",
    "SLOW_CONSUMER",
    "ChatLine",
    "CloseCode",
    "ErrorLine",
    "Event",
    "OperatorLine",
    "describe_close",
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
BINARY_NOT_SUPPORTED = "Error: binary messages are not supported; send text"


def describe_close(code: int | None, reason: str | None) -> str:
    """Render a close code and reason the way the client prints them.

    ``1001 server shutting down`` when there is a reason, ``1006 (abnormal closure)``
    when there is none, ``no close code`` when the peer sent none at all.
    """
    if code is None:
        return "no close code"
    if reason:
        return f"{code} {reason}"
    try:
        name = CloseCode(code).name.replace("_", " ").lower()
    except ValueError:
        return str(code)
    return f"{code} ({name})"


class Event(Protocol):
    """Something the bus fans out; each recipient renders it into one text line."""

    def render(self, recipient: int) -> str:
        """The line connection ``recipient`` receives for this event."""
        ...


@dataclass(frozen=True, slots=True)
class ChatLine:
    """A line a client typed. The sender reads it as ``You said:``, everyone else as
    ``Someone says:``, exactly as in the tutorial.

    Both renderings are built once, when the line enters, so the fan-out does no
    string work per recipient.
    """

    sender: int
    own: str
    others: str

    @classmethod
    def from_text(cls, sender: int, text: str) -> ChatLine:
        return cls(sender, f"You said: {text}", f"Someone says: {text}")

    def render(self, recipient: int) -> str:
        return self.own if recipient == self.sender else self.others


@dataclass(frozen=True, slots=True)
class OperatorLine:
    """A line typed at the server's console, seen by every client alike."""

    line: str

    @classmethod
    def from_text(cls, text: str) -> OperatorLine:
        return cls(f"\N{LARGE GREEN CIRCLE} Server: {text}")

    def render(self, recipient: int) -> str:
        return self.line


@dataclass(frozen=True, slots=True)
class ErrorLine:
    """An answer meant for one client only (a bad frame, a wrong command)."""

    line: str

    def render(self, recipient: int) -> str:
        return self.line
