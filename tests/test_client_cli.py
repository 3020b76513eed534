"""The interactive client as a user runs it: ``python -m trio_chat.client URL``.

Each test runs the client in a subprocess against a server subprocess: in a
pseudo-terminal (pexpect) for what a person sees, or on pipes for what a script sees.
Against our server the client speaks ``trio-chat.v1`` (JSON mode) unless ``--plain``
is given; two tests keep the plain path covered. The other side of the chat is the
``websockets`` library's sync client. Every wait is for an event under a time limit;
expected strings are exact (a shown time is computed from the event's ``ts``).

The helpers here (:class:`Client`, :class:`Peer`, :func:`shown`...) are shared with
``test_client_json.py``.
"""

from __future__ import annotations

import io
import itertools
import json
import queue
import re
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
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


def test_typed_line_comes_back(
    server: ServerProcess, chatting: Client, peers: Callable[..., Peer]
) -> None:
    """A typed line is sent as a message and shown as ``HH:MM [lobby] alice: text``."""
    bob = peers(server.url)
    chatting.child.send("hello there\r")
    event = bob.next_event()
    assert (event["type"], event["room"], event["from"], event["text"]) == (
        "message",
        "lobby",
        "alice",
        "hello there",
    )
    chatting.expect(shown(f"{local_time(event['ts'])} [lobby] alice: hello there"))


def test_typed_line_comes_back_in_plain_mode(chatting_plain: Client) -> None:
    """With --plain a typed line is sent as text and comes back as ``You said:``."""
    chatting_plain.child.send("hello there\r")
    chatting_plain.expect(shown("You said: hello there"))


def test_other_clients_line_appears(
    server: ServerProcess, chatting: Client, peers: Callable[..., Peer]
) -> None:
    """A line another client sends is shown with its time and the sender's nickname."""
    bob = peers(server.url, nick="bob")
    event = bob.say("from afar")
    chatting.expect(shown(f"{local_time(event['ts'])} [lobby] bob: from afar"))


def test_partial_input_survives_incoming_line(
    server: ServerProcess, chatting: Client, peers: Callable[..., Peer]
) -> None:
    """A line arriving mid-typing is inserted above, and the half-typed line is sent whole."""
    bob = peers(server.url, nick="bob")
    chatting.child.send("hel")
    chatting.expect("hel")  # echoed: the terminal holds the half-typed line
    interrupting = bob.say("interrupting")
    chatting.expect(shown(f"{local_time(interrupting['ts'])} [lobby] bob: interrupting"))
    chatting.child.send("lo\r")
    chatting.expect("lo\r\n")  # the terminal's echo of the rest, then Enter
    hello = bob.next_event()
    assert (hello["type"], hello["from"], hello["text"]) == ("message", "alice", "hello")
    chatting.expect(shown(f"{local_time(hello['ts'])} [lobby] alice: hello"))


def test_escape_sequences_from_others_are_shown_not_obeyed_in_plain_mode(
    server: ServerProcess, chatting_plain: Client
) -> None:
    """In plain mode control characters in another client's line are shown as escapes."""
    with connect(server.url) as ws:
        ws.send("evil \x1b[2J\x1b]0;pwned\x07 end")
        chatting_plain.expect(shown("Someone says: evil \\x1b[2J\\x1b]0;pwned\\x07 end"))
    assert "\x1b[2J" not in chatting_plain.output
    assert "\x1b]" not in chatting_plain.output
    assert "\x07" not in chatting_plain.output


@pytest.mark.parametrize(
    "leave",
    [
        pytest.param(lambda child: child.send("exit\r"), id="exit"),
        pytest.param(lambda child: child.send(" EXIT \r"), id="EXIT-with-spaces"),
        pytest.param(lambda child: child.sendeof(), id="ctrl-d"),
        pytest.param(lambda child: child.sendintr(), id="ctrl-c"),
    ],
)
def test_user_leaves_cleanly(
    server: ServerProcess,
    chatting: Client,
    peers: Callable[..., Peer],
    leave: Callable[[pexpect.spawn], object],
) -> None:
    """exit, Ctrl-D and Ctrl-C quit at once: status 0, a 1000 close, the terminal as found."""
    bob = peers(server.url)
    mode_at_prompt = chatting.terminal_mode()
    chatting.child.send("still here\r")
    event = bob.next_event()
    chatting.expect(shown(f"{local_time(event['ts'])} [lobby] alice: still here"))
    assert chatting.terminal_mode() == mode_at_prompt
    pressed = time.monotonic()
    leave(chatting.child)
    chatting.expect(shown("Exiting chat...") + FINISH, timeout=EXIT_WITHIN)
    assert chatting.wait_for_exit(timeout=pressed + EXIT_WITHIN - time.monotonic()) == 0
    assert "Traceback" not in chatting.output
    server.wait_for(normal_disconnect(1))


@pytest.mark.parametrize(
    ("url", "error"),
    [
        pytest.param(
            "ws://127.0.0.1:{port}",
            "Could not connect to ws://127.0.0.1:{port}: connection refused. "
            "Is the server running?",
            id="connection-refused",
        ),
        pytest.param(
            "ws://nosuch.invalid:1",
            "Could not connect to ws://nosuch.invalid:1: unknown host",
            id="unknown-host",
        ),
    ],
)
def test_unreachable_server(start_client: Callable[..., Client], url: str, error: str) -> None:
    """An unreachable server is one line saying why, and exit status 1."""
    port = closed_port()
    url = url.format(port=port)
    client = start_client(url)
    assert client.wait_for_exit() == 1
    assert client.output == (
        shown(f"Connecting to server at {url}...") + shown(error.format(port=port)) + FINISH
    )


def test_invalid_url(start_client: Callable[..., Client]) -> None:
    """A URL that is not ws:// is one line saying so, and exit status 1."""
    client = start_client("http://x")
    assert client.wait_for_exit() == 1
    assert client.output == (
        shown("Invalid URL 'http://x': expected ws://HOST[:PORT][/PATH]") + FINISH
    )


def test_server_shutdown_ends_client(server: ServerProcess, chatting: Client) -> None:
    """When the server shuts down the client says so and exits 1 at once, with no key pressed."""
    server.proc.send_signal(signal.SIGTERM)
    chatting.expect(shown("Server closed the connection: 1001 server shutting down"))
    printed = time.monotonic()
    chatting.expect(FINISH, timeout=EXIT_WITHIN)
    assert chatting.wait_for_exit(timeout=printed + EXIT_WITHIN - time.monotonic()) == 1
    assert "Traceback" not in chatting.output


def test_not_a_terminal_prints_plain_lines(
    server: ServerProcess, peers: Callable[..., Peer]
) -> None:
    """Off a terminal: plain text, no colour or escapes; piped lines wait for the start-up."""
    bob = peers(server.url)
    result = subprocess.run(
        [sys.executable, "-m", "trio_chat.client", server.url, "--name", "carol"],
        input=b"hi\nexit\n",
        capture_output=True,
        timeout=EVENT_TIMEOUT,
        env=client_env({"NO_COLOR": None}),
        cwd=ROOT,
        check=False,
    )
    stdout = result.stdout.decode()
    assert result.returncode == 0, result
    assert result.stderr == b""
    assert "\x1b" not in stdout
    lines = stdout.splitlines()
    assert lines[:4] == [
        f"Connecting to server at {server.url}...",
        "\N{WHITE HEAVY CHECK MARK} Connected to server!",
        START_JSON,
        "* You are now known as carol",
    ]
    assert lines[-1] == "Exiting chat..."
    arrival = bob.next_event()
    assert (arrival["type"], arrival["event"], arrival["nick"]) == ("presence", "join", "carol")
    event = bob.next_event()
    assert (event["type"], event["from"], event["text"]) == ("message", "carol", "hi")
    server.wait_for(normal_disconnect(2))


def test_not_a_terminal_flushes_each_line(
    server: ServerProcess, peers: Callable[..., Peer]
) -> None:
    """Off a terminal each line is flushed as it is printed; end of input exits with 0."""
    bob = peers(server.url)
    env = client_env()
    del env["PYTHONUNBUFFERED"]  # as a script would run it: the client must flush itself
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_chat.client", server.url, "--name", "carol"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=ROOT,
    )
    assert proc.stdin is not None
    assert proc.stdout is not None
    lines: queue.Queue[str] = queue.Queue()

    def read_lines() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode())
        lines.put("")  # end of output

    reader = threading.Thread(target=read_lines, daemon=True)
    reader.start()
    seen: list[str] = []

    def wait_for_line(line: str) -> None:
        deadline = time.monotonic() + EVENT_TIMEOUT
        while f"{line}\n" not in seen:
            remaining = deadline - time.monotonic()
            assert remaining > 0, f"{line!r} not in client output: {seen}"
            try:
                got = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            assert got, f"client output ended before {line!r}: {seen}"
            seen.append(got)

    try:
        wait_for_line("* You are now known as carol")
        proc.stdin.write(b"hi\n")
        proc.stdin.flush()
        arrival = bob.next_event()
        assert (arrival["type"], arrival["event"], arrival["nick"]) == ("presence", "join", "carol")
        event = bob.next_event()
        assert (event["type"], event["from"], event["text"]) == ("message", "carol", "hi")
        # While the client still runs, stdin still open:
        wait_for_line(f"{local_time(event['ts'])} [lobby] carol: hi")
        proc.stdin.close()
        assert proc.wait(timeout=EVENT_TIMEOUT) == 0
        reader.join(EVENT_TIMEOUT)
        assert "Traceback" not in "".join(seen) + "".join(lines.queue)
        server.wait_for(normal_disconnect(2))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(EVENT_TIMEOUT)
        proc.stdin.close()
        proc.stdout.close()
