"""The interactive client as a user runs it: ``python -m trio_chat.client URL``.

Each test runs the client in a subprocess against a server subprocess: in a
pseudo-terminal (pexpect) for what a person sees, or on pipes for what a script sees.
Against our server the client speaks ``trio-chat.v1`` (JSON mode) unless ``--plain``
is given; two tests keep the plain path covered. The other side of the chat is the
``websockets`` library's sync client. Every wait is for an event under a time limit;
expected strings are exact (a shown time is computed from the event's ``ts``). The
machinery (:class:`Client`, :class:`Peer`, :func:`shown`, the fixtures) is in
``pty_support``.
"""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pexpect
import pytest
from pty_support import (
    EXIT_WITHIN,
    FINISH,
    START_JSON,
    Client,
    Peer,
    client_env,
    closed_port,
    local_time,
    normal_disconnect,
    shown,
)
from websockets.sync.client import connect

from support import EVENT_TIMEOUT, ROOT, ServerProcess

pytest_plugins = ["pty_support"]


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


def test_escape_sequences_from_others_never_reach_the_terminal_in_plain_mode(
    server: ServerProcess, chatting_plain: Client
) -> None:
    """In plain mode control characters in another client's line never reach the
    terminal: the server strips them (the client's own escaping: tests/client)."""
    with connect(server.url) as ws:
        ws.send("evil \x1b[2J\x1b]0;pwned\x07 end")
        chatting_plain.expect(shown("Someone says: evil  end"))
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
    """A URL that is not ws:// or wss:// is one line saying so, and exit status 1."""
    client = start_client("http://x")
    assert client.wait_for_exit() == 1
    assert client.output == (
        shown("Invalid URL 'http://x': expected ws:// or wss://HOST[:PORT][/PATH]") + FINISH
    )


def test_server_shutdown_ends_client_without_reconnect(
    server: ServerProcess, start_client: Callable[..., Client]
) -> None:
    """With --no-reconnect a server shutdown is said and exits 1 at once, with no key pressed."""
    chatting = start_client(server.url, "--name", "alice", "--no-reconnect")
    chatting.wait_until_ready("alice")
    server.proc.send_signal(signal.SIGTERM)
    chatting.expect(shown("Server closed the connection: 1001 server shutting down"))
    printed = time.monotonic()
    chatting.expect(FINISH, timeout=EXIT_WITHIN)
    assert chatting.wait_for_exit(timeout=printed + EXIT_WITHIN - time.monotonic()) == 1
    assert "Traceback" not in chatting.output
    assert "reconnecting" not in chatting.output


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
