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
The backoff (0.5 s doubling up to 10 s by default) is the ``backoff`` argument of
:class:`ChatClient` (``--reconnect-delay INITIAL[,MAX]`` on the command line).
"""

from __future__ import annotations

import os
import random
import signal
import socket
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping
from datetime import tzinfo
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
from trio_chat.core.commands import (
    PROTOCOL,
)
from trio_chat.lines import read_lines

from .session import JsonSession, login_nick
from .terminal import Screen, make_safe
from .view import Style, colour_wanted

__all__ = ["DEFAULT_URL", "Backoff", "ChatClient", "ClientError", "TypedLines", "parse_url"]

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


class ChatClient:
    """One chat session against ``url``, shown on ``screen``, typed on ``input_fd``.

    ``nick`` and ``room`` are used in JSON mode (``nick`` defaults to the login name);
    ``plain`` does not offer the JSON subprotocol at all. ``reconnect`` (default on)
    comes back after a lost connection, waiting between attempts as ``backoff`` says
    (default: 0.5 s doubling up to 10 s, see :class:`Backoff`). ``environ`` decides
    colour (``NO_COLOR``); ``tz`` the time zone of shown times (default: local time).
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
        self._backoff = backoff if backoff is not None else Backoff()
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
