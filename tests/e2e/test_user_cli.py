"""``trio-chat-server user ...`` as an operator runs it: against a stopped server (the
database directly) and a running one (its control socket), in subprocesses.

Each test has its own database in a temporary folder; the control sockets are in the
suite's private runtime folder (``XDG_RUNTIME_DIR``, see support.child_env), found the
same way by the server and the command.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pexpect
import pytest

from trio_chat.server.control import default_control_socket

from support import EVENT_TIMEOUT, ROOT, ServerProcess, child_env, failed, server_command, succeeded


def user(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m trio_chat.server user ARGS``, its output captured."""
    return server_command("user", *args, stdin=stdin)


def succeeds(*args: str, stdin: str | None = None) -> list[str]:
    """The lines a command that must succeed prints (nothing on stderr)."""
    return succeeded(user(*args, stdin=stdin))


def fails(*args: str) -> str:
    """The one line a command that must fail prints on stderr (exit status 2)."""
    return failed(user(*args))


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "chat.db")


@pytest.fixture
def password_file(tmp_path: Path) -> str:
    path = tmp_path / "password"
    path.write_text("first password\n", encoding="utf-8")
    return str(path)


def socket_of(db: str) -> Path:
    path = default_control_socket(db, child_env())
    assert path is not None
    return path


def created(lines: list[str]) -> list[tuple[str, ...]]:
    """``user list``'s rows without the creation times."""
    return [tuple(line.split()[:2]) for line in lines]


def test_on_a_stopped_server_the_database_is_changed_directly(
    db: str, password_file: str, tmp_path: Path
) -> None:
    assert succeeds("add", "alice", "--db", db, "--password-file", password_file) == [
        "added the account alice"
    ]
    assert succeeds("add", "bob", "--admin", "--db", db, "--password-file", password_file) == [
        "added the account bob as an admin"
    ]
    assert created(succeeds("list", "--db", db)) == [
        ("name", "admin"),
        ("alice", "no"),
        ("bob", "yes"),
    ]
    assert succeeds("passwd", "alice", "--db", db, "--password-file", "-", stdin="second\n") == [
        "changed the password of alice"
    ]
    assert succeeds("remove", "Alice", "--db", db) == ["removed the account alice"]
    assert created(succeeds("list", "--db", db)) == [("name", "admin"), ("bob", "yes")]
    assert not socket_of(db).exists()


def test_on_a_running_server_the_command_goes_through_its_control_socket(
    server_process: type[ServerProcess], db: str, password_file: str
) -> None:
    """With the database locked by a server, every command is carried out by it (and
    says so); what it did is in the database once the server has stopped."""
    succeeds("add", "alice", "--db", db, "--password-file", password_file)
    path = socket_of(db)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(0o755)
    server = server_process("--no-console", db=db)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    through = "(through the running server)"
    assert succeeds("add", "bob", "--db", db, "--password-file", password_file) == [
        f"added the account bob {through}"
    ]
    assert succeeds("passwd", "bob", "--db", db, "--password-file", "-", stdin="new one\n") == [
        f"changed the password of bob {through}"
    ]
    assert created(succeeds("list", "--db", db)) == [
        ("name", "admin"),
        ("alice", "no"),
        ("bob", "no"),
    ]
    assert succeeds("remove", "alice", "--db", db) == [f"removed the account alice {through}"]
    assert fails("remove", "alice", "--db", db) == (
        "trio-chat-server user remove: there is no account called alice"
    )
    assert fails("add", "BOB", "--db", db, "--password-file", password_file) == (
        "trio-chat-server user add: there is already an account called BOB"
    )
    assert succeeds("list", "--control-socket", str(path))[1:][0].startswith("bob ")
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 0
    assert not path.exists()
    assert created(succeeds("list", "--db", db)) == [("name", "admin"), ("bob", "no")]


def test_a_socket_left_by_a_killed_server_is_replaced(
    server_process: type[ServerProcess], db: str, password_file: str
) -> None:
    first = server_process("--no-console", db=db)
    first.proc.kill()
    first.wait()
    path = socket_of(db)
    assert path.exists()  # nobody removed it
    assert fails("list", "--control-socket", str(path)) == (
        f"trio-chat-server user list: no server answers on the control socket {path}"
    )
    server_process("--no-console", db=db)
    assert succeeds("add", "carol", "--db", db, "--password-file", password_file) == [
        "added the account carol (through the running server)"
    ]


@pytest.mark.parametrize("running", [False, True], ids=["stopped", "running"])
def test_refusals_are_one_line_and_exit_status_2(
    server_process: type[ServerProcess], db: str, password_file: str, running: bool
) -> None:
    """A duplicate name and unknown names, from the database or from the server: one
    line each, exit status 2, nothing changed."""
    succeeds("add", "alice", "--db", db, "--password-file", password_file)
    if running:
        server_process("--no-console", db=db)
    prog = "trio-chat-server user"
    assert fails("add", "ALICE", "--db", db, "--password-file", password_file) == (
        f"{prog} add: there is already an account called ALICE"
    )
    assert fails("remove", "nobody", "--db", db) == (
        f"{prog} remove: there is no account called nobody"
    )
    assert fails("passwd", "nobody", "--db", db, "--password-file", password_file) == (
        f"{prog} passwd: there is no account called nobody"
    )
    assert created(succeeds("list", "--db", db)) == [("name", "admin"), ("alice", "no")]


def test_bad_names_and_password_files_are_one_line_and_exit_status_2(
    db: str, tmp_path: Path
) -> None:
    """Read before anything is opened: a bad name, a missing, empty or non-UTF-8
    password file. Nothing is created."""
    empty = tmp_path / "empty"
    empty.write_text("\nsecond line\n", encoding="utf-8")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\n")
    missing = tmp_path / "missing"
    prog = "trio-chat-server user"
    assert fails("add", "no way", "--db", db, "--password-file", str(empty)) == (
        f"{prog} add: invalid account name 'no way': use 1-32 letters, digits, '_', '-' or '.'"
    )
    assert fails("add", "bob", "--db", db, "--password-file", str(missing)) == (
        f"{prog} add: cannot read the password file {missing}: No such file or directory"
    )
    assert fails("add", "bob", "--db", db, "--password-file", str(empty)) == (
        f"{prog} add: the password file {empty} holds no password (its first line is empty)"
    )
    assert fails("passwd", "alice", "--db", db, "--password-file", str(binary)) == (
        f"{prog} passwd: the password file {binary} is not UTF-8 text"
    )
    assert not Path(db).exists()


def test_a_server_on_another_control_socket_is_named_as_the_cure(
    server_process: type[ServerProcess], db: str, tmp_path: Path
) -> None:
    """The database is locked but nothing answers where its socket would be: the line
    says what to give."""
    elsewhere = Path(tempfile.mkdtemp(prefix="tc-")) / "control.sock"
    try:
        server_process("--no-console", "--control-socket", str(elsewhere), db=db)
        assert fails("list", "--db", db) == (
            f"trio-chat-server user list: the database {db} is in use by a running server, "
            f"but nothing answers on its control socket {socket_of(db)} (was it started "
            "with --control-socket PATH? give it here too)"
        )
        assert succeeds("list", "--control-socket", str(elsewhere)) == [
            "no accounts (through the running server)"
        ]
    finally:
        shutil.rmtree(elsewhere.parent, ignore_errors=True)


def test_a_database_in_memory_needs_the_servers_socket() -> None:
    assert fails("list", "--db", ":memory:") == (
        "trio-chat-server user list: a database in memory is only in its server: give that "
        "server's --control-socket PATH"
    )


def test_a_usage_error_is_one_line() -> None:
    result = user("add")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        "trio-chat-server user add: error: the following arguments are required: NAME; see --help"
    )


def spawn_user(*args: str) -> pexpect.spawn:
    """``user ARGS`` in a pseudo-terminal, where getpass asks."""
    return pexpect.spawn(
        sys.executable,
        ["-m", "trio_chat.server", "user", *args],
        env=child_env(),
        cwd=str(ROOT),
        encoding="utf-8",
        timeout=EVENT_TIMEOUT,
    )


def test_the_password_is_asked_for_twice_without_echo(db: str) -> None:
    child = spawn_user("add", "alice", "--db", db)
    child.expect_exact("Password for alice: ")
    child.sendline("typed secret")
    child.expect_exact("Again: ")
    child.sendline("typed secret")
    child.expect_exact("added the account alice")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert "typed secret" not in (child.before or "")
    mismatch = spawn_user("passwd", "alice", "--db", db)
    mismatch.expect_exact("Password for alice: ")
    mismatch.sendline("one")
    mismatch.expect_exact("Again: ")
    mismatch.sendline("another")
    mismatch.expect_exact(
        "trio-chat-server user passwd: the two passwords differ; nothing was changed"
    )
    mismatch.expect(pexpect.EOF)
    mismatch.close()
    assert mismatch.exitstatus == 2
    assert os.path.exists(db)


def test_a_control_socket_that_cannot_be_made_stops_the_server(tmp_path: Path) -> None:
    """Something that is not a socket at --control-socket: one line, exit status 2, and
    the file left as it was."""
    notes = tmp_path / "notes"
    notes.write_text("mine", encoding="utf-8")
    command = [sys.executable, "-m", "trio_chat.server", "--port", "0", "--no-console"]
    result = subprocess.run(
        [*command, "--db", ":memory:", "--control-socket", str(notes)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=EVENT_TIMEOUT,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == (
        f"cannot make the control socket {notes}: something that is not a socket is there "
        "(left as it is)"
    )
    assert "Traceback" not in result.stderr
    assert notes.read_text(encoding="utf-8") == "mine"
