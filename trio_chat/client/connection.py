"""The interactive client: ``python -m trio_chat.client [URL] [--name NICK] [--room ROOM]``
(``ws://`` or ``wss://``, verified against ``--cafile`` or the system's CAs).

The client offers the ``trio-chat.v1`` subprotocol. When the server selects it (JSON
mode), the client takes a nickname (``--name``, or the login name; ``NAME-2``,
``NAME-3``... when taken), joins ``--room``, turns typed lines into JSON commands with
the same parser the server uses, answers ``/help`` itself, and renders events with
:mod:`trio_chat.client.view`. When the server does not select it (the tutorial's server, or
``--plain``), lines go out and come in as plain text, made safe for the terminal.

The session is a state machine, as h11 and wsproto make theirs: a :class:`Phase`
(CONNECTING, HANDSHAKING, CHATTING, WAITING_TO_RECONNECT, CLOSING, DONE) and one method
that moves between them along :data:`NEXT_PHASES`. How a connection ended is a value
(:class:`Ending`), the connection of the moment another (:class:`Link`). The user leaving
is an input, an event: each phase that waits runs in a nursery of its own beside a
watcher of that event, which cancels that nursery's own scope; no task cancels a scope
another task owns.

The stdin reader runs for the whole session (in a worker thread that is abandoned on
exit) and queues the user's lines. While CHATTING two tasks run: the sender drains the
queue, the receiver shows what the server sends. The session ends or goes on thus:

* the user leaves (``exit``, end of input, Ctrl-C, ``/quit``): close with 1000, exit
  status 0;
* the connection is lost without a close frame, or the server closes it with 1001
  (shutdown), 1011, 1012, 1013 or 1008 ``slow consumer``: print the reason, then
  ``reconnecting in 2.0 s…`` and try again after that delay (capped exponential backoff
  with jitter, see :class:`Backoff`), as long as it takes; lines typed meanwhile are
  queued and sent once back. In JSON mode the new connection resumes the session with
  the secret of its ``welcome`` (kept in memory only, never on disk: same nick and
  rooms, every message missed since the last one seen, private ones too, shown with a
  ``[history]`` mark) and resends the messages the server had not answered, with the
  same ``cid``, so the server stores none twice (within the session: a server restart
  ends it, and the client comes back as a new guest);
* the server stops answering: the client pings it every ``ping_interval`` seconds (20
  by default, ``--ping-interval``) and takes a ping unanswered for ``ping_timeout``
  seconds (20, ``--ping-timeout``) as a lost connection: ``Connection lost: no answer
  to a ping within 20 s``, then the same reconnection and resume as above;
* a handshake refused with 429 (too many requests) or 503 (server full, shutting
  down), even the first: the server is there but busy, so the client tries again after
  the ``Retry-After`` the answer names (plus up to half as much again at random, so
  refused clients do not all come back at once; the backoff when it names none);
* any other close (a kick, a session resumed by another connection, 1000 from the
  server, a protocol error), a handshake refused with another 4xx status, a ``wss://`` server
  whose certificate is not valid (or that speaks no TLS), or ``--no-reconnect``: print
  the reason, exit status 1, at once.

The first connection failing (no server) is one line and exit status 1, with no retry
(unless refused with 429 or 503).
The backoff (0.5 s doubling up to 10 s by default) is the ``backoff`` argument of
:class:`ChatClient` (``--reconnect-delay INITIAL[,MAX]`` on the command line).
"""

from __future__ import annotations

import base64
import enum
import math
import os
import random
import signal
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from email.utils import parsedate_to_datetime
from typing import NamedTuple, TypeAlias
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from trio_chat.core.arrival import DEFAULT_PORT
from trio_chat.core.close import CloseCode, describe_close, should_reconnect
from trio_chat.core.commands import PROTOCOL, Refresh, command_to_json
from trio_chat.core.redact import redact_url
from trio_chat.lines import read_lines

from .session import JsonSession, login_nick
from .terminal import Screen, make_safe
from .view import Style, colour_wanted

__all__ = [
    "DEFAULT_URL",
    "DISCONNECTED",
    "LEFT",
    "NEXT_PHASES",
    "Backoff",
    "ChatClient",
    "ClientError",
    "ClientStream",
    "Ending",
    "Link",
    "Phase",
    "ServerURL",
    "TypedLines",
    "authorization",
    "client_ssl_context",
    "describe_refusal",
    "open_stream",
    "parse_url",
    "retry_after",
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
#: The first delay before reconnecting, and the most it grows to (seconds).
RECONNECT_INITIAL = 0.5
RECONNECT_CAP = 10.0
#: No delay is shorter (unless the initial one is).
MIN_RECONNECT_DELAY = 0.1
#: Seconds between the client's pings to the server, and how long a pong may take
#: before the connection counts as lost (the server's defaults for its own pings).
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
#: The refusals that mean "busy, come back later": the client keeps trying after them.
BUSY_STATUSES = frozenset({429, 503})
#: The longest ``Retry-After`` honoured (seconds): a longer one is taken as this.
MAX_RETRY_AFTER = 3600.0
#: Lines typed while disconnected that are kept to send once back; later ones are dropped.
TYPED_LINES_LIMIT = 1000
#: Said when a line is typed while disconnected.
QUEUED = "(not connected: this line will be sent once reconnected)"

START_PLAIN = "Start chatting (type messages and press Enter; 'exit' to quit)"
START_JSON = (
    "Start chatting (type messages and press Enter; '/help' lists the commands, 'exit' to quit)"
)


class ClientError(Exception):
    """A failure to report to the user as one line, with exit status 1 (unless it is
    worth trying again, ``retry``, and the client is reconnecting)."""

    def __init__(
        self,
        text: str,
        *,
        retry: bool = False,
        busy: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(text)
        self.retry = retry or busy
        #: The server refused because it is busy (429, 503): worth trying again even on
        #: the first connection, after ``retry_after`` seconds when it named them.
        self.busy = busy
        self.retry_after = retry_after


#: The connection to a server: TCP, or TLS over TCP for ``wss://``.
ClientStream: TypeAlias = trio.SocketStream | trio.SSLStream[trio.SocketStream]


class ServerURL(NamedTuple):
    """A server's WebSocket URL, taken apart: where to connect, what to ask for, and
    whether over TLS (``wss://``)."""

    host: str
    port: int
    #: The path and query of the request: ``/?nick=alice``.
    resource: str
    tls: bool


def parse_url(url: str) -> ServerURL:
    """Split a ``ws://`` or ``wss://host[:port][/path]`` URL (ports 80 and 443 by
    default); :class:`ClientError` saying why not. Error texts show the URL redacted
    (no query, no user-info: they may hold secrets)."""
    shown = redact_url(url)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ClientError(f"Invalid URL {shown!r}: {exc}") from None
    if parts.scheme not in ("ws", "wss"):
        raise ClientError(f"Invalid URL {shown!r}: expected ws:// or wss://HOST[:PORT][/PATH]")
    if not parts.hostname:
        raise ClientError(f"Invalid URL {shown!r}: no host")
    resource = parts.path or "/"
    if parts.query:
        resource += f"?{parts.query}"
    tls = parts.scheme == "wss"
    if port is None:
        port = 443 if tls else 80
    return ServerURL(parts.hostname, port, resource, tls)


def client_ssl_context(cafile: str | None = None) -> ssl.SSLContext:
    """The context that verifies a ``wss://`` server: its certificate must chain to
    ``cafile`` (PEM) when given, else to the system's trusted CAs (``SSL_CERT_FILE``
    and ``SSL_CERT_DIR`` are honoured), and name the host. :class:`ClientError` when
    ``cafile`` cannot be used."""
    try:
        return ssl.create_default_context(cafile=cafile)
    except (OSError, ssl.SSLError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        if isinstance(exc, ssl.SSLError):
            detail = "not a PEM file of CA certificates"
        raise ClientError(f"Cannot use the CA file {cafile}: {detail}") from None


def explain_tls_error(exc: BaseException) -> tuple[str, bool]:
    """Why a TLS handshake with the server failed, and whether trying again may help
    (not when the certificate is refused, or the server does not speak TLS)."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"the server's certificate is not valid: {cause.verify_message}", False
    if cause is None or isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError):
        return "the connection closed during the TLS handshake", True
    if cause.reason in ("WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE"):
        return "the server does not speak TLS (try ws://)", False
    reason = (cause.reason or str(cause)).lower().replace("_", " ")
    return f"TLS handshake failed: {reason}", False


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


async def open_stream(
    url: str,
    server: ServerURL,
    ssl_context: ssl.SSLContext | None = None,
    seconds: float = CONNECT_TIMEOUT,
) -> ClientStream:
    """The connection to ``server`` (parsed from ``url``): TCP, then, for ``wss://``, the
    TLS handshake with ``ssl_context`` (default: :func:`client_ssl_context`, the
    system's CAs), all within ``seconds``; or :class:`ClientError` saying why not (worth
    retrying unless the certificate was refused or the server speaks no TLS). The caller
    owns the stream. Cancelled, nothing is left open."""
    shown = redact_url(url)
    try:
        with trio.fail_after(seconds):
            tcp = await trio.open_tcp_stream(server.host, server.port)
            if not server.tls:
                return tcp
            if ssl_context is None:
                ssl_context = client_ssl_context()
            # https_compatible: a server may close without a TLS close_notify.
            stream = trio.SSLStream(
                tcp, ssl_context, server_hostname=server.host, https_compatible=True
            )
            try:
                await stream.do_handshake()
            except BaseException as exc:
                await trio.aclose_forcefully(tcp)
                if isinstance(exc, trio.BrokenResourceError | trio.ClosedResourceError):
                    reason, retry = explain_tls_error(exc)
                    raise ClientError(
                        f"Could not connect to {shown}: {reason}", retry=retry
                    ) from None
                raise
            return stream
    except OSError as exc:
        raise ClientError(
            f"Could not connect to {shown}: {explain_connect_error(exc)}", retry=True
        ) from None
    except trio.TooSlowError:
        raise ClientError(f"Could not connect to {shown}: timed out", retry=True) from None


def describe_refusal(url: str, rejected: ConnectionRejected) -> str:
    """The line saying that the server at ``url`` (shown redacted) refused the
    handshake, with its status and, made safe to print, the body of its answer."""
    body = (rejected.body or b"").decode(errors="replace").strip()
    detail = f" ({make_safe(body)})" if body else ""
    return (
        f"Could not connect to {redact_url(url)}: the server refused with HTTP"
        f" {rejected.status_code}{detail}"
    )


def authorization(
    login: tuple[str, str] | None = None, token: str | None = None
) -> list[tuple[bytes, bytes]]:
    """The handshake's ``Authorization`` header for an account's ``login`` (name,
    password: HTTP Basic) or a ``token`` (Bearer); none for neither."""
    if login is not None:
        name, password = login
        return [(b"authorization", b"Basic " + base64.b64encode(f"{name}:{password}".encode()))]
    if token is not None:
        return [(b"authorization", b"Bearer " + token.strip().encode())]
    return []


def retry_after(
    headers: Sequence[tuple[bytes, bytes]], now: datetime | None = None
) -> float | None:
    """The seconds an HTTP answer's ``Retry-After`` header asks to wait (delay-seconds or
    an HTTP date, RFC 9110 section 10.2.3), at most :data:`MAX_RETRY_AFTER`; None when the
    header is absent or cannot be read."""
    values = [value for name, value in headers if name.lower() == b"retry-after"]
    if not values:
        return None
    text = values[0].decode("latin-1").strip()
    if text.isdigit():
        return min(float(text), MAX_RETRY_AFTER)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def is_exit_command(line: str) -> bool:
    """``exit`` in any case, surrounded by any spaces."""
    return line.strip().lower() == "exit"


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

    def next_delay(self) -> float:
        """The delay before the next attempt; the one after will be twice as long."""
        nominal = self._nominal
        self._nominal = min(self.cap, nominal * 2)
        return max(min(MIN_RECONNECT_DELAY, self.initial), self._uniform(nominal / 2, nominal))

    def after(self, seconds: float) -> float:
        """The delay before the next attempt when the server asked for ``seconds``
        (``Retry-After``): never less, plus up to half as much again at random so that
        the clients it refused do not all come back at once; and never less than the
        backoff's own next delay (which advances as with :meth:`next_delay`)."""
        backoff = self.next_delay()
        return max(backoff, seconds + self._uniform(0, seconds / 2))

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


class Phase(enum.Enum):
    """Where a :class:`ChatClient` is. :meth:`ChatClient._move_to` is the one place that
    changes it, along the arrows of :data:`NEXT_PHASES`."""

    #: Opening the TCP connection.
    CONNECTING = "connecting"
    #: The WebSocket handshake.
    HANDSHAKING = "handshaking"
    #: Connected: the sender and the receiver run.
    CHATTING = "chatting"
    #: The connection is gone and worth coming back to: waiting out the backoff.
    WAITING_TO_RECONNECT = "waiting to reconnect"
    #: The user left: saying so, and closing the connection (if any) with 1000.
    CLOSING = "closing"
    #: The session is over.
    DONE = "done"


#: The phases each phase may move to. Any phase may end the session (the user leaves:
#: CLOSING; a failure or a close not worth reconnecting after: DONE) until it is over.
NEXT_PHASES: Mapping[Phase, frozenset[Phase]] = {
    Phase.CONNECTING: frozenset(
        {Phase.HANDSHAKING, Phase.WAITING_TO_RECONNECT, Phase.CLOSING, Phase.DONE}
    ),
    Phase.HANDSHAKING: frozenset(
        {Phase.CHATTING, Phase.WAITING_TO_RECONNECT, Phase.CLOSING, Phase.DONE}
    ),
    Phase.CHATTING: frozenset({Phase.WAITING_TO_RECONNECT, Phase.CLOSING, Phase.DONE}),
    Phase.WAITING_TO_RECONNECT: frozenset({Phase.CONNECTING, Phase.CLOSING}),
    Phase.CLOSING: frozenset({Phase.DONE}),
    Phase.DONE: frozenset(),
}
#: The phases in which there is no connection to send typed lines on: they are queued.
DISCONNECTED = frozenset({Phase.WAITING_TO_RECONNECT, Phase.CONNECTING, Phase.HANDSHAKING})


@dataclass(frozen=True)
class Ending:
    """How a connection ended: whether it is worth reconnecting, and the exit status if
    the session ends there."""

    reconnect: bool
    status: int
    #: The server asked for this many seconds before the next attempt (``Retry-After``).
    retry_after: float | None = None


#: The user left: no reconnecting, exit status 0.
LEFT = Ending(reconnect=False, status=0)


@dataclass(frozen=True)
class Link:
    """The connection of the moment, as its sender and receiver see it: the WebSocket,
    the JSON session when the server speaks ``trio-chat.v1`` (None in plain mode), and
    whether that session's start-up is answered (typed lines wait for it), and whether
    a ping went unanswered (the connection is taken as lost)."""

    ws: WebSocketConnection
    json: JsonSession | None
    ready: trio.Event = field(default_factory=trio.Event)
    unanswered: trio.Event = field(default_factory=trio.Event)


class ChatClient:
    """One chat session against ``url``, shown on ``screen``, typed on ``input_fd``.

    ``nick`` and ``room`` are used in JSON mode (``nick`` defaults to the login name);
    ``plain`` does not offer the JSON subprotocol at all. ``login`` (name, password)
    logs in to an account at every handshake; ``token_file`` names a file holding a
    login token, read at every handshake and whenever the server asks for a new token.
    ``reconnect`` (default on)
    comes back after a lost connection, waiting between attempts as ``backoff`` says
    (default: 0.5 s doubling up to 10 s, see :class:`Backoff`). ``environ`` decides
    colour (``NO_COLOR``); ``tz`` the time zone of shown times (default: local time).
    ``ssl_context`` verifies a ``wss://`` server (default: :func:`client_ssl_context`,
    the system's CAs); a certificate it refuses ends the session at once, since trying
    again cannot help.

    The session is a state machine: :attr:`phase` (a :class:`Phase`) says where it is,
    and :meth:`_move_to` is the only code that changes it. Its inputs are the server
    (what the receiver reads, how the connection closes), the user's lines (queued by
    the stdin reader) and the user leaving (:meth:`leave`, which only sets an event:
    each phase that waits runs beside a watcher of that event that cancels the phase's
    own scope, so no task ever cancels a scope that another task owns).
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
        login: tuple[str, str] | None = None,
        token_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ping_interval: float = PING_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
    ) -> None:
        self.url = url
        # The keepalive: a ping every ping_interval seconds (0: none), each answered
        # within ping_timeout seconds (0: however late) or the connection counts as lost.
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        # How the URL is shown: without its query or credentials (they may be secrets).
        self._shown_url = redact_url(url)
        self._ssl_context = ssl_context
        # How this client logs in at each handshake: an account's name and password
        # (kept in memory only, never shown), or a file read afresh for each token.
        self._login = login
        self._token_file = token_file
        # The token read for the connection being made (from token_file).
        self._token: str | None = None
        self._screen = screen
        self._input_fd = input_fd
        self._nick = nick
        self._room = room
        self._plain = plain
        self._reconnect = reconnect
        self._environ = os.environ if environ is None else environ
        self._backoff = backoff if backoff is not None else Backoff()
        self._tz = tz
        #: Where the session is; changed by :meth:`_move_to` only.
        self.phase = Phase.CONNECTING
        # Created on the first connection where the server selected trio-chat.v1; it
        # lasts the whole run. None in plain mode.
        self._json: JsonSession | None = None
        # The lines typed and not yet sent: the stdin reader feeds it for the whole run,
        # the sender of each connection drains it.
        self._typed = TypedLines()
        # Set when the user leaves (exit, end of input, Ctrl-C, SIGTERM): an input that
        # each phase watches, never a scope cancelled from outside.
        self._left = trio.Event()
        # Whether a connection of this session got as far as chatting.
        self._chatted = False

    def leave(self) -> None:
        """End the session at the user's wish: close with 1000, exit status 0. Idempotent;
        the phase of the moment is cancelled by its own watcher."""
        self._left.set()

    def _move_to(self, phase: Phase) -> None:
        """The one place the phase changes; a move :data:`NEXT_PHASES` does not allow is
        a bug."""
        if phase not in NEXT_PHASES[self.phase]:
            raise RuntimeError(f"no move from {self.phase.value} to {phase.value}")
        self.phase = phase

    @asynccontextmanager
    async def _until_left(self) -> AsyncIterator[trio.Nursery]:
        """Run the block in a nursery of its own (yielded, for the block's tasks) whose
        scope is cancelled when the block ends or when the user leaves: a watcher task in
        that nursery waits for :meth:`leave` and cancels the nursery's own scope. The
        block must catch its own failures (they would come out wrapped in a group)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._cancel_when_left, nursery.cancel_scope)
            yield nursery
            nursery.cancel_scope.cancel()

    async def _cancel_when_left(self, scope: trio.CancelScope) -> None:
        await self._left.wait()
        scope.cancel()

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
        server = parse_url(self.url)
        self._screen.status(f"Connecting to server at {self._shown_url}...")
        failure: ClientError | None = None
        async with trio.open_nursery() as input_tasks:
            try:
                status = await self._connections(input_tasks, server)
            except ClientError as error:
                failure = error  # raised outside the nursery, so it is not in a group
            input_tasks.cancel_scope.cancel()
        if failure is not None:
            raise failure
        return status

    async def _connections(self, input_tasks: trio.Nursery, server: ServerURL) -> int:
        """The reconnection loop: one connection after another, with a backoff between
        them, until one ends for good; the exit status."""
        while True:
            # "First" until a connection got as far as chatting: a busy server's refusals
            # (429, 503) come before the first connection that works.
            ending = await self._connection(input_tasks, server, first=not self._chatted)
            if self.phase is Phase.DONE:
                return ending.status
            if not (ending.reconnect and self._reconnect):
                self._move_to(Phase.DONE)
                return ending.status
            if not await self._wait_to_reconnect(ending.retry_after):
                return LEFT.status

    async def _wait_to_reconnect(self, retry_after: float | None = None) -> bool:
        """Say how long, then wait that long (at least ``retry_after`` seconds when the
        server asked for them); False (the session closed) if the user leaves meanwhile,
        or had typed ``exit`` while the connection was going."""
        self._move_to(Phase.WAITING_TO_RECONNECT)
        if self._typed.ended:
            await self._close(None)
            return False
        if self._json is not None:
            self._json.reconnecting()
        if retry_after is None:
            delay = self._backoff.next_delay()
        else:
            delay = self._backoff.after(retry_after)
        self._screen.status(f"reconnecting in {delay:.1f} s\N{HORIZONTAL ELLIPSIS}")
        async with self._until_left():
            await trio.sleep(delay)
        if self._left.is_set():
            await self._close(None)
            return False
        self._move_to(Phase.CONNECTING)
        return True

    async def _connection(
        self, input_tasks: trio.Nursery, server: ServerURL, *, first: bool
    ) -> Ending:
        """One connection, from TCP connect to close, in phases CONNECTING, HANDSHAKING
        and CHATTING, then CLOSING if the user leaves; how it ended. Owns the TCP stream
        and closes it. A failure is a :class:`ClientError` on the first connection (and
        when trying again cannot help), shown and worth a reconnection otherwise."""
        stream: ClientStream | None = None
        failure: ClientError | None = None
        resource = server.resource
        async with self._until_left():
            try:
                if self._token_file is not None:
                    self._token = await self._read_token()
                stream = await open_stream(self.url, server, self._ssl_context)
            except ClientError as error:
                failure = error
        try:
            if self._left.is_set():
                return await self._close(None)
            if stream is None:
                assert failure is not None
                return self._failed(failure, first=first)
            if self._json is not None:
                resource = self._json.resume_resource(resource)
            return await self._websocket(input_tasks, stream, server.host, resource, first=first)
        finally:
            if stream is not None:
                await trio.aclose_forcefully(stream)

    def _failed(self, failure: ClientError, *, first: bool) -> Ending:
        """A connection could not be made: raise ``failure`` (the session ends with it)
        on the first connection or when trying again cannot help; else show it, and the
        next attempt follows."""
        if (first and not failure.busy) or not failure.retry:
            self._move_to(Phase.DONE)
            raise failure
        self._screen.status(str(failure))
        return Ending(reconnect=True, status=1, retry_after=failure.retry_after)

    async def _websocket(
        self,
        input_tasks: trio.Nursery,
        stream: ClientStream,
        host: str,
        resource: str,
        *,
        first: bool,
    ) -> Ending:
        """The WebSocket over ``stream``: handshake, chat, close; how it ended.

        Owns the WebSocket's reader task (in a nursery of its own, cancelled on the way
        out). A refused or failed handshake arrives from that task, in a group: it is
        only recorded in the ``except*`` clauses and turned into a :class:`ClientError`
        after them (raising inside ``except*`` misbehaves on Python 3.11.0-3.11.3).
        """
        self._move_to(Phase.HANDSHAKING)
        ending: Ending | None = None
        rejected: ConnectionRejected | None = None
        handshake_failed = False
        try:
            async with trio.open_nursery() as websocket_tasks:
                ws = await self._handshake(websocket_tasks, stream, host, resource)
                if ws is not None:
                    ending = await self._chat(input_tasks, ws, first=first)
                websocket_tasks.cancel_scope.cancel()
        except* ConnectionRejected as group:
            error = group.exceptions[0]
            assert isinstance(error, ConnectionRejected)
            rejected = error
        except* HandshakeError:
            handshake_failed = True
        if rejected is not None:
            status = rejected.status_code
            failure = ClientError(
                describe_refusal(self.url, rejected),
                retry=status >= 500,
                busy=status in BUSY_STATUSES,
                retry_after=retry_after(rejected.headers),
            )
        elif handshake_failed:
            failure = ClientError(
                f"Could not connect to {self._shown_url}: handshake failed", retry=True
            )
        elif ending is not None:
            return ending
        elif self._left.is_set():
            return await self._close(None)
        else:
            failure = ClientError(
                f"Could not connect to {self._shown_url}: the handshake timed out", retry=True
            )
        if self._left.is_set():
            return await self._close(None)
        return self._failed(failure, first=first)

    async def _handshake(
        self, websocket_tasks: trio.Nursery, stream: ClientStream, host: str, resource: str
    ) -> WebSocketConnection | None:
        """The WebSocket handshake, its reader task in ``websocket_tasks``; None if it
        timed out or the user left meanwhile. A refusal cancels this from the reader."""
        async with self._until_left():
            with trio.move_on_after(CONNECT_TIMEOUT):
                return await wrap_client_stream(
                    websocket_tasks,
                    stream,
                    host,
                    resource,
                    subprotocols=None if self._plain else [PROTOCOL],
                    extra_headers=authorization(self._login, self._token),
                    max_message_size=MAX_INCOMING_MESSAGE,
                )
        return None

    async def _read_token(self) -> str:
        """The token in :attr:`_token_file` now (it may have been renewed since the last
        read); a :class:`ClientError` saying why not, never showing the token."""
        assert self._token_file is not None
        try:
            token = (await trio.Path(self._token_file).read_text(encoding="utf-8")).strip()
        except (OSError, UnicodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "it is not UTF-8 text"
            raise ClientError(f"cannot read the token file {self._token_file}: {reason}") from None
        if not token:
            raise ClientError(f"the token file {self._token_file} is empty")
        return token

    async def _chat(
        self, input_tasks: trio.Nursery, ws: WebSocketConnection, *, first: bool
    ) -> Ending:
        """The CHATTING phase on ``ws``: the receiver (this task) and the sender run until
        the server closes the connection (how it ended) or the user leaves (CLOSING, then
        the 1000 close). After the first handshake the stdin reader starts in
        ``input_tasks``."""
        self._move_to(Phase.CHATTING)
        self._chatted = True
        link = Link(ws, self._join_session(ws))
        if first:
            self._start(input_tasks, json=link.json is not None)
        else:
            self._screen.status("\N{WHITE HEAVY CHECK MARK} Reconnected to server!")
        if link.json is None:
            self._backoff.reset()  # plain: the handshake is all there is to check
        ending: Ending | None = None
        async with self._until_left() as chat:
            chat.start_soon(self._send_loop, link)
            if self._ping_interval:
                chat.start_soon(self._keep_alive, link, chat.cancel_scope)
            ending = await self._receive_loop(link)
        if self._left.is_set():
            return await self._close(ws)
        if link.unanswered.is_set():
            self._screen.status(
                f"Connection lost: no answer to a ping within {self._ping_timeout:g} s"
            )
            return Ending(reconnect=True, status=1)
        if ending is None:
            return await self._close(ws)
        return ending

    async def _keep_alive(self, link: Link, chat: trio.CancelScope) -> None:
        """Ping the server every ping interval; when a pong does not come within the ping
        timeout, note it on ``link`` and cancel ``chat``, the scope of the nursery this
        task runs in (the connection is taken as lost, and closed by its owner). Ends
        when the connection closes; cancellation ends it between pings."""
        while True:
            await trio.sleep(self._ping_interval)
            with trio.move_on_after(self._ping_timeout or math.inf) as waiting:
                try:
                    await link.ws.ping()
                except ConnectionClosed:
                    return  # the receiver reports the close
            if waiting.cancelled_caught:
                link.unanswered.set()
                chat.cancel()
                return

    def _join_session(self, ws: WebSocketConnection) -> JsonSession | None:
        """The JSON session for ``ws`` (created on the first JSON connection), or None
        when the server did not select ``trio-chat.v1``."""
        if ws.subprotocol != PROTOCOL:
            return None
        if self._json is None:
            style = Style(colour_wanted(self._screen.interactive, self._environ))
            self._json = JsonSession(
                style,
                self._nick or login_nick(),
                self._room,
                self._tz,
                logged_in=self._login is not None or self._token_file is not None,
            )
            self._json.renews_tokens = self._token_file is not None
        return self._json

    async def _close(self, ws: WebSocketConnection | None) -> Ending:
        """CLOSING, then DONE: the user left. Say how many typed lines are dropped (when
        leaving while disconnected) and ``Exiting chat...``, then close ``ws`` (if there
        is one) with 1000, waiting at most :data:`CLOSE_TIMEOUT` for the server's answer."""
        disconnected = self.phase in DISCONNECTED
        self._move_to(Phase.CLOSING)
        if disconnected and self._typed:
            count = len(self._typed)
            self._screen.status(f"({count} typed line{'s' * (count > 1)} not sent)")
        self._screen.status("Exiting chat...")
        if ws is not None:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(CloseCode.NORMAL_CLOSURE)
        self._move_to(Phase.DONE)
        return LEFT

    def _start(self, input_tasks: trio.Nursery, *, json: bool) -> None:
        """The first connection is up: say so, show the prompt, start reading stdin."""
        self._screen.status("\N{WHITE HEAVY CHECK MARK} Connected to server!")
        if json:
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
                elif self.phase in DISCONNECTED:
                    self._screen.status(QUEUED)
            self._screen.prompt()
        self._typed.end()
        if self.phase in DISCONNECTED:
            self.leave()

    async def _receive_loop(self, link: Link) -> Ending:
        """Show every line the server sends until it closes the connection; say how, and
        return how it ended.

        In JSON mode each line is an event, rendered, and the start-up's commands
        (nickname, room, resends) are sent from here. Cancellation stops it between lines.
        A close the user asked for (``/quit``, answered with 1000) means exit status 0,
        any other close 1; a close :func:`should_reconnect` approves is worth reconnecting.
        """
        try:
            while True:
                message = await link.ws.get_message()
                if isinstance(message, bytes):
                    self._screen.status(f"(a binary message of {len(message)} bytes)")
                    continue
                for line in message.split("\n"):
                    if link.json is None:
                        self._screen.incoming(line)
                    elif line:
                        await self._handle_event(link, link.json, line)
        except ConnectionClosed as closed:
            reason = closed.reason
            code = reason.code if reason else None
            text = reason.reason if reason else None
            lost = code in (None, CloseCode.NO_STATUS_RCVD, CloseCode.ABNORMAL_CLOSURE)
            self._screen.status(
                ("Connection lost: " if lost else "Server closed the connection: ")
                + describe_close(code, text)
            )
            asked = link.json is not None and link.json.quitting
            return Ending(
                reconnect=not asked and should_reconnect(code, text),
                status=0 if asked and code == CloseCode.NORMAL_CLOSURE else 1,
            )

    async def _handle_event(self, link: Link, session: JsonSession, line: str) -> None:
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
            await link.ws.send_message(request)
        if session.refresh_asked:
            session.refresh_asked = False
            try:
                token = await self._read_token()
            except ClientError as error:
                self._screen.status(str(error))
            else:
                await link.ws.send_message(command_to_json(Refresh(token)))
        if session.ready:
            link.ready.set()

    async def _send_loop(self, link: Link) -> None:
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
                await self._send_line(link, line)
            except ConnectionClosed:
                return  # the receiver reports the close
        self.leave()

    async def _send_line(self, link: Link, line: str) -> None:
        """Send one typed line and take it off the queue: as it is in plain mode, as a JSON
        command otherwise (after the start-up is answered). Cancelled while waiting, the
        line stays queued."""
        if link.json is None:
            await link.ws.send_message(line)
            self._typed.pop()
            return
        await link.ready.wait()
        output = link.json.typed(line)
        self._typed.pop()
        for shown in output.show:
            self._screen.show(shown)
        for request in output.send:
            await link.ws.send_message(request)
