"""The chat itself: members, nicknames, rooms, and what each command does to them.

A frame is read into :class:`~trio_chat.core.commands.Command` values by the member's
wire format (by its connection, which carries out ``login``, ``register`` and ``refresh``
itself), and :meth:`Chat.execute` carries each out: it
checks the rules, changes the state, and publishes events (data, worded elsewhere:
:mod:`trio_chat.core.render`) on the bus to exactly the members who should see them.
Room and private messages are handed to :class:`~trio_chat.server.messaging.Messaging`.
A member is let go for a typed reason (:data:`~trio_chat.core.close.Departure`); its
connection picks the close code.

Nicknames are held by principals (:class:`~trio_chat.core.identity.Principal`), not by
connections: the devices of one account share its nick, its presence is announced once
(a join when its first device enters a room, a leave or quit when its last one goes),
and ``/nick`` renames it on all of them. :attr:`Chat.reserved_names` keeps registered
names for their accounts alone.

This module owns the chat's state; it runs inside the reader task of the connection
that sent the command, and every change of state it makes happens between two awaits,
so it is atomic with respect to other clients.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from trio_chat.core import render
from trio_chat.core.arrival import Arrival
from trio_chat.core.bans import BanKind, BanTarget
from trio_chat.core.close import Departure, Kicked, Quitting, TakenOver
from trio_chat.core.commands import (
    MAX_MESSAGE_LINES,
    Announce,
    Ban,
    Command,
    CommandError,
    Help,
    History,
    Join,
    Kick,
    Leave,
    ListBans,
    ListRooms,
    Login,
    Mute,
    Nick,
    Private,
    Quit,
    Refresh,
    Register,
    Resume,
    Say,
    Topic,
    Unban,
    Unmute,
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
from trio_chat.core.identity import Principal, PrincipalKind
from trio_chat.core.text import RESERVED_NICKS
from trio_chat.core.wire import WireFormat

from .bus import Bus, Subscription
from .history import MessageLog, StoreFailed
from .messaging import Messaging, Window
from .moderation import OPERATOR, Moderation, ModerationError
from .moderation import Ban as BanInForce
from .replay import history_page, missed_since, private_history_page, recent_history
from .sessions import Session, Sessions
from .store import StoreError

__all__ = ["LOBBY", "Chat", "Member", "Room"]

LOBBY = "lobby"
#: How the chat asks a member's connection to close, and why.
Disconnect = Callable[[Departure], None]


@dataclass(eq=False, slots=True)
class Member:
    """One connection's place in the chat. ``rooms`` is ordered by recency: the last one
    is the current room, where plain lines go.

    Its :attr:`principal` is who it acts as. A member given none (a plain connection
    that never logs in) is a guest whose principal is made when first asked for (its
    first private message, usually), so an idle connection keeps none."""

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
    #: Who it acts as, once known: given at arrival or by a login, else made when asked.
    known_principal: Principal | None = field(default=None, init=False, repr=False)
    #: The session it uses (JSON connections, and any that resumed one), else None.
    session: Session[Member] | None = field(default=None, init=False, repr=False)
    #: The peer's IP address (the real client's, behind a trusted proxy), if known: what
    #: an address ban is matched against.
    address: str | None = field(default=None, init=False, repr=False)

    @property
    def principal(self) -> Principal:
        """Who this member acts as: a new guest, made now, if it was given none."""
        if self.known_principal is None:
            self.known_principal = Principal.guest()
        return self.known_principal

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
        """The members' nicknames, each once (a principal's devices share one), sorted
        case-insensitively, and how many members have none."""
        named = [m.nick for m in self.members.values() if m.nick]
        nicks = sorted(set(named), key=str.casefold)
        return nicks, len(self.members) - len(named)


def _private_scope(member: Member) -> str | None:
    """Whose private messages ``member`` may read again: its principal's, if it has one
    already (a guest made just now has none to read, so none is made for it)."""
    principal = member.known_principal
    return None if principal is None else principal.id


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
        nick_hold: float = 120.0,
        max_held: int = 10_000,
        max_rooms: int = 0,
        max_room_members: int = 0,
        limits: dict[str, Any] | None = None,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.bus = Bus()
        self.log = log
        self.presence_limit = presence_limit
        self.history_on_join = history_on_join
        self.max_message_lines = max_message_lines
        #: Rooms that may exist at once, and members a room but the lobby may hold (0:
        #: no cap): ``too_many_rooms`` and ``room_full`` past them.
        self.max_rooms = max_rooms
        self.max_room_members = max_room_members
        #: What every ``welcome`` announces of the server's limits (None: nothing).
        self.limits = limits
        self.members: dict[int, Member] = {}
        self.rooms: dict[str, Room] = {LOBBY: Room(LOBBY)}
        # Folded nick -> a member of the principal holding it (any of its devices).
        self._nicks: dict[str, Member] = {}
        # Principal id -> its members, for principals given explicitly (at arrival or by
        # a login): the devices of one account share its nick. A guest whose principal
        # was made lazily is alone, and not listed.
        self._devices: dict[str, list[Member]] = {}
        #: Folded registered name -> the id of the principal that alone may take it as
        #: a nick (an account's name); guests and everyone else get ``nick_taken``.
        self.reserved_names: dict[str, str] = {}
        self._clock = clock
        #: Every session, and the nicks held for those whose connection is gone: for
        #: ``nick_hold`` seconds, at most ``max_held`` of them.
        self.sessions: Sessions[Member] = Sessions(hold=nick_hold, max_held=max_held, clock=clock)
        self.messaging = Messaging(log, self.bus, self._ts)
        #: Bans, mutes and room topics, kept in the log's store (:meth:`load_moderation`).
        self.moderation = Moderation(log.store, clock=clock)
        #: How an ``account:NAME`` ban target finds its principal (the server's accounts);
        #: None: no accounts to look in.
        self.find_account: Callable[[str], Awaitable[Principal | None]] | None = None

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
        principal: Principal | None = None,
    ) -> tuple[Member, Subscription]:
        """A member for connection ``key``, speaking ``wire``, subscribed; :meth:`leave`
        it when the connection ends.

        Without ``arrival`` the member arrives anonymous in the lobby and is sent the
        lobby's recent history. ``arrival`` (from the connection's URL) names the nick
        and rooms to arrive with, and ``since``: the id to resume after, which replays
        everything missed in those rooms instead of their recent history.

        ``principal`` is who the admission decided the connection acts as (None: a
        guest, made when first needed). A principal with members in the chat already
        (another device of an account) arrives with their nick, announced in the rooms
        none of them is in; else with its own ``nick`` (an account's name), or the
        arrival's. Rooms the principal may not be in are refused (``room_not_allowed``,
        after the welcome); with none left it arrives in the first room it may be in.

        ``arrival.session`` (a secret a welcome gave) resumes that session: its
        principal, its nick (held for it meanwhile) and, without rooms in the arrival,
        its rooms, and, without ``since``, what was said after its connection ended; a
        connection still using it is closed (taken over). A secret that
        opens nothing (unknown, expired, or another principal's than ``principal``) is
        answered with ``invalid_session`` after the welcome, and the connection arrives
        as a new guest. A JSON connection is given a session (its secret in the welcome).
        """
        arrival = arrival or Arrival()
        member = Member(key, wire, disconnect)
        subscription = self.bus.add(member, queue_depth, on_overflow)
        self.members[key] = member
        refusals: list[ErrorEvent] = []
        session = None
        if arrival.session is not None:
            session = self.sessions.find(arrival.session)
            if session is not None and principal is not None:
                if session.principal.id == principal.id:
                    session.principal = principal  # as the admission found it now
                else:
                    session = None  # another principal's: not this connection's to resume
            if session is None:
                refusals.append(ErrorEvent("invalid_session", render.INVALID_SESSION))
            else:
                principal = session.principal
        # Whose private messages a resume in the URL replays: the principal it arrives
        # as, unless that is a guest made just now, who has none yet.
        private_scope = None if principal is None else principal.id
        if principal is None and wire.subprotocol is not None:
            principal = Principal.guest()  # a JSON guest: its session needs one now
        devices: list[Member] = []
        if principal is not None:
            devices = list(self._devices.get(principal.id, ()))
            self._attach(member, principal)
        rooms = arrival.rooms or (session.rooms if session and session.rooms else (LOBBY,))
        if principal is not None and principal.rooms is not None:
            allowed = [name for name in rooms if principal.may_join(name)]
            refusals.extend(
                ErrorEvent("room_not_allowed", render.room_not_allowed(name))
                for name in arrival.rooms
                if name not in allowed
            )
            rooms = tuple(allowed) or tuple(sorted(principal.rooms))[:1]
        for name in rooms:
            if name not in member.rooms:
                try:
                    self._check_room_open(name)
                except CommandError as error:
                    refusals.append(ErrorEvent(error.code, error.text))
                    continue
                self._enter_room(member, name)
        if not member.rooms:
            self._enter_room(member, LOBBY)  # every room asked for is full: the lobby is not
        if devices and devices[0].nick is not None:
            # The principal holds its nick already: this device shares it.
            member.nick = devices[0].nick
            for name in member.rooms:
                self._announce_in_room("join", member, name)
        else:
            nick = arrival.nick
            if session is not None and session.nick is not None:
                nick = session.nick
            if principal is not None and principal.nick:
                nick = principal.nick
            if nick is not None:
                try:
                    self._change_nick(member, nick, None)
                except CommandError as error:
                    refusals.append(ErrorEvent(error.code, error.text))
        secret = None
        resumed_after = None
        if session is not None:
            secret = arrival.session  # the same secret goes on resuming it
            taken_over = session.member
            if taken_over is None:
                resumed_after = session.left_after
            self.sessions.resume(session, member)
            member.session = session
            if taken_over is not None:
                self._take_over(taken_over)
        elif wire.subprotocol is not None:
            secret, member.session = self.sessions.start(member.principal, member)
        welcome = Welcome(member.nick, member.current_room, list(member.rooms), secret, self.limits)
        subscription.offer(welcome)
        for refusal in refusals:
            subscription.offer(refusal)
        since = arrival.since
        if since is None and resumed_after is not None:
            since = resumed_after  # what was said since its connection ended
        if since is not None:
            subscription.offer(missed_since(self.log, since, member.rooms, private_scope))
        elif self.history_on_join:
            for name in member.rooms:
                subscription.offer(recent_history(self.log, name, self.history_on_join))
        return member, subscription

    def authenticate(self, member: Member, principal: Principal) -> None:
        """``member`` (a guest, usually) acts as ``principal`` from now on: a login.

        Its nick becomes the principal's: the one its other devices hold, else
        ``principal.nick`` (else it keeps its own), announced to its rooms as a nick
        change, or as a join if it was anonymous. It leaves the rooms the principal may
        not be in (with none left, it enters the first one it may be in). Its session,
        if it has one, is the principal's from now on. Raises :class:`CommandError`
        (``nick_taken``), changing nothing, when another principal holds that nick. The
        member is sent nothing: the login's answer is the caller's. A banned principal,
        or one whose nick is banned, is refused (``banned``), changing nothing.
        """
        self.check_not_banned(principal=principal.id, nick=principal.nick)
        self._become(member, principal, principal.nick or member.nick)
        if member.session is not None:
            member.session.principal = principal

    def _become(self, member: Member, principal: Principal, nick: str | None) -> None:
        """``member`` acts as ``principal``, named as its other devices are, else
        ``nick`` (see :meth:`authenticate`)."""
        current = member.known_principal
        if current is not None and current.id == principal.id:
            member.known_principal = principal
            return
        devices = [m for m in self._devices.get(principal.id, ()) if m is not member]
        if devices:
            nick = devices[0].nick
        if nick is not None:
            self._check_nick_free(nick, member, principal)
        old = member.nick
        if principal.rooms is not None:
            for name in [name for name in member.rooms if not principal.may_join(name)]:
                if old is not None:
                    self._announce_in_room("leave", member, name)
                self._exit_room(member, name)
            if not member.rooms and principal.rooms:
                self._enter_room(member, min(principal.rooms))
        self._detach(member)
        self._attach(member, principal)
        member.nick = nick
        if nick is None:
            return
        self._nicks.setdefault(nick.casefold(), member)
        if old is None:
            for name in member.rooms:
                self._announce_in_room("join", member, name)
        elif old != nick:
            self._announce(Presence("nick", old, self._ts(), new_nick=nick), member, member.rooms)

    def _resume_session(self, member: Member, secret: str) -> None:
        """The ``resume`` command's ``session``: ``member`` comes back as the session
        ``secret`` opens (its principal and nick; a connection still using it is taken
        over), and its own session ends. ``invalid_session`` when the secret opens
        nothing, or a session of another principal than the account or token ``member``
        acts as."""
        session = self.sessions.find(secret)
        current = member.known_principal
        if (
            session is not None
            and current is not None
            and current.kind is not PrincipalKind.GUEST
            and current.id != session.principal.id
        ):
            session = None
        if session is None:
            raise CommandError("invalid_session", render.INVALID_SESSION)
        self.check_not_banned(principal=session.principal.id, nick=session.nick)
        if session is member.session:
            return
        self._become(member, session.principal, session.nick or member.nick)
        own, taken_over = member.session, session.member
        self.sessions.resume(session, member)
        member.session = session
        if own is not None:
            self.sessions.end(own)
        if taken_over is not None:
            self._take_over(taken_over)

    def _take_over(self, member: Member) -> None:
        """Another connection resumed ``member``'s session: ``member`` leaves (its
        principal stays, on the new connection) and its connection is closed."""
        member.session = None
        self._depart(member, None)
        member.disconnect(TakenOver())

    def _end_session(self, member: Member) -> None:
        """``member``'s session is over (a quit, a kick): nothing resumes it."""
        session, member.session = member.session, None
        if session is not None and session.member is member:
            self.sessions.end(session)

    def leave(self, member: Member, subscription: Subscription, *, resumable: bool = True) -> None:
        """The end of ``member``'s connection: it leaves every room (announced if it had
        a nickname and was not already announced) and the bus. Its session, if it has
        one, is held for the nick hold (with its nick and rooms) when ``resumable`` (the
        connection was lost, not closed by its client), else ended. Idempotent."""
        nick, rooms = member.nick, tuple(member.rooms)
        self._depart(member, self._quit_notice(member, None))
        self.bus.remove(subscription)
        session, member.session = member.session, None
        if session is not None and session.member is member:
            if resumable:
                self.sessions.hold(session, nick, rooms, self.log.next_id - 1)
            else:
                self.sessions.end(session)

    def _quit_notice(self, member: Member, reason: str | None) -> Presence | None:
        """The presence notice for ``member`` quitting; anonymous members leave unseen."""
        if member.nick is None:
            return None
        return Presence("quit", member.nick, self._ts(), reason=reason)

    def _depart(self, member: Member, announcement: Presence | None) -> None:
        """Take ``member`` out of the chat, telling its rooms with ``announcement`` when
        it was its principal's last member; while other devices of its principal stay,
        only the rooms none of them is in are told, with a ``leave``."""
        if member.departed:
            return
        member.departed = True
        if member.rooms:
            member.left_from = member.current_room
        if len(self._fellows(member)) > 1:
            for name in member.rooms:
                self._announce_in_room("leave", member, name)
        elif announcement is not None:
            self._announce(announcement, member, member.rooms)
        for name in list(member.rooms):
            self._exit_room(member, name)
        self.members.pop(member.key, None)
        self._detach(member)

    def _fellows(self, member: Member) -> list[Member]:
        """Every member in the chat acting as ``member``'s principal, itself included
        while it is in."""
        principal = member.known_principal
        if principal is None:
            return [member]
        return self._devices.get(principal.id) or [member]

    def _attach(self, member: Member, principal: Principal) -> None:
        """``member`` acts as ``principal``, one of its devices."""
        member.known_principal = principal
        self._devices.setdefault(principal.id, []).append(member)

    def _detach(self, member: Member) -> None:
        """``member`` stops being one of its principal's devices, and stops holding its
        nick for it: the nick stays with the principal's other devices, if any."""
        principal = member.known_principal
        others: list[Member] = []
        if principal is not None:
            devices = self._devices.get(principal.id)
            if devices is not None and member in devices:
                devices.remove(member)
                others = devices
                if not devices:
                    del self._devices[principal.id]
        if member.nick is not None:
            folded = member.nick.casefold()
            if self._nicks.get(folded) is member:
                if others:
                    self._nicks[folded] = others[0]
                else:
                    del self._nicks[folded]

    # --- what clients send ---------------------------------------------------------------

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
                self._check_not_muted(member, room)
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
                to, principal, recipient = self._private_recipient(command.to)
                await self.messaging.to_principal(
                    member,
                    cid,
                    to,
                    principal,
                    command.text,
                    audience=lambda: self._private_audience(member, principal, recipient),
                )
                return None
            case History():
                return await self._history(member, command, cid)
            case Resume():
                if command.session is not None:
                    self._resume_session(member, command.session)
                # The member's writer answers (the ack says whether everything after
                # `since` is still kept), then replays it.
                order = missed_since(
                    self.log, command.since, member.rooms, _private_scope(member), cid
                )
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
                return await self._topic(member, command, cid)
            case Ban() | Unban() | ListBans() | Mute() | Unmute():
                self._require_admin(member)
                by = member.principal.name or OPERATOR
                return await self.moderate(command, cid, by=by, room=member.current_room)
            case Help():
                return help_ack(cid)
            case Quit():
                # The member's last lines (still being committed) come before its quit.
                await member.window.drained()
                self._end_session(member)
                self._depart(member, self._quit_notice(member, command.reason))
                self._reply(member, Ack("quit", cid))
                member.disconnect(Quitting())
                return None
            case Login() | Register() | Refresh():
                # The connection carries out logins (it knows the peer and the server's
                # accounts); one that reaches the chat is on a server without any.
                raise CommandError("no_accounts", render.NO_ACCOUNTS)
            case Kick():
                self._require_admin(member)
                reason = command.reason or render.kicked_by(member.nick or render.SOMEONE)
                if not self.kick(command.nick, reason):
                    raise CommandError("no_such_nick", render.no_such_nick(command.nick))
                return Ack("kick", cid, nick=command.nick, reason=reason)
            case Announce():
                self._require_admin(member)
                self._existing_room(command.room)
                reached = self.operator_says(command.text, command.room)
                return Ack("announce", cid, room=command.room, reached=reached)
        raise AssertionError(f"unhandled command {command!r}")

    @staticmethod
    def _is_admin(member: Member) -> bool:
        """Whether ``member`` acts as an admin (a guest never does: none is made)."""
        principal = member.known_principal
        return principal is not None and principal.admin

    def _require_admin(self, member: Member) -> None:
        """Refuse a moderation command (``not_admin``) from a member that is no admin's."""
        if not self._is_admin(member):
            raise CommandError("not_admin", render.NOT_ADMIN)

    def _members_of(self, name: str) -> Iterable[int]:
        """The keys of the members of room ``name`` now (none once it is gone)."""
        room = self.rooms.get(name)
        return () if room is None else room.members

    def _private_recipient(self, nick: str) -> tuple[str, Principal, Member | None]:
        """Whom a private message to ``nick`` is for: the nick as held, its principal,
        and a member of it in the chat (None when the nick is only held for a session
        whose connection is gone: stored for it, replayed when it resumes)."""
        folded = nick.casefold()
        recipient = self._nicks.get(folded)
        if recipient is not None and recipient.nick is not None:
            return recipient.nick, recipient.principal, recipient
        held = self.sessions.holder(folded)
        if held is not None and held.nick is not None:
            return held.nick, held.principal, None
        raise CommandError("no_such_nick", render.no_such_nick(nick))

    def _private_audience(
        self, sender: Member, principal: Principal, recipient: Member | None
    ) -> set[int]:
        """Who gets a private message live: every device of the sender's principal and
        of the recipient ``principal`` now (``recipient``, when it was made lazily)."""
        keys = {m.key for m in self._fellows(sender)}
        devices = self._devices.get(principal.id)
        if devices:
            keys.update(m.key for m in devices)
        elif recipient is not None:
            keys.add(recipient.key)
        return keys

    async def _history(self, member: Member, command: History, cid: str | int | None) -> Event:
        if command.private:
            principal = member.principal
            return await private_history_page(
                self.log, principal.id, command.limit, command.before, cid
            )
        name = command.room or member.current_room
        if name not in member.rooms:
            raise CommandError("not_in_room", render.not_in_room(name))
        return await history_page(self.log, name, command.limit, command.before, cid)

    def _check_nick_free(self, nick: str, member: Member, principal: Principal | None) -> None:
        """Raise ``nick_taken`` unless ``member``, acting as ``principal`` (None: a guest
        not yet made, who holds nothing), may take ``nick``: not reserved for anyone
        else, and not held by another principal, nor for another principal's session."""
        folded = nick.casefold()
        taken = folded in RESERVED_NICKS
        reserved_for = self.reserved_names.get(folded)
        if reserved_for is not None and (principal is None or principal.id != reserved_for):
            taken = True
        holder = self._nicks.get(folded)
        if holder is not None and holder is not member:
            held_by = holder.known_principal
            if principal is None or held_by is None or held_by.id != principal.id:
                taken = True
        if not taken:
            held = self.sessions.holder(folded)  # a hold that is over ends here
            if held is not None and (principal is None or held.principal.id != principal.id):
                taken = True
        if taken:
            raise CommandError("nick_taken", render.nick_taken(nick))

    def _change_nick(self, member: Member, nick: str, cid: str | int | None) -> Event:
        """``/nick``: the principal of ``member`` takes ``nick``, on all its devices
        (they are told, as everyone sharing a room with one of them is). A banned nick
        is refused (``banned``)."""
        self.check_not_banned(nick=nick)
        self._check_nick_free(nick, member, member.known_principal)
        folded = nick.casefold()
        fellows = self._fellows(member)
        old = member.nick
        if old is not None and self._nicks.get(old.casefold()) in fellows:
            del self._nicks[old.casefold()]
        self._nicks[folded] = member
        for fellow in fellows:
            fellow.nick = nick
        if old is None:
            # An anonymous member becomes visible: to its rooms it has just arrived.
            for name in {name: None for fellow in fellows for name in fellow.rooms}:
                self._announce(Presence("join", nick, self._ts(), room=name), member, [name])
        elif old != nick:
            rooms = {name: None for fellow in fellows for name in fellow.rooms}
            event = Presence("nick", old, self._ts(), new_nick=nick)
            self._announce(event, member, rooms, tell_fellows=True)
        return Ack("nick", cid, nick=nick)

    def _join(self, member: Member, name: str, cid: str | int | None) -> None:
        principal = member.known_principal
        if principal is not None and not principal.may_join(name):
            raise CommandError("room_not_allowed", render.room_not_allowed(name))
        before = tuple(member.rooms)
        joined = name not in member.rooms
        if joined:
            self._check_room_open(name)
            self._enter_room(member, name)
            self._announce_in_room("join", member, name)
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
        self._announce_in_room("leave", member, name)
        self._exit_room(member, name)
        return Ack("leave", cid, room=name, current=member.current_room)

    async def _topic(self, member: Member, command: Topic, cid: str | int | None) -> Event | None:
        name = command.room or member.current_room
        room = self._existing_room(name)
        if command.text is None:
            return Ack("topic", cid, request=command, room=name, topic=room.topic)
        if name not in member.rooms and not self._is_admin(member):
            # An admin may set the topic of any room, from wherever it is.
            raise CommandError("not_in_room", render.not_in_room(name))
        self._check_not_muted(member, name)
        topic = command.text or None
        try:
            await self.moderation.set_topic(name, topic, member.nick)
        except StoreError:
            raise CommandError("store_failed", render.TOPIC_NOT_STORED) from None
        # The topic was being stored: the room may be gone, or the member out of it.
        kept = self.rooms.get(name)
        if kept is None:
            raise CommandError("no_such_room", render.no_such_room(name))
        room = kept
        if name not in member.rooms and not self._is_admin(member):
            raise CommandError("not_in_room", render.not_in_room(name))
        room.topic = topic
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
        fellows = list(self._fellows(member))
        rooms = {name: None for fellow in fellows for name in fellow.rooms}
        self._announce(
            Presence("kick", member.nick or nick, self._ts(), reason=reason), member, rooms
        )
        for fellow in fellows:
            # Announced once above, for every device of the principal.
            self._end_session(fellow)
            fellow.departed = True
            fellow.left_from = fellow.current_room
            for name in list(fellow.rooms):
                self._exit_room(fellow, name)
            self.members.pop(fellow.key, None)
            self._detach(fellow)
            fellow.disconnect(Kicked(reason))
        return True

    # --- moderation -------------------------------------------------------------------------

    async def load_moderation(self) -> None:
        """Read the bans, mutes and topics from the store (the store is open): the rooms
        that exist get their topics back."""
        await self.moderation.load()
        for name, room in self.rooms.items():
            kept = self.moderation.topics.get(name)
            room.topic = None if kept is None else kept.topic

    def check_not_banned(
        self,
        *,
        nick: str | None = None,
        principal: str | None = None,
        address: str | None = None,
    ) -> None:
        """Raise ``banned`` (a :class:`CommandError`) when ``nick``, ``principal`` (an
        id) or ``address`` is banned."""
        ban = self.moderation.banned(nick=nick, principal=principal, address=address)
        if ban is not None:
            raise CommandError("banned", render.banned(ban.row.reason, ban.row.expires))

    def _check_not_muted(self, member: Member, room: str) -> None:
        """Raise ``muted`` when ``member`` may not speak in ``room``."""
        principal = member.known_principal
        mute = self.moderation.muted(room, member.nick, None if principal is None else principal.id)
        if mute is not None:
            raise CommandError("muted", render.muted(room, mute.row.expires))

    def banned_arrival(self, address: str | None, arrival: Arrival) -> BanInForce | None:
        """The ban that refuses a handshake from ``address`` asking for ``arrival``: on
        the address, the nick it asks for, or the principal (and nick) of the session it
        resumes; None when none does."""
        ban = self.moderation.banned(nick=arrival.nick, address=address)
        if ban is None and arrival.session is not None:
            session = self.sessions.find(arrival.session)
            if session is not None:
                ban = self.moderation.banned(principal=session.principal.id, nick=session.nick)
        return ban

    async def moderate(
        self, command: Command, cid: str | int | None, *, by: str, room: str | None
    ) -> Ack:
        """Carry out a moderation command (``/ban``, ``/unban``, ``/bans``, ``/mute``,
        ``/unmute``) for ``by`` (an admin's name, or the operator), ``room`` being where a
        mute without one applies; its ack. Raises :class:`CommandError` (``store_failed``
        when the store cannot keep it, nothing changed then)."""
        try:
            match command:
                case Ban():
                    ban, closed = await self.ban(
                        command.target, seconds=command.seconds, reason=command.reason, by=by
                    )
                    return Ack("ban", cid, ban=ban.describe(), closed=closed)
                case Unban():
                    target = await self._resolve(command.target)
                    if await self.moderation.unban(target) is None:
                        raise CommandError("not_banned", render.not_banned(str(command.target)))
                    return Ack("unban", cid, target=str(target))
                case ListBans():
                    return Ack("bans", cid, bans=[ban.describe() for ban in self.moderation.bans()])
                case Mute():
                    name = command.room or room
                    if name is None:
                        raise CommandError("bad_request", "say which room")
                    holder = self._nicks.get(command.nick.casefold())
                    # Its holder's principal (made now for a plain guest): a new nick
                    # does not lift the mute.
                    principal = None if holder is None else holder.principal.id
                    mute = await self.moderation.mute(
                        name, command.nick, principal, seconds=command.seconds, by=by
                    )
                    return Ack("mute", cid, nick=command.nick, room=name, expires=mute.row.expires)
                case Unmute():
                    name = command.room or room
                    if name is None:
                        raise CommandError("bad_request", "say which room")
                    if not await self.moderation.unmute(name, command.nick):
                        raise CommandError("not_muted", render.not_muted(command.nick, name))
                    return Ack("unmute", cid, nick=command.nick, room=name)
        except StoreError:
            raise CommandError("store_failed", render.MODERATION_NOT_STORED) from None
        except ModerationError as error:
            raise CommandError("bad_request", str(error)) from None
        raise AssertionError(f"not a moderation command: {command!r}")

    async def _resolve(self, target: BanTarget) -> BanTarget:
        """``target``, an ``account:NAME`` one made the account's principal."""
        if target.kind is not BanKind.ACCOUNT:
            return target
        principal = None if self.find_account is None else await self.find_account(target.value)
        if principal is None:
            raise CommandError("no_such_account", render.no_such_account(target.value))
        return BanTarget(BanKind.PRINCIPAL, principal.id)

    async def ban(
        self, target: BanTarget, *, seconds: int | None, reason: str | None, by: str
    ) -> tuple[BanInForce, int]:
        """Ban ``target`` (kept in the store first), then close every connection it
        bans (:meth:`enforce_ban`); the ban and how many connections were closed."""
        ban = await self.moderation.ban(
            await self._resolve(target), seconds=seconds, reason=reason, by=by
        )
        return ban, self.enforce_ban(ban)

    def enforce_ban(self, ban: BanInForce) -> int:
        """Close every connection ``ban`` applies to (its nick, principal or address),
        announced as a kick; end the held sessions of a banned principal. How many
        connections were closed."""
        reason = render.ban_kick(ban.row.reason)
        closed = 0
        for member in list(self.members.values()):
            principal = member.known_principal
            if self.moderation.matches(
                ban, member.nick, None if principal is None else principal.id, member.address
            ):
                self.expel(member, reason)
                closed += 1
        if ban.target.kind is BanKind.PRINCIPAL:
            self.sessions.end_principal(ban.target.value)
        return closed

    def expel(self, member: Member, reason: str) -> None:
        """Close ``member``'s connection for ``reason``, announced as a kick when it is
        its principal's last connection (its other devices stay)."""
        if member.departed:
            return
        self._end_session(member)
        notice = None
        if member.nick is not None:
            notice = Presence("kick", member.nick, self._ts(), reason=reason)
        self._depart(member, notice)
        member.disconnect(Kicked(reason))

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

    def _check_room_open(self, name: str) -> None:
        """Refuse entering room ``name`` when it would be one room too many
        (``too_many_rooms``) or it is full (``room_full``; never the lobby, which
        ``--max-connections`` bounds)."""
        room = self.rooms.get(name)
        if room is None:
            if self.max_rooms and len(self.rooms) >= self.max_rooms:
                raise CommandError("too_many_rooms", render.too_many_rooms(self.max_rooms))
        elif name != LOBBY and 0 < self.max_room_members <= len(room.members):
            raise CommandError("room_full", render.room_full(name, self.max_room_members))

    def _enter_room(self, member: Member, name: str) -> None:
        room = self.rooms.get(name)
        if room is None:
            kept = self.moderation.topics.get(name)
            room = self.rooms[name] = Room(name, None if kept is None else kept.topic)
        room.members[member.key] = member
        member.rooms.append(name)

    def _exit_room(self, member: Member, name: str) -> None:
        room = self.rooms[name]
        del room.members[member.key]
        member.rooms.remove(name)
        if not room.members and name != LOBBY:
            del self.rooms[name]

    def _announce(
        self,
        event: Presence,
        subject: Member,
        rooms: Iterable[str],
        *,
        tell_fellows: bool = False,
    ) -> None:
        """Publish presence ``event`` once to everyone sharing one of ``rooms`` with
        ``subject`` (not to ``subject``, nor to its principal's other devices unless
        ``tell_fellows``), skipping rooms over the presence limit."""
        audience: set[int] = set()
        for name in rooms:
            members = self.rooms[name].members
            if len(members) <= self.presence_limit:
                audience.update(members)
        fellows = self._fellows(subject)
        if tell_fellows:
            audience.update(fellow.key for fellow in fellows)
            audience.discard(subject.key)
        else:
            audience.difference_update(fellow.key for fellow in fellows)
        if audience:
            self.bus.publish(event, audience)

    def _announce_in_room(self, kind: str, member: Member, name: str) -> None:
        """Announce ``member`` joining (``kind`` "join") or leaving ("leave") room
        ``name``, as its principal: only when none of its other devices is there (a
        principal's presence is announced once), and only if it has a nick."""
        if member.nick is None:
            return
        for fellow in self._fellows(member):
            if fellow is not member and name in fellow.rooms:
                return
        self._announce(Presence(kind, member.nick, self._ts(), room=name), member, [name])
