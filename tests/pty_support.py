"""The machinery of the client's pseudo-terminal tests, shared by the ``test_client_*`` modules.

A test module uses it with ``pytest_plugins = ["pty_support"]`` (which registers the
fixtures defined here: :func:`start_client`, :func:`peers`, :func:`server`,
:func:`chatting`, :func:`chatting_plain`) and imports the helpers it needs by name.

The client runs in a subprocess in a pseudo-terminal (pexpect), the server in another
(:class:`support.ServerProcess`); the other side of the chat is the ``websockets``
library's sync client (:class:`Peer`). Every wait is for an event under a time limit;
expected strings are exact (a shown time is computed from the event's ``ts``).
"""

from __future__ import annotations

import io
import itertools
import json
import re
import socket
import sys
import termios
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from datetime import datetime, timedelta
from typing import Any

import pexpect
import pytest
from websockets.sync.client import ClientConnection, connect

from support import EVENT_TIMEOUT, ROOT, ServerProcess, child_env

#: What the user must never wait longer than for the client to quit.
EXIT_WITHIN = 1.0
PROTOCOL = "trio-chat.v1"
#: The clients' time zone (POSIX form: UTC+05:30, no tz database needed), chosen so that
#: a shown time differs from the UTC in the event: it proves times are shown locally.
CLIENT_TZ = "IST-5:30"
CLIENT_UTC_OFFSET = timedelta(hours=5, minutes=30)
START_JSON = (
    "Start chatting (type messages and press Enter; '/help' lists the commands, 'exit' to quit)"
)
START_PLAIN = "Start chatting (type messages and press Enter; 'exit' to quit)"


def local_time(ts: str) -> str:
    """``HH:MM`` of the event time ``ts`` in the clients' time zone."""
    return (datetime.fromisoformat(ts) + CLIENT_UTC_OFFSET).strftime("%H:%M")


def client_env(overrides: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """The client's environment: no colour (``NO_COLOR=1``) and :data:`CLIENT_TZ`, then
    ``overrides`` (a ``None`` value removes the variable)."""
    env = child_env()
    env["NO_COLOR"] = "1"
    env["TZ"] = CLIENT_TZ
    for name, value in (overrides or {}).items():
        if value is None:
            env.pop(name, None)
        else:
            env[name] = value
    return env


def shown(line: str) -> str:
    """``line`` as the client writes it on a terminal, as it reaches the pty master.

    Save cursor, newline, up, insert line, the line, newline, restore cursor, down; the
    terminal's output processing (onlcr) turns each ``\\n`` into ``\\r\\n``.
    """
    return f"\x1b7\r\n\x1b[A\x1b[L{line}\r\n\x1b8\x1b[B"


#: What the client writes last on a terminal: carriage return, erase the prompt line.
FINISH = "\r\x1b[K"


class Client:
    """The client running in a pseudo-terminal, with everything it wrote recorded.

    ``args`` follow the URL on the command line; ``env`` overrides :func:`client_env`.
    """

    def __init__(self, url: str, *args: str, env: Mapping[str, str | None] | None = None) -> None:
        self.url = url
        self.transcript = io.StringIO()
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "trio_chat.client", url, *args],
            env=client_env(env),
            cwd=str(ROOT),
            encoding="utf-8",
            timeout=EVENT_TIMEOUT,
            dimensions=(24, 100),
        )
        self.child.logfile_read = self.transcript

    @property
    def output(self) -> str:
        """Everything the client has written to the terminal so far."""
        return self.transcript.getvalue()

    def expect(self, text: str, timeout: float = EVENT_TIMEOUT) -> None:
        """Wait until the client writes exactly ``text``."""
        self.child.expect_exact(text, timeout=timeout)

    def wait_until_ready(self, nick: str | None = None) -> None:
        """Wait for the connected line, the start line and the prompt; in JSON mode (a
        ``nick`` is given) then for the nickname's ack, after which the client is in
        the chat under that nick and typed lines go out at once."""
        self.expect(shown(f"Connecting to server at {self.url}..."))
        self.expect(shown("\N{WHITE HEAVY CHECK MARK} Connected to server!"))
        self.expect(shown(START_PLAIN if nick is None else START_JSON))
        self.expect("> ")
        if nick is not None:
            self.expect(shown(f"* You are now known as {nick}"))

    def wait_for_exit(self, timeout: float = EVENT_TIMEOUT) -> int:
        """Wait for end of output within ``timeout``, then for the process; its status.

        Fails if the client was killed by a signal rather than exiting.
        """
        self.child.expect(pexpect.EOF, timeout=timeout)
        self.child.close()
        assert self.child.signalstatus is None
        return self.child.exitstatus

    def terminal_mode(self) -> list[object]:
        """The terminal's current attributes (the pty pair shares one set)."""
        return termios.tcgetattr(self.child.child_fd)

    def close(self) -> None:
        self.child.close(force=True)


class Peer:
    """The other side of a chat: the ``websockets`` sync client speaking ``trio-chat.v1``.

    Splits frames into events (the server batches lines); :meth:`command` sends one
    command and returns its answer, which must be the next event.
    """

    def __init__(self, url: str, nick: str | None = None, room: str | None = None) -> None:
        self._stack = ExitStack()
        self.ws = self._stack.enter_context(
            connect(url, subprotocols=[PROTOCOL], open_timeout=EVENT_TIMEOUT)
        )
        self._lines: deque[str] = deque()
        self._cids = itertools.count(1)
        try:
            assert self.ws.subprotocol == PROTOCOL
            assert self.next_event()["type"] == "welcome"
            if nick is not None:
                assert self.command("nick", nick=nick)["command"] == "nick"
            if room is not None:
                assert self.command("join", room=room)["command"] == "join"
        except BaseException:
            self.close()
            raise

    def next_event(self) -> dict[str, Any]:
        """The next event, within the event time limit."""
        while not self._lines:
            message = self.ws.recv(timeout=EVENT_TIMEOUT)
            assert isinstance(message, str)
            self._lines.extend(message.split("\n"))
        event = json.loads(self._lines.popleft())
        assert isinstance(event, dict)
        return event

    def send(self, kind: str, **fields: object) -> int:
        """Send a command; its ``cid``."""
        cid = next(self._cids)
        self.ws.send(json.dumps({"type": kind, **fields, "cid": cid}))
        return cid

    def command(self, kind: str, **fields: object) -> dict[str, Any]:
        """Send a command and return its ack, which must be the next event."""
        cid = self.send(kind, **fields)
        reply = self.next_event()
        assert reply["type"] == "ack", reply
        assert reply["cid"] == cid, reply
        return reply

    def say(self, text: str) -> dict[str, Any]:
        """Say ``text`` in the current room; the message event it comes back as."""
        self.command("message", text=text)
        event = self.next_event()
        assert event["type"] == "message", event
        assert event["text"] == text, event
        return event

    def close(self) -> None:
        self._stack.close()


@pytest.fixture
def start_client() -> Iterator[Callable[..., Client]]:
    """A factory for clients in a pseudo-terminal, ``start_client(url, *args, env=...)``;
    every one is closed at teardown."""
    clients: list[Client] = []

    def start(url: str, *args: str, env: Mapping[str, str | None] | None = None) -> Client:
        client = Client(url, *args, env=env)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()


@pytest.fixture
def peers() -> Iterator[Callable[..., Peer]]:
    """A factory for :class:`Peer` connections, ``peers(url, nick=..., room=...)``; every
    one is closed at teardown."""
    opened: list[Peer] = []

    def open_peer(url: str, nick: str | None = None, room: str | None = None) -> Peer:
        peer = Peer(url, nick, room)
        opened.append(peer)
        return peer

    yield open_peer
    for peer in opened:
        peer.close()


@pytest.fixture
def server(server_process: type[ServerProcess]) -> ServerProcess:
    """A server subprocess on 127.0.0.1, on a free port."""
    return server_process()


@pytest.fixture
def chatting(server: ServerProcess, start_client: Callable[..., Client]) -> Client:
    """A client in a terminal, in JSON mode as ``alice`` (client #1 in the server's log),
    at its prompt. Its nickname's ack came after it subscribed to the chat: from here
    on, nothing published can miss it."""
    client = start_client(server.url, "--name", "alice")
    client.wait_until_ready("alice")
    return client


@pytest.fixture
def chatting_plain(server: ServerProcess, start_client: Callable[..., Client]) -> Client:
    """A client in a terminal in plain mode (``--plain``), connected (client #1 in the
    server's log) and at its prompt."""
    client = start_client(server.url, "--plain")
    client.wait_until_ready()
    # Logged just before the connection subscribes to the chat, with no checkpoint in
    # between: from here on, nothing published can miss this client.
    server.wait_for(re.compile(r"Client #1 connected from 127\.0\.0\.1:\d+\n"))
    return client


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def receive_lines(ws: ClientConnection, count: int) -> list[str]:
    """The next ``count`` chat lines ``ws`` receives (the server may batch lines in a frame)."""
    lines: list[str] = []
    while len(lines) < count:
        message = ws.recv(timeout=EVENT_TIMEOUT)
        assert isinstance(message, str)
        lines.extend(message.split("\n"))
    return lines


def normal_disconnect(key: int) -> re.Pattern[str]:
    """The server's log line for client ``key`` leaving with a 1000 close."""
    return re.compile(
        rf"Client #{key} \(127\.0\.0\.1:\d+\) disconnected: 1000 \(normal closure\)\n"
    )
