"""Server events: typed data, and the JSON form each takes on the wire.

Sans-I/O and pure. An event holds what happened (a stored :class:`Record`, a presence
change, the answer to a command...) and knows its JSON-shaped fields (:meth:`Event.data`)
and its JSON line (:attr:`Event.json`, built once, when a JSON viewer first needs it, and
shared by every recipient). How an event reads in plain text is not here: the wire
formats of :mod:`.wire` render events for one viewer, with the wording of :mod:`.render`.

Besides its data an event says how it is routed: ``room`` (a plain line from a room that
is not the viewer's current one names it), ``sender`` (the connection that reads it in
the first person), and ``log_position`` (a stored message's place in the log).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from trio_chat._version import server_name

from .commands import HELP, PROTOCOL, Command
from .record import Record

__all__ = [
    "Ack",
    "ErrorEvent",
    "Event",
    "HistoryLine",
    "LoginPrompt",
    "Message",
    "Notice",
    "Presence",
    "PrivateMessage",
    "TokenRefresh",
    "TopicChanged",
    "Welcome",
    "help_ack",
    "message_data",
    "timestamp",
    "to_json_line",
]


def timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``: ``2026-11-26T05:46:09.123Z``."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def to_json_line(data: dict[str, Any]) -> str:
    """One compact JSON document; non-ASCII text stays as it is (the frame is UTF-8)."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


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


class Event:
    """Something the bus delivers: data, rendered once per wire format and shared by
    every recipient that reads it the same way."""

    __slots__ = ("json_line", "plain_form", "rendered")

    #: (room, id) for stored messages (room None for private ones), else None: how a
    #: connection recognises a live message it already got from a replay.
    log_position: tuple[str | None, int] | None = None
    #: The room it happened in, or None when it belongs to no one room.
    room: str | None = None
    #: The connection that caused it and reads it in the first person ("You said").
    sender: int | None = None

    def __init__(self) -> None:
        #: The JSON line once made (read it as :attr:`json`).
        self.json_line: str | None = None
        #: The plain format's rendering, once made (:mod:`.wire` owns what it holds).
        self.plain_form: Any = None
        #: Any other wire format's rendering of this event, kept by that format (keyed
        #: by it) so that it is made once, not once per recipient. None until one does
        #: (most events never need it: one object fewer per event on the hot path).
        self.rendered: dict[object, Any] | None = None

    def data(self) -> dict[str, Any]:
        """The event's JSON fields, ``type`` first."""
        raise NotImplementedError

    @property
    def json(self) -> str:
        """The event's JSON line, made on first use and then shared."""
        line = self.json_line
        if line is None:
            line = self.json_line = to_json_line(self.data())
        return line


class Message(Event):
    """A chat line (or a ``/me`` action) in a room, live."""

    __slots__ = ("log_position", "record", "room", "sender")

    def __init__(self, record: Record, sender: int) -> None:
        super().__init__()
        assert record.room is not None
        self.record = record
        self.room = record.room
        self.sender = sender
        self.log_position = (record.room, record.id)

    def data(self) -> dict[str, Any]:
        return message_data(self.record)


class PrivateMessage(Event):
    """A message only its sender and its recipient see, live."""

    __slots__ = ("log_position", "record", "sender")

    def __init__(self, record: Record, sender: int) -> None:
        super().__init__()
        self.record = record
        self.sender = sender
        self.log_position = (None, record.id)

    def data(self) -> dict[str, Any]:
        return message_data(self.record)


class HistoryLine(Event):
    """A stored message replayed from history (on join or resume), marked as such:
    ``"history": true``."""

    __slots__ = ("record", "room")

    def __init__(self, record: Record) -> None:
        super().__init__()
        self.record = record
        self.room = record.room

    def data(self) -> dict[str, Any]:
        return {**message_data(self.record), "history": True}


#: Presence events and the fields each carries besides ``nick`` and ``ts``.
PRESENCE_EVENTS = frozenset({"join", "leave", "nick", "quit", "kick"})


class Presence(Event):
    """Someone joined or left a room (``room``), changed nick (``new_nick``), quit or
    was kicked (``reason``)."""

    __slots__ = ("event", "new_nick", "nick", "reason", "room", "ts")

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
        if event not in PRESENCE_EVENTS:
            raise ValueError(f"unknown presence event {event!r}")
        super().__init__()
        self.event = event
        self.nick = nick
        self.ts = ts
        self.room = room
        self.new_nick = new_nick
        self.reason = reason

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "presence", "event": self.event, "nick": self.nick}
        match self.event:
            case "join" | "leave":
                data["room"] = self.room
            case "nick":
                data["new_nick"] = self.new_nick
            case _:
                data["reason"] = self.reason
        data["ts"] = self.ts
        return data


class TopicChanged(Event):
    """A room's topic was set or cleared (``topic`` None) by ``by``."""

    __slots__ = ("by", "room", "topic")

    def __init__(self, room: str, topic: str | None, by: str | None) -> None:
        super().__init__()
        self.room = room
        self.topic = topic
        self.by = by

    def data(self) -> dict[str, Any]:
        return {"type": "topic", "room": self.room, "topic": self.topic, "by": self.by}


class Notice(Event):
    """The operator speaking: to everyone, or to one room."""

    __slots__ = ("room", "text")

    def __init__(self, text: str, room: str | None = None) -> None:
        super().__init__()
        self.text = text
        self.room = room

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "notice", "from": "server", "text": self.text}
        if self.room is not None:
            data["room"] = self.room
        return data


class Welcome(Event):
    """The first event of a connection: who and where it is, and (JSON connections) the
    secret that resumes its session (plain clients get nothing: the tutorial's clients
    expect no greeting); and the server's ``limits`` (message bytes and lines, the rate
    and burst...), so that a client can refuse locally what the server would."""

    __slots__ = ("limits", "nick", "rooms", "session", "where")

    def __init__(
        self,
        nick: str | None,
        room: str,
        rooms: list[str],
        session: str | None = None,
        limits: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.limits = limits
        self.nick = nick
        #: The current room (``room`` stays None: a welcome is not said in a room).
        self.where = room
        self.rooms = rooms
        self.session = session

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "type": "welcome",
            "protocol": PROTOCOL,
            "server": server_name(),
            "nick": self.nick,
            "room": self.where,
            "rooms": self.rooms,
        }
        if self.session is not None:
            data["session"] = self.session
        if self.limits is not None:
            data["limits"] = self.limits
        return data


class LoginPrompt(Event):
    """What a plain client is told on connecting to a server that needs a login before
    anything else: how to log in (``text``, the ``login_required`` wording). JSON clients
    are sent nothing before they log in; a plain one would otherwise face silence."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def data(self) -> dict[str, Any]:
        return {"type": "login_prompt", "text": self.text}


class TokenRefresh(Event):
    """The connection's login token expires at ``expires`` (in ``seconds``): the server
    asks for a new one (a ``refresh`` command), or closes with 1008 ``token expired``."""

    __slots__ = ("expires", "seconds")

    def __init__(self, expires: str, seconds: int) -> None:
        super().__init__()
        self.expires = expires
        self.seconds = seconds

    def data(self) -> dict[str, Any]:
        return {"type": "refresh", "expires": self.expires, "seconds": self.seconds}


class Ack(Event):
    """The answer to one command: ``command``, the client's ``cid`` and the ``result``
    fields. ``request`` (the command answered) and ``rooms_before`` (its sender's rooms
    before it) are context for wording it; they are not sent."""

    __slots__ = ("cid", "command", "request", "result", "rooms_before")

    def __init__(
        self,
        command: str,
        cid: str | int | None,
        *,
        request: Command | None = None,
        rooms_before: tuple[str, ...] = (),
        **result: Any,
    ) -> None:
        super().__init__()
        self.command = command
        self.cid = cid
        self.request = request
        self.rooms_before = rooms_before
        self.result = result

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "ack"}
        if self.cid is not None:
            data["cid"] = self.cid
        data["command"] = self.command
        data.update(self.result)
        return data


class ErrorEvent(Event):
    """A command that failed, for its sender only: a machine-readable ``code`` and a
    ``text`` for people."""

    __slots__ = ("cid", "code", "text")

    def __init__(self, code: str, text: str, cid: str | int | None = None) -> None:
        super().__init__()
        self.code = code
        self.text = text
        self.cid = cid

    def data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": "error"}
        if self.cid is not None:
            data["cid"] = self.cid
        data["code"] = self.code
        data["text"] = self.text
        return data


def help_ack(cid: str | int | None, extra: tuple[tuple[str, str], ...] = ()) -> Ack:
    """The answer to ``/help``: every command with its usage and description, and the
    ``extra`` ones its asker may use (an admin's moderation commands)."""
    commands = [{"usage": usage, "description": description} for usage, description in HELP + extra]
    return Ack("help", cid, commands=commands)
