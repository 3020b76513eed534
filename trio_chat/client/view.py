"""How the interactive client shows ``trio-chat.v1`` events: one event in, lines of text out.

Sans-I/O and pure: :func:`render_event` turns one decoded JSON event into the lines to
print (none, for an event whose effect shows elsewhere), given a :class:`Style`. Every
string that came from the server or from another user goes through
:func:`~trio_chat.terminal.make_safe` before it is put in a line, so control characters
and escape sequences are shown, never obeyed; the only escape codes in a rendered line
are the style's own SGR sequences, and only when colour is on.

The look:

* ``12:34 [lobby] alice: hello`` (``Someone`` for an anonymous sender),
  ``12:34 [lobby] * alice waves`` for an action,
  ``12:34 [private] alice → bob: psst``; the time is local, from the event's ``ts``;
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

from trio_chat.core.commands import HELP, Command, Topic
from trio_chat.core.events import describe_missed, describe_roster

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
PRIVATE_MARK = "1;35"
ERROR = "31"
RESET = "\x1b[0m"

#: The mark before a message replayed from the server's store (``"history": true``).
HISTORY_MARK = "[history]"
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


class Style:
    """Wraps text in SGR sequences when ``colour`` is on; returns it unchanged otherwise."""

    def __init__(self, colour: bool) -> None:
        self.colour = colour

    def sgr(self, codes: str, text: str) -> str:
        """``text`` in the SGR rendition ``codes``, reset afterwards."""
        return f"\x1b[{codes}m{text}{RESET}" if self.colour else text

    def dim(self, text: str) -> str:
        return self.sgr(DIM, text)

    def error(self, text: str) -> str:
        return self.sgr(ERROR, text)

    def nick(self, nick: Any) -> str:
        """A sender's name, made safe and in its own colour; ``Someone`` for ``None``."""
        if nick is None:
            return "Someone"
        safe = make_safe(str(nick))
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
    width = max((len(usage) for usage, _ in commands), default=0)
    return [style.dim(f"* {usage:<{width}}  {text}") for usage, text in commands]


def _safe(value: Any) -> str:
    return make_safe(str(value))


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
            room, text = _safe(event["room"]), _safe(event["text"])
            sender = style.nick(event["from"])
            if event.get("action"):
                return [f"{time} [{room}] * {sender} {text}"]
            return [f"{time} [{room}] {sender}: {text}"]
        case "private":
            time = style.dim(clock(event.get("ts"), tz))
            mark = style.sgr(PRIVATE_MARK, "[private]")
            sender, to = style.nick(event["from"]), style.nick(event["to"])
            return [f"{time} {mark} {sender} → {to}: {_safe(event['text'])}"]
        case "presence":
            return [style.dim(_presence(event))]
        case "topic":
            by = "Someone" if event["by"] is None else _safe(event["by"])
            room = _safe(event["room"])
            if event["topic"]:
                return [style.dim(f"* {by} set the topic of {room}: {_safe(event['topic'])}")]
            return [style.dim(f"* {by} cleared the topic of {room}")]
        case "notice":
            where = f"[{_safe(event['room'])}] " if event.get("room") is not None else ""
            return [f"{where}\N{LARGE GREEN CIRCLE} Server: {_safe(event['text'])}"]
        case "ack":
            return _ack(event, style, request, rooms)
        case "error":
            return [style.error(f"Error: {_safe(event['text'])}")]
        case "welcome":
            return []
    return [style.dim(f"(unknown event: {_safe(kind)})")]


def _presence(event: dict[str, Any]) -> str:
    nick = _safe(event["nick"])
    reason = event.get("reason")
    because = f" ({_safe(reason)})" if reason else ""
    match event["event"]:
        case "join":
            return f"* {nick} joined {_safe(event['room'])}"
        case "leave":
            return f"* {nick} left {_safe(event['room'])}"
        case "nick":
            return f"* {nick} is now known as {_safe(event['new_nick'])}"
        case "quit":
            return f"* {nick} quit{because}"
        case "kick":
            return f"* {nick} was kicked{because}"
    return f"(unknown presence event: {_safe(event['event'])})"


def _ack(
    event: dict[str, Any], style: Style, request: Command | None, rooms: Collection[str]
) -> list[str]:
    match event["command"]:
        case "message" | "me" | "private" | "quit":
            return []  # the message itself (or the close) is the answer
        case "nick":
            return [style.dim(f"* You are now known as {_safe(event['nick'])}")]
        case "join":
            room = event["room"]
            verb = "are now talking in" if room in rooms else "joined"
            count = len(event["members"]) + int(event["anonymous"])
            line = f"* You {verb} {_safe(room)} ({count} here)"
            if event.get("topic"):
                line += f". Topic: {_safe(event['topic'])}"
            return [style.dim(line)]
        case "leave":
            return [
                style.dim(
                    f"* You left {_safe(event['room'])}; now talking in {_safe(event['current'])}"
                )
            ]
        case "rooms":
            listing = ", ".join(
                f"{_safe(room['name'])} ({int(room['members'])})" for room in event["rooms"]
            )
            return [style.dim(f"* Rooms: {listing}")]
        case "who":
            roster = describe_roster([_safe(n) for n in event["members"]], int(event["anonymous"]))
            return [style.dim(f"* In {_safe(event['room'])}: {roster}")]
        case "topic":
            if isinstance(request, Topic) and request.text is not None:
                return []  # a topic set: the topic event every member gets shows it
            room = _safe(event["room"])
            if event.get("topic"):
                return [style.dim(f"* Topic of {room}: {_safe(event['topic'])}")]
            return [style.dim(f"* {room} has no topic")]
        case "resume":
            # Honoured whoever asked (the URL's since= is answered without a cid): when
            # the server no longer keeps everything after `since`, the user must know.
            if event.get("recovered") is False:
                return [style.dim(describe_missed(int(event["since"]), int(event["oldest"])))]
            return []
        case "help":
            return help_lines(
                style, [(_safe(c["usage"]), _safe(c["description"])) for c in event["commands"]]
            )
    return [style.dim(f"* Done: {_safe(event['command'])}")]
