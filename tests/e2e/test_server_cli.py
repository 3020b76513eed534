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
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
import websockets.exceptions
from websockets.sync.client import ClientConnection, connect

from trio_chat.server.config import SETTINGS

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
PROG = "trio-chat-server"
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


# --- limits --------------------------------------------------------------------------------------


def test_a_limit_flag_reaches_the_running_server(server_process: type[ServerProcess]) -> None:
    """--max-message-size on the command line is the limit the running server applies (its
    behaviour, UTF-8 counting and the other clients, is tests/server/test_server.py's)."""
    server = server_process("--max-message-size", "100")
    with client(server.url) as ws:
        key, port = wait_connected(server, ws), local_port(ws)
        ws.send("x" * 100)
        assert recv_text(ws) == "You said: " + "x" * 100
        ws.send("x" * 101)
        close = expect_close(ws)
        assert (close.code, close.reason) == (1009, "Exceeded maximum message size: 100 bytes")
    server.wait_for(disconnect_line(key, port, "1009 Exceeded maximum message size: 100 bytes"))
    assert "Traceback" not in server.output


def test_the_admission_flags_reach_the_running_server(server_process: type[ServerProcess]) -> None:
    """Limits on for loopback (no --limits-exempt): --max-connections-per-ip 2 lets two in
    and refuses the third with 429 and Retry-After; --allow-origin lets that page in and
    another page is refused with 403 (the rules themselves are tests/server/test_gate.py's)."""
    server = server_process(
        "--max-connections-per-ip", "2", "--allow-origin", "https://app.example", limits_exempt=None
    )
    page = {"Origin": "https://app.example"}
    with (
        client(server.url),
        connect(server.url, additional_headers=page, proxy=None),
        pytest.raises(websockets.exceptions.InvalidStatus) as refused,
        client(server.url),
    ):
        pytest.fail("a third connection from 127.0.0.1 must be refused")
    response = refused.value.response
    assert (response.status_code, response.headers["Retry-After"]) == (429, "10")
    evil = {"Origin": "https://evil.example"}
    with (
        pytest.raises(websockets.exceptions.InvalidStatus) as refused,
        connect(server.url, additional_headers=evil, proxy=None),
    ):
        pytest.fail("a page from another origin must be refused")
    assert refused.value.response.status_code == 403
    server.wait_for("refused GET /: 403 pages from https://evil.example may not open")
    assert "Traceback" not in server.output


# --- command-line errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--port", "nope"], "argument --port: 'nope' is not a port number"),
        (["--queue-depth", "0"], "argument --queue-depth: '0' must be at least 1"),
        (["--shutdown-grace", "-1"], "argument --shutdown-grace: '-1' must be more than 0 seconds"),
        (
            ["--log-level", "loud"],
            "argument --log-level: 'loud' is not one of DEBUG, INFO, WARNING, ERROR",
        ),
        (["--nope"], "unrecognized arguments: --nope"),
        (["--port"], "argument --port: expected one argument"),
    ],
    ids=["port", "queue-depth", "shutdown-grace", "log-level", "unknown", "missing-value"],
)
def test_bad_flag_is_one_line_and_exit_2(args: list[str], expected: str) -> None:
    """A bad flag exits 2 with one line naming the flag and pointing at --help: no usage
    block, no traceback, nothing on stdout."""
    result = run_server_cli("--host", "127.0.0.1", *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"{PROG}: error: {expected}; see --help\n"


def test_bad_port_in_environment_is_one_line_and_exit_2() -> None:
    """A bad TRIO_CHAT_PORT exits 2 with one line naming the variable."""
    env = {**child_env(), "TRIO_CHAT_PORT": "nope"}
    result = run_server_cli("--host", "127.0.0.1", env=env)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"{PROG}: error: TRIO_CHAT_PORT: 'nope' is not a port number; see --help\n"
    )


def test_port_in_use_exits_2_with_one_line() -> None:
    """A port already in use exits 2 with a 'Could not listen' line and no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_server_cli("--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr == (
        f"Could not listen on 127.0.0.1:{port}: {os.strerror(errno.EADDRINUSE)}\n"
    )
    assert result.stdout == ""


def test_port_clash_is_reported_before_the_database_clash(
    server_process: type[ServerProcess], tmp_path: Path
) -> None:
    """A second server on the same port and the same history file is told about the port:
    the server binds before it opens the database. The first one keeps serving."""
    db = tmp_path / "shared.db"
    first = server_process(db=str(db))
    result = run_server_cli("--host", "127.0.0.1", "--port", str(first.port), "--db", str(db))
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        f"Could not listen on 127.0.0.1:{first.port}: {os.strerror(errno.EADDRINUSE)}\n"
    )
    with client(first.url) as ws:
        ws.send("still serving")
        assert recv_text(ws) == "You said: still serving"


def test_help_lists_every_flag_and_variable() -> None:
    """--help exits 0 and documents every setting of the table and its variable."""
    result = run_server_cli("--help")
    assert result.returncode == 0
    assert result.stderr == ""
    assert result.stdout.startswith(f"usage: {PROG} ")
    names = [setting.flag for setting in SETTINGS]
    names += [setting.env for setting in SETTINGS if setting.env is not None]
    assert "TRIO_CHAT_PORT" in names
    assert "--ready-file" in names
    for name in names:
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


# --- the ready file ----------------------------------------------------------------------------


def test_ready_file_says_where_the_server_listens(server_process: type[ServerProcess]) -> None:
    """Once listening, the server writes its pid, URLs and port to --ready-file as JSON
    (and nothing of it on its output); a clean exit removes the file."""
    server = server_process(stdin=subprocess.DEVNULL)
    port = server.port
    assert port != 0
    assert server.ready == {
        "pid": server.proc.pid,
        "urls": [f"ws://127.0.0.1:{port}"],
        "port": port,
    }
    # Written beside itself under a temporary name, then renamed: nothing else is left.
    assert [path.name for path in server.ready_file.parent.iterdir()] == ["ready.json"]
    assert str(server.ready_file) not in server.output
    with client(server.url) as ws:
        ws.send("ready")
        assert recv_text(ws) == "You said: ready"
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not server.ready_file.exists()


def test_unwritable_ready_file_stops_the_server(tmp_path: Path) -> None:
    """A ready file that cannot be written: one line, exit status 2."""
    path = tmp_path / "missing" / "ready.json"
    result = run_server_cli(
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--db",
        ":memory:",
        "--no-console",
        "--ready-file",
        str(path),
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[-1:] == [
        f"cannot write the ready file {path}: {os.strerror(errno.ENOENT)}"
    ]
    assert "Traceback" not in result.stderr


# --- the history file ----------------------------------------------------------------------------

DB_FAILURE = "cannot use the history database"


#: Runs the server (argv[1:]) without the capabilities that let root write any file
#: (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH): dropped from the bounding set, then exec, so
#: the server has the file permissions of anyone else. prctl(PR_CAPBSET_DROP = 24, cap).
_WITHOUT_ROOT_FILE_ACCESS = (
    "import ctypes, os, sys; "
    "libc = ctypes.CDLL(None, use_errno=True); "
    "dropped = libc.prctl(24, 1) == 0 and libc.prctl(24, 2) == 0; "
    "dropped or sys.exit(f'cannot drop capabilities: {os.strerror(ctypes.get_errno())}'); "
    "os.execv(sys.executable, [sys.executable, '-m', 'trio_chat.server', *sys.argv[1:]])"
)


def failing_server(db: Path | str, *, as_anyone: bool = False) -> str:
    """Run a server on ``db`` that must refuse to start (exit 2, nothing on stdout) and
    return its one line on stderr. ``as_anyone``: without root's power over files."""
    launch = SERVER
    if as_anyone and os.geteuid() == 0:
        launch = [sys.executable, "-c", _WITHOUT_ROOT_FILE_ACCESS]
    result = subprocess.run(
        [*launch, "--host", "127.0.0.1", "--port", "0", "--db", str(db)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=EVENT_TIMEOUT,
        check=False,
    )
    if result.stderr.startswith("cannot drop capabilities: "):
        pytest.skip(f"root here cannot give up its file access: {result.stderr.strip()}")
    assert (result.returncode, result.stdout) == (2, ""), result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_start_up_log_names_the_history_file(
    server_process: type[ServerProcess], tmp_path: Path
) -> None:
    """The start-up log says where history is kept: the file, or in memory."""
    db = tmp_path / "named.db"
    server_process(db=str(db)).wait_for(f"history: {db}\n")
    server_process().wait_for("history: in memory\n")


def test_the_default_history_file_is_in_the_data_folder_which_is_created(
    server_process: type[ServerProcess], tmp_path: Path
) -> None:
    """Without --db, history goes to $XDG_DATA_HOME/trio_chat/history.db, the folder made
    when missing (in the tests, a private folder: never the user's own)."""
    data = tmp_path / "data"
    env = {**child_env(), "XDG_DATA_HOME": str(data)}
    server = server_process(db=None, env=env)
    default = data / "trio_chat" / "history.db"
    server.wait_for(f"history: {default}\n")
    assert default.is_file()


def test_the_suite_never_uses_the_users_history_file() -> None:
    """HOME and XDG_DATA_HOME point into a private temporary folder, here and in every
    subprocess, so the default history file is not the user's."""
    private = child_env()
    assert os.environ["HOME"] == private["HOME"]
    assert os.environ["XDG_DATA_HOME"] == private["XDG_DATA_HOME"]
    assert Path(private["HOME"]).name.startswith("trio_chat-test-home-")
    assert Path(private["XDG_DATA_HOME"]).is_relative_to(private["HOME"])


def test_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    """An explicit --db in a folder that does not exist is refused (and not created)."""
    db = tmp_path / "nowhere" / "history.db"
    assert failing_server(db) == f"{DB_FAILURE} {db}: the folder {db.parent} does not exist"
    assert not db.parent.exists()


@pytest.mark.parametrize("content", [b"x", b"SQLite format 2\x00", bytes(range(256)) * 16])
def test_a_file_that_is_not_a_database_is_refused_never_overwritten(
    tmp_path: Path, content: bytes
) -> None:
    """A file that is not an SQLite database is refused and left exactly as it was (SQLite
    alone would take a file shorter than its header for an empty database)."""
    db = tmp_path / "notes.txt"
    db.write_bytes(content)
    assert failing_server(db) == f"{DB_FAILURE} {db}: it is not an SQLite database (left as it is)"
    assert db.read_bytes() == content
    assert sorted(path.name for path in tmp_path.iterdir()) == ["notes.txt"]


def test_a_database_in_use_names_the_cure(
    server_process: type[ServerProcess], tmp_path: Path
) -> None:
    """A history file another server holds: that is what the line says, with the flags
    that fix it."""
    db = tmp_path / "shared.db"
    server_process(db=str(db))
    assert failing_server(db) == (
        f"{DB_FAILURE} {db}: another server is using it (database is locked); "
        "give this server its own file with --db PATH, or --db :memory:"
    )


def test_a_read_only_file_is_reported_as_read_only(tmp_path: Path) -> None:
    """A history file that cannot be written is reported as read-only, and left as it is."""
    db = tmp_path / "history.db"
    with closing(sqlite3.connect(db)) as made:
        made.execute("CREATE TABLE kept (x)")
    content = db.read_bytes()
    db.chmod(0o444)
    assert failing_server(db, as_anyone=True) == f"{DB_FAILURE} {db}: it is read-only"
    assert db.read_bytes() == content


def test_a_read_only_folder_is_reported_as_read_only(tmp_path: Path) -> None:
    """A folder where the history file (and its write-ahead log) cannot be created is
    reported as read-only, not as a "disk I/O error"."""
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    db = folder / "history.db"
    assert (
        failing_server(db, as_anyone=True) == f"{DB_FAILURE} {db}: its folder {folder} is read-only"
    )
    assert list(folder.iterdir()) == []
    folder.chmod(0o755)  # for pytest's clean-up


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--open-registration"], "--open-registration needs --accounts"),
        (
            ["--guests"],
            "--guests needs --accounts, --jwt-key or --jwt-secret-file (it is the default)",
        ),
    ],
    ids=["registration", "guests"],
)
def test_login_flags_that_do_not_go_together(args: list[str], expected: str) -> None:
    result = run_server_cli("--host", "127.0.0.1", "--port", "0", "--db", ":memory:", *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"{PROG}: error: {expected}; see --help\n"


def test_a_jwt_key_that_cannot_be_used_is_one_line_and_exit_2(tmp_path: Path) -> None:
    """A short secret, a missing file, a file that is no public key: one line each."""
    short = tmp_path / "short"
    short.write_text("hunter2\n")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key\n")
    cases = [
        (
            ["--jwt-secret-file", str(short)],
            f"the JWT secret in {short} is 7 bytes; HS256 needs at least 32 "
            f"(try: openssl rand -hex 32 > {short})",
        ),
        (
            ["--jwt-secret-file", str(tmp_path / "none")],
            f"cannot read the JWT secret file {tmp_path / 'none'}: No such file or directory",
        ),
        (
            ["--jwt-key", str(garbage)],
            f"{garbage} is not a PEM public key (-----BEGIN PUBLIC KEY-----); "
            "give the public half of the key that signs the tokens",
        ),
    ]
    for args, expected in cases:
        result = run_server_cli(
            "--host", "127.0.0.1", "--port", "0", "--db", ":memory:", "--no-console", *args
        )
        assert (result.returncode, result.stdout, result.stderr) == (2, "", expected + "\n")
