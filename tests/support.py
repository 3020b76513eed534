"""Test machinery shared by the test modules (import it as ``support``).

Rules every test here keeps: servers listen on 127.0.0.1, port 0; every wait is for an
event (a line of output, a message, a closed connection) under a time limit, never a
sleep; expected strings are exact.
"""

from __future__ import annotations

import atexit
import functools
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import websockets.exceptions
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)
from websockets.frames import Close
from websockets.sync.client import ClientConnection, connect

import trio_chat
from trio_chat.client.connection import parse_url
from trio_chat.core.wire import JSON, PLAIN, WireFormat

from ready_process import ReadyProcess

ROOT = Path(__file__).resolve().parent.parent
#: Generous limits: they only decide how long a broken test takes to fail.
EVENT_TIMEOUT = 10.0

#: The per-address limits of test servers: lifted for loopback, where every test client
#: connects from (the fixture default: a test of a chat with a few dozen clients must not
#: be refused for its one address). The limits stay on for any other address (a memory
#: stream's ``peer_address``); a test of the limits themselves turns them on for loopback
#: too with ``limits_exempt=()`` (``limits_exempt=None`` for a subprocess).
EXEMPT_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))

#: The JSON subprotocol, and the form of every event's ``ts``.
PROTOCOL = "trio-chat.v1"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")

Event = dict[str, Any]

#: How the lines start that begin a Python traceback, or the report of an exception
#: Python could not raise (in a destructor, a callback...).
TRACEBACK_MARKS = (
    "Traceback (most recent call last):",
    "Exception Group Traceback (most recent call last):",
    "Exception ignored in",
)


def tracebacks_in(output: str) -> list[str]:
    """Every line of ``output`` that starts a traceback, or says Python could not raise
    an exception (however indented: a traceback in an exception group is)."""
    return [line for line in output.splitlines() if line.lstrip(" |+-").startswith(TRACEBACK_MARKS)]


@functools.cache
def hermetic_home() -> Path:
    """This test run's private home folder (made on first use, removed at exit). The
    session's HOME and XDG_DATA_HOME point into it (conftest), and so do every
    subprocess's (:func:`child_env`): no test can reach the user's own history file."""
    home = Path(tempfile.mkdtemp(prefix="trio_chat-test-home-"))
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    return home


def child_env() -> dict[str, str]:
    """The environment for a subprocess: unbuffered, no colour, our package importable,
    the private home, data and runtime folders (the runtime one holds servers' control
    sockets), and no TRIO_CHAT_* setting inherited."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    env["HOME"] = str(hermetic_home())
    env["XDG_DATA_HOME"] = str(hermetic_home() / ".local" / "share")
    env["XDG_RUNTIME_DIR"] = str(hermetic_home() / "run")
    env.pop("TRIO_CHAT_HOST", None)
    env.pop("TRIO_CHAT_PORT", None)
    return env


#: Runs the server with the soft open-file limit lowered to argv[1] (exec, so the pid,
#: the output and the signals are the server's own).
_LOW_FILE_LIMIT_LAUNCHER = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, "
    "(int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
    "os.execv(sys.executable, [sys.executable, '-m', 'trio_chat.server', *sys.argv[2:]])"
)


class ServerProcess(ReadyProcess):
    """``python -m trio_chat.server`` in a subprocess, ready once its ready file is written.

    stdout and stderr are merged into :attr:`output`; :meth:`wait_for` blocks until a
    pattern appears (or fails after a time limit). ``port=None`` leaves ``--port`` out
    (so ``TRIO_CHAT_PORT`` in ``env`` decides); ``db`` and ``history_on_join`` default to
    an in-memory store and no history on join (None leaves the flag out: the default
    file, in the private data folder); ``limits_exempt`` to :data:`EXEMPT_LOOPBACK`
    (``--limits-exempt`` for each; None leaves them out: the limits are on for loopback).
    """

    def __init__(
        self,
        *args: str,
        stdin: int | None = subprocess.PIPE,
        port: int | None = 0,
        env: dict[str, str] | None = None,
        db: str | None = ":memory:",
        history_on_join: int | None = 0,
        soft_file_limit: int | None = None,
        limits_exempt: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
        | None = EXEMPT_LOOPBACK,
        limits_lifted: bool = True,
    ) -> None:
        # Tests get a private store and no history on join unless they ask: a test
        # about history says so, and no test sees another's messages.
        options = [] if port is None else ["--port", str(port)]
        if db is not None:
            options += ["--db", db]
        if history_on_join is not None:
            options += ["--history-on-join", str(history_on_join)]
        for network in limits_exempt or ():
            options += ["--limits-exempt", str(network)]
        if limits_lifted:  # the tests send fast; options in args come later and win
            options += LIMITS_LIFTED_OPTIONS
        launch = ["-m", "trio_chat.server"]
        if soft_file_limit is not None:
            launch = ["-c", _LOW_FILE_LIMIT_LAUNCHER, str(soft_file_limit)]
        super().__init__(
            [sys.executable, *launch, "--host", "127.0.0.1", *options, *args],
            stdin=stdin,
            env=child_env() if env is None else env,
            cwd=ROOT,
            start_timeout=EVENT_TIMEOUT,
        )

    def tracebacks(self) -> list[str]:
        """The lines of the output so far that start a traceback (:func:`tracebacks_in`):
        a server's output has none, whatever its clients do (each refusal is one line)."""
        return tracebacks_in(self.output)

    def send_console(self, line: str) -> None:
        """Type a line at the server's console."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.flush()


@asynccontextmanager
async def open_client(url: str, **options: Any) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client connected to ``url``; closed (1000) on the way out.

    Owns its TCP stream and closes it however the block ends (the library's own
    ``open_websocket`` can leak the socket when the server closes first). A refused
    handshake raises a bare ``ConnectionRejected``.
    """
    host, port, resource, _ = parse_url(url)
    stream = await trio.open_tcp_stream(host, port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, host, resource, **options)
            try:
                yield ws
            finally:
                with trio.move_on_after(EVENT_TIMEOUT, shield=True):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # Not ``except*``: on Python 3.11.0-3.11.3 what is raised inside it comes out
        # wrapped in a group again.
        rejected, _ = group.split(ConnectionRejected)
        if rejected is None:
            raise
        raise _first_leaf(rejected) from None
    finally:
        await trio.aclose_forcefully(stream)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception in ``group``, however deeply nested."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def receive(ws: WebSocketConnection) -> str:
    """The next message, within the event time limit."""
    with trio.fail_after(EVENT_TIMEOUT):
        message = await ws.get_message()
    assert isinstance(message, str)
    return message


async def say(ws: WebSocketConnection, text: str) -> None:
    """Send ``text`` and wait for its own echo. Once the echo is back, the connection is
    certainly subscribed to the bus, so nothing published after this call is missed."""
    await ws.send_message(text)
    assert await receive(ws) == f"You said: {text}"


async def read_until_closed(ws: WebSocketConnection) -> tuple[list[str], CloseReason | None]:
    """Every line received until the server closes ``ws``, and how it closed."""
    lines: list[str] = []
    with trio.fail_after(EVENT_TIMEOUT):
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as closed:
                return lines, closed.reason
            assert isinstance(message, str)
            lines.extend(message.split("\n"))


# --- the ``websockets`` sync client (an implementation independent of the server's) ----------


def server_command(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m trio_chat.server ARGS`` (an operator's command: ``user``, ``ban``...),
    with the suite's private environment, its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "trio_chat.server", *args],
        input=stdin,
        stdin=None if stdin is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=EVENT_TIMEOUT,
        check=False,
    )


def succeeded(result: subprocess.CompletedProcess[str]) -> list[str]:
    """The lines a command that must succeed printed (nothing on stderr, status 0)."""
    assert (result.returncode, result.stderr) == (0, ""), result
    return result.stdout.splitlines()


def failed(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a command that must fail printed on stderr (exit status 2, no
    traceback, nothing on stdout)."""
    assert (result.returncode, result.stdout) == (2, ""), result
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def local_port(ws: ClientConnection) -> int:
    """The client's own TCP port: the one the server sees as the peer's."""
    return int(ws.local_address[1])


def wait_connected(server: ServerProcess, ws: ClientConnection, *, json_mode: bool = False) -> int:
    """Wait for the server's connect line for ``ws``; return its client number.

    The line names the subprotocol (``json_mode``). The server subscribes the connection
    right after logging it, so broadcasts reach it from then on.
    """
    suffix = r" \(trio-chat\.v1\)" if json_mode else ""
    line = re.compile(rf"Client #(\d+) connected from 127\.0\.0\.1:{local_port(ws)}{suffix}\n")
    return int(server.wait_for(line).group(1))


def recv_text(ws: ClientConnection) -> str:
    """The next message ``ws`` receives (a whole frame), which must be text."""
    message = ws.recv(timeout=EVENT_TIMEOUT)
    assert isinstance(message, str), message
    return message


def expect_close(ws: ClientConnection) -> Close:
    """Wait for the server to close ``ws`` (no message may come first); return its close."""
    with pytest.raises(websockets.exceptions.ConnectionClosed) as info:
        ws.recv(timeout=EVENT_TIMEOUT)
    assert info.value.rcvd is not None, "the server sent no close frame"
    return info.value.rcvd


class LineReader:
    """A ``websockets`` connection read one line at a time, whatever the framing."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        #: Every frame received so far, as sent by the server.
        self.frames: list[str] = []
        self._lines: deque[str] = deque()

    def line(self) -> str:
        """The next line received; a frame of several lines yields them one by one."""
        while not self._lines:
            frame = recv_text(self.ws)
            self.frames.append(frame)
            self._lines.extend(frame.split("\n"))
        return self._lines.popleft()

    def expect_close(self) -> Close:
        """The server closes the connection with no further line; return its close frame."""
        assert not self._lines, f"unread lines before the close: {list(self._lines)}"
        return expect_close(self.ws)


class PlainClient(LineReader):
    """A plain-mode connection: text lines out, text lines in."""

    def __init__(self, ws: ClientConnection, key: int) -> None:
        super().__init__(ws)
        #: The server's number for this connection (``Client #key`` in its log).
        self.key = key
        self.port = local_port(ws)

    def send(self, text: str) -> None:
        """Send one text frame."""
        self.ws.send(text)

    def expect(self, *lines: str) -> None:
        """The next lines received are exactly ``lines``, in order."""
        for expected in lines:
            assert self.line() == expected

    def ask(self, text: str, *answer: str) -> None:
        """Send ``text``; the next lines received are exactly ``answer``."""
        self.send(text)
        self.expect(*answer)


class JsonClient(LineReader):
    """A ``trio-chat.v1`` connection: JSON commands out, one JSON event per line in.
    ``session`` is the secret its welcome gave (once :func:`open_json` read it)."""

    session: str | None = None

    def send(self, command: Event) -> None:
        """Send ``command`` as one JSON text frame."""
        self.ws.send(json.dumps(command))

    def event(self) -> Event:
        """The next event: one line, which must be one JSON object."""
        event = json.loads(self.line())
        assert isinstance(event, dict), event
        return event

    def call(self, command: Event) -> Event:
        """Send ``command``; return the next event received."""
        self.send(command)
        return self.event()

    def events_until_ack(self, cid: str) -> tuple[list[Event], Event]:
        """Send a ``rooms`` command with ``cid``; return every event before its ack, and
        the ack. Whatever was pending for this client is in the list, and nothing else."""
        self.send({"type": "rooms", "cid": cid})
        before: list[Event] = []
        while True:
            event = self.event()
            if event.get("type") == "ack" and event.get("cid") == cid:
                return before, event
            before.append(event)


class _AnySecret:
    """Equal to any session secret as the server makes them (``secrets.token_urlsafe(32)``:
    43 URL-safe characters), and to nothing else."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and SECRET.fullmatch(other) is not None

    def __hash__(self) -> int:
        return 0

    def __repr__(self) -> str:
        return "<any session secret>"


#: What a session secret looks like; :data:`A_SECRET` equals any such string.
SECRET = re.compile(r"[A-Za-z0-9_\-]{43}")
A_SECRET: Any = _AnySecret()


#: The flood limits lifted (no rate limit, no costly-command limit): what every test
#: server runs with unless its test is about those limits and sets its own, since tests
#: send as fast as they can. The other limits (message size and lines, frame lines,
#: rooms, room members) keep their defaults.
LIMITS_LIFTED: dict[str, Any] = {"rate_limit": 0, "command_rate": 0}
#: The same as command-line options, for server subprocesses.
LIMITS_LIFTED_OPTIONS = ("--rate-limit", "0", "--command-rate", "0")
#: What the ``welcome`` of a server with :data:`LIMITS_LIFTED` announces.
LIFTED_LIMITS: dict[str, Any] = {
    "message_bytes": 65536,
    "message_lines": 20,
    "frame_lines": 50,
    "rate": 0,
    "burst": 0,
    "backlog": 0,
    "commands_per_minute": 0,
    "command_burst": 0,
}


def welcome(
    nick: str | None = None,
    rooms: tuple[str, ...] = ("lobby",),
    session: Any = A_SECRET,
    limits: dict[str, Any] = LIFTED_LIMITS,
) -> Event:
    """The ``welcome`` of a JSON connection arriving with ``nick`` in ``rooms`` (last:
    current), with its ``session`` secret (by default: any new one), from a server
    announcing ``limits`` (by default: the test servers', limits lifted)."""
    return {
        "type": "welcome",
        "protocol": PROTOCOL,
        "server": f"trio_chat/{trio_chat.__version__}",
        "nick": nick,
        "room": rooms[-1],
        "rooms": list(rooms),
        "session": session,
        "limits": limits,
    }


@contextmanager
def open_plain(server: ServerProcess, query: str = "") -> Iterator[PlainClient]:
    """A plain-mode client of ``server`` at ``url + query`` (no subprotocol offered),
    subscribed once its connect line is logged; closed on the way out."""
    with connect(server.url + query, open_timeout=EVENT_TIMEOUT, proxy=None) as ws:
        assert ws.subprotocol is None
        yield PlainClient(ws, wait_connected(server, ws))


@contextmanager
def open_json(
    server: ServerProcess,
    query: str = "",
    *,
    nick: str | None = None,
    rooms: tuple[str, ...] = ("lobby",),
    session: Any = None,
) -> Iterator[JsonClient]:
    """A ``trio-chat.v1`` client of ``server`` at ``url + query``, its welcome checked (it
    arrives with ``nick`` in ``rooms``, and the secret ``session`` when it resumes one): once it
    is in, the client is subscribed. Closed on
    the way out."""
    with connect(
        server.url + query, open_timeout=EVENT_TIMEOUT, proxy=None, subprotocols=[PROTOCOL]
    ) as ws:
        assert ws.subprotocol == PROTOCOL
        client = JsonClient(ws)
        greeting = client.event()
        assert greeting == (
            welcome(nick, rooms) if session is None else welcome(nick, rooms, session)
        )
        client.session = greeting["session"]
        yield client


@contextmanager
def open_plains(server: ServerProcess, count: int) -> Iterator[list[PlainClient]]:
    """``count`` anonymous plain clients, connected one after another."""
    with ExitStack() as stack:
        yield [stack.enter_context(open_plain(server)) for _ in range(count)]


@contextmanager
def open_jsons(server: ServerProcess, count: int) -> Iterator[list[JsonClient]]:
    """``count`` JSON clients, connected one after another."""
    with ExitStack() as stack:
        yield [stack.enter_context(open_json(server)) for _ in range(count)]


# --- expected JSON events --------------------------------------------------------------------


def stamped(event: Event) -> Event:
    """``event`` without its ``ts``, which must be ISO 8601 UTC with milliseconds."""
    assert TIMESTAMP.match(str(event.get("ts"))), event
    return {key: value for key, value in event.items() if key != "ts"}


def with_cid(command: Event, cid: str | int | None) -> Event:
    """``command`` carrying ``cid``, or as it is when ``cid`` is None."""
    return command if cid is None else {**command, "cid": cid}


def ack(command: str, cid: str | int | None = None, **result: Any) -> Event:
    """The ``ack`` for ``command`` with ``result``, echoing ``cid`` when given."""
    return with_cid({"type": "ack", "command": command, **result}, cid)


def error(code: str, text: str, cid: str | int | None = None) -> Event:
    """The ``error`` event with ``code`` and ``text``, echoing ``cid`` when given."""
    return with_cid({"type": "error", "code": code, "text": text}, cid)


def presence(event: str, nick: str, **fields: Any) -> Event:
    """A ``presence`` event as compared after :func:`stamped`."""
    return {"type": "presence", "event": event, "nick": nick, **fields}


@dataclass
class FakeViewer:
    """A recipient for rendering events without a connection (``json``: it speaks
    ``trio-chat.v1``)."""

    key: int
    json: bool = False
    current_room: str = "lobby"

    @property
    def wire(self) -> WireFormat:
        return JSON if self.json else PLAIN

    def render(self, event: Any) -> str | None:
        """What this viewer receives for ``event``."""
        return self.wire.render(event, self)


async def transport_pair(transport: str) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """A connected (client end, server end): ``"memory"``, a lockstep memory stream pair;
    ``"tcp"``, TCP on 127.0.0.1 with the client's receive buffer as small as the kernel
    allows, so the server soon cannot send to a client that does not read."""
    if transport == "memory":
        return trio.testing.lockstep_stream_pair()
    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        client_end = trio.SocketStream(sock)  # owns sock from here on
        await sock.connect(listener.socket.getsockname())
        return client_end, await listener.accept()


# --- TLS: certificates from a throwaway CA (trustme) -----------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A server certificate for 127.0.0.1 and localhost from a fresh trustme CA, written
    as PEM files: what ``--certfile``/``--keyfile`` and a client's ``--cafile`` take."""

    ca: Any  # trustme.CA
    certfile: str
    keyfile: str
    cafile: str

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts this CA only."""
        return ssl.create_default_context(cafile=self.cafile)


def make_certificates(folder: Path, name: str = "server") -> Certificates:
    """A new CA and a server certificate from it, as PEM files in ``folder`` (named after
    ``name``): the chain in NAME.crt, its key in NAME.key, the CA in NAME-ca.pem."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1", "localhost", "::1")
    certfile, keyfile, cafile = (
        folder / f"{name}.crt",
        folder / f"{name}.key",
        folder / f"{name}-ca.pem",
    )
    certfile.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(keyfile))
    ca.cert_pem.write_to_path(str(cafile))
    return Certificates(ca, str(certfile), str(keyfile), str(cafile))
