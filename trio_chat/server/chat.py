"""The chat itself: members, nicknames, rooms, and what each command does to them.

A frame enters through :meth:`Chat.receive_text`, is read into
:class:`~trio_chat.core.commands.Command` values by the member's wire format, and
:meth:`Chat.execute` carries each out: it checks the rules, changes the state, and
publishes events (data, worded elsewhere: :mod:`trio_chat.core.render`) on the bus to
exactly the members who should see them. Room and private messages are handed to
:class:`~trio_chat.server.messaging.Messaging`. A member is let go for a typed reason
(:data:`~trio_chat.core.close.Departure`); its connection picks the close code.

This module owns the chat's state; it runs inside the reader task of the connection
that sent the command, and every change of state it makes happens between two awaits,
so it is atomic with respect to other clients.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from trio_chat.core import render
from trio_chat.core.arrival import Arrival
from trio_chat.core.close import Departure, Kicked, Quitting
from trio_chat.core.commands import (
    MAX_MESSAGE_LINES,
    Command,
    CommandError,
    Help,
    History,
    Join,
    Leave,
    ListRooms,
    Nick,
    Private,
    Quit,
    Resume,
    Say,
    Topic,
    Who,
)
from trio_chat.core.events import (
    Ack,
    ErrorEvent,
    Event,
    Notice,
    Presence,
    TopicChanged,
    Welcome,
    help_ack,
    timestamp,
)
from trio_chat.core.wire import WireFormat

from .bus import Bus, Subscription
from .history import MessageLog, StoreFailed
from .messaging import Messaging, Window
from .replay import history_page, missed_since, recent_history

__all__ = ["LOBBY", "Chat", "Member", "Room"]

LOBBY = "lobby"
#: Nicknames nobody may take: the operator speaks as "Server".
RESERVED_NICKS = frozenset({"server"})
#: How the chat asks a member's connection to close, and why.
Disconnect = Callable[[Departure], None]


@dataclass(eq=False, slots=True)
class Member:
    """One connection's place in the chat. ``rooms`` is ordered by recency: the last one
    is the current room, where plain lines go."""

    key: int
    wire: WireFormat
    disconnect: Disconnect
    nick: str | None = None
    rooms: list[str] = field(default_factory=list)
    #: Set once the member's departure was announced (kick), so it is not announced twice.
    departed: bool = False
    #: The current room when it left the chat: events already queued for it (the echo
    #: of its last line, say) still read as they would have before it left.
    left_from: str = LOBBY
    _window: Window | None = field(default=None, init=False, repr=False)

    @property
    def current_room(self) -> str:
        return self.rooms[-1] if self.rooms else self.left_from

    @property
    def window(self) -> Window:
        """Its messages being committed: made when first asked for (its first message,
        usually), so a member that only listens keeps no empty window."""
        if self._window is None:
            self._window = Window()
        return self._window


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
        self,
        log: MessageLog,
        *,
        presence_limit: int = 100,
        history_on_join: int = 50,
        max_message_lines: int = MAX_MESSAGE_LINES,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.bus = Bus()
        self.log = log
        self.presence_limit = presence_limit
        self.history_on_join = history_on_join
        self.max_message_lines = max_message_lines
        self.members: dict[int, Member] = {}
        self.rooms: dict[str, Room] = {LOBBY: Room(LOBBY)}
        self._nicks: dict[str, Member] = {}
        self._clock = clock
        self.messaging = Messaging(log, self.bus, self._ts)

    # --- joining and leaving the chat --------------------------------------------------

    def arrive(
        self,
        key: int,
        *,
        wire: WireFormat,
        disconnect: Disconnect,
        queue_depth: int,
        on_overflow: Callable[[], None],
        arrival: Arrival | None = None,
    ) -> tuple[Member, Subscription]:
        """A member for connection ``key``, speaking ``wire``, subscribed; :meth:`leave`
        it when the connection ends.

        Without ``arrival`` the member arrives anonymous in the lobby and is sent the
        lobby's recent history. ``arrival`` (from the connection's URL) names the nick
        and rooms to arrive with, and ``since``: the id to resume after, which replays
        everything missed in those rooms instead of their recent history.
        """
        arrival = arrival or Arrival()
        member = Member(key, wire, disconnect)
        subscription = self.bus.add(member, queue_depth, on_overflow)
        self.members[key] = member
        for name in arrival.rooms or (LOBBY,):
            if name not in member.rooms:
                self._enter_room(member, name)
        refusal = None
        if arrival.nick is not None:
            try:
                self._change_nick(member, arrival.nick, None)
            except CommandError as error:
                refusal = ErrorEvent(error.code, error.text)
        subscription.offer(Welcome(member.nick, member.current_room, list(member.rooms)))
        if refusal is not None:
            subscription.offer(refusal)
        if arrival.since is not None:
            subscription.offer(missed_since(self.log, arrival.since, member.rooms, member.nick))
        elif self.history_on_join:
            for name in member.rooms:
                subscription.offer(recent_history(self.log, name, self.history_on_join))
        return member, subscription

    def leave(self, member: Member, subscription: Subscription) -> None:
        """The end of ``member``'s connection: it leaves every room (announced if it had
        a nickname and was not already announced) and the bus. Idempotent."""
        self._depart(member, self._quit_notice(member, None))
        self.bus.remove(subscription)

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
        if member.rooms:
            member.left_from = member.current_room
        if announcement is not None:
            self._announce(announcement, member, member.rooms)
        for name in list(member.rooms):
            self._exit_room(member, name)
        self.members.pop(member.key, None)
        if member.nick:
            self._nicks.pop(member.nick.casefold(), None)

    # --- what clients send ---------------------------------------------------------------

    async def receive_text(self, member: Member, text: str) -> None:
        """Carry out one text frame from ``member``: the commands its wire format reads
        in it, in order. Errors go back to the member alone. Returns once every message
        in the frame is submitted (and the member's window has room)."""
        for parsed in member.wire.parse(text, max_lines=self.max_message_lines):
            if isinstance(parsed, CommandError):
                self._reply(member, ErrorEvent(parsed.code, parsed.text, parsed.cid))
            else:
                await self.execute(member, *parsed)

    async def execute(self, member: Member, command: Command, cid: str | int | None) -> None:
        """Carry out ``command`` for ``member``; answer with exactly one ack or error."""
        try:
            reply = await self._dispatch(member, command, cid)
        except CommandError as error:
            reply = ErrorEvent(error.code, error.text, cid)
        except StoreFailed:  # reading history failed
            reply = ErrorEvent("store_failed", render.HISTORY_UNAVAILABLE, cid)
        if reply is not None:
            self._reply(member, reply)

    async def _dispatch(
        self, member: Member, command: Command, cid: str | int | None
    ) -> Event | None:
        match command:
            case Say():
                room = command.room or member.current_room
                if room not in member.rooms:
                    raise CommandError("not_in_room", render.not_in_room(room, to_say=True))
                await self.messaging.to_room(
                    member,
                    cid,
                    room,
                    command.text,
                    action=command.action,
                    audience=lambda: self._members_of(room),
                )
                return None
            case Private():
                if member.nick is None:
                    raise CommandError("nick_required", render.NICK_REQUIRED)
                recipient = self._nicks.get(command.to.casefold())
                if recipient is None or recipient.nick is None:
                    raise CommandError("no_such_nick", render.no_such_nick(command.to))
                await self.messaging.to_nick(
                    member, cid, recipient.nick, recipient.key, command.text
                )
                return None
            case History():
                return await self._history(member, command, cid)
            case Resume():
                # The member's writer answers (the ack says whether everything after
                # `since` is still kept), then replays it.
                order = missed_since(self.log, command.since, member.rooms, member.nick, cid)
                self.bus.instruct(member.key, order)
                return None
            case Nick():
                return self._change_nick(member, command.nick, cid)
            case Join():
                self._join(member, command.room, cid)
                return None
            case Leave():
                return self._leave(member, command.room or member.current_room, cid)
            case ListRooms():
                rooms = self.room_list()
                return Ack(
                    "rooms",
                    cid,
                    rooms=[{"name": n, "members": c, "topic": t} for n, c, t in rooms],
                )
            case Who():
                name = command.room or member.current_room
                nicks, anonymous = self._existing_room(name).roster()
                return Ack("who", cid, room=name, members=nicks, anonymous=anonymous)
            case Topic():
                return self._topic(member, command, cid)
            case Help():
                return help_ack(cid)
            case Quit():
                # The member's last lines (still being committed) come before its quit.
                await member.window.drained()
                self._depart(member, self._quit_notice(member, command.reason))
                self._reply(member, Ack("quit", cid))
                member.disconnect(Quitting())
                return None
        raise AssertionError(f"unhandled command {command!r}")

    def _members_of(self, name: str) -> Iterable[int]:
        """The keys of the members of room ``name`` now (none once it is gone)."""
        room = self.rooms.get(name)
        return () if room is None else room.members

    async def _history(self, member: Member, command: History, cid: str | int | None) -> Event:
        name = command.room or member.current_room
        if name not in member.rooms:
            raise CommandError("not_in_room", render.not_in_room(name))
        return await history_page(self.log, name, command.limit, command.before, cid)

    def _change_nick(self, member: Member, nick: str, cid: str | int | None) -> Event:
        folded = nick.casefold()
        holder = self._nicks.get(folded)
        if folded in RESERVED_NICKS or (holder is not None and holder is not member):
            raise CommandError("nick_taken", render.nick_taken(nick))
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
        return Ack("nick", cid, nick=nick)

    def _join(self, member: Member, name: str, cid: str | int | None) -> None:
        before = tuple(member.rooms)
        joined = name not in member.rooms
        if joined:
            self._enter_room(member, name)
            if member.nick:
                self._announce(Presence("join", member.nick, self._ts(), room=name), member, [name])
        else:
            member.rooms.remove(name)
            member.rooms.append(name)
        room = self.rooms[name]
        nicks, anonymous = room.roster()
        self._reply(
            member,
            Ack(
                "join",
                cid,
                rooms_before=before,
                room=name,
                topic=room.topic,
                members=nicks,
                anonymous=anonymous,
            ),
        )
        if joined and self.history_on_join:
            # Queued before anything said in the room from now on, so the room's history
            # reaches the member first (the writer carries it out in line).
            self.bus.instruct(member.key, recent_history(self.log, name, self.history_on_join))

    def _leave(self, member: Member, name: str, cid: str | int | None) -> Event:
        if name not in member.rooms:
            raise CommandError("not_in_room", render.not_in_room(name))
        if len(member.rooms) == 1:
            raise CommandError("only_room", render.only_room(name))
        if member.nick:
            self._announce(Presence("leave", member.nick, self._ts(), room=name), member, [name])
        self._exit_room(member, name)
        return Ack("leave", cid, room=name, current=member.current_room)

    def _topic(self, member: Member, command: Topic, cid: str | int | None) -> Event | None:
        name = command.room or member.current_room
        room = self._existing_room(name)
        if command.text is None:
            return Ack("topic", cid, request=command, room=name, topic=room.topic)
        if name not in member.rooms:
            raise CommandError("not_in_room", render.not_in_room(name))
        room.topic = command.text or None
        self._reply(member, Ack("topic", cid, request=command, room=name, topic=room.topic))
        self.bus.publish(TopicChanged(name, room.topic, member.nick), room.members)
        return None

    # --- the operator -----------------------------------------------------------------------

    def operator_says(self, text: str, room: str | None = None) -> int:
        """Publish an operator line to everyone, or to one room; returns how many got it."""
        if room is None:
            return self.bus.publish(Notice(text))
        return self.bus.publish(Notice(text, room), self._existing_room(room).members)

    def kick(self, nick: str, reason: str) -> bool:
        """Announce ``nick`` as kicked and ask its connection to close, for ``reason``.
        Returns False when nobody has that nickname."""
        member = self._nicks.get(nick.casefold())
        if member is None:
            return False
        self._depart(member, Presence("kick", member.nick or nick, self._ts(), reason=reason))
        member.disconnect(Kicked(reason))
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
            raise CommandError("no_such_room", render.no_such_room(name))
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
