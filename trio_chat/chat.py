"""The chat itself: members, nicknames, rooms, and what each command does.

A line enters through :meth:`Chat.receive_text`, becomes a
:class:`~trio_chat.commands.Command`, and :meth:`Chat.execute` turns it into events
published on the bus to exactly the members who should see them. This module owns the
chat's state and never awaits: it runs inside the reader task of the connection that
sent the command, and every change it makes is atomic with respect to other clients.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .bus import Bus, Subscription
from .commands import (
    Command,
    CommandError,
    Help,
    Join,
    Leave,
    ListRooms,
    Nick,
    Private,
    Quit,
    Say,
    Topic,
    Who,
    parse_json,
    parse_plain,
)
from .events import (
    Ack,
    ErrorEvent,
    Event,
    Message,
    Notice,
    Presence,
    PrivateMessage,
    TopicChanged,
    Welcome,
    help_ack,
    timestamp,
)
from .protocol import CloseCode

__all__ = ["LOBBY", "Chat", "Member", "Room"]

LOBBY = "lobby"
#: Nicknames nobody may take: the operator speaks as "Server".
RESERVED_NICKS = frozenset({"server"})
#: How a connection is asked to close: (code, reason, flush queued events first?).
Disconnect = Callable[[int, str, bool], None]


@dataclass(eq=False)
class Member:
    """One connection's place in the chat. ``rooms`` is ordered by recency: the last one
    is the current room, where plain lines go."""

    key: int
    json: bool
    disconnect: Disconnect
    nick: str | None = None
    rooms: list[str] = field(default_factory=list)
    #: Set once the member's departure was announced (kick), so it is not announced twice.
    departed: bool = False

    @property
    def current_room(self) -> str:
        return self.rooms[-1]


@dataclass(eq=False)
class Room:
    name: str
    topic: str | None = None
    members: dict[int, Member] = field(default_factory=dict)

    def roster(self) -> tuple[list[str], int]:
        """The members' nicknames, sorted case-insensitively, and how many have none."""
        nicks = sorted((m.nick for m in self.members.values() if m.nick), key=str.casefold)
        return nicks, len(self.members) - len(nicks)


def utc_now() -> datetime:
    return datetime.now(UTC)


class Chat:
    """The chat every connection of one server takes part in."""

    def __init__(
        self, *, presence_limit: int = 100, clock: Callable[[], datetime] = utc_now
    ) -> None:
        self.bus = Bus()
        self.presence_limit = presence_limit
        self.members: dict[int, Member] = {}
        self.rooms: dict[str, Room] = {LOBBY: Room(LOBBY)}
        self._nicks: dict[str, Member] = {}
        self._ids = itertools.count(1)
        self._clock = clock

    @property
    def member_count(self) -> int:
        return len(self.members)

    # --- joining and leaving the chat --------------------------------------------------

    @contextmanager
    def connect(
        self,
        key: int,
        *,
        json: bool,
        disconnect: Disconnect,
        queue_depth: int,
        on_overflow: Callable[[], None],
    ) -> Iterator[tuple[Member, Subscription]]:
        """A member for connection ``key``, subscribed and in the lobby, for the ``with``
        block; on the way out it leaves every room (announced if it had a nickname)."""
        member = Member(key, json, disconnect)
        with self.bus.subscribe(member, queue_depth, on_overflow) as subscription:
            self.members[key] = member
            self._enter_room(member, LOBBY)
            subscription.offer(Welcome(None, LOBBY, [LOBBY]))
            try:
                yield member, subscription
            finally:
                self._depart(member, self._quit_notice(member, None))

    def _quit_notice(self, member: Member, reason: str | None) -> Presence | None:
        """The presence notice for ``member`` quitting; anonymous members leave unseen."""
        if member.nick is None:
            return None
        return Presence("quit", member.nick, self._ts(), reason=reason)

    def _depart(self, member: Member, announcement: Presence | None) -> None:
        """Take ``member`` out of the chat, telling its rooms with ``announcement``."""
        if member.departed:
            return
        member.departed = True
        if announcement is not None:
            self._announce(announcement, member, member.rooms)
        for name in list(member.rooms):
            self._exit_room(member, name)
        self.members.pop(member.key, None)
        if member.nick:
            self._nicks.pop(member.nick.casefold(), None)

    # --- what clients send ---------------------------------------------------------------

    def receive_text(self, member: Member, text: str) -> None:
        """Carry out one text frame from ``member``: a JSON command, or plain lines (a
        frame of several lines is that many lines, so every line on the wire stays one
        event). Errors go back to the member alone."""
        if member.json:
            try:
                command, cid = parse_json(text)
            except CommandError as error:
                self._reply(member, ErrorEvent(error.code, error.text, error.cid))
                return
            self.execute(member, command, cid)
            return
        lines = text.splitlines() if ("\n" in text or "\r" in text) else [text]
        for line in lines:
            try:
                command = parse_plain(line)
            except CommandError as error:
                self._reply(member, ErrorEvent(error.code, error.text))
                continue
            self.execute(member, command, None)

    def execute(self, member: Member, command: Command, cid: str | int | None) -> None:
        """Carry out ``command`` for ``member``; answer with exactly one ack or error."""
        try:
            reply = self._dispatch(member, command, cid)
        except CommandError as error:
            reply = ErrorEvent(error.code, error.text, cid)
        if reply is not None:
            self._reply(member, reply)

    def _dispatch(self, member: Member, command: Command, cid: str | int | None) -> Event | None:
        match command:
            case Say():
                return self._say(member, command, cid)
            case Private():
                return self._private(member, command, cid)
            case Nick():
                return self._change_nick(member, command.nick, cid)
            case Join():
                return self._join(member, command.room, cid)
            case Leave():
                return self._leave(member, command.room or member.current_room, cid)
            case ListRooms():
                rooms = self.room_list()
                listing = ", ".join(f"{name} ({count})" for name, count, _ in rooms)
                return Ack(
                    "rooms",
                    cid,
                    f"* Rooms: {listing}",
                    rooms=[{"name": n, "members": c, "topic": t} for n, c, t in rooms],
                )
            case Who():
                name = command.room or member.current_room
                nicks, anonymous = self._existing_room(name).roster()
                return Ack(
                    "who",
                    cid,
                    f"* In {name}: {describe_roster(nicks, anonymous)}",
                    room=name,
                    members=nicks,
                    anonymous=anonymous,
                )
            case Topic():
                return self._topic(member, command, cid)
            case Help():
                return help_ack(cid)
            case Quit():
                self._depart(member, self._quit_notice(member, command.reason))
                self._reply(member, Ack("quit", cid))
                member.disconnect(CloseCode.NORMAL_CLOSURE, "bye", True)
                return None
        raise AssertionError(f"unhandled command {command!r}")

    def _say(self, member: Member, command: Say, cid: str | int | None) -> None:
        room = command.room or member.current_room
        if room not in member.rooms:
            raise CommandError("not_in_room", f"you are not in {room}; /join it first")
        message = Message(
            message_id=next(self._ids),
            room=room,
            sender=member.key,
            nick=member.nick,
            text=command.text,
            ts=self._ts(),
            action=command.action,
        )
        kind = "me" if command.action else "message"
        # The ack comes first, so a client knows the id before it sees the message.
        self._reply(member, Ack(kind, cid, id=message.id, room=room))
        self.bus.publish(message, self.rooms[room].members)

    def _private(self, member: Member, command: Private, cid: str | int | None) -> None:
        if member.nick is None:
            raise CommandError("nick_required", "set a nickname with /nick before /msg")
        recipient = self._nicks.get(command.to.casefold())
        if recipient is None:
            raise CommandError("no_such_nick", f"nobody is called {command.to}")
        message = PrivateMessage(
            message_id=next(self._ids),
            sender=member.key,
            nick=member.nick,
            to=recipient.nick or command.to,
            text=command.text,
            ts=self._ts(),
        )
        self._reply(member, Ack("private", cid, id=message.id, to=message.to))
        self.bus.publish(message, {member.key, recipient.key})

    def _change_nick(self, member: Member, nick: str, cid: str | int | None) -> Event:
        folded = nick.casefold()
        holder = self._nicks.get(folded)
        if folded in RESERVED_NICKS or (holder is not None and holder is not member):
            raise CommandError("nick_taken", f"nick {nick} is taken")
        old = member.nick
        if old is not None:
            del self._nicks[old.casefold()]
        self._nicks[folded] = member
        member.nick = nick
        if old is None:
            # An anonymous member becomes visible: to its rooms it has just arrived.
            for name in member.rooms:
                self._announce(Presence("join", nick, self._ts(), room=name), member, [name])
        elif old != nick:
            self._announce(Presence("nick", old, self._ts(), new_nick=nick), member, member.rooms)
        return Ack("nick", cid, f"* You are now known as {nick}", nick=nick)

    def _join(self, member: Member, name: str, cid: str | int | None) -> Event:
        if name in member.rooms:
            member.rooms.remove(name)
            member.rooms.append(name)
            plain = f"* You are now talking in {name}"
        else:
            self._enter_room(member, name)
            if member.nick:
                self._announce(Presence("join", member.nick, self._ts(), room=name), member, [name])
            plain = f"* You joined {name}"
        room = self.rooms[name]
        nicks, anonymous = room.roster()
        plain += f" ({len(room.members)} here)"
        if room.topic:
            plain += f". Topic: {room.topic}"
        return Ack(
            "join", cid, plain, room=name, topic=room.topic, members=nicks, anonymous=anonymous
        )

    def _leave(self, member: Member, name: str, cid: str | int | None) -> Event:
        if name not in member.rooms:
            raise CommandError("not_in_room", f"you are not in {name}")
        if len(member.rooms) == 1:
            raise CommandError("only_room", f"{name} is your only room; /join another first")
        if member.nick:
            self._announce(Presence("leave", member.nick, self._ts(), room=name), member, [name])
        self._exit_room(member, name)
        current = member.current_room
        return Ack(
            "leave", cid, f"* You left {name}; now talking in {current}", room=name, current=current
        )

    def _topic(self, member: Member, command: Topic, cid: str | int | None) -> Event | None:
        name = command.room or member.current_room
        room = self._existing_room(name)
        if command.text is None:
            plain = f"* Topic of {name}: {room.topic}" if room.topic else f"* {name} has no topic"
            return Ack("topic", cid, plain, room=name, topic=room.topic)
        if name not in member.rooms:
            raise CommandError("not_in_room", f"you are not in {name}")
        room.topic = command.text or None
        self._reply(member, Ack("topic", cid, None, room=name, topic=room.topic))
        self.bus.publish(TopicChanged(name, room.topic, member.nick), room.members)
        return None

    # --- the operator -----------------------------------------------------------------------

    def operator_says(self, text: str, room: str | None = None) -> int:
        """Publish an operator line to everyone, or to one room; returns how many got it."""
        if room is None:
            return self.bus.publish(Notice(text))
        return self.bus.publish(Notice(text, room), self._existing_room(room).members)

    def kick(self, nick: str, reason: str) -> bool:
        """Announce ``nick`` as kicked and close its connection with 1008 ``reason``.
        Returns False when nobody has that nickname."""
        member = self._nicks.get(nick.casefold())
        if member is None:
            return False
        self._depart(member, Presence("kick", member.nick or nick, self._ts(), reason=reason))
        member.disconnect(CloseCode.POLICY_VIOLATION, reason, False)
        return True

    def room_list(self) -> list[tuple[str, int, str | None]]:
        """Every room as (name, member count, topic), sorted by name."""
        return [(r.name, len(r.members), r.topic) for _, r in sorted(self.rooms.items())]

    def roster(self, room: str) -> tuple[list[str], int]:
        """A room's nicknames and its anonymous count; ``no_such_room`` if it is not there."""
        return self._existing_room(room).roster()

    # --- internals --------------------------------------------------------------------------

    def _ts(self) -> str:
        return timestamp(self._clock())

    def _reply(self, member: Member, event: Event) -> None:
        self.bus.publish(event, (member.key,))

    def _existing_room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            raise CommandError("no_such_room", f"there is no room {name}")
        return room

    def _enter_room(self, member: Member, name: str) -> None:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
        room.members[member.key] = member
        member.rooms.append(name)

    def _exit_room(self, member: Member, name: str) -> None:
        room = self.rooms[name]
        del room.members[member.key]
        member.rooms.remove(name)
        if not room.members and name != LOBBY:
            del self.rooms[name]

    def _announce(self, event: Presence, subject: Member, rooms: Iterable[str]) -> None:
        """Publish presence ``event`` once to everyone sharing one of ``rooms`` with
        ``subject`` (not to ``subject``), skipping rooms over the presence limit."""
        audience: set[int] = set()
        for name in rooms:
            members = self.rooms[name].members
            if len(members) <= self.presence_limit:
                audience.update(members)
        audience.discard(subject.key)
        if audience:
            self.bus.publish(event, audience)


def describe_roster(nicks: list[str], anonymous: int) -> str:
    """``alice, bob and 2 without a nickname``; ``nobody`` for an empty room."""
    parts = list(nicks)
    if anonymous:
        parts.append(f"{anonymous} without a nickname")
    if not parts:
        return "nobody"
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"
