"""The client's side of a ``trio-chat.v1`` conversation, without I/O or styling of its own.

:class:`JsonSession` owns what outlives one connection (cids, unanswered messages, the
nickname, the rooms, the highest id seen per room) and the start-up of each connection
(nickname, room, resends), an explicit state (:class:`StartUp`). It is fed the server's
lines and the user's, and answers with an :class:`Output`: lines to show and JSON lines
to send.
"""

from __future__ import annotations

import enum
import getpass
import itertools
import json
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from typing import Any, TypeGuard

from trio_chat.core.arrival import Arrival, arrival_resource
from trio_chat.core.commands import (
    Command,
    CommandError,
    Help,
    Join,
    Leave,
    Nick,
    Private,
    Quit,
    Say,
    command_to_json,
    parse_plain,
)
from trio_chat.core.render import error_line, now_known_as

from .terminal import make_safe
from .view import UNREADABLE, Style, help_lines, render_event

__all__ = ["NEXT_STEPS", "JsonSession", "Output", "StartUp", "login_nick", "nick_candidate"]

#: Nicknames tried at start-up before giving up: NAME, NAME-2, ..., NAME-20.
NICK_ATTEMPTS = 20
#: The nickname when the login name has no character a nickname may use.
FALLBACK_NICK = "guest"
#: The longest nickname the server accepts (``commands.NAME_PATTERN``).
MAX_NICK_LENGTH = 32
_NOT_IN_NICKS = re.compile(r"[^A-Za-z0-9_.\-]")

#: The key of private messages among the highest ids seen per room (no room has it).
PRIVATE = "\0private"


def login_nick(login: str | None = None) -> str:
    """The default nickname: the login name (``getpass.getuser()`` unless ``login`` is
    given) without the characters a nickname may not have, at most 32 of them;
    ``guest`` when nothing is left or there is no login name."""
    if login is None:
        try:
            login = getpass.getuser()
        except (OSError, KeyError, ImportError):
            login = ""
    return _NOT_IN_NICKS.sub("", login)[:MAX_NICK_LENGTH] or FALLBACK_NICK


def nick_candidate(nick: str, attempt: int) -> str:
    """The nickname to try at ``attempt`` (1-based): ``nick``, then ``nick-2``, ``nick-3``...
    shortened so that the whole stays within 32 characters."""
    if attempt == 1:
        return nick
    suffix = f"-{attempt}"
    return nick[: MAX_NICK_LENGTH - len(suffix)] + suffix


class StartUp(enum.Enum):
    """Where a connection's start-up is. :meth:`JsonSession._move_to` is the one place
    that changes it, along :data:`NEXT_STEPS`."""

    #: The connection is open; its ``welcome`` has not come yet.
    AWAITING_WELCOME = "awaiting welcome"
    #: A nick request is out (``NAME``, then ``NAME-2``... while taken).
    TAKING_NICK = "taking nick"
    #: The first start-up's join of the chosen room is out.
    JOINING = "joining"
    #: The start-up is over (the unanswered messages resent): typed lines may go.
    READY = "ready"


#: The steps each start-up step may move to; a lost connection starts again from
#: AWAITING_WELCOME whatever the step.
NEXT_STEPS: Mapping[StartUp, frozenset[StartUp]] = {
    StartUp.AWAITING_WELCOME: frozenset({StartUp.TAKING_NICK, StartUp.JOINING, StartUp.READY}),
    StartUp.TAKING_NICK: frozenset({StartUp.TAKING_NICK, StartUp.JOINING, StartUp.READY}),
    StartUp.JOINING: frozenset({StartUp.READY}),
    StartUp.READY: frozenset(),
}


@dataclass
class Output:
    """What a :class:`JsonSession` step asks for: lines to show, JSON lines to send."""

    show: list[str] = field(default_factory=list)
    send: list[str] = field(default_factory=list)


def _is_id(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


class JsonSession:
    """The client's side of a ``trio-chat.v1`` conversation, across reconnections, without I/O.

    Owns what outlives a connection: the ``cid``\\ s (a random prefix per session, so
    that two runs of the client never reuse one, then a counter), the messages sent but
    not yet answered (resent after a reconnection with the same ``cid``, which the server
    recognises as long as the server session is resumed), the nickname in use, the rooms
    in order (the current one last), the highest message id seen per room (and for
    private messages), and the server session's secret (:attr:`session`, from the last
    ``welcome``; kept in memory only, never shown, logged or written anywhere). And what lasts one
    connection: the commands waiting for their ``ack`` or ``error``, and the start-up.

    The start-up of each connection is :attr:`startup` (a :class:`StartUp`). The first:
    on ``welcome`` (AWAITING_WELCOME) it asks for ``nick`` (TAKING_NICK, retrying
    ``NAME-2``, ``NAME-3``... on ``nick_taken``, up to :data:`NICK_ATTEMPTS` names), then
    joins ``room`` if given (JOINING). After :meth:`reconnecting`, the connection should be
    opened with :meth:`resume_resource` (it brings back the nick, the rooms and what was
    missed); on its ``welcome`` the session resends the unanswered messages, or, if the
    nick did not come back (still taken), takes the next ``NAME-N`` first. READY
    (:attr:`ready`) ends the start-up, and only then should typed lines be sent.

    :meth:`receive` takes each line from the server, :meth:`typed` each line from the
    user; both return an :class:`Output`. A ``message`` or ``private`` event whose id is
    not above the highest seen in its room (or among private messages) is dropped: it was
    shown already. The server's answer to a resume (an ``ack`` of ``resume`` without a
    ``cid``, since the resume is asked for in the URL) is shown only when it says
    ``"recovered": false``: one line telling the user that messages were missed.
    """

    def __init__(
        self,
        style: Style,
        nick: str,
        room: str | None = None,
        tz: tzinfo | None = None,
        *,
        cid_prefix: str | None = None,
        logged_in: bool = False,
    ) -> None:
        self.style = style
        #: The connection logs in at the handshake (an account or a token): it arrives
        #: with the nick the server gives it, and asks for none.
        self.logged_in = logged_in
        #: Set when the server asked for a new login token (a ``refresh`` event) and the
        #: session was told someone renews it (:attr:`renews_tokens`): that someone
        #: sends it, and clears this.
        self.refresh_asked = False
        #: Whether a ``refresh`` event is for the caller to answer (a token file), not
        #: for the user (it is then not shown).
        self.renews_tokens = False
        self.nick = nick
        self.room = room
        self.tz = tz
        #: This connection's start-up step; changed by :meth:`_move_to` only.
        self.startup = StartUp.AWAITING_WELCOME
        #: True once the user sent ``/quit``: the close that follows is the user's wish.
        self.quitting = False
        #: The user's rooms, in the order to give them back on reconnecting: current last.
        self.rooms: list[str] = []
        #: The nickname the server last granted us (None while anonymous).
        self.nick_in_use: str | None = None
        #: The highest message id seen, live or replayed; None before the first.
        self.last_id: int | None = None
        #: The secret that resumes our server session (``welcome.session``): what makes
        #: a reconnection come back as us, with our nick and private messages. In
        #: memory only; None before the first welcome (or from a server without one).
        self.session: str | None = None
        self._prefix = cid_prefix if cid_prefix is not None else secrets.token_hex(4)
        self._cids = itertools.count(1)
        self._pending: dict[str, Command] = {}
        self._unanswered: dict[str, str] = {}  # cid -> the JSON line, oldest first
        self._marks: dict[str, int] = {}  # room (or PRIVATE) -> the highest id seen there
        self._resumable = False  # a start-up was over once: later connections resume
        self._attempt = 1
        self._wanted = nick  # the nick a NAME-N replaces, for the message saying so
        # The cid of the start-up's request out (TAKING_NICK, JOINING), None otherwise.
        self._startup_cid: str | None = None

    # --- the start-up ---------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether this connection's start-up is over: typed lines may be sent."""
        return self.startup is StartUp.READY

    @property
    def welcomed(self) -> bool:
        """Whether this connection got its ``welcome``."""
        return self.startup is not StartUp.AWAITING_WELCOME

    def _move_to(self, step: StartUp) -> None:
        """The one place the start-up step changes (:meth:`reconnecting` aside, which
        starts it again); a move :data:`NEXT_STEPS` does not allow is a bug."""
        if step not in NEXT_STEPS[self.startup]:
            raise RuntimeError(f"no start-up step from {self.startup.value} to {step.value}")
        self.startup = step

    # --- reconnection ---------------------------------------------------------------------

    @property
    def unanswered(self) -> list[str]:
        """The messages (JSON lines) sent and not yet answered, oldest first."""
        return list(self._unanswered.values())

    def reconnecting(self) -> None:
        """The connection is gone: forget what only it could answer (the commands waiting
        for an answer, except messages, which are resent) and wait for a ``welcome``."""
        self._pending = {
            cid: command for cid, command in self._pending.items() if cid in self._unanswered
        }
        self.startup = StartUp.AWAITING_WELCOME
        self._startup_cid = None

    def resume_resource(self, resource: str) -> str:
        """``resource`` (the URL's path and query) with the query that resumes this
        session: ``nick=``, one ``room=`` per room (current last), ``since=`` (the
        highest id seen; left out before any: the server then replays what was said
        after our connection ended, or, when it cannot resume our session, sends its
        recent history as to any newcomer) and ``session=`` (its secret, when the server
        gave one). Before the first start-up is over, ``resource`` unchanged."""
        if not self._resumable:
            return resource
        arrival = Arrival(self.nick_in_use, tuple(self.rooms), self.last_id, self.session)
        return arrival_resource(resource, arrival)

    # --- commands -------------------------------------------------------------------------

    def _request(self, command: Command) -> tuple[str, str]:
        """The next ``cid`` and ``command`` as JSON with it; remembered until answered
        (messages also until the answer comes on some connection)."""
        cid = f"{self._prefix}-{next(self._cids)}"
        request = command_to_json(command, cid)
        if isinstance(command, Say | Private):
            resend = command
            moving = any(isinstance(other, Join | Leave) for other in self._pending.values())
            if isinstance(command, Say) and command.room is None and self.rooms and not moving:
                # Resent on another connection, it must go to the room it was said in,
                # which may no longer be the current one by then.
                resend = replace(command, room=self.rooms[-1])
            self._unanswered[cid] = command_to_json(resend, cid)
        self._pending[cid] = command
        return cid, request

    def _ask_nick(self) -> Output:
        """TAKING_NICK: ask for the nick of this attempt."""
        self._move_to(StartUp.TAKING_NICK)
        self._startup_cid, request = self._request(Nick(nick_candidate(self.nick, self._attempt)))
        return Output(send=[request])

    def _after_nick(self, output: Output) -> Output:
        """The nickname step is over: JOINING the room (first start-up), or READY."""
        if self.room is None or self._resumable:
            return self._become_ready(output)
        self._move_to(StartUp.JOINING)
        self._startup_cid, request = self._request(Join(self.room))
        output.send.append(request)
        return output

    def _become_ready(self, output: Output) -> Output:
        """READY: the start-up is over; resend what no connection answered, in order."""
        self._move_to(StartUp.READY)
        self._startup_cid = None
        self._resumable = True
        output.send.extend(self._unanswered.values())
        return output

    # --- events ---------------------------------------------------------------------------

    def receive(self, line: str) -> Output:
        """Take one line (one JSON event) from the server."""
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):  # nested deeper than the decoder recurses too
            event = None
        if not isinstance(event, dict):
            return Output(show=[self.style.dim(UNREADABLE)])
        kind = event.get("type")
        if kind == "welcome" and self.startup is StartUp.AWAITING_WELCOME:
            return self._welcome(event)
        if kind == "presence":
            self._follow_presence(event)
        if kind == "refresh" and self.renews_tokens:
            self.refresh_asked = True
            return Output()
        if kind in ("message", "private") and not self._first_sight(event):
            return Output()
        if kind not in ("ack", "error"):
            return Output(show=self._render(event, None))
        cid = event.get("cid")
        request = self._pending.pop(cid, None) if isinstance(cid, str) else None
        if request is None or not isinstance(cid, str):
            return Output(show=self._render(event, None))
        self._unanswered.pop(cid, None)
        startup_answer = cid == self._startup_cid
        if startup_answer and self.startup is StartUp.TAKING_NICK:
            return self._nick_answered(event, request)
        shown = self._render(event, request)
        if startup_answer and self.startup is StartUp.JOINING:
            self._become_ready(Output())
        if kind == "ack":
            self._track(event)
            if event.get("command") == "nick" and self.nick_in_use is not None:
                # The user's own choice: the base of any NAME-N from now on.
                self.nick = self._wanted = self.nick_in_use
                self._attempt = 1
        return Output(show=shown)

    def _follow_presence(self, event: dict[str, Any]) -> None:
        """Another device of ours renamed us (``/nick`` there renames all of them)."""
        nick, new_nick = event.get("nick"), event.get("new_nick")
        if (
            event.get("event") == "nick"
            and isinstance(new_nick, str)
            and isinstance(nick, str)
            and self.nick_in_use is not None
            and nick.casefold() == self.nick_in_use.casefold()
        ):
            self.nick_in_use = self.nick = self._wanted = new_nick

    def _welcome(self, event: dict[str, Any]) -> Output:
        """A connection's ``welcome``: the first start-up, or a resumed session. Its
        secret replaces ours: the same one when the session was resumed, a new one when
        it could not be (an ``invalid_session`` error follows)."""
        secret = event.get("session")
        if isinstance(secret, str):
            self.session = secret
        current, rooms = event.get("room"), event.get("rooms")
        if isinstance(rooms, list):
            self.rooms = [room for room in rooms if isinstance(room, str) and room != current]
            if isinstance(current, str):
                self.rooms.append(current)
        nick = event.get("nick")
        if not self._resumable and self.logged_in and isinstance(nick, str):
            # The account's (or token's) nick: the server chose it, nothing to ask.
            self.nick = self._wanted = nick
            self.nick_in_use = nick
            return self._after_nick(Output())
        if not self._resumable:
            return self._ask_nick()
        if self.nick_in_use is None or (
            isinstance(nick, str) and nick.casefold() == self.nick_in_use.casefold()
        ):
            self.nick_in_use = nick if isinstance(nick, str) else None
            return self._become_ready(Output())
        # Our nick did not come back: the server may not have noticed yet that our
        # previous connection is gone. Take the next NAME-N, as at start-up.
        self._wanted = self.nick_in_use
        self.nick_in_use = None
        self._attempt += 1
        return self._ask_nick()

    def _nick_answered(self, event: dict[str, Any], request: Command) -> Output:
        """The answer to a start-up nick request: the next ``NAME-N`` if taken."""
        self._startup_cid = None
        taken = event.get("type") == "error" and event.get("code") == "nick_taken"
        if taken and self._attempt < NICK_ATTEMPTS:
            self._attempt += 1
            return self._ask_nick()
        if event.get("type") == "ack":
            self._track(event)
        if event.get("type") == "ack" and self._attempt > 1:
            got = make_safe(str(event.get("nick")))
            wanted = make_safe(self._wanted)
            shown = [self.style.dim(f"{now_known_as(got)} ({wanted} is taken)")]
        else:
            shown = self._render(event, request)
        return self._after_nick(Output(show=shown))

    def _first_sight(self, event: dict[str, Any]) -> bool:
        """Whether ``event`` (a message or a private message) is seen for the first time:
        its id is above every id seen in its room (or among private messages). Records
        it. An event without a usable id is let through."""
        ident = event.get("id")
        if not _is_id(ident):
            return True
        key = PRIVATE if event.get("type") == "private" else str(event.get("room"))
        if key in self._marks and ident <= self._marks[key]:
            return False
        self._marks[key] = ident
        if self.last_id is None or ident > self.last_id:
            self.last_id = ident
        return True

    def _render(self, event: dict[str, object], request: Command | None) -> list[str]:
        return render_event(event, self.style, request=request, rooms=self.rooms, tz=self.tz)

    def _track(self, ack: dict[str, object]) -> None:
        """Follow the user's nick and rooms: a join adds (or moves) a room to the end, as
        the current one; a leave removes one and names the new current room."""
        command, room = ack.get("command"), ack.get("room")
        if command == "nick" and isinstance(ack.get("nick"), str):
            self.nick_in_use = str(ack["nick"])
        elif command == "join" and isinstance(room, str):
            self.rooms = [name for name in self.rooms if name != room] + [room]
        elif command == "leave" and isinstance(room, str):
            current = ack.get("current")
            self.rooms = [name for name in self.rooms if name not in (room, current)]
            if isinstance(current, str):
                self.rooms.append(current)

    def typed(self, line: str) -> Output:
        """Take one line the user typed (not ``exit``, not blank): ``/help`` is answered
        here, a wrong command is an ``Error:`` line and sends nothing, anything else is
        sent as its JSON command."""
        try:
            command = parse_plain(line)
        except CommandError as error:
            return Output(show=[self.style.error(error_line(make_safe(error.text)))])
        if isinstance(command, Help):
            return Output(show=help_lines(self.style))
        if isinstance(command, Quit):
            self.quitting = True
        return Output(send=[self._request(command)[1]])
