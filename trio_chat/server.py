"""The chat server: where connections are accepted, and how the server stops.

``python -m trio_chat.server`` runs :func:`main`. The pieces, outside in:

* :class:`ChatServer` listens, accepts, and owns every connection's task. Its
  :meth:`~ChatServer.handle_stream` is the single place a new TCP connection enters.
* :class:`~trio_chat.connection.ChatConnection` serves one client (reader + writer).
* :class:`~trio_chat.chat.Chat` turns lines into events; :class:`~trio_chat.bus.Bus`
  fans them out.

Shutdown (``/quit``, SIGINT, SIGTERM) is not driven by cancellation, because a
cancelled connection cannot send a close frame: the server stops accepting, asks every
connection to close with 1001 concurrently, waits up to ``shutdown_grace`` seconds, and
only then cancels what is left.
"""

from __future__ import annotations

import argparse
import errno
import gc
import itertools
import logging
import os
import re
import resource
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from urllib.parse import parse_qs, urlsplit

import trio

from .chat import Arrival, Chat
from .commands import MAX_ID, PROTOCOL, CommandError, valid_name
from .config import DEFAULT_HOST, DEFAULT_PORT, ServerConfig
from .connection import ChatConnection
from .console import CONSOLE_HELP, run_console
from .history import MessageLog
from .protocol import SERVER_FULL, SERVER_SHUTTING_DOWN, CloseCode
from .store import StoreError, default_db_path, open_store
from .transport import ConnectionStream
from .websocket import (
    NOT_A_WEBSOCKET,
    Handshake,
    WebSocket,
    is_websocket_upgrade,
    offered_subprotocols,
)

__all__ = ["ChatServer", "main", "parse_args", "serve"]

logger = logging.getLogger("trio_chat.server")

#: accept() errors that mean "out of file descriptors or memory": wait and retry
#: instead of crashing (the same list and pause as trio.serve_listeners).
ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}
ACCEPT_CAPACITY_PAUSE = 0.100
#: Rooms one connection may name in its URL.
MAX_ARRIVAL_ROOMS = 100
#: Garbage-collector thresholds. A full collection scans every tracked object: at
#: 5,000 connections one took about 300 ms, and with the default third threshold (10)
#: thirteen of them ran while the connections arrived. A third threshold of 100 makes
#: full collections a tenth as frequent (cycles are still collected); what exists at
#: start-up is also frozen out of the scans (gc.freeze) since it lives for good.
GC_THRESHOLDS = (700, 10, 100)


def format_address(address: object) -> str:
    """``host:port`` for an IPv4 or IPv6 socket address, ``[::1]:port`` for v6."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = address[0], address[1]
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return str(address)


def describe_peer(stream: trio.SocketStream) -> str:
    """The remote address of a socket stream, for the log."""
    try:
        return format_address(stream.socket.getpeername())
    except OSError:  # the peer already left
        return "unknown"


def parse_arrival(path: str) -> Arrival:
    """The nickname, rooms and resume point a client asked for in its URL's query:
    ``/?nick=alice&room=lobby&room=dev&since=42`` (``room=lobby,dev`` works too).
    Raises ValueError with a one-line reason for anything invalid."""
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    try:
        nicks = query.get("nick", [])
        if len(nicks) > 1:
            raise ValueError("give one nick")
        nick = valid_name(nicks[0], "nickname") if nicks else None
        rooms = tuple(
            dict.fromkeys(
                valid_name(name, "room name").lower()
                for value in query.get("room", [])
                for name in value.split(",")
            )
        )
    except CommandError as error:
        raise ValueError(error.text) from None
    since_values = query.get("since", [])
    since = None
    if since_values:
        if len(since_values) > 1 or not re.fullmatch(r"[0-9]{1,19}", since_values[0]):
            raise ValueError("since must be one whole number: the id of the last message seen")
        since = int(since_values[0])
        if since > MAX_ID:
            raise ValueError(f"since must be at most {MAX_ID}")
    if len(rooms) > MAX_ARRIVAL_ROOMS:
        raise ValueError(f"at most {MAX_ARRIVAL_ROOMS} rooms")
    return Arrival(nick, rooms, since)


class ChatServer:
    """A chat server bound to its listeners; :meth:`run` serves until :meth:`shutdown`."""

    def __init__(self, config: ServerConfig, chat: Chat | None = None) -> None:
        self.config = config
        if chat is None:
            chat = Chat(
                MessageLog(open_store(config.db, config.history_limit)),
                presence_limit=config.presence_limit,
                history_on_join=config.history_on_join,
            )
        self.chat = chat
        self.connections: dict[int, ChatConnection] = {}
        self.urls: list[str] = []
        self._keys = itertools.count(1)
        self._shutdown_requested = trio.Event()
        self._accepting = True
        #: Set once :meth:`run` has returned: every connection is closed.
        self.stopped = trio.Event()

    @property
    def port(self) -> int:
        """The port of the first listener (the one chosen, when asked for port 0)."""
        return int(self.urls[0].rsplit(":", 1)[1])

    def shutdown(self) -> None:
        """Ask :meth:`run` to stop: it closes every connection and returns. Idempotent."""
        self._shutdown_requested.set()

    async def run(
        self, *, task_status: trio.TaskStatus[ChatServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listen, serve until :meth:`shutdown`, close every connection, and return.

        Calls ``task_status.started(self)`` once it is listening (``self.urls`` is
        filled in). Owns the listeners and every connection's task: none outlives this
        call. Cancelling it is a hard stop that drops connections without close frames;
        :meth:`shutdown` is the clean way.
        """
        try:
            await self._run(task_status)
        finally:
            self.stopped.set()

    async def _run(self, task_status: trio.TaskStatus[ChatServer]) -> None:
        await self.chat.log.open()
        try:
            async with trio.open_nursery() as log_tasks:
                await log_tasks.start(self.chat.log.run)
                await self._serve(task_status)
                log_tasks.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.chat.log.store.aclose()

    async def _serve(self, task_status: trio.TaskStatus[ChatServer]) -> None:
        listeners = await trio.open_tcp_listeners(self.config.port, host=self.config.host)
        self.urls = [f"ws://{format_address(ln.socket.getsockname())}" for ln in listeners]
        async with trio.open_nursery() as handlers:
            async with trio.open_nursery() as acceptors:
                for listener in listeners:
                    acceptors.start_soon(self._accept_loop, listener, handlers)
                for url in self.urls:
                    logger.info("\N{WHITE HEAVY CHECK MARK} Server is running on %s", url)
                task_status.started(self)
                await self._shutdown_requested.wait()
                acceptors.cancel_scope.cancel()
            await self._close_all()
            handlers.cancel_scope.cancel()
        logger.info("server stopped")

    async def _accept_loop(self, listener: trio.SocketListener, handlers: trio.Nursery) -> None:
        """Accept connections until cancelled, starting each in ``handlers``; closes
        ``listener`` on the way out so that new connections are refused at once."""
        async with listener:
            while True:
                try:
                    stream = await listener.accept()
                except OSError as exc:
                    if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                        raise
                    logger.error("accept failed (%s); pausing", errno.errorcode[exc.errno])
                    await trio.sleep(ACCEPT_CAPACITY_PAUSE)
                    continue
                handlers.start_soon(self.handle_stream, stream)

    async def handle_stream(self, stream: trio.SocketStream) -> None:
        """The one place a new connection enters: its HTTP request, the limits, then
        the WebSocket until it closes.

        Owns ``stream`` and closes it on the way out, whatever happens. An error in
        this connection (ours or a protocol library's) is logged here, closes this
        connection alone, and never reaches the server.
        """
        key = next(self._keys)
        peer = describe_peer(stream)
        # Only the socket is kept: trio's SocketStream set it up (TCP_NODELAY), and
        # ConnectionStream reads and writes it from here on.
        connection_stream = ConnectionStream(stream.socket)
        del stream
        try:
            accepted = await self._handshake(connection_stream, peer)
            if accepted is None:
                return
            ws, arrival, json = accepted
            connection = ChatConnection(
                ws, key, peer, self.chat, config=self.config, json=json, arrival=arrival
            )
            self.connections[key] = connection
            logger.info(
                "\N{WHITE HEAVY CHECK MARK} Client #%d connected from %s%s",
                key,
                peer,
                f" ({PROTOCOL})" if json else "",
            )
            try:
                await connection.run()
            finally:
                del self.connections[key]
                logger.info(
                    "\N{CROSS MARK} Client #%d (%s) disconnected: %s",
                    key,
                    peer,
                    connection.describe_close(),
                )
        except Exception:
            logger.exception("connection #%d (%s) failed", key, peer)
        finally:
            await trio.aclose_forcefully(connection_stream)

    async def _handshake(
        self, stream: ConnectionStream, peer: str
    ) -> tuple[WebSocket, Arrival, bool] | None:
        """The accepted WebSocket, the arrival its URL asks for and whether it speaks
        JSON; or None when the request was refused, or did not come within
        ``handshake_timeout`` (logged)."""
        with trio.move_on_after(self.config.handshake_timeout):
            return await self._answer_request(Handshake(stream), peer)
        logger.info("%s: no WebSocket handshake within %g s", peer, self.config.handshake_timeout)
        return None

    async def _answer_request(
        self, handshake: Handshake, peer: str
    ) -> tuple[WebSocket, Arrival, bool] | None:
        """Read the connection's HTTP request and answer it: the upgrade, or an HTTP
        status saying why not (None then)."""
        request = await handshake.read_request()
        if request is None:
            return None
        if not is_websocket_upgrade(request):
            await handshake.respond(426, NOT_A_WEBSOCKET, [("upgrade", "websocket")])
            return None
        if not self._accepting:
            await handshake.respond(503, SERVER_SHUTTING_DOWN)
            return None
        if len(self.connections) >= self.config.max_connections:
            logger.warning("%s refused: %d connections open", peer, len(self.connections))
            await handshake.respond(503, SERVER_FULL)
            return None
        try:
            arrival = parse_arrival(request.target.decode("ascii", "replace"))
        except ValueError as exc:
            await handshake.respond(400, str(exc))
            return None
        # The JSON subprotocol when the client offers it; plain text otherwise.
        json = PROTOCOL in offered_subprotocols(request)
        ws = await handshake.accept(
            request,
            subprotocol=PROTOCOL if json else None,
            max_message_size=self.config.max_message_size,
        )
        return None if ws is None else (ws, arrival, json)

    async def _close_all(self) -> None:
        """Close every connection with 1001, concurrently, within ``shutdown_grace``.

        Each connection sends its own close frame from its own task (shielded), so this
        only asks and waits; whatever is still open at the deadline is left to the
        caller's cancellation.
        """
        self._accepting = False
        connections = list(self.connections.values())
        if connections:
            logger.info("closing %d connection(s)", len(connections))
        for connection in connections:
            connection.close_soon(CloseCode.GOING_AWAY, SERVER_SHUTTING_DOWN)
        with trio.move_on_after(self.config.shutdown_grace):
            for connection in connections:
                await connection.closed.wait()


async def serve(
    config: ServerConfig,
    *,
    console_fd: int | None = None,
    file_limit: str | None = None,
    task_status: trio.TaskStatus[ChatServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a server with its shutdown triggers: SIGINT, SIGTERM and (when ``console_fd``
    is given) the operator console. Returns once the server has shut down. ``file_limit``
    is logged once the server listens (what :func:`raise_open_file_limit` did).

    Owns the server, the signal watcher and the console; the console's thread is
    abandoned on the way out.
    """
    server = ChatServer(config)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            if file_limit is not None:
                logger.info("%s", file_limit)
            nursery.start_soon(_watch_signals, signals, server)
            if console_fd is not None:
                print(CONSOLE_HELP, flush=True)
                nursery.start_soon(run_console, console_fd, server.chat, server.shutdown, _echo)
            task_status.started(server)
            await server.stopped.wait()
            # The server has closed every connection; the watcher and the console's
            # blocked read only need stopping.
            nursery.cancel_scope.cancel()


async def _watch_signals(signals: AsyncIterator[int], server: ChatServer) -> None:
    """Turn SIGINT and SIGTERM into a clean shutdown (a second signal changes nothing)."""
    async for signum in signals:
        logger.info("received %s; shutting down", signal.Signals(signum).name)
        server.shutdown()


def _echo(text: str) -> None:
    print(text, flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


#: The limit flags: (ServerConfig field, value parser, metavar, help). Each becomes
#: ``--field-name`` with the field's default, so a flag and its setting cannot drift apart.
LIMIT_FLAGS: tuple[tuple[str, Callable[[str], object], str, str], ...] = (
    (
        "max_message_size",
        _positive_int,
        "BYTES",
        "largest message a client may send, in UTF-8 bytes; a bigger one closes it with 1009",
    ),
    (
        "queue_depth",
        _positive_int,
        "EVENTS",
        "events queued per client before it is closed with 1008 'slow consumer'",
    ),
    (
        "send_timeout",
        _seconds,
        "SECONDS",
        "time one frame may take to send before the client is dropped as a slow consumer",
    ),
    (
        "handshake_timeout",
        _seconds,
        "SECONDS",
        "time a new connection has to complete the WebSocket handshake",
    ),
    (
        "max_connections",
        _positive_int,
        "N",
        "connections open at once; further handshakes get HTTP 503 'server full'",
    ),
    (
        "presence_limit",
        _non_negative_int,
        "MEMBERS",
        "rooms with more members than this get no join/leave/nick/quit notices",
    ),
    (
        "history_limit",
        _positive_int,
        "MESSAGES",
        "messages kept per room (and for private messages); the oldest go first",
    ),
    (
        "history_on_join",
        _non_negative_int,
        "MESSAGES",
        "stored messages a client is sent when it joins a room (0: none)",
    ),
    (
        "shutdown_grace",
        _seconds,
        "SECONDS",
        "time given to closing every connection with 1001 at shutdown",
    ),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The server's command line; environment variables supply the host and port defaults."""
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="python -m trio_chat.server",
        description="Run the trio_chat WebSocket chat server. Lines typed on its "
        "standard input are broadcast to every client; /quit, Ctrl-C or SIGTERM "
        "stop it cleanly.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("TRIO_CHAT_HOST", DEFAULT_HOST),
        help="interface to listen on (env TRIO_CHAT_HOST)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=argparse.SUPPRESS,  # absent unless given: then TRIO_CHAT_PORT decides
        help=f"TCP port; 0 picks a free one (env TRIO_CHAT_PORT; default: {DEFAULT_PORT})",
    )
    for field, parse, metavar, help_text in LIMIT_FLAGS:
        parser.add_argument(
            "--" + field.replace("_", "-"),
            type=parse,
            default=getattr(defaults, field),
            metavar=metavar,
            help=help_text,
        )
    parser.add_argument(
        "--db",
        default=str(default_db_path()),
        metavar="PATH",
        help="SQLite file that stores every message; ':memory:' keeps them in memory only",
    )
    parser.add_argument(
        "--no-console",
        action="store_true",
        help="do not read operator lines from standard input",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="logging threshold",
    )
    args = parser.parse_args(argv)
    if not hasattr(args, "port"):
        try:
            args.port = _port(os.environ.get("TRIO_CHAT_PORT", str(DEFAULT_PORT)))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"TRIO_CHAT_PORT: {exc}")
    return args


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The :class:`ServerConfig` the parsed command line describes."""
    limits = {field: getattr(args, field) for field, *_ in LIMIT_FLAGS}
    return ServerConfig(host=args.host, port=args.port, db=args.db, **limits)


def raise_open_file_limit() -> str:
    """Raise the soft limit on open files to the hard limit: every connection is a file
    descriptor, and the usual soft limit (1024) would cap the server there. Returns
    the line to log once the server is listening."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= hard:
        return f"open-file limit: {soft}"
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        return f"could not raise the open-file limit from {soft}: {exc}"
    return f"raised the open-file limit from {soft} to {hard}"


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception in ``group``, however deeply nurseries nested it."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m trio_chat.server`` and ``trio-chat-server``.

    Exits 0 after a clean shutdown, 2 when the server cannot start (bad flag, port
    in use, unusable history database), each with one clear line and no traceback.
    """
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    config = config_from_args(args)
    file_limit = raise_open_file_limit()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    console_fd = None if args.no_console else sys.stdin.fileno() if sys.stdin else None
    try:
        trio.run(lambda: serve(config, console_fd=console_fd, file_limit=file_limit))
    except* StoreError as group:
        print(first_error(group), file=sys.stderr)
        sys.exit(2)
    except* OSError as group:
        exc = first_error(group)
        assert isinstance(exc, OSError)
        print(
            f"Could not listen on {config.host}:{config.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        sys.exit(2)


if __name__ == "__main__":
    main()
