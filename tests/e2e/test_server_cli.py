"""``python -m trio_chat.server`` as an operator runs it: a real subprocess, real clients.

Every server here is a subprocess on 127.0.0.1; clients are the ``websockets`` library's
sync client, an implementation independent of the server's. Waits are for events (a
message, a close, a line of output, process exit) under a time limit; the one timed
window is the idle-CPU measurement, whose length is the acceptance criterion.
"""

from __future__ import annotations

import errno
import os
import re
import resource
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from websockets.sync.client import ClientConnection, connect

from support import (
    EVENT_TIMEOUT,
    ROOT,
    ServerProcess,
    child_env,
    expect_close,
    local_port,
    recv_text,
    wait_connected,
)

SERVER = [sys.executable, "-m", "trio_chat.server"]
PROG = "python -m trio_chat.server"
CONSOLE_HELP = (
    "Type a line to broadcast it to every client. Commands: /who [ROOM], /rooms, "
    "/kick NICK [REASON], /say ROOM TEXT, /quit, /help."
)
#: How long the idle server is watched, and the CPU time it may use meanwhile.
IDLE_WINDOW = 2.0
IDLE_CPU_BUDGET = 0.1


# --- helpers -------------------------------------------------------------------------


@contextmanager
def client(url: str) -> Iterator[ClientConnection]:
    """A WebSocket client connected to ``url`` (127.0.0.1), closed on the way out."""
    assert url.startswith("ws://127.0.0.1:"), url
    with connect(url, open_timeout=EVENT_TIMEOUT, proxy=None) as ws:
        yield ws


def disconnect_line(key: int, port: int, how: str) -> str:
    """The server's log line for client ``key`` (from local ``port``) closing as ``how``."""
    return f"Client #{key} (127.0.0.1:{port}) disconnected: {how}\n"


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time process ``pid`` has used so far, in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces; the fields after it are plain.
    fields = stat.rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_server_cli(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the server command line to completion (it is expected not to serve)."""
    return subprocess.run(
        [*SERVER, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env() if env is None else env,
        cwd=ROOT,
        timeout=EVENT_TIMEOUT,
        check=False,
    )


def error_lines(text: str) -> list[str]:
    """The lines of ``text`` that report an error (argparse's ``prog: error: ...``)."""
    return [line for line in text.splitlines() if ": error: " in line]


# --- the operator console --------------------------------------------------------------


def test_console_line_reaches_every_client(server_process: type[ServerProcess]) -> None:
    """A console line reaches every connected client and is confirmed on the console."""
    server = server_process()
    with client(server.url) as a, client(server.url) as b:
        wait_connected(server, a)
        wait_connected(server, b)
        server.send_console("hello all")
        assert recv_text(a) == "🟢 Server: hello all"
        assert recv_text(b) == "🟢 Server: hello all"
        server.wait_for("📤 Server broadcast: hello all\n")


def test_console_line_with_nobody_connected(server_process: type[ServerProcess]) -> None:
    """A console line with no client connected says that nobody received it."""
    server = server_process()
    server.send_console("anyone there")
    server.wait_for("❗ No clients connected to receive message\n")
    assert "Server broadcast" not in server.output


def test_unknown_console_command_reaches_nobody(server_process: type[ServerProcess]) -> None:
    """An unknown console command is reported on the console and sends clients nothing."""
    server = server_process()
    with client(server.url) as ws:
        wait_connected(server, ws)
        server.send_console("/nope")
        server.wait_for(f"Unknown console command /nope. {CONSOLE_HELP}\n")
        server.send_console("after the command")
        assert recv_text(ws) == "🟢 Server: after the command"
    assert "Server broadcast: /nope" not in server.output


# --- chat through the subprocess ----------------------------------------------------------


def test_chat_between_two_clients(server_process: type[ServerProcess]) -> None:
    """A client's line comes back to it as 'You said' and to the other as 'Someone says'."""
    server = server_process()
    with client(server.url) as a, client(server.url) as b:
        wait_connected(server, a)
        wait_connected(server, b)
        a.send("hi")
        assert recv_text(a) == "You said: hi"
        assert recv_text(b) == "Someone says: hi"


# --- shutdown ----------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_closes_clients_with_1001_and_exits_0(
    server_process: type[ServerProcess], signum: signal.Signals
) -> None:
    """SIGINT/SIGTERM closes every client with 1001 'server shutting down' and exits 0."""
    server = server_process()
    with client(server.url) as a, client(server.url) as b:
        key_a, port_a = wait_connected(server, a), local_port(a)
        key_b, port_b = wait_connected(server, b), local_port(b)
        server.proc.send_signal(signum)
        for ws in (a, b):
            close = expect_close(ws)
            assert (close.code, close.reason) == (1001, "server shutting down")
        assert server.wait() == 0
    output = server.output
    assert "Traceback" not in output
    assert f"received {signum.name}; shutting down\n" in output
    assert disconnect_line(key_a, port_a, "1001 server shutting down") in output
    assert disconnect_line(key_b, port_b, "1001 server shutting down") in output
    assert "server stopped\n" in output


def test_console_quit_closes_clients_with_1001_and_exits_0(
    server_process: type[ServerProcess],
) -> None:
    """/quit at the console closes every client with 1001 and exits 0."""
    server = server_process()
    with client(server.url) as a, client(server.url) as b:
        key_a, port_a = wait_connected(server, a), local_port(a)
        key_b, port_b = wait_connected(server, b), local_port(b)
        server.send_console("/quit")
        for ws in (a, b):
            close = expect_close(ws)
            assert (close.code, close.reason) == (1001, "server shutting down")
        assert server.wait() == 0
    output = server.output
    assert "Traceback" not in output
    assert "Shutting down...\n" in output
    assert disconnect_line(key_a, port_a, "1001 server shutting down") in output
    assert disconnect_line(key_b, port_b, "1001 server shutting down") in output
    assert "server stopped\n" in output


# --- standard input at end of file -----------------------------------------------------------


def test_console_eof_keeps_serving_without_spinning(server_process: type[ServerProcess]) -> None:
    """With stdin at EOF the server says so, keeps serving, stays idle and stops on SIGTERM."""
    server = server_process(stdin=subprocess.DEVNULL)
    server.wait_for("console input ended; still serving (stop with SIGINT or SIGTERM)\n")
    with client(server.url) as ws:
        wait_connected(server, ws)
        ws.send("still here")
        assert recv_text(ws) == "You said: still here"

        before = cpu_seconds(server.proc.pid)
        # The acceptance window: the process must stay up, and nearly idle, through it.
        with pytest.raises(subprocess.TimeoutExpired):
            server.proc.wait(IDLE_WINDOW)
        used = cpu_seconds(server.proc.pid) - before
        assert used < IDLE_CPU_BUDGET, f"{used:.2f} s of CPU in {IDLE_WINDOW} s idle"

        ws.send("and after")
        assert recv_text(ws) == "You said: and after"
        server.proc.send_signal(signal.SIGTERM)
        close = expect_close(ws)
        assert (close.code, close.reason) == (1001, "server shutting down")
    assert server.wait() == 0
    assert "Traceback" not in server.output


# --- the connection log ------------------------------------------------------------------------


def test_log_shows_peer_address_and_close_code(server_process: type[ServerProcess]) -> None:
    """The log names each client's address on connect and its close code on disconnect."""
    server = server_process()
    with client(server.url) as ws:
        port = local_port(ws)
        key = wait_connected(server, ws)
        assert f"✅ Client #{key} connected from 127.0.0.1:{port}\n" in server.output
        ws.close()
    server.wait_for(f"❌ Client #{key} (127.0.0.1:{port}) disconnected: 1000 (normal closure)\n")


# --- limits --------------------------------------------------------------------------------------


def test_oversized_message_closes_only_its_client(server_process: type[ServerProcess]) -> None:
    """A text message over --max-message-size closes that client with 1009; others chat on."""
    server = server_process("--max-message-size", "100")
    with client(server.url) as a, client(server.url) as b:
        key_a, port_a = wait_connected(server, a), local_port(a)
        wait_connected(server, b)
        # The limit counts UTF-8 bytes: 50 two-byte characters fit exactly.
        a.send("é" * 50)
        assert recv_text(a) == "You said: " + "é" * 50
        assert recv_text(b) == "Someone says: " + "é" * 50

        a.send("é" * 51)
        close = expect_close(a)
        assert (close.code, close.reason) == (1009, "Exceeded maximum message size: 100 bytes")
        server.wait_for(f"Client #{key_a} (127.0.0.1:{port_a}) disconnected: 1009 ")

        b.send("still connected")
        assert recv_text(b) == "You said: still connected"
    assert "Traceback" not in server.output


def test_binary_frame_gets_error_and_connection_stays_open(
    server_process: type[ServerProcess],
) -> None:
    """A binary frame is answered with an error line and the connection stays open."""
    server = server_process()
    with client(server.url) as ws:
        wait_connected(server, ws)
        ws.send(b"\x00\x01binary")
        assert recv_text(ws) == "Error: binary messages are not supported; send text"
        ws.send("text now")
        assert recv_text(ws) == "You said: text now"
    assert "Traceback" not in server.output


# --- command-line errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "nope"], "argument --port: 'nope' is not a port number"),
        (["--queue-depth", "0"], "argument --queue-depth: '0' must be at least 1"),
        (["--shutdown-grace", "-1"], "argument --shutdown-grace: '-1' must be more than 0 seconds"),
    ],
    ids=["port", "queue-depth", "shutdown-grace"],
)
def test_bad_flag_value_is_a_usage_error(args: list[str], expected: str) -> None:
    """A bad flag value exits 2 with one usage error line naming the flag, no traceback."""
    result = run_server_cli("--host", "127.0.0.1", *args)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.startswith(f"usage: {PROG} ")
    assert error_lines(result.stderr) == [f"{PROG}: error: {expected}"]
    assert result.stdout == ""


def test_bad_port_in_environment_is_a_usage_error() -> None:
    """A bad TRIO_CHAT_PORT exits 2 with one usage error line naming the variable."""
    env = {**child_env(), "TRIO_CHAT_PORT": "nope"}
    result = run_server_cli("--host", "127.0.0.1", env=env)
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert error_lines(result.stderr) == [
        f"{PROG}: error: TRIO_CHAT_PORT: 'nope' is not a port number"
    ]


def test_port_in_use_exits_2_with_one_line() -> None:
    """A port already in use exits 2 with a 'Could not listen' line and no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server_cli("--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr == (
        f"Could not listen on 127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}\n"
    )
    assert result.stdout == ""


def test_help_lists_every_flag_and_variable() -> None:
    """--help exits 0 and documents every flag and both environment variables."""
    result = run_server_cli("--help")
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith(f"usage: {PROG} ")
    for name in (
        "--host",
        "--port",
        "--max-message-size",
        "--queue-depth",
        "--send-timeout",
        "--handshake-timeout",
        "--max-connections",
        "--presence-limit",
        "--shutdown-grace",
        "--no-console",
        "--log-level",
        "TRIO_CHAT_HOST",
        "TRIO_CHAT_PORT",
    ):
        assert re.search(rf"(?<![\w-]){name}(?![\w-])", result.stdout), f"{name} not in --help"


# --- environment fallback ----------------------------------------------------------------------


def test_port_comes_from_environment_without_flag(
    server_process: type[ServerProcess],
) -> None:
    """Without --port, TRIO_CHAT_PORT decides the port the server listens on."""
    port = free_port()
    server = server_process(
        stdin=subprocess.DEVNULL, port=None, env={**child_env(), "TRIO_CHAT_PORT": str(port)}
    )
    assert server.url == f"ws://127.0.0.1:{port}"
    with client(server.url) as ws:
        ws.send("on the env port")
        assert recv_text(ws) == "You said: on the env port"
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 0
    assert "Traceback" not in server.output


def test_the_open_file_limit_is_raised_and_logged(server_process: type[ServerProcess]) -> None:
    """Started with a low soft open-file limit, the server raises it to the hard limit
    and says so (every connection needs a file descriptor)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard <= 256:
        pytest.skip(f"the hard open-file limit here is only {hard}")
    server = server_process(soft_file_limit=256)
    server.wait_for(f"raised the open-file limit from 256 to {hard}\n")
