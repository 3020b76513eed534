"""How the interactive client shows ``trio-chat.v1`` events: one event in, lines of text out.

Sans-I/O and pure: :func:`render_event` turns one decoded JSON event into the lines to
print (none, for an event whose effect shows elsewhere), given a :class:`Style`. What
the lines say is :mod:`trio_chat.core.render`'s, the same wording the server gives
its plain clients; this module owns only the terminal's layout (times, the
``[room] alice: text`` look of chat lines, colours). Every string that came from the
server or from another user goes through :func:`~trio_chat.client.terminal.make_safe` (the
:class:`~trio_chat.core.render.Hooks` this module passes) before it is put in a line, so
control characters and escape sequences are shown, never obeyed; the only escape codes
in a rendered line are the style's own SGR sequences, and only when colour is on.

The look:

* ``12:34 [lobby] alice: hello`` (``Someone`` for an anonymous sender),
  ``12:34 [lobby] alice * waves`` for an action,
  ``12:34 [private] alice → bob: psst``; the time is local, from the event's ``ts``; a
  message of several lines is that many lines, each with its time, room and sender;
* presence, topic changes and the answers to commands are ``* `` lines, dimmed;
* the operator: ``🟢 Server: text`` (``[room] 🟢 Server: text`` when said to one room);
* ``Error: text`` for an error;
* a resume that could not recover everything (``"recovered": false``) is one dimmed
  ``* Some messages since 41 are no longer kept…`` line; a complete one shows nothing;
* a stored message sent again (``"history": true``: the recent messages of a room on
  joining it, or what was missed while disconnected, replayed on reconnecting) reads like
  a live one after a dimmed ``[history]`` mark: ``[history] 12:34 [lobby] alice: hello``.

With colour on, each nickname has its own colour, the same on every run (a CRC-32 of the
case-folded nickname picks it from a small palette), the time is dimmed and the
``[private]`` mark is bold magenta.
"""

from __future__ import annotations

import zlib
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, tzinfo
from typing import Any

from trio_chat.core import render
from trio_chat.core.commands import HELP, Command
from trio_chat.core.render import HISTORY_MARK, PRIVATE_MARK, describe_roster

from .terminal import make_safe

__all__ = [
    "HISTORY_MARK",
    "NICK_PALETTE",
    "UNREADABLE",
    "Style",
    "clock",
    "colour_wanted",
    "describe_roster",
    "help_lines",
    "nick_colour",
    "render_event",
]

#: SGR colours for nicknames: green, yellow, blue, cyan and their bright forms. Red is
#: left for errors and magenta for private messages.
NICK_PALETTE = ("32", "33", "34", "36", "92", "93", "94", "96")
DIM = "2"
PRIVATE_COLOUR = "1;35"
ERROR = "31"
RESET = "\x1b[0m"

#: The line shown for an event the client cannot make sense of.
UNREADABLE = "(unreadable event from server)"


def colour_wanted(interactive: bool, environ: Mapping[str, str]) -> bool:
    """Colour only on a terminal, and never when ``NO_COLOR`` is set to a non-empty value
    (https://no-color.org)."""
    return interactive and not environ.get("NO_COLOR")


def nick_colour(nick: str) -> str:
    """The SGR colour of ``nick``: stable across runs and machines (not ``hash()``, which
    is randomized per process), and the same for nicknames differing only in case, since
    the server treats those as one."""
    return NICK_PALETTE[zlib.crc32(nick.casefold().encode()) % len(NICK_PALETTE)]


def _safe(value: Any) -> str:
    return make_safe(str(value))


#: For lines shown whole in one style (dimmed): every outside string made safe.
SAFE = render.Hooks(text=_safe, nick=_safe)


class Style:
    """Wraps text in SGR sequences when ``colour`` is on; returns it unchanged otherwise."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour
        #: For chat lines: outside strings made safe, nicknames in their colours.
        self.chat = render.Hooks(text=_safe, nick=self._nick)

    def sgr(self, codes: str, text: str) -> str:
        """``text`` in the SGR rendition ``codes``, reset afterwards."""
        return f"\x1b[{codes}m{text}{RESET}" if self.colour else text

    def dim(self, text: str) -> str:
        return self.sgr(DIM, text)

    def error(self, text: str) -> str:
        return self.sgr(ERROR, text)

    def nick(self, nick: Any) -> str:
        """A sender's name, made safe and in its own colour; ``Someone`` for ``None``."""
        return render.who(nick, self.chat)

    def _nick(self, nick: Any) -> str:
        safe = _safe(nick)
        return self.sgr(nick_colour(safe), safe)


def clock(ts: Any, tz: tzinfo | None = None) -> str:
    """``HH:MM`` of the ISO 8601 time ``ts`` in ``tz`` (default: local time); ``--:--``
    when ``ts`` is missing or not a time."""
    try:
        moment = datetime.fromisoformat(ts)
        if moment.tzinfo is None:  # the protocol's times are UTC; a naive one is taken as UTC
            moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(tz).strftime("%H:%M")
    except (TypeError, ValueError, OverflowError):  # OverflowError: year 1 or 9999 shifted
        return "--:--"


def help_lines(style: Style, commands: Collection[tuple[str, str]] = HELP) -> list[str]:
    """The answer to ``/help``: one dimmed ``* usage  description`` line per command."""
    return [style.dim(line) for line in render.help_lines(commands)]


def render_event(
    event: Any,
    style: Style,
    *,
    request: Command | None = None,
    rooms: Collection[str] = (),
    tz: tzinfo | None = None,
) -> list[str]:
    """The lines that show ``event`` (a decoded JSON event), possibly none.

    ``request`` is the command an ``ack`` or ``error`` answers, when the client knows it
    (setting a topic is answered by the ``topic`` event, so its ack shows nothing);
    ``rooms`` the rooms the user was in before the event (joining one of them again is
    a switch). An event of an unknown type is one dimmed line naming the type; one that
    is not an object or lacks a field it needs is :data:`UNREADABLE`. Never raises.
    """
    if not isinstance(event, dict) or not isinstance(event.get("type"), str):
        return [style.dim(UNREADABLE)]
    try:
        return _render(event, style, request, rooms, tz)
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
        return [style.dim(UNREADABLE)]


def _render(
    event: dict[str, Any],
    style: Style,
    request: Command | None,
    rooms: Collection[str],
    tz: tzinfo | None,
) -> list[str]:
    kind = event["type"]
    if kind in ("message", "private") and event.get("history") is True:
        live = {key: value for key, value in event.items() if key != "history"}
        return [f"{style.dim(HISTORY_MARK)} {line}" for line in _render(live, style, None, (), tz)]
    match kind:
        case "message":
            time = style.dim(clock(event.get("ts"), tz))
            room = _safe(event["room"])
            sender = style.nick(event["from"])
            lines = render.text_lines(event["text"], SAFE)
            if event.get("action"):
                return [
                    f"{time} {render.in_room(room, render.action_line(sender, line))}"
                    for line in lines
                ]
            return [f"{time} {render.in_room(room, f'{sender}: {line}')}" for line in lines]
        case "private":
            time = style.dim(clock(event.get("ts"), tz))
            mark = style.sgr(PRIVATE_COLOUR, PRIVATE_MARK)
            sender, to = style.nick(event["from"]), style.nick(event["to"])
            lines = render.text_lines(event["text"], SAFE)
            return [f"{time} {mark} {sender} → {to}: {line}" for line in lines]
        case "presence":
            return [style.dim(render.presence(event, SAFE))]
        case "topic":
            return [style.dim(render.topic_changed(event, SAFE))]
        case "notice":
            line = render.notice(event, SAFE)
            if event.get("room") is not None:
                line = render.in_room(_safe(event["room"]), line)
            return [line]
        case "ack":
            lines = render.ack_lines(event, SAFE, request=request, rooms=rooms)
            return [style.dim(line) for line in lines]
        case "error":
            return [style.error(render.error_line(_safe(event["text"])))]
        case "welcome":
            return []
        case "refresh":
            return [style.dim(render.token_refresh(event, SAFE))]
    return [style.dim(f"(unknown event: {_safe(kind)})")]
