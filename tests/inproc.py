"""In-process servers and async clients for protocol tests (a plugin: ``pytest_plugins``).

A test module names it with ``pytest_plugins = ["inproc"]`` and gets the ``live_server``
and ``start_live_server`` fixtures: a :class:`~trio_chat.server.server.ChatServer` running
in the test's nursery on 127.0.0.1, port 0, its messages in memory and no history on join,
with its log watched (:class:`ServerLog`) and its operator console answered in-process
(:meth:`LiveServer.console`). No subprocess: a process is not the point of these tests.

The clients are the independent ``websockets`` library's Trio client (the interop check:
an implementation that shares no code with the server's), read one line at a time
whatever the framing. Every wait is for an event under a time limit, never a sleep;
expected strings are exact.
"""

from __future__ import annotations

import json
import logging
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import trio
import trio.testing
import websockets.exceptions
from websockets.frames import Close
from websockets.trio.client import ClientConnection, connect

from trio_chat.server.config import ServerConfig
from trio_chat.server.console import handle_console_line
from trio_chat.server.server import ChatServer

from support import EVENT_TIMEOUT, EXEMPT_LOOPBACK, LIMITS_LIFTED, PROTOCOL, Event, welcome

__all__ = [
    "SERVER_LOGGER",
    "JsonClient",
    "LineReader",
    "LiveServer",
    "OtherLoggers",
    "PlainClient",
    "ServerLog",
    "StartLiveServer",
    "connect_to",
    "is_error",
    "live_server",
    "lose_connection",
    "open_json",
    "open_jsons",
    "open_plain",
    "open_plains",
    "start_live_server",
    "wait_connected",
    "wait_disconnected",
]

#: The package's logger: every server module logs under it (``trio_chat.server``, ``.connection``…).
SERVER_LOGGER = "trio_chat"


class ServerLog(logging.Handler):
    """The messages the server has logged, and a way to wait for one of them.

    The in-process twin of reading a server subprocess's output: the connect and
    disconnect lines are what the server says about a connection, the same lines an
    operator reads. Created inside a Trio run; records logged from any thread wake the
    waiters through the run's token. Errors (a connection's traceback, say) are kept
    apart in :attr:`errors`, which the fixture requires to be empty at the end: so is a
    record with a traceback at any level, and (:class:`OtherLoggers`) an error or a
    traceback any other logger logs meanwhile.
    """

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        #: Every message logged so far, formatted (``record.getMessage()``), in order.
        self.messages: list[str] = []
        #: Every record at ERROR or above, formatted with its traceback.
        self.errors: list[str] = []
        self._token = trio.lowlevel.current_trio_token()
        self._changed = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's message and wake whoever waits for a new one."""
        self.messages.append(record.getMessage())
        self.note_error(record)
        self._token.run_sync_soon(self._notify)

    def note_error(self, record: logging.LogRecord) -> None:
        """Keep ``record`` in :attr:`errors` when it is an error or carries a traceback
        (a warning logged with ``exc_info`` is a traceback in the log too)."""
        if is_error(record):
            self.errors.append(f"{record.name}: {logging.Formatter().format(record)}")

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(self, pattern: str | re.Pattern[str]) -> re.Match[str]:
        """The first match of ``pattern`` in one logged message, waiting for it to be
        logged; fails (AssertionError, with the log) after the event time limit."""
        regex = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
        checked = 0
        try:
            with trio.fail_after(EVENT_TIMEOUT):
                while True:
                    for message in self.messages[checked:]:
                        checked += 1
                        match = regex.search(message)
                        if match:
                            return match
                    await self._changed.wait()
        except trio.TooSlowError:
            log = "\n".join(self.messages)
            raise AssertionError(f"{regex.pattern!r} not in the server's log:\n{log}") from None


def is_error(record: logging.LogRecord) -> bool:
    """True for a record at ERROR or above, or one that carries a traceback or a stack."""
    return record.levelno >= logging.ERROR or bool(record.exc_info) or bool(record.stack_info)


class OtherLoggers(logging.Handler):
    """On the root logger while a server runs: errors and tracebacks that loggers other
    than the package's log (trio's, wsproto's, h11's, the root logger's own), kept in
    ``log``'s :attr:`~ServerLog.errors` with the package's. The package's records reach
    the root too; ``log`` has them already."""

    def __init__(self, log: ServerLog) -> None:
        super().__init__(logging.DEBUG)
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        if record.name != SERVER_LOGGER and not record.name.startswith(f"{SERVER_LOGGER}."):
            self._log.note_error(record)


@dataclass
class LiveServer:
    """A server running in the test's nursery, with its log and its console."""

    server: ChatServer
    log: ServerLog
    #: What the test's clients verify a TLS server with (a test CA's context).
    client_ssl: ssl.SSLContext | None = None

    @property
    def url(self) -> str:
        """``ws://127.0.0.1:PORT`` (``wss://`` for a TLS server): where it listens."""
        return self.server.urls[0]

    def console(self, line: str) -> str | None:
        """Type ``line`` at the operator console; return what the console prints."""
        return handle_console_line(line, self.server.chat, self.server.shutdown)

    async def wait_for(self, pattern: str | re.Pattern[str]) -> re.Match[str]:
        """Wait until the server has logged a message matching ``pattern``."""
        return await self.log.wait_for(pattern)


StartLiveServer = Callable[..., Awaitable[LiveServer]]


@pytest.fixture
async def start_live_server(nursery: trio.Nursery) -> AsyncIterator[StartLiveServer]:
    """A factory: ``await start_live_server(presence_limit=2)`` runs a server with those
    settings in the test's nursery (127.0.0.1, port 0; messages in memory, no history on
    join and the per-address limits lifted for loopback, ``EXEMPT_LOOPBACK``, unless
    given) and returns it once it listens, its log watched from the start.

    At teardown every server started is asked to shut down and the log handler is
    removed; the nursery fixture cancels whatever is left. A test during which the server
    logged an error (a connection that failed with a traceback) fails there, though its
    clients saw nothing wrong; so does one during which any logger (trio's, wsproto's...)
    logged an error or a traceback.
    """
    logger = logging.getLogger(SERVER_LOGGER)
    level = logger.level
    log = ServerLog()
    logger.addHandler(log)
    logger.setLevel(logging.INFO)
    others = OtherLoggers(log)
    logging.getLogger().addHandler(others)
    started: list[ChatServer] = []

    async def start(**settings: Any) -> LiveServer:
        # Messages in memory unless a test asks for a file: no test sees another's.
        # The rate limits lifted (LIMITS_LIFTED): tests send fast, and those about the
        # limits set their own.
        defaults: dict[str, Any] = {
            "port": 0,
            "history_on_join": 0,
            "db": ":memory:",
            "limits_exempt": EXEMPT_LOOPBACK,
            **LIMITS_LIFTED,
        }
        config = ServerConfig(host="127.0.0.1", **{**defaults, **settings})
        server: ChatServer = await nursery.start(ChatServer(config).run)
        started.append(server)
        return LiveServer(server, log)

    try:
        yield start
    finally:
        for server in started:
            server.shutdown()
        logger.removeHandler(log)
        logger.setLevel(level)
        logging.getLogger().removeHandler(others)
    assert not log.errors, "the server logged errors:\n" + "\n".join(log.errors)


@pytest.fixture
async def live_server(start_live_server: StartLiveServer) -> LiveServer:
    """A server with default limits (the per-address ones lifted for loopback) in the
    test's nursery, the rate limits lifted (see ``start_live_server``)."""
    return await start_live_server()


# --- the ``websockets`` Trio client ----------------------------------------------------------


def connect_to(
    url: str,
    subprotocols: list[str] | None = None,
    headers: dict[str, str] | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> connect:
    """``websockets``' Trio client for ``url``, offering ``subprotocols`` and sending
    ``headers`` too (a ``wss://`` server verified with ``ssl_context``): no proxy, no
    keepalive pings, the opening and the closing handshake each time-limited."""
    return connect(
        url,
        subprotocols=subprotocols,  # type: ignore[arg-type]
        additional_headers=headers,
        ssl=ssl_context,
        proxy=None,
        ping_interval=None,
        open_timeout=EVENT_TIMEOUT,
        close_timeout=EVENT_TIMEOUT,
    )


def local_port(ws: ClientConnection) -> int:
    """The client's own TCP port: the one the server sees as the peer's."""
    return int(ws.local_address[1])


async def wait_connected(live: LiveServer, ws: ClientConnection, *, json_mode: bool = False) -> int:
    """Wait for the server's connect line for ``ws``; return its client number.

    The line names the subprotocol (``json_mode``). The server joins the connection to
    the chat as it logs it; waiting then until every task is blocked makes sure it has,
    whichever it does first, so broadcasts reach the connection once this returns.
    """
    suffix = r" \(trio-chat\.v1\)" if json_mode else ""
    line = re.compile(rf"Client #(\d+) connected from 127\.0\.0\.1:{local_port(ws)}{suffix}$")
    key = int((await live.wait_for(line)).group(1))
    with trio.fail_after(EVENT_TIMEOUT):
        await trio.testing.wait_all_tasks_blocked()
    return key


class LineReader:
    """A ``websockets`` connection read one line at a time, whatever the framing."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        #: Every frame received so far, as sent by the server.
        self.frames: list[str] = []
        self._lines: deque[str] = deque()

    async def line(self) -> str:
        """The next line received; a frame of several lines yields them one by one."""
        with trio.fail_after(EVENT_TIMEOUT):
            while not self._lines:
                frame = await self.ws.recv()
                assert isinstance(frame, str), frame
                self.frames.append(frame)
                self._lines.extend(frame.split("\n"))
        return self._lines.popleft()

    async def expect_close(self) -> Close:
        """The server closes the connection with no further line; return its close frame."""
        assert not self._lines, f"unread lines before the close: {list(self._lines)}"
        with (
            trio.fail_after(EVENT_TIMEOUT),
            pytest.raises(websockets.exceptions.ConnectionClosed) as info,
        ):
            await self.ws.recv()
        assert info.value.rcvd is not None, "the server sent no close frame"
        return info.value.rcvd


async def lose_connection(client: LineReader) -> None:
    """Cut ``client``'s TCP connection without a closing handshake, as a network that
    goes away does: the server sees the connection end with no close frame (1006)."""
    await trio.aclose_forcefully(client.ws.stream)


class PlainClient(LineReader):
    """A plain-mode connection: text lines out, text lines in."""

    def __init__(self, ws: ClientConnection, key: int) -> None:
        super().__init__(ws)
        #: The server's number for this connection (``Client #key`` in its log).
        self.key = key
        self.port = local_port(ws)

    async def send(self, text: str) -> None:
        """Send one text frame."""
        await self.ws.send(text)

    async def expect(self, *lines: str) -> None:
        """The next lines received are exactly ``lines``, in order."""
        for expected in lines:
            assert await self.line() == expected

    async def ask(self, text: str, *answer: str) -> None:
        """Send ``text``; the next lines received are exactly ``answer``."""
        await self.send(text)
        await self.expect(*answer)


async def wait_disconnected(live: LiveServer, client: PlainClient) -> None:
    """Wait until the server has logged ``client``'s departure (it has left the chat)."""
    await live.wait_for(f"Client #{client.key} (127.0.0.1:{client.port}) disconnected: ")


class JsonClient(LineReader):
    """A ``trio-chat.v1`` connection: JSON commands out, one JSON event per line in.
    ``session`` is the secret its welcome gave (once :func:`open_json` read it)."""

    session: str | None = None

    async def send(self, command: Event) -> None:
        """Send ``command`` as one JSON text frame."""
        await self.ws.send(json.dumps(command))

    async def event(self) -> Event:
        """The next event: one line, which must be one JSON object."""
        event = json.loads(await self.line())
        assert isinstance(event, dict), event
        return event

    async def call(self, command: Event) -> Event:
        """Send ``command``; return the next event received."""
        await self.send(command)
        return await self.event()

    async def events_until_ack(self, cid: str) -> tuple[list[Event], Event]:
        """Send a ``rooms`` command with ``cid``; return every event before its ack, and
        the ack. Whatever was pending for this client is in the list, and nothing else."""
        await self.send({"type": "rooms", "cid": cid})
        before: list[Event] = []
        while True:
            event = await self.event()
            if event.get("type") == "ack" and event.get("cid") == cid:
                return before, event
            before.append(event)


@asynccontextmanager
async def open_plain(live: LiveServer, query: str = "") -> AsyncIterator[PlainClient]:
    """A plain-mode client of ``live`` at ``url + query`` (no subprotocol offered), in
    the chat once its connect line is logged; closed (1000) on the way out."""
    async with connect_to(live.url + query, ssl_context=live.client_ssl) as ws:
        assert ws.subprotocol is None
        yield PlainClient(ws, await wait_connected(live, ws))


@asynccontextmanager
async def open_json(
    live: LiveServer,
    query: str = "",
    *,
    nick: str | None = None,
    rooms: tuple[str, ...] = ("lobby",),
    session: Any = None,
) -> AsyncIterator[JsonClient]:
    """A ``trio-chat.v1`` client of ``live`` at ``url + query``, its welcome checked (it
    arrives with ``nick`` in ``rooms``, and the secret ``session`` when it resumes one): once it
    is in, the client is subscribed. Closed
    on the way out."""
    async with connect_to(live.url + query, [PROTOCOL], ssl_context=live.client_ssl) as ws:
        assert ws.subprotocol == PROTOCOL
        client = JsonClient(ws)
        greeting = await client.event()
        assert greeting == (
            welcome(nick, rooms) if session is None else welcome(nick, rooms, session)
        )
        client.session = greeting["session"]
        yield client


@asynccontextmanager
async def open_plains(live: LiveServer, count: int) -> AsyncIterator[list[PlainClient]]:
    """``count`` anonymous plain clients, connected one after another."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_plain(live)) for _ in range(count)]


@asynccontextmanager
async def open_jsons(live: LiveServer, count: int) -> AsyncIterator[list[JsonClient]]:
    """``count`` JSON clients, connected one after another."""
    async with AsyncExitStack() as stack:
        yield [await stack.enter_async_context(open_json(live)) for _ in range(count)]
