"""The admin channel: a running server answers JSON lines on its Unix socket (folder 0700,
socket 0600), refuses bad requests with an answer, closes a removed account's
connections, replaces a stale socket file and removes its own at a clean exit."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from inproc import LiveServer, StartLiveServer, lose_connection, open_json, open_plain

from trio_chat.server.config import ServerConfig
from trio_chat.server.control import (
    MAX_CLIENTS,
    MAX_LINE,
    ControlSocketError,
    control_request,
    default_control_socket,
    open_control_listener,
)
from trio_chat.server.server import ChatServer

from support import EVENT_TIMEOUT, error

pytest_plugins = ["inproc"]


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """A folder with a short path (a Unix socket's path has at most 107 bytes; pytest's
    tmp_path can be longer), removed afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="tc-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
async def control(start_live_server: StartLiveServer, socket_dir: Path) -> LiveServer:
    """A server with its control socket in a folder it makes."""
    return await start_live_server(control_socket=str(socket_dir / "run" / "control.sock"))


def socket_of(live: LiveServer) -> Path:
    assert live.server.control_socket is not None
    return live.server.control_socket


async def ask(live: LiveServer, **request: Any) -> dict[str, Any]:
    with trio.fail_after(EVENT_TIMEOUT):
        return await control_request(socket_of(live), request)


async def test_the_folder_and_the_socket_are_the_servers_own(control: LiveServer) -> None:
    path = socket_of(control)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["control.sock"]


async def test_users_are_added_listed_changed_and_removed(control: LiveServer) -> None:
    assert await ask(control, op="user.add", name="alice", password="pw-a", admin=True) == {
        "ok": True,
        "name": "alice",
        "id": "account:1",
        "admin": True,
    }
    assert (await ask(control, op="user.add", name="bob", password="pw-b"))["id"] == "account:2"
    listed = await ask(control, op="user.list")
    assert [(u["name"], u["admin"]) for u in listed["users"]] == [("alice", True), ("bob", False)]
    assert await ask(control, op="user.passwd", name="BOB", password="new") == {
        "ok": True,
        "name": "BOB",
    }
    accounts = control.server.accounts
    assert (await accounts.authenticate("bob", "new", "127.0.0.1")).id == "account:2"
    assert await ask(control, op="user.remove", name="bob") == {
        "ok": True,
        "name": "bob",
        "closed": 0,
    }
    assert [u["name"] for u in (await ask(control, op="user.list"))["users"]] == ["alice"]
    assert accounts.registered() == {"alice": "account:1"}


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        ({"op": "user.remove", "name": "nobody"}, "there is no account called nobody"),
        (
            {"op": "user.passwd", "name": "nobody", "password": "x"},
            "there is no account called nobody",
        ),
        (
            {"op": "user.add", "name": "Alice", "password": "x"},
            "there is already an account called Alice",
        ),
        ({"op": "user.add", "name": "carol", "password": ""}, "the password is empty"),
        (
            {"op": "user.add", "name": "c d", "password": "x"},
            "invalid account name 'c d': use 1-32 letters, digits, '_', '-' or '.'",
        ),
        ({"op": "user.add", "name": "carol"}, "'password' must be a string"),
        (
            {"op": "user.add", "name": "carol", "password": "x", "admin": "yes"},
            "'admin' must be true or false",
        ),
        (
            {"op": "user.explode"},
            "unknown op 'user.explode'; one of user.add, user.remove, user.list, user.passwd,"
            " ban.add, ban.remove, ban.list",
        ),
        (
            {"name": "x"},
            "unknown op None; one of user.add, user.remove, user.list, user.passwd, ban.add,"
            " ban.remove, ban.list",
        ),
    ],
)
async def test_a_bad_request_is_answered(
    control: LiveServer, request_: dict[str, Any], error: str
) -> None:
    """Every refusal is an answer (ok: false, one line), and the server goes on."""
    await ask(control, op="user.add", name="alice", password="pw")
    assert await ask(control, **request_) == {"ok": False, "error": error}
    assert (await ask(control, op="user.list"))["ok"] is True


async def talk(path: Path, data: bytes) -> list[Any]:
    """Send ``data`` raw; every answer line until the server closes the connection."""
    with trio.fail_after(EVENT_TIMEOUT):
        stream = await trio.open_unix_socket(os.fspath(path))
        async with stream:
            await stream.send_all(data)
            await stream.send_eof()
            received = b""
            while chunk := await stream.receive_some():
                received += chunk
    return [json.loads(line) for line in received.splitlines()]


async def test_several_requests_on_one_connection_and_lines_that_are_not_json(
    control: LiveServer,
) -> None:
    answers = await talk(
        socket_of(control),
        b'{"op": "user.list"}\nnot json\n[1, 2]\n' + b"[" * 5000 + b'\n{"op": "user.list"}\n',
    )
    refusal = {"ok": False, "error": "a request is one JSON object per line"}
    ok = {"ok": True, "users": []}
    assert answers == [ok, refusal, refusal, refusal, ok]


async def test_a_line_too_long_is_answered_and_the_connection_closed(
    control: LiveServer,
) -> None:
    """Past MAX_LINE bytes without a newline the server answers and stops reading."""
    path = socket_of(control)
    with trio.fail_after(EVENT_TIMEOUT):
        stream = await trio.open_unix_socket(os.fspath(path))
        async with stream:
            received = b""

            async def flood() -> None:
                chunk = b"x" * 65536
                for _ in range(MAX_LINE // len(chunk) + 2):
                    await stream.send_all(chunk)
                await stream.send_eof()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                while chunk := await stream.receive_some():
                    received += chunk
    assert json.loads(received) == {
        "ok": False,
        "error": f"request too long (over {MAX_LINE} bytes)",
    }
    assert (await ask(control, op="user.list"))["ok"] is True


async def test_past_the_client_limit_a_client_is_answered_busy(control: LiveServer) -> None:
    """MAX_CLIENTS connections at once are served; one more is told so and closed; once
    they go, requests are answered again."""
    path = socket_of(control)
    with trio.fail_after(EVENT_TIMEOUT):
        idle = [await trio.open_unix_socket(os.fspath(path)) for _ in range(MAX_CLIENTS)]
        await trio.testing.wait_all_tasks_blocked()
    try:
        assert await talk(path, b"") == [
            {"ok": False, "error": "busy: too many control clients at once"}
        ]
    finally:
        for stream in idle:
            await stream.aclose()
    with trio.fail_after(EVENT_TIMEOUT):
        await trio.testing.wait_all_tasks_blocked()
    assert (await ask(control, op="user.list"))["ok"] is True


async def test_removing_an_account_closes_its_connections(control: LiveServer) -> None:
    """user.remove kicks every device of the account (announced once) and says how many
    connections it closed."""
    accounts = control.server.accounts
    bob = await accounts.add("bob", "pw")
    async with (
        open_plain(control) as watcher,
        open_plain(control) as phone,
        open_plain(control) as laptop,
    ):
        # Logged in as the chat's logins do it (the login answers are not the chat's).
        chat = control.server.chat
        chat.authenticate(chat.members[watcher.key], await accounts.add("carol", "pw"))
        for device in (phone, laptop):
            chat.authenticate(chat.members[device.key], bob)
        await watcher.expect("* bob joined lobby")
        assert await ask(control, op="user.remove", name="bob") == {
            "ok": True,
            "name": "bob",
            "closed": 2,
        }
        await watcher.expect("* bob was kicked (account removed)")
        assert "closed 2 connection(s) of the removed account bob" in control.log.messages
        await phone.expect("* carol joined lobby")
        await laptop.expect("* carol joined lobby", "* bob joined lobby")
        for device in (phone, laptop):
            close = await device.expect_close()
            assert (close.code, close.reason) == (1008, "account removed")
    assert accounts.registered() == {"carol": "account:2"}


async def test_removing_an_account_through_the_api_closes_its_connections_too(
    live_server: LiveServer,
) -> None:
    accounts = live_server.server.accounts
    bob = await accounts.add("bob", "pw")
    async with open_plain(live_server) as watcher, open_plain(live_server) as device:
        chat = live_server.server.chat
        chat.authenticate(chat.members[device.key], bob)
        await watcher.expect("* bob joined lobby")
        assert await accounts.remove("bob") is True
        await watcher.expect("* bob was kicked (account removed)")
        close = await device.expect_close()
        assert (close.code, close.reason) == (1008, "account removed")


async def test_removing_an_account_ends_its_held_sessions(control: LiveServer) -> None:
    """A device of the account whose connection was lost holds its session; once the
    account is removed, its secret resumes nothing (a new guest, invalid_session)."""
    accounts, chat = control.server.accounts, control.server.chat
    bob = await accounts.add("bob", "pw")
    async with open_json(control) as device:
        (member,) = chat.members.values()
        chat.authenticate(member, bob)
        secret = device.session
        await lose_connection(device)
    await control.wait_for("disconnected: ")
    assert chat.sessions.held_count == 1
    assert (await ask(control, op="user.remove", name="bob"))["closed"] == 0
    assert chat.sessions.held_count == 0
    async with open_json(control, f"/?session={secret}") as again:
        assert await again.event() == error(
            "invalid_session", "that session is unknown or has expired; it cannot be resumed"
        )


async def test_a_password_never_reaches_the_log(control: LiveServer) -> None:
    await ask(control, op="user.add", name="alice", password="sekrit-pass-1")
    await ask(control, op="user.passwd", name="alice", password="sekrit-pass-2")
    await ask(control, op="user.add", name="x y", password="sekrit-pass-3")
    assert "account alice added" in control.log.messages
    assert "password of account alice changed" in control.log.messages
    assert not [line for line in control.log.messages if "sekrit" in line]


# --- the socket file -----------------------------------------------------------------------


async def test_the_socket_is_removed_at_a_clean_exit(socket_dir: Path) -> None:
    path = socket_dir / "control.sock"
    config = ServerConfig(host="127.0.0.1", port=0, db=":memory:", control_socket=str(path))
    async with trio.open_nursery() as nursery:
        server: ChatServer = await nursery.start(ChatServer(config).run)
        assert path.exists()
        server.shutdown()
    assert not path.exists()


async def test_a_folder_the_operator_named_keeps_its_mode(
    start_live_server: StartLiveServer, socket_dir: Path
) -> None:
    """An existing folder given with --control-socket may be shared: only the socket is
    made private."""
    os.chmod(socket_dir, 0o755)
    live = await start_live_server(control_socket=str(socket_dir / "control.sock"))
    assert stat.S_IMODE(socket_of(live).stat().st_mode) == 0o600
    assert stat.S_IMODE(os.stat(socket_dir).st_mode) == 0o755


async def test_a_stale_socket_file_is_replaced(control: LiveServer, socket_dir: Path) -> None:
    """A socket file whose server was killed (nobody answers) is replaced."""
    stale = socket_dir / "stale.sock"
    left_over = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    left_over.bind(os.fspath(stale))
    left_over.close()  # the file stays, as after kill -9
    listener, _ = await open_control_listener(stale)
    async with listener:
        assert stat.S_IMODE(stale.stat().st_mode) == 0o600
        with trio.fail_after(EVENT_TIMEOUT):
            client = await trio.open_unix_socket(os.fspath(stale))
            await client.aclose()


async def test_a_socket_another_server_answers_on_is_refused(control: LiveServer) -> None:
    path = socket_of(control)
    with pytest.raises(ControlSocketError) as info:
        await open_control_listener(path)
    assert str(info.value) == (
        f"cannot make the control socket {path}: another server answers on it; give this "
        "one its own with --control-socket PATH"
    )
    assert (await ask(control, op="user.list"))["ok"] is True


async def test_a_file_that_is_not_a_socket_is_left_alone(socket_dir: Path) -> None:
    path = socket_dir / "notes.txt"
    path.write_text("mine")
    with pytest.raises(ControlSocketError) as info:
        await open_control_listener(path)
    assert str(info.value) == (
        f"cannot make the control socket {path}: something that is not a socket is there "
        "(left as it is)"
    )
    assert path.read_text() == "mine"


async def test_a_path_too_long_for_a_socket_is_refused_in_one_line(socket_dir: Path) -> None:
    path = socket_dir / ("x" * 120)
    with pytest.raises(ControlSocketError, match="the path is longer than 107 bytes"):
        await open_control_listener(path)


def test_the_default_socket_is_per_database_in_the_runtime_folder(tmp_path: Path) -> None:
    environ = {"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": str(tmp_path)}
    first = default_control_socket(str(tmp_path / "a.db"), environ)
    again = default_control_socket(os.path.relpath(tmp_path / "a.db"), environ)
    other = default_control_socket(str(tmp_path / "b.db"), environ)
    assert first is not None
    assert first == again != other
    digest = hashlib.sha256(str((tmp_path / "a.db").resolve()).encode()).hexdigest()
    assert first == Path(f"/run/user/1000/trio_chat/control-{digest[:12]}.sock")
    without = default_control_socket(None, {"HOME": str(tmp_path)})
    assert without is not None
    assert without.parent == tmp_path / ".local" / "share" / "trio_chat"
    assert default_control_socket(":memory:", environ) is None


async def test_admin_flag_names_make_admins_of_accounts_added_later(
    start_live_server: StartLiveServer, socket_dir: Path
) -> None:
    """--admin names an account that need not exist yet: once added (not as an admin),
    it logs in as one, and user.list says so."""
    live = await start_live_server(control_socket=str(socket_dir / "control.sock"), admins=("Bob",))
    assert "--admin bob: there is no such account (yet)" in live.log.messages
    assert (await ask(live, op="user.add", name="bob", password="pw"))["admin"] is True
    assert (await live.server.accounts.authenticate("bob", "pw", "127.0.0.1")).admin is True
    listed = await ask(live, op="user.list")
    assert [(u["name"], u["admin"]) for u in listed["users"]] == [("bob", True)]
