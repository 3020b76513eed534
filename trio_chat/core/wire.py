"""Wire formats: how one connection's frames are read into commands and how events are
written for it. Chosen once, at the handshake, from the subprotocol the client offers.

:data:`PLAIN` is the tutorial's protocol: a frame is lines, a line is a command or a chat
line, and events read as sentences (worded by :mod:`.render`). :data:`JSON` is
``trio-chat.v1``: one command object per frame, one event object per line. A third format
is one more object with the same two methods (and a place in :func:`negotiate`); the
events do not change.

Rendering is the fan-out's inner loop (a message to a room of 5,000 renders 5,000
times), so a format makes what is the same for many recipients once per event and
keeps it on the event: the JSON line (:attr:`~.events.Event.json_line`), the plain
"others" and "own" lines with and without their ``[room]`` mark
(:attr:`~.events.Event.plain_form`). These two formats have a slot each on the event,
since a dictionary lookup per recipient shows at 5,000 recipients; any other format
keeps its rendering in :attr:`~.events.Event.rendered` (creating that dictionary).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from . import render
from .commands import PROTOCOL, Command, CommandError, parse_json, parse_plain
from .events import (
    Ack,
    ErrorEvent,
    Event,
    HistoryLine,
    LoginPrompt,
    Message,
    Notice,
    Presence,
    PrivateMessage,
    TokenRefresh,
    TopicChanged,
    Welcome,
)
from .text import split_lines

__all__ = [
    "JSON",
    "PLAIN",
    "JsonFormat",
    "Parsed",
    "PlainFormat",
    "Viewer",
    "WireFormat",
    "negotiate",
]

#: One command read from a frame, with its ``cid``; or why it could not be read.
Parsed = tuple[Command, str | int | None] | CommandError


class Viewer(Protocol):
    """Who an event is rendered for: a connection's key, its wire format and its
    current room."""

    @property
    def key(self) -> int: ...
    @property
    def wire(self) -> WireFormat: ...
    @property
    def current_room(self) -> str: ...


class WireFormat(Protocol):
    """What a connection's frames mean, in and out."""

    #: A short name for logs and tests.
    name: str
    #: The WebSocket subprotocol accepted for this format, or None for none.
    subprotocol: str | None

    def parse(self, frame: str, *, max_lines: int) -> list[Parsed]:
        """The commands in one received text frame, in order; ``max_lines`` caps the
        lines of one message's text."""
        ...

    def render(self, event: Event, viewer: Viewer) -> str | None:
        """The text ``viewer`` receives for ``event`` (lines joined by ``\\n``), or None
        for nothing."""
        ...


class JsonFormat:
    """``trio-chat.v1``: a JSON object per command and per event."""

    __slots__ = ()
    name = "json"
    subprotocol: str | None = PROTOCOL

    def parse(self, frame: str, *, max_lines: int) -> list[Parsed]:
        try:
            return [parse_json(frame, max_lines=max_lines)]
        except CommandError as error:
            return [error]

    def render(self, event: Event, viewer: Viewer) -> str:
        line = event.json_line  # made once, for the first recipient; then shared
        return line if line is not None else event.json


class _PlainForm:
    """An event's plain text for its sender (``own``) and for everyone else (``others``),
    each a pair indexed by whether the viewer's current room is another room than the
    event's (so ``[room]`` marks each line); for an event said in no room the second is
    never read, and None."""

    __slots__ = ("others", "own", "room", "sender")

    def __init__(self, event: Event, own: list[str], others: list[str]) -> None:
        self.room = room = event.room
        self.sender = event.sender
        self.own = self._pair(room, own)
        self.others = self._pair(room, others)

    @staticmethod
    def _pair(room: str | None, lines: list[str]) -> tuple[str | None, str | None]:
        if not lines:
            return None, None
        here = "\n".join(lines)
        if room is None:
            return here, None
        return here, "\n".join([render.in_room(room, line) for line in lines])


def _plain_lines(event: Event) -> tuple[list[str], list[str]]:
    """What the sender of ``event`` reads, and what everyone else reads."""
    data = event.data()
    match event:
        case Message() | PrivateMessage():
            return render.chat_lines(data, own=True), render.chat_lines(data)
        case HistoryLine():
            lines = render.chat_lines(data)
        case Ack():
            lines = render.ack_lines(data, request=event.request, rooms=event.rooms_before)
        case Welcome():
            lines = []  # the tutorial's clients expect no greeting
        case Presence():
            lines = [render.presence(data)]
        case TopicChanged():
            lines = [render.topic_changed(data)]
        case Notice():
            lines = [render.notice(data)]
        case ErrorEvent():
            lines = [render.error_line(event.text)]
        case TokenRefresh():
            lines = [render.token_refresh(data)]
        case LoginPrompt():
            lines = [render.login_prompt(data)]
        case _:
            raise ValueError(f"no plain wording for a {data['type']!r} event")
    return lines, lines


class PlainFormat:
    """The tutorial's protocol: plain lines in, sentences out."""

    __slots__ = ()
    name = "plain"
    subprotocol: str | None = None

    def parse(self, frame: str, *, max_lines: int) -> list[Parsed]:
        # A frame of several lines is that many lines, so every line on the wire stays
        # one event; a message never spans lines here (JSON carries those). Only CR and
        # LF break lines: the look-alikes (FF, U+2028...) are a space once cleaned.
        lines = split_lines(frame)
        if len(lines) > 1 and not lines[-1]:
            lines.pop()  # a frame ending with a break: the break ends its last line
        parsed: list[Parsed] = []
        for line in lines:
            try:
                parsed.append((parse_plain(line), None))
            except CommandError as error:
                parsed.append(error)
        return parsed

    def render(self, event: Event, viewer: Viewer) -> str | None:
        form: _PlainForm | None = event.plain_form
        if form is None:  # the first recipient: made once, then shared
            form = event.plain_form = _PlainForm(event, *_plain_lines(event))
        pair = form.own if viewer.key == form.sender else form.others
        room = form.room
        # Not said in a room: no mark, and no need to ask where the viewer is (a member
        # that just quit is in no room, and still reads the answer to its /quit).
        return pair[0] if room is None else pair[viewer.current_room != room]


PLAIN = PlainFormat()
JSON = JsonFormat()


def negotiate(offered: Iterable[str]) -> WireFormat:
    """The format for a client that offered the subprotocols ``offered``: JSON when it
    offers ``trio-chat.v1``, plain text otherwise."""
    return JSON if PROTOCOL in offered else PLAIN
