"""The interactive client as a user runs it: ``python -m trio_chat.client URL``.

Each test runs the client in a subprocess against a server subprocess: in a
pseudo-terminal (pexpect) for what a person sees, or on pipes for what a script sees.
The other side of the chat is the ``websockets`` library's sync client. Every wait is
for an event under a time limit; expected strings are exact.
"""

from __future__ import annotations

import io
import queue
import re
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator

import pexpect
import pytest
from support import EVENT_TIMEOUT, ROOT, ServerProcess, child_env
from websockets.sync.client import ClientConnection, connect

#: What the user must never wait longer than for the client to quit.
EXIT_WITHIN = 1.0


def shown(line: str) -> str:
    """``line`` as the client writes it on a terminal, as it reaches the pty master.

    Save cursor, newline, up, insert line, the line, newline, restore cursor, down; the
    terminal's output processing (onlcr) turns each ``\\n`` into ``\\r\\n``.
    """
    return f"\x1b7\r\n\x1b[A\x1b[L{line}\r\n\x1b8\x1b[B"


#: What the client writes last on a terminal: carriage return, erase the prompt line.
FINISH = "\r\x1b[K"


class Client:
    """The client running in a pseudo-terminal, with everything it wrote recorded."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.transcript = io.StringIO()
        self.child = pexpect.spawn(
            sys.executable,
            ["-m", "trio_chat.client", url],
            env=child_env(),
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

    def wait_until_ready(self) -> None:
        """Wait for the connected line, the start line and the prompt."""
        self.expect(shown(f"Connecting to server at {self.url}..."))
        self.expect(shown("\N{WHITE HEAVY CHECK MARK} Connected to server!"))
        self.expect(shown("Start chatting (type messages and press Enter; 'exit' to quit)"))
        self.expect("> ")

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


@pytest.fixture
def start_client() -> Iterator[Callable[[str], Client]]:
    """A factory for clients in a pseudo-terminal; every one is closed at teardown."""
    clients: list[Client] = []

    def start(url: str) -> Client:
        client = Client(url)
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.close()


@pytest.fixture
def server(server_process: type[ServerProcess]) -> ServerProcess:
    """A server subprocess on 127.0.0.1, on a free port."""
    return server_process()


@pytest.fixture
def chatting(server: ServerProcess, start_client: Callable[[str], Client]) -> Client:
    """A client in a terminal, connected (client #1 in the server's log) and at its prompt."""
    client = start_client(server.url)
    client.wait_until_ready()
    # Logged just before the connection subscribes to the chat, with no checkpoint in
    # between: from here on, nothing published can miss this client.
    server.wait_for("Client #1 connected from ")
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


def test_typed_line_comes_back(chatting: Client) -> None:
    """A line typed and entered is sent and comes back as ``You said:``."""
    chatting.child.send("hello there\r")
    chatting.expect(shown("You said: hello there"))


def test_other_clients_line_appears(server: ServerProcess, chatting: Client) -> None:
    """A line another client sends is shown as ``Someone says:``."""
    with connect(server.url) as ws:
        ws.send("from afar")
        chatting.expect(shown("Someone says: from afar"))


def test_partial_input_survives_incoming_line(server: ServerProcess, chatting: Client) -> None:
    """A line arriving mid-typing is inserted above, and the half-typed line is sent whole."""
    with connect(server.url) as ws:
        server.wait_for("Client #2 connected from ")
        chatting.child.send("hel")
        chatting.expect("hel")  # echoed: the terminal holds the half-typed line
        ws.send("interrupting")
        chatting.expect(shown("Someone says: interrupting"))
        chatting.child.send("lo\r")
        chatting.expect("lo\r\n")  # the terminal's echo of the rest, then Enter
        chatting.expect(shown("You said: hello"))
        assert receive_lines(ws, 2) == ["You said: interrupting", "Someone says: hello"]


def test_escape_sequences_from_others_are_shown_not_obeyed(
    server: ServerProcess, chatting: Client
) -> None:
    """Control characters in another client's line are printed as visible escapes."""
    with connect(server.url) as ws:
        ws.send("evil \x1b[2J\x1b]0;pwned\x07 end")
        chatting.expect(shown("Someone says: evil \\x1b[2J\\x1b]0;pwned\\x07 end"))
    assert "\x1b[2J" not in chatting.output
    assert "\x1b]" not in chatting.output
    assert "\x07" not in chatting.output


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
    server: ServerProcess, chatting: Client, leave: Callable[[pexpect.spawn], object]
) -> None:
    """exit, Ctrl-D and Ctrl-C quit at once: status 0, a 1000 close, the terminal as found."""
    mode_at_prompt = chatting.terminal_mode()
    chatting.child.send("still here\r")
    chatting.expect(shown("You said: still here"))
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
def test_unreachable_server(start_client: Callable[[str], Client], url: str, error: str) -> None:
    """An unreachable server is one line saying why, and exit status 1."""
    port = closed_port()
    url = url.format(port=port)
    client = start_client(url)
    assert client.wait_for_exit() == 1
    assert client.output == (
        shown(f"Connecting to server at {url}...") + shown(error.format(port=port)) + FINISH
    )


def test_invalid_url(start_client: Callable[[str], Client]) -> None:
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


def test_not_a_terminal_prints_plain_lines(server: ServerProcess) -> None:
    """Off a terminal the client reads piped lines and prints plain text, no escape codes."""
    result = subprocess.run(
        [sys.executable, "-m", "trio_chat.client", server.url],
        input=b"hi\nexit\n",
        capture_output=True,
        timeout=EVENT_TIMEOUT,
        env=child_env(),
        cwd=ROOT,
        check=False,
    )
    stdout = result.stdout.decode()
    assert result.returncode == 0, result
    assert result.stderr == b""
    assert "\x1b" not in stdout
    lines = stdout.splitlines()
    assert f"Connecting to server at {server.url}..." in lines
    assert "\N{WHITE HEAVY CHECK MARK} Connected to server!" in lines
    assert "Exiting chat..." in lines
    server.wait_for("Client #1 connected from ")
    server.wait_for(normal_disconnect(1))


def test_not_a_terminal_flushes_each_line(server: ServerProcess) -> None:
    """Off a terminal each line is flushed as it is printed; end of input exits with 0."""
    env = child_env()
    del env["PYTHONUNBUFFERED"]  # as a script would run it: the client must flush itself
    proc = subprocess.Popen(
        [sys.executable, "-m", "trio_chat.client", server.url],
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
        wait_for_line("\N{WHITE HEAVY CHECK MARK} Connected to server!")
        proc.stdin.write(b"hi\n")
        proc.stdin.flush()
        wait_for_line("You said: hi")  # while the client still runs, stdin still open
        proc.stdin.close()
        assert proc.wait(timeout=EVENT_TIMEOUT) == 0
        reader.join(EVENT_TIMEOUT)
        assert "Traceback" not in "".join(seen) + "".join(lines.queue)
        server.wait_for(normal_disconnect(1))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(EVENT_TIMEOUT)
        proc.stdin.close()
        proc.stdout.close()
