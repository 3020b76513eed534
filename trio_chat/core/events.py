"""Server events and how each reads on the wire, in plain text and in JSON.

Sans-I/O: an event is built once, when it happens, with every rendering that does not
depend on who receives it already made (the JSON line above all), so the fan-out does
as little as possible per recipient. :meth:`Event.render` picks the form for one
:class:`Viewer`, or ``None`` when that viewer should get nothing.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Protocol

from trio_chat._version import server_name

from .commands import HELP, PROTOCOL
from .record import Record

__all__ = [
    "Ack",
    "ErrorEvent",
    "Event",
    "HistoryLine",
    "Message",
    "Notice",
    "Presence",
    "PrivateMessage",
    "TopicChanged",
    "Viewer",
    "Welcome",
    "describe_missed",
    "describe_roster",
    "timestamp",
]


class Viewer(Protocol):
    """Who an event is rendered for: a connection's mode and its current room."""

    @property
    def key(self) -> int: ...
    @property
    def json(self) -> bool: ...
    @property
    def current_room(self) -> str: ...


class Event(Protocol):
    """Something the bus delivers; rendered once per recipient."""

    #: (room, id) for stored messages (room None for private ones), else None: how a
    #: connection recognises a live message it already got from a replay.
    log_position: tuple[str | None, int] | None

    def render(self, viewer: Viewer) -> str | None:
        """The line ``viewer`` receives, or ``None`` for nothing."""
        ...


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``: ``2026-11-26T05:46:09.123Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_json_line(data: dict[str, Any]) -> str:
    """One compact JSON document; non-ASCII text stays as it is (the frame is UTF-8)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _in_room(viewer: Viewer, room: str, line: str) -> str:
    """Plain lines from a room other than the viewer's current one name their room."""
    return line if room == viewer.current_room else f"[{room}] {line}"


def _who(nick: str | None) -> str:
    return nick if nick is not None else "Someone"


def message_data(record: Record) -> dict[str, Any]:
    """The JSON fields of a stored room or private message."""
    if record.room is None:
        return {
            "type": "private",
            "id": record.id,
            "from": record.sender,
            "to": record.recipient,
            "text": record.text,
            "ts": record.ts,
        }
    data: dict[str, Any] = {
        "type": "message",
        "id": record.id,
        "room": record.room,
        "from": record.sender,
        "text": record.text,
        "ts": record.ts,
    }
    if record.action:
        data["action"] = True
    return data


class Message:
    """A chat line (or a ``/me`` action) in a room, live."""

    __slots__ = ("_json", "_others", "_own", "log_position", "room", "sender")

    def __init__(self, record: Record, sender: int) -> None:
        assert record.room is not None
        self.room = record.room
        #: The connection that sent it: it reads its own line as "You said".
        self.sender = sender
        self.log_position = (record.room, record.id)
        if record.action:
            self._own = self._others = f"* {_who(record.sender)} {record.text}"
        else:
            self._own = f"You said: {record.text}"
            self._others = f"{_who(record.sender)} says: {record.text}"
        self._json = to_json_line(message_data(record))

    def render(self, viewer: Viewer) -> str:
        if viewer.json:
            return self._json
        return _in_room(viewer, self.room, self._own if viewer.key == self.sender else self._others)


class PrivateMessage:
    """A message only its sender and its recipient see, live."""

    __slots__ = ("_json", "_received", "_sent", "log_position", "sender")

    def __init__(self, record: Record, sender: int) -> None:
        self.sender = sender
        self.log_position = (None, record.id)
        self._json = to_json_line(message_data(record))
        self._sent = f"[private] You said to {record.recipient}: {record.text}"
        self._received = f"[private] {record.sender} says: {record.text}"

    def render(self, viewer: Viewer) -> str:
        if viewer.json:
            return self._json
        return self._sent if viewer.key == self.sender else self._received


class HistoryLine:
    """A stored message replayed from history (on join or resume), marked as such:
    ``[history] `` in plain text, ``"history": true`` in JSON."""

    __slots__ = ("_json", "_plain", "room")

    log_position = None

    def __init__(self, record: Record) -> None:
        self.room = record.room
        self._json = to_json_line({**message_data(record), "history": True})
        if record.room is None:
            body = f"[private] {record.sender} to {record.recipient}: {record.text}"
        elif record.action:
            body = f"* {_who(record.sender)} {record.text}"
        else:
            body = f"{_who(record.sender)} says: {record.text}"
        self._plain = f"[history] {body}"

    def render(self, viewer: Viewer) -> str:
        if viewer.json:
            return self._json
        return self._plain if self.room is None else _in_room(viewer, self.room, self._plain)


class Presence:
    """Someone joined or left a room, changed nick, quit, or was kicked."""

    __slots__ = ("_json", "_plain", "room")

    log_position = None

    def __init__(
        self,
        event: str,
        nick: str,
        ts: str,
        *,
        room: str | None = None,
        new_nick: str | None = None,
        reason: str | None = None,
    ) -> None:
        self.room = room
        data: dict[str, Any] = {"type": "presence", "event": event, "nick": nick}
        match event:
            case "join" | "leave":
                data["room"] = room
                self._plain = f"* {nick} {'joined' if event == 'join' else 'left'} {room}"
            case "nick":
                data["new_nick"] = new_nick
                self._plain = f"* {nick} is now known as {new_nick}"
            case "quit" | "kick":
                data["reason"] = reason
                verb = "quit" if event == "quit" else "was kicked"
                self._plain = f"* {nick} {verb}" + (f" ({reason})" if reason else "")
            case _:
                raise ValueError(f"unknown presence event {event!r}")
        data["ts"] = ts
        self._json = to_json_line(data)

    def render(self, viewer: Viewer) -> str:
        if viewer.json:
            return self._json
        return self._plain if self.room is None else _in_room(viewer, self.room, self._plain)


class TopicChanged:
    """A room's topic was set or cleared."""

    __slots__ = ("_json", "_plain", "room")

    log_position = None

    def __init__(self, room: str, topic: str | None, by: str | None) -> None:
        self.room = room
        self._json = to_json_line({"type": "topic", "room": room, "topic": topic, "by": by})
        if topic:
            self._plain = f"* {_who(by)} set the topic of {room}: {topic}"
        else:
            self._plain = f"* {_who(by)} cleared the topic of {room}"

    def render(self, viewer: Viewer) -> str:
        return self._json if viewer.json else _in_room(viewer, self.room, self._plain)


class Notice:
    """The operator speaking: to everyone, or to one room."""

    __slots__ = ("_json", "_plain", "room")

    log_position = None

    def __init__(self, text: str, room: str | None = None) -> None:
        self.room = room
        data: dict[str, Any] = {"type": "notice", "from": "server", "text": text}
        if room is not None:
            data["room"] = room
        self._json = to_json_line(data)
        self._plain = f"\N{LARGE GREEN CIRCLE} Server: {text}"

    def render(self, viewer: Viewer) -> str:
        if viewer.json:
            return self._json
        return self._plain if self.room is None else _in_room(viewer, self.room, self._plain)


class Welcome:
    """The first event of a JSON connection (plain clients get nothing: the tutorial's
    clients expect no greeting)."""

    __slots__ = ("_json",)

    log_position = None

    def __init__(self, nick: str | None, room: str, rooms: list[str]) -> None:
        self._json = to_json_line(
            {
                "type": "welcome",
                "protocol": PROTOCOL,
                "server": server_name(),
                "nick": nick,
                "room": room,
                "rooms": rooms,
            }
        )

    def render(self, viewer: Viewer) -> str | None:
        return self._json if viewer.json else None


class Ack:
    """The answer to one command: JSON ``ack`` with the result; in plain mode a ``* `` line
    (or several), or nothing when the command's own effect is the answer (a chat line)."""

    __slots__ = ("_json", "_plain")

    log_position = None

    def __init__(
        self,
        command: str,
        cid: str | int | None,
        plain: str | None = None,
        **result: Any,
    ) -> None:
        data: dict[str, Any] = {"type": "ack"}
        if cid is not None:
            data["cid"] = cid
        data["command"] = command
        data.update(result)
        self._json = to_json_line(data)
        self._plain = plain

    def render(self, viewer: Viewer) -> str | None:
        return self._json if viewer.json else self._plain


class ErrorEvent:
    """A command that failed, for its sender only: ``Error: …`` or a JSON ``error``."""

    __slots__ = ("_json", "_plain", "code")

    log_position = None

    def __init__(self, code: str, text: str, cid: str | int | None = None) -> None:
        self.code = code
        data: dict[str, Any] = {"type": "error"}
        if cid is not None:
            data["cid"] = cid
        data["code"] = code
        data["text"] = text
        self._json = to_json_line(data)
        self._plain = f"Error: {text}"

    def render(self, viewer: Viewer) -> str:
        return self._json if viewer.json else self._plain


def describe_roster(nicks: Collection[str], anonymous: int) -> str:
    """``alice, bob and 2 without a nickname``; ``nobody`` for an empty room. (The client
    words its rosters the same way.)"""
    parts = list(nicks)
    if anonymous:
        parts.append(f"{anonymous} without a nickname")
    if not parts:
        return "nobody"
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def describe_missed(since: int, oldest: int) -> str:
    """The line saying that a resume after ``since`` could not recover everything: some
    messages are no longer kept, and nothing is missing from ``oldest`` on. (The client
    words it the same way.)"""
    return (
        f"* Some messages since {since} are no longer kept and were missed; replaying from {oldest}"
    )


def help_ack(cid: str | int | None) -> Ack:
    """The answer to ``/help``: every command with its usage and description."""
    width = max(len(usage) for usage, _ in HELP)
    plain = "\n".join(f"* {usage:<{width}}  {description}" for usage, description in HELP)
    commands = [{"usage": usage, "description": description} for usage, description in HELP]
    return Ack("help", cid, plain, commands=commands)
