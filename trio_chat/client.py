"""The interactive client: ``python -m trio_chat.client [URL] [--name NICK] [--room ROOM]``.

The client offers the ``trio-chat.v1`` subprotocol. When the server selects it (JSON
mode), the client takes a nickname (``--name``, or the login name; ``NAME-2``,
``NAME-3``... when taken), joins ``--room``, turns typed lines into JSON commands with
the same parser the server uses, answers ``/help`` itself, and renders events with
:mod:`trio_chat.view`. When the server does not select it (the tutorial's server, or
``--plain``), lines go out and come in as plain text, made safe for the terminal.

One nursery holds the two chat tasks: the sender reads the user's lines (stdin, in a
worker thread that is abandoned on exit) and the receiver shows what the server sends.
Whichever side ends the chat cancels the other:

* the user leaves (``exit``, end of input, Ctrl-C): close with 1000, exit status 0;
* the server closes: print its code and reason, exit status 1, at once.
"""

from __future__ import annotations

import argparse
import getpass
import itertools
import json
import os
import re
import signal
import socket
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
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

from .commands import (
    PROTOCOL,
    Command,
    CommandError,
    Help,
    Join,
    Nick,
    Quit,
    command_to_json,
    parse_plain,
    valid_name,
)
from .config import DEFAULT_PORT
from .lines import read_lines
from .protocol import CloseCode, describe_close
from .terminal import Screen, make_safe
from .view import UNREADABLE, Style, colour_wanted, help_lines, render_event

__all__ = ["ChatClient", "JsonSession", "Output", "login_nick", "main", "parse_args"]

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

START_PLAIN = "Start chatting (type messages and press Enter; 'exit' to quit)"
START_JSON = (
    "Start chatting (type messages and press Enter; '/help' lists the commands, 'exit' to quit)"
)


class ClientError(Exception):
    """A failure to report to the user as one line, with exit status 1."""


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


@dataclass
class Output:
    """What a :class:`JsonSession` step asks for: lines to show, JSON lines to send."""

    show: list[str] = field(default_factory=list)
    send: list[str] = field(default_factory=list)


class JsonSession:
    """The client's side of a ``trio-chat.v1`` conversation, without I/O.

    Owns the ``cid`` counter, the commands still waiting for their ``ack`` or ``error``,
    the rooms the user is in, and the start-up: on ``welcome`` it asks for ``nick``
    (retrying ``NAME-2``, ``NAME-3``... on ``nick_taken``, up to :data:`NICK_ATTEMPTS`
    names), then joins ``room`` if given; :attr:`ready` turns true when that is answered,
    and only then should typed lines be sent. :meth:`receive` takes each line from the
    server, :meth:`typed` each line from the user; both return an :class:`Output`.
    """

    def __init__(
        self, style: Style, nick: str, room: str | None = None, tz: tzinfo | None = None
    ) -> None:
        self.style = style
        self.nick = nick
        self.room = room
        self.tz = tz
        #: True once the start-up (nickname, then room) is answered.
        self.ready = False
        #: True once the user sent ``/quit``: the close that follows is the user's wish.
        self.quitting = False
        self.rooms: set[str] = set()
        self._cids = itertools.count(1)
        self._pending: dict[int, Command] = {}
        self._welcomed = False
        self._attempt = 1
        self._nick_cid: int | None = None
        self._join_cid: int | None = None

    def _request(self, command: Command) -> tuple[int, str]:
        """The next ``cid`` and ``command`` as JSON with it; remembered until answered."""
        cid = next(self._cids)
        self._pending[cid] = command
        return cid, command_to_json(command, cid)

    def _ask_nick(self) -> Output:
        self._nick_cid, request = self._request(Nick(nick_candidate(self.nick, self._attempt)))
        return Output(send=[request])

    def _after_nick(self, output: Output) -> Output:
        """The nickname step is over: join the room, or be ready."""
        if self.room is None:
            self.ready = True
        else:
            self._join_cid, request = self._request(Join(self.room))
            output.send.append(request)
        return output

    def receive(self, line: str) -> Output:
        """Take one line (one JSON event) from the server."""
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict):
            return Output(show=[self.style.dim(UNREADABLE)])
        kind = event.get("type")
        if kind == "welcome" and not self._welcomed:
            self._welcomed = True
            rooms = event.get("rooms")
            if isinstance(rooms, list):
                self.rooms.update(room for room in rooms if isinstance(room, str))
            return self._ask_nick()
        if kind not in ("ack", "error"):
            return Output(show=self._render(event, None))
        cid = event.get("cid")
        ours = isinstance(cid, int) and not isinstance(cid, bool)  # ours are 1, 2, 3...
        request = self._pending.pop(cid, None) if ours else None
        if request is None:
            return Output(show=self._render(event, None))
        if cid == self._nick_cid:
            self._nick_cid = None
            taken = kind == "error" and event.get("code") == "nick_taken"
            if taken and self._attempt < NICK_ATTEMPTS:
                self._attempt += 1
                return self._ask_nick()
            if kind == "ack" and self._attempt > 1:
                got = make_safe(str(event.get("nick")))
                shown = [self.style.dim(f"* You are now known as {got} ({self.nick} is taken)")]
            else:
                shown = self._render(event, request)
            return self._after_nick(Output(show=shown))
        shown = self._render(event, request)
        if cid == self._join_cid:
            self._join_cid = None
            self.ready = True
        if kind == "ack":
            self._track_rooms(event)
        return Output(show=shown)

    def _render(self, event: dict[str, object], request: Command | None) -> list[str]:
        return render_event(event, self.style, request=request, rooms=self.rooms, tz=self.tz)

    def _track_rooms(self, ack: dict[str, object]) -> None:
        """Follow the user's rooms: joins add one, leaves remove one."""
        room = ack.get("room")
        if not isinstance(room, str):
            return
        if ack.get("command") == "join":
            self.rooms.add(room)
        elif ack.get("command") == "leave":
            self.rooms.discard(room)

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
    ``plain`` does not offer the JSON subprotocol at all. ``environ`` decides colour
    (``NO_COLOR``); ``tz`` the time zone of shown times (default: local time).
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
        environ: Mapping[str, str] | None = None,
        tz: tzinfo | None = None,
    ) -> None:
        self.url = url
        self._screen = screen
        self._input_fd = input_fd
        self._nick = nick
        self._room = room
        self._plain = plain
        self._environ = os.environ if environ is None else environ
        self._tz = tz
        # Set once the server selected trio-chat.v1; None in plain mode.
        self._json: JsonSession | None = None
        # Set when the JSON start-up (nickname, room) is answered: typed lines may go.
        self._ready = trio.Event()
        # The scope of the current phase (connecting, then chatting): cancelled when
        # the chat should end, from either side.
        self._phase_scope: trio.CancelScope | None = None
        self._leaving = False
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

    async def run(self) -> int:
        """Connect, chat until one side leaves, close; return the exit status.

        Owns the TCP stream, the WebSocket's reader task, the chat tasks and the
        signal watcher; all are closed or cancelled before this returns. SIGINT and
        SIGTERM are taken as the user leaving.
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
        host, port, resource = parse_url(self.url)
        self._screen.status(f"Connecting to server at {self.url}...")
        with self._enter_phase():
            stream = await self._open_stream(host, port)
        if self._leaving:
            self._screen.status("Exiting chat...")
            return 0
        try:
            try:
                async with trio.open_nursery() as websocket_tasks:
                    await self._chat(websocket_tasks, stream, host, resource)
                    websocket_tasks.cancel_scope.cancel()
            except* ConnectionRejected as group:
                rejected = group.exceptions[0]
                assert isinstance(rejected, ConnectionRejected)
                body = (rejected.body or b"").decode(errors="replace").strip()
                detail = f" ({body})" if body else ""
                raise ClientError(
                    f"Could not connect to {self.url}: the server refused with HTTP "
                    f"{rejected.status_code}{detail}"
                ) from None
            except* ClientError as group:
                raise group.exceptions[0] from None
            except* HandshakeError:
                raise ClientError(f"Could not connect to {self.url}: handshake failed") from None
        finally:
            await trio.aclose_forcefully(stream)
        return self._exit_status

    async def _open_stream(self, host: str, port: int) -> trio.SocketStream:
        """Open the TCP connection, or raise :class:`ClientError` saying why not."""
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                return await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise ClientError(
                f"Could not connect to {self.url}: {explain_connect_error(exc)}"
            ) from None
        except trio.TooSlowError:
            raise ClientError(f"Could not connect to {self.url}: timed out") from None

    async def _chat(
        self, websocket_tasks: trio.Nursery, stream: trio.SocketStream, host: str, resource: str
    ) -> None:
        """Handshake, run the sender and the receiver until one ends the chat, then close.

        The WebSocket's reader task runs in ``websocket_tasks``; the caller cancels it.
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
                raise ClientError(f"Could not connect to {self.url}: the handshake timed out")
            self._screen.status("\N{WHITE HEAVY CHECK MARK} Connected to server!")
            if ws.subprotocol == PROTOCOL:
                style = Style(colour_wanted(self._screen.interactive, self._environ))
                self._json = JsonSession(style, self._nick or login_nick(), self._room, self._tz)
                self._screen.status(START_JSON)
            else:
                if self._nick is not None or self._room is not None:
                    self._screen.status(
                        "(--name and --room need a trio-chat.v1 server; not used in plain mode)"
                    )
                self._screen.status(START_PLAIN)
            self._screen.prompt()
            async with trio.open_nursery() as chat:
                chat.start_soon(self._receive_loop, ws)
                chat.start_soon(self._send_loop, ws)
        if self._leaving:
            self._screen.status("Exiting chat...")
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(CloseCode.NORMAL_CLOSURE)

    async def _receive_loop(self, ws: WebSocketConnection) -> None:
        """Show every line the server sends; when the server closes, say how and end the chat.

        In JSON mode each line is an event, rendered, and the start-up's commands
        (nickname, room) are sent from here. Cancellation stops it between lines.
        A close the user asked for (``/quit``, answered with 1000) means exit status 0,
        any other close 1.
        """
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    self._screen.status(f"(a binary message of {len(message)} bytes)")
                    continue
                for line in message.split("\n"):
                    if self._json is None:
                        self._screen.incoming(line)
                    elif line:
                        await self._handle_event(ws, self._json, line)
        except ConnectionClosed as closed:
            reason = closed.reason
            code = reason.code if reason else None
            self._screen.status(
                "Server closed the connection: "
                + describe_close(code, reason.reason if reason else None)
            )
            asked = self._json is not None and self._json.quitting
            self._exit_status = 0 if asked and code == CloseCode.NORMAL_CLOSURE else 1
            assert self._phase_scope is not None
            self._phase_scope.cancel()

    async def _handle_event(self, ws: WebSocketConnection, session: JsonSession, line: str) -> None:
        """Show one JSON event and send what the session asks in answer; once the start-up
        is over, let typed lines through. Raises ``ConnectionClosed`` if a send finds the
        connection closed. Cancelled during a send, the chat is ending: the session may
        count as pending a command that never left, which nothing looks at again."""
        output = session.receive(line)
        for shown in output.show:
            self._screen.show(shown)
        for request in output.send:
            await ws.send_message(request)
        if session.ready:
            self._ready.set()

    async def _send_loop(self, ws: WebSocketConnection) -> None:
        """Send each typed line until ``exit`` or end of input, then leave.

        In JSON mode a line waits until the start-up is answered (so it goes out under
        the user's nickname, in the chosen room), then becomes a command; ``/help`` and
        wrong commands are answered here. Cancellation abandons the blocked read.
        """
        async for line in read_lines(self._input_fd):
            if is_exit_command(line):
                break
            if line.strip():
                try:
                    await self._send_line(ws, line)
                except ConnectionClosed:
                    return  # the receiver reports the close
            self._screen.prompt()
        self.leave()

    async def _send_line(self, ws: WebSocketConnection, line: str) -> None:
        """Send one typed line: as it is in plain mode, as a JSON command otherwise (after
        the start-up is answered). Cancelled while waiting or sending, the chat is ending
        and the line is dropped."""
        if self._json is None:
            await ws.send_message(line)
            return
        await self._ready.wait()
        output = self._json.typed(line)
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

    Exits 0 when the user leaves, 1 when the server closes the connection or cannot
    be reached.
    """
    args = parse_args(argv)
    client = ChatClient(
        args.url,
        Screen(),
        sys.stdin.fileno() if sys.stdin else os.open(os.devnull, os.O_RDONLY),
        nick=args.name,
        room=args.room,
        plain=args.plain,
    )
    sys.exit(trio.run(client.run))


if __name__ == "__main__":
    main()
