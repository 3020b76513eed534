"""The interactive client: ``python -m trio_chat.client [URL] [--name NICK] [--room ROOM]``.

The client offers the ``trio-chat.v1`` subprotocol. When the server selects it (JSON
mode), the client takes a nickname (``--name``, or the login name; ``NAME-2``,
``NAME-3``... when taken), joins ``--room``, turns typed lines into JSON commands with
the same parser the server uses, answers ``/help`` itself, and renders events with
:mod:`trio_chat.view`. When the server does not select it (the tutorial's server, or
``--plain``), lines go out and come in as plain text, made safe for the terminal.

The stdin reader runs for the whole session (in a worker thread that is abandoned on
exit) and queues the user's lines. Each connection has one nursery with two chat tasks:
the sender drains the queue, the receiver shows what the server sends. Whichever side
ends the connection cancels the other:

* the user leaves (``exit``, end of input, Ctrl-C, ``/quit``): close with 1000, exit
  status 0;
* the connection is lost without a close frame, or the server closes it with 1001
  (shutdown), 1011, 1012, 1013 or 1008 ``slow consumer``: print the reason, then
  ``reconnecting in 2.0 s…`` and try again after that delay (capped exponential backoff
  with jitter, see :class:`Backoff`), as long as it takes; lines typed meanwhile are
  queued and sent once back. In JSON mode the new connection resumes the session (same
  nick and rooms, every message missed since the last one seen, shown with a
  ``[history]`` mark) and resends the messages the server had not answered, with the
  same ``cid``, so the server stores none twice;
* any other close (a kick, 1000 from the server, a protocol error), a handshake refused
  with a 4xx status, or ``--no-reconnect``: print the reason, exit status 1, at once.

The first connection failing (no server) is one line and exit status 1, with no retry.
For tests, ``TRIO_CHAT_RECONNECT_BACKOFF=INITIAL[,CAP]`` (seconds) replaces the default
backoff of 0.5 s doubling up to 10 s.
"""

from __future__ import annotations

import argparse
import getpass
import itertools
import json
import os
import random
import re
import secrets
import signal
import socket
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import tzinfo
from typing import Any, TypeGuard
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from .commands import (
    PROTOCOL,
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
    valid_name,
)
from .config import DEFAULT_PORT
from .lines import read_lines
from .protocol import SLOW_CONSUMER, CloseCode, describe_close
from .terminal import Screen, make_safe
from .view import UNREADABLE, Style, colour_wanted, help_lines, render_event

__all__ = [
    "Backoff",
    "ChatClient",
    "JsonSession",
    "Output",
    "TypedLines",
    "login_nick",
    "main",
    "parse_args",
    "should_reconnect",
]

DEFAULT_URL = f"ws://localhost:{DEFAULT_PORT}"

#: Time allowed for TCP connect plus the WebSocket handshake.
CONNECT_TIMEOUT = 10.0
#: Time allowed for the server to answer our close frame; the user asked to leave,
#: so this is kept short (the whole exit must take well under a second).
CLOSE_TIMEOUT = 0.5
#: Largest message accepted from the server: the server batches lines into frames of
#: about 64 KiB, plus one line of up to its own message limit.
MAX_INCOMING_MESSAGE = 1024 * 1024
#: Nicknames tried at start-up before giving up: NAME, NAME-2, ..., NAME-20.
NICK_ATTEMPTS = 20
#: The nickname when the login name has no character a nickname may use.
FALLBACK_NICK = "guest"
#: The longest nickname the server accepts (``commands.NAME_PATTERN``).
MAX_NICK_LENGTH = 32
_NOT_IN_NICKS = re.compile(r"[^A-Za-z0-9_.\-]")

#: The first delay before reconnecting, and the most it grows to (seconds).
RECONNECT_INITIAL = 0.5
RECONNECT_CAP = 10.0
#: No delay is shorter (unless the initial one is).
MIN_RECONNECT_DELAY = 0.1
#: ``INITIAL[,CAP]`` seconds: replaces the backoff above (a hook for tests).
BACKOFF_ENV = "TRIO_CHAT_RECONNECT_BACKOFF"
#: Close codes after which the client reconnects (and 1008 ``slow consumer``).
RECONNECT_CODES = frozenset({1001, 1005, 1006, 1011, 1012, 1013})
#: Lines typed while disconnected that are kept to send once back; later ones are dropped.
TYPED_LINES_LIMIT = 1000
#: The key of private messages among the highest ids seen per room (no room has it).
PRIVATE = "\0private"

#: Said when a line is typed while disconnected.
QUEUED = "(not connected: this line will be sent once reconnected)"

START_PLAIN = "Start chatting (type messages and press Enter; 'exit' to quit)"
START_JSON = (
    "Start chatting (type messages and press Enter; '/help' lists the commands, 'exit' to quit)"
)


class ClientError(Exception):
    """A failure to report to the user as one line, with exit status 1 (unless it is
    worth trying again, ``retry``, and the client is reconnecting)."""

    def __init__(self, text: str, *, retry: bool = False) -> None:
        super().__init__(text)
        self.retry = retry


def parse_url(url: str) -> tuple[str, int, str]:
    """Split a ``ws://host[:port][/path]`` URL into host, port and resource."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ClientError(f"Invalid URL {url!r}: {exc}") from None
    if parts.scheme != "ws":
        raise ClientError(f"Invalid URL {url!r}: expected ws://HOST[:PORT][/PATH]")
    if not parts.hostname:
        raise ClientError(f"Invalid URL {url!r}: no host")
    resource = parts.path or "/"
    if parts.query:
        resource += f"?{parts.query}"
    return parts.hostname, port if port is not None else 80, resource


def explain_connect_error(exc: OSError) -> str:
    """A short human reason for a failed TCP connect."""
    causes: list[BaseException] = [exc]
    if isinstance(exc.__cause__, BaseExceptionGroup):
        causes.extend(exc.__cause__.exceptions)
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "connection refused. Is the server running?"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return exc.strerror or str(exc)


def is_exit_command(line: str) -> bool:
    """``exit`` in any case, surrounded by any spaces."""
    return line.strip().lower() == "exit"


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


def should_reconnect(code: int | None, reason: str | None) -> bool:
    """Whether a connection that ended with close ``code`` and ``reason`` is worth
    reconnecting after: when it was lost without a close frame (no code, 1005, 1006), the
    server is going away or restarting (1001, 1012), had an internal error (1011) or is
    overloaded (1013), or dropped us as a ``slow consumer`` (1008 with exactly that
    reason). Not after a normal close (1000), a kick (1008 with any other reason) or a
    protocol error (1002, 1003, 1007, 1009, 1010...)."""
    if code is None or code in RECONNECT_CODES:
        return True
    return code == CloseCode.POLICY_VIOLATION and reason == SLOW_CONSUMER


class Backoff:
    """The delays between reconnection attempts: capped exponential backoff with jitter.

    The nominal delay starts at ``initial`` seconds and doubles after each attempt up to
    ``cap``; each delay is drawn uniformly between half and all of the nominal one (so
    clients dropped together do not all come back at once), and is never below
    :data:`MIN_RECONNECT_DELAY` (or ``initial``, when that is smaller). :meth:`reset`
    after a connection that worked starts again from ``initial``.
    """

    def __init__(
        self,
        initial: float = RECONNECT_INITIAL,
        cap: float = RECONNECT_CAP,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self.initial = initial
        self.cap = max(cap, initial)
        self._uniform = uniform
        self._nominal = initial

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Backoff:
        """The default backoff, or ``INITIAL[,CAP]`` seconds from :data:`BACKOFF_ENV`
        (a hook for tests, which cannot sit through long waits; a value that is not one
        or two positive numbers is ignored)."""
        try:
            values = [float(part) for part in environ.get(BACKOFF_ENV, "").split(",")]
        except ValueError:
            return cls()
        if not 1 <= len(values) <= 2 or not all(0 < value < 3600 for value in values):
            return cls()
        return cls(values[0], values[1] if len(values) == 2 else max(RECONNECT_CAP, values[0]))

    def next_delay(self) -> float:
        """The delay before the next attempt; the one after will be twice as long."""
        nominal = self._nominal
        self._nominal = min(self.cap, nominal * 2)
        return max(min(MIN_RECONNECT_DELAY, self.initial), self._uniform(nominal / 2, nominal))

    def reset(self) -> None:
        """A connection worked: the next delay is the initial one again."""
        self._nominal = self.initial


class TypedLines:
    """The lines the user typed that are not sent yet: a bounded FIFO queue, then its end.

    The stdin reader :meth:`put`\\ s lines and :meth:`end`\\ s it (``exit`` or end of
    input); the sender of the connection of the moment takes them with :meth:`first` and
    :meth:`pop` once a line is dealt with, so a line is not lost when its connection is.
    Beyond ``limit`` lines waiting, :meth:`put` refuses.
    """

    def __init__(self, limit: int = TYPED_LINES_LIMIT) -> None:
        self._lines: deque[str] = deque()
        self._limit = limit
        self.ended = False
        self._changed = trio.Event()

    def __len__(self) -> int:
        return len(self._lines)

    def put(self, line: str) -> bool:
        """Queue ``line``; False (and nothing queued) when :data:`limit` lines wait."""
        if len(self._lines) >= self._limit:
            return False
        self._lines.append(line)
        self._wake()
        return True

    def end(self) -> None:
        """No more lines will come: once the queued ones are taken, :meth:`first` is None."""
        self.ended = True
        self._wake()

    async def first(self) -> str | None:
        """The oldest line still queued (left in the queue), waiting for one if there is
        none; None once the queue is empty and ended. Cancellation takes nothing."""
        while not self._lines and not self.ended:
            await self._changed.wait()
        return self._lines[0] if self._lines else None

    def pop(self) -> None:
        """Drop the line :meth:`first` returned: it has been dealt with."""
        self._lines.popleft()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


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
    recognises), the nickname in use, the rooms in order (the current one last), and the
    highest message id seen per room (and for private messages). And what lasts one
    connection: the commands waiting for their ``ack`` or ``error``, and the start-up.

    The first start-up: on ``welcome`` it asks for ``nick`` (retrying ``NAME-2``,
    ``NAME-3``... on ``nick_taken``, up to :data:`NICK_ATTEMPTS` names), then joins
    ``room`` if given. After :meth:`reconnecting`, the connection should be opened with
    :meth:`resume_resource` (it brings back the nick, the rooms and what was missed); on
    its ``welcome`` the session resends the unanswered messages, or, if the nick did not
    come back (still taken), takes the next ``NAME-N`` first. :attr:`ready` turns true
    when the start-up is over, and only then should typed lines be sent.

    :meth:`receive` takes each line from the server, :meth:`typed` each line from the
    user; both return an :class:`Output`. A ``message`` or ``private`` event whose id is
    not above the highest seen in its room (or among private messages) is dropped: it was
    shown already.
    """

    def __init__(
        self,
        style: Style,
        nick: str,
        room: str | None = None,
        tz: tzinfo | None = None,
        *,
        cid_prefix: str | None = None,
    ) -> None:
        self.style = style
        self.nick = nick
        self.room = room
        self.tz = tz
        #: True once the start-up of this connection is answered.
        self.ready = False
        #: True once this connection got its ``welcome``.
        self.welcomed = False
        #: True once the user sent ``/quit``: the close that follows is the user's wish.
        self.quitting = False
        #: The user's rooms, in the order to give them back on reconnecting: current last.
        self.rooms: list[str] = []
        #: The nickname the server last granted us (None while anonymous).
        self.nick_in_use: str | None = None
        #: The highest message id seen, live or replayed; None before the first.
        self.last_id: int | None = None
        self._prefix = cid_prefix if cid_prefix is not None else secrets.token_hex(4)
        self._cids = itertools.count(1)
        self._pending: dict[str, Command] = {}
        self._unanswered: dict[str, str] = {}  # cid -> the JSON line, oldest first
        self._marks: dict[str, int] = {}  # room (or PRIVATE) -> the highest id seen there
        self._started = False  # the first start-up is over
        self._attempt = 1
        self._wanted = nick  # the nick a NAME-N replaces, for the message saying so
        self._nick_cid: str | None = None
        self._join_cid: str | None = None

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
        self.ready = False
        self.welcomed = False
        self._nick_cid = None
        self._join_cid = None

    def resume_resource(self, resource: str) -> str:
        """``resource`` (the URL's path and query) with the query that resumes this
        session: ``nick=``, one ``room=`` per room (current last) and ``since=`` (the
        highest id seen; left out before any, so the server sends its recent history as
        to any newcomer). Before the first start-up is over, ``resource`` unchanged."""
        if not self._started:
            return resource
        parts = urlsplit(resource)
        query = [
            (key, value)
            for key, value in parse_qsl(parts.query, keep_blank_values=True)
            if key not in ("nick", "room", "since")
        ]
        if self.nick_in_use is not None:
            query.append(("nick", self.nick_in_use))
        query.extend(("room", room) for room in self.rooms)
        if self.last_id is not None:
            query.append(("since", str(self.last_id)))
        return urlunsplit(("", "", parts.path or "/", urlencode(query), ""))

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
        self._nick_cid, request = self._request(Nick(nick_candidate(self.nick, self._attempt)))
        return Output(send=[request])

    def _after_nick(self, output: Output) -> Output:
        """The nickname step is over: join the room (first start-up), or be ready."""
        if self.room is None or self._started:
            return self._become_ready(output)
        self._join_cid, request = self._request(Join(self.room))
        output.send.append(request)
        return output

    def _become_ready(self, output: Output) -> Output:
        """The start-up is over: resend what no connection answered, in order."""
        self.ready = True
        self._started = True
        output.send.extend(self._unanswered.values())
        return output

    # --- events ---------------------------------------------------------------------------

    def receive(self, line: str) -> Output:
        """Take one line (one JSON event) from the server."""
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            return Output(show=[self.style.dim(UNREADABLE)])
        kind = event.get("type")
        if kind == "welcome" and not self.welcomed:
            return self._welcome(event)
        if kind in ("message", "private") and not self._first_sight(event):
            return Output()
        if kind not in ("ack", "error"):
            return Output(show=self._render(event, None))
        cid = event.get("cid")
        ours = isinstance(cid, str) and cid in self._pending
        request = self._pending.pop(cid) if ours else None
        if request is None:
            return Output(show=self._render(event, None))
        self._unanswered.pop(cid, None)
        if cid == self._nick_cid:
            return self._nick_answered(event, request)
        shown = self._render(event, request)
        if cid == self._join_cid:
            self._join_cid = None
            self._become_ready(Output())
        if kind == "ack":
            self._track(event)
            if event.get("command") == "nick" and self.nick_in_use is not None:
                # The user's own choice: the base of any NAME-N from now on.
                self.nick = self._wanted = self.nick_in_use
                self._attempt = 1
        return Output(show=shown)

    def _welcome(self, event: dict[str, Any]) -> Output:
        """A connection's ``welcome``: the first start-up, or a resumed session."""
        self.welcomed = True
        current, rooms = event.get("room"), event.get("rooms")
        if isinstance(rooms, list):
            self.rooms = [room for room in rooms if isinstance(room, str) and room != current]
            if isinstance(current, str):
                self.rooms.append(current)
        if not self._started:
            return self._ask_nick()
        nick = event.get("nick")
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
        self._nick_cid = None
        taken = event.get("type") == "error" and event.get("code") == "nick_taken"
        if taken and self._attempt < NICK_ATTEMPTS:
            self._attempt += 1
            return self._ask_nick()
        if event.get("type") == "ack":
            self._track(event)
        if event.get("type") == "ack" and self._attempt > 1:
            got = make_safe(str(event.get("nick")))
            wanted = make_safe(self._wanted)
            shown = [self.style.dim(f"* You are now known as {got} ({wanted} is taken)")]
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
            return Output(show=[self.style.error(f"Error: {make_safe(error.text)}")])
        if isinstance(command, Help):
            return Output(show=help_lines(self.style))
        if isinstance(command, Quit):
            self.quitting = True
        return Output(send=[self._request(command)[1]])


class ChatClient:
    """One chat session against ``url``, shown on ``screen``, typed on ``input_fd``.

    ``nick`` and ``room`` are used in JSON mode (``nick`` defaults to the login name);
    ``plain`` does not offer the JSON subprotocol at all. ``reconnect`` (default on)
    comes back after a lost connection, waiting between attempts as ``backoff`` says
    (default: :meth:`Backoff.from_environ`). ``environ`` decides colour (``NO_COLOR``);
    ``tz`` the time zone of shown times (default: local time).
    """

    def __init__(
        self,
        url: str,
        screen: Screen,
        input_fd: int,
        *,
        nick: str | None = None,
        room: str | None = None,
        plain: bool = False,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        environ: Mapping[str, str] | None = None,
        tz: tzinfo | None = None,
    ) -> None:
        self.url = url
        self._screen = screen
        self._input_fd = input_fd
        self._nick = nick
        self._room = room
        self._plain = plain
        self._reconnect = reconnect
        self._environ = os.environ if environ is None else environ
        self._backoff = backoff if backoff is not None else Backoff.from_environ(self._environ)
        self._tz = tz
        # Created on the first connection where the server selected trio-chat.v1; it
        # lasts the whole run. None in plain mode.
        self._json: JsonSession | None = None
        # Whether the connection of the moment speaks trio-chat.v1.
        self._json_now = False
        # The lines typed and not yet sent: the stdin reader feeds it for the whole run,
        # the sender of each connection drains it.
        self._typed = TypedLines()
        # Set when this connection's JSON start-up is answered: typed lines may go.
        self._ready = trio.Event()
        # The scope of the current phase (connecting, chatting, waiting to reconnect):
        # cancelled when it should end, from either side.
        self._phase_scope: trio.CancelScope | None = None
        self._leaving = False
        self._said_exiting = False
        # True between a lost connection and the next one's handshake.
        self._disconnected = False
        # How the last connection ended: worth reconnecting, and the exit status if not.
        self._retry = False
        self._exit_status = 0

    def leave(self) -> None:
        """End the session at the user's wish: close with 1000, exit status 0."""
        self._leaving = True
        if self._phase_scope is not None:
            self._phase_scope.cancel()

    def _enter_phase(self) -> trio.CancelScope:
        """A new scope for the next phase, already cancelled if the user has left."""
        self._phase_scope = trio.CancelScope()
        if self._leaving:
            self._phase_scope.cancel()
        return self._phase_scope

    def _say_exiting(self) -> None:
        """``Exiting chat...`` (once), after saying how many typed lines are dropped if
        the user leaves while disconnected."""
        if self._said_exiting:
            return
        self._said_exiting = True
        if self._disconnected and self._typed:
            count = len(self._typed)
            self._screen.status(f"({count} typed line{'s' * (count > 1)} not sent)")
        self._screen.status("Exiting chat...")

    async def run(self) -> int:
        """Connect, chat until one side leaves (reconnecting when the connection is lost
        and ``reconnect`` is on), close; return the exit status.

        Owns the TCP streams, the WebSockets' reader tasks, the chat tasks, the stdin
        reader and the signal watcher; all are closed or cancelled before this returns.
        SIGINT and SIGTERM are taken as the user leaving.
        """
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, signals)
                try:
                    status = await self._session()
                except ClientError as exc:
                    self._screen.status(str(exc))
                    status = 1
                nursery.cancel_scope.cancel()
        self._screen.finish()
        return status

    async def _watch_signals(self, signals: AsyncIterator[int]) -> None:
        async for _ in signals:
            self.leave()

    async def _session(self) -> int:
        """The connections, one after another, until one ends for good; the exit status.

        Owns the stdin reader (started once the first handshake is done, so that lines
        piped in wait for the server), which outlives each connection. The first
        connection failing is a :class:`ClientError`; later ones are retried after a
        backoff, unless the server refused the handshake with a 4xx status.
        """
        host, port, resource = parse_url(self.url)
        self._screen.status(f"Connecting to server at {self.url}...")
        failure: ClientError | None = None
        async with trio.open_nursery() as input_tasks:
            try:
                status = await self._connections(input_tasks, host, port, resource)
            except ClientError as error:
                failure = error
            input_tasks.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return status

    async def _connections(
        self, input_tasks: trio.Nursery, host: str, port: int, resource: str
    ) -> int:
        """The reconnection loop: one connection after another, with a backoff between
        them, until one ends for good; the exit status. Cancellation (of the phase, by
        the user leaving) ends it at once with status 0."""
        first = True
        while True:
            try:
                await self._connection(input_tasks, host, port, resource, first=first)
            except ClientError as error:
                if first or not error.retry:
                    raise
                self._screen.status(str(error))
                self._retry = True
            first = False
            if self._leaving:
                self._say_exiting()
                return 0
            if not (self._retry and self._reconnect):
                return self._exit_status
            await self._wait_to_reconnect()
            if self._leaving:
                self._say_exiting()
                return 0

    async def _wait_to_reconnect(self) -> None:
        """Say how long, then wait that long; the user's leaving cuts it short."""
        self._disconnected = True
        if self._typed.ended:  # the user typed exit while the connection was going
            self.leave()
            return
        if self._json is not None:
            self._json.reconnecting()
        delay = self._backoff.next_delay()
        self._screen.status(f"reconnecting in {delay:.1f} s\N{HORIZONTAL ELLIPSIS}")
        with self._enter_phase():
            await trio.sleep(delay)

    async def _connection(
        self, input_tasks: trio.Nursery, host: str, port: int, resource: str, *, first: bool
    ) -> None:
        """One connection, from TCP connect to close. Raises :class:`ClientError` when it
        cannot be made (``retry`` says whether trying again may help)."""
        with self._enter_phase():
            stream = await self._open_stream(host, port)
        if self._leaving:
            return
        if self._json is not None:
            resource = self._json.resume_resource(resource)
        try:
            try:
                async with trio.open_nursery() as websocket_tasks:
                    await self._chat(
                        websocket_tasks, input_tasks, stream, host, resource, first=first
                    )
                    websocket_tasks.cancel_scope.cancel()
            except* ConnectionRejected as group:
                rejected = group.exceptions[0]
                assert isinstance(rejected, ConnectionRejected)
                body = (rejected.body or b"").decode(errors="replace").strip()
                detail = f" ({make_safe(body)})" if body else ""
                raise ClientError(
                    f"Could not connect to {self.url}: the server refused with HTTP "
                    f"{rejected.status_code}{detail}",
                    retry=rejected.status_code >= 500,
                ) from None
            except* ClientError as group:
                raise group.exceptions[0] from None
            except* HandshakeError:
                raise ClientError(
                    f"Could not connect to {self.url}: handshake failed", retry=True
                ) from None
        finally:
            await trio.aclose_forcefully(stream)

    async def _open_stream(self, host: str, port: int) -> trio.SocketStream:
        """Open the TCP connection, or raise :class:`ClientError` saying why not."""
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                return await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise ClientError(
                f"Could not connect to {self.url}: {explain_connect_error(exc)}", retry=True
            ) from None
        except trio.TooSlowError:
            raise ClientError(f"Could not connect to {self.url}: timed out", retry=True) from None

    async def _chat(
        self,
        websocket_tasks: trio.Nursery,
        input_tasks: trio.Nursery,
        stream: trio.SocketStream,
        host: str,
        resource: str,
        *,
        first: bool,
    ) -> None:
        """Handshake, run the sender and the receiver until one ends the chat, then close.

        The WebSocket's reader task runs in ``websocket_tasks``; the caller cancels it.
        After the first handshake the stdin reader starts in ``input_tasks``.
        """
        with self._enter_phase():
            with trio.move_on_after(CONNECT_TIMEOUT) as handshake_scope:
                ws = await wrap_client_stream(
                    websocket_tasks,
                    stream,
                    host,
                    resource,
                    subprotocols=None if self._plain else [PROTOCOL],
                    max_message_size=MAX_INCOMING_MESSAGE,
                )
            if handshake_scope.cancelled_caught:
                raise ClientError(
                    f"Could not connect to {self.url}: the handshake timed out", retry=True
                )
            self._disconnected = False
            self._retry = False
            self._ready = trio.Event()
            self._json_now = ws.subprotocol == PROTOCOL
            if first:
                self._start(input_tasks)
            else:
                self._screen.status("\N{WHITE HEAVY CHECK MARK} Reconnected to server!")
            if not self._json_now:
                self._backoff.reset()  # plain: the handshake is all there is to check
            elif self._json is None:
                style = Style(colour_wanted(self._screen.interactive, self._environ))
                self._json = JsonSession(style, self._nick or login_nick(), self._room, self._tz)
            async with trio.open_nursery() as chat:
                chat.start_soon(self._receive_loop, ws)
                chat.start_soon(self._send_loop, ws)
        if self._leaving:
            self._say_exiting()
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(CloseCode.NORMAL_CLOSURE)

    def _start(self, input_tasks: trio.Nursery) -> None:
        """The first connection is up: say so, show the prompt, start reading stdin."""
        self._screen.status("\N{WHITE HEAVY CHECK MARK} Connected to server!")
        if self._json_now:
            self._screen.status(START_JSON)
        else:
            if self._nick is not None or self._room is not None:
                self._screen.status(
                    "(--name and --room need a trio-chat.v1 server; not used in plain mode)"
                )
            self._screen.status(START_PLAIN)
        self._screen.prompt()
        input_tasks.start_soon(self._read_input)

    async def _read_input(self) -> None:
        """Queue each typed line until ``exit`` or end of input, then end the queue.

        Runs for the rest of the session, across reconnections. The connection's sender
        takes ``exit`` in turn, after the lines typed before it; while disconnected,
        ``exit`` leaves at once. Cancellation abandons the blocked read.
        """
        async for line in read_lines(self._input_fd):
            if is_exit_command(line):
                break
            if line.strip():
                if not self._typed.put(line):
                    self._screen.status(
                        f"({len(self._typed)} lines are waiting to be sent; this one was dropped)"
                    )
                elif self._disconnected:
                    self._screen.status(QUEUED)
            self._screen.prompt()
        self._typed.end()
        if self._disconnected:
            self.leave()

    async def _receive_loop(self, ws: WebSocketConnection) -> None:
        """Show every line the server sends; when the server closes, say how and end the chat.

        In JSON mode each line is an event, rendered, and the start-up's commands
        (nickname, room, resends) are sent from here. Cancellation stops it between lines.
        A close the user asked for (``/quit``, answered with 1000) means exit status 0,
        any other close 1; a close worth it (:func:`should_reconnect`) sets ``_retry``.
        """
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    self._screen.status(f"(a binary message of {len(message)} bytes)")
                    continue
                for line in message.split("\n"):
                    if self._json is None or not self._json_now:
                        self._screen.incoming(line)
                    elif line:
                        await self._handle_event(ws, self._json, line)
        except ConnectionClosed as closed:
            reason = closed.reason
            code = reason.code if reason else None
            text = reason.reason if reason else None
            lost = code in (None, CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE)
            self._screen.status(
                ("Connection lost: " if lost else "Server closed the connection: ")
                + describe_close(code, text)
            )
            asked = self._json is not None and self._json.quitting
            self._exit_status = 0 if asked and code == CloseCode.NORMAL_CLOSURE else 1
            self._retry = not asked and should_reconnect(code, text)
            assert self._phase_scope is not None
            self._phase_scope.cancel()

    async def _handle_event(self, ws: WebSocketConnection, session: JsonSession, line: str) -> None:
        """Show one JSON event and send what the session asks in answer; once the start-up
        is over, let typed lines through. Raises ``ConnectionClosed`` if a send finds the
        connection closed. Cancelled during a send, the connection is ending: a message
        that did not leave stays unanswered in the session and is resent on the next."""
        output = session.receive(line)
        if session.welcomed:
            self._backoff.reset()
        for shown in output.show:
            self._screen.show(shown)
        for request in output.send:
            await ws.send_message(request)
        if session.ready:
            self._ready.set()

    async def _send_loop(self, ws: WebSocketConnection) -> None:
        """Send each queued line, in order, until ``exit`` or end of input, then leave.

        In JSON mode a line waits until the start-up is answered (so it goes out under
        the user's nickname, in the chosen room, after the resent messages), then becomes
        a command; ``/help`` and wrong commands are answered here. A line leaves the
        queue once dealt with, so one that did not go out is sent on the next connection
        (a message that left but got no answer is the session's to resend). Cancellation
        leaves the queue as it is.
        """
        while (line := await self._typed.first()) is not None:
            try:
                await self._send_line(ws, line)
            except ConnectionClosed:
                return  # the receiver reports the close
        self.leave()

    async def _send_line(self, ws: WebSocketConnection, line: str) -> None:
        """Send one typed line and take it off the queue: as it is in plain mode, as a JSON
        command otherwise (after the start-up is answered). Cancelled while waiting, the
        line stays queued."""
        if self._json is None or not self._json_now:
            await ws.send_message(line)
            self._typed.pop()
            return
        await self._ready.wait()
        output = self._json.typed(line)
        self._typed.pop()
        for shown in output.show:
            self._screen.show(shown)
        for request in output.send:
            await ws.send_message(request)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The client's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_chat.client",
        description="Chat on a trio_chat server (nicknames, rooms, private messages; "
        "'/help' lists the commands) or on any server speaking plain text over WebSocket. "
        "Type a line and press Enter to send it; 'exit', Ctrl-D or Ctrl-C to leave.",
    )
    parser.add_argument(
        "url",
        nargs="?",
        default=DEFAULT_URL,
        help=f"the server's WebSocket URL (default: {DEFAULT_URL})",
    )
    parser.add_argument(
        "--name",
        metavar="NICK",
        help="your nickname (default: your login name); NICK-2, NICK-3... if it is taken",
    )
    parser.add_argument("--room", metavar="ROOM", help="a room to join on arrival")
    parser.add_argument(
        "--no-reconnect",
        dest="reconnect",
        action="store_false",
        help="exit (status 1) when the connection is lost, instead of reconnecting",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help=f"plain text only: do not offer the {PROTOCOL} protocol",
    )
    args = parser.parse_args(argv)
    try:
        if args.name is not None:
            args.name = valid_name(args.name, "nickname")
        if args.room is not None:
            args.room = valid_name(args.room, "room name").lower()
    except CommandError as error:
        parser.error(error.text)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m trio_chat.client`` and ``trio-chat``.

    Exits 0 when the user leaves; 1 when the server cannot be reached at start-up, or
    closes the connection in a way not worth reconnecting after (or at all, with
    ``--no-reconnect``).
    """
    args = parse_args(argv)
    client = ChatClient(
        args.url,
        Screen(),
        sys.stdin.fileno() if sys.stdin else os.open(os.devnull, os.O_RDONLY),
        nick=args.name,
        room=args.room,
        plain=args.plain,
        reconnect=args.reconnect,
    )
    sys.exit(trio.run(client.run))


if __name__ == "__main__":
    main()
