"""The terminal client logging in: ``--login NAME`` asks for the password without echo
and logs in at the handshake; ``--token-file`` sends the file's token, and reads it
again when the server asks for a new one. The client runs in a pseudo-terminal against
a server subprocess (an account made in its database beforehand)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import jwt
from pty_support import Client, shown

from trio_chat.server.accounts import Accounts, LoginThrottle, Passwords
from trio_chat.server.store import open_store

from support import ServerProcess

pytest_plugins = ["pty_support"]

SECRET = "0123456789abcdef0123456789abcdef"
PASSWORD = "correct horse battery"


async def add_account(db: Path, name: str, password: str) -> None:
    """Register ``name`` in the database file ``db`` (no server is using it yet)."""
    store = open_store(str(db), 100)
    await store.open()
    try:
        accounts = Accounts(store, Passwords(), LoginThrottle(clock=time.monotonic))
        await accounts.add(name, password)
    finally:
        await store.aclose()


async def test_login_asks_for_the_password_without_echo(
    tmp_path: Path,
    server_process: type[ServerProcess],
    start_client: Callable[..., Client],
) -> None:
    db = tmp_path / "chat.db"
    await add_account(db, "alice", PASSWORD)
    server = server_process("--accounts", db=str(db))
    client = start_client(server.url, "--login", "alice")
    client.expect("Password for alice: ")
    client.child.sendline(PASSWORD)
    client.expect(shown("\N{WHITE HEAVY CHECK MARK} Connected to server!"))
    client.child.sendline("/who")
    client.expect("In lobby: alice")
    assert PASSWORD not in client.output
    assert PASSWORD not in server.output
    client.child.sendline("exit")
    assert client.wait_for_exit() == 0


async def test_a_wrong_password_is_one_line_and_status_1(
    tmp_path: Path,
    server_process: type[ServerProcess],
    start_client: Callable[..., Client],
) -> None:
    db = tmp_path / "chat.db"
    await add_account(db, "alice", PASSWORD)
    server = server_process("--accounts", db=str(db))
    client = start_client(server.url, "--login", "alice")
    client.expect("Password for alice: ")
    client.child.sendline("not it")
    client.expect("the server refused with HTTP 401 (wrong name or password)")
    assert client.wait_for_exit() == 1
    assert "not it" not in client.output


async def test_a_token_file_is_read_at_connect_and_on_refresh(
    tmp_path: Path,
    server_process: type[ServerProcess],
    start_client: Callable[..., Client],
) -> None:
    """A token close to its exp: the server asks at once, the client reads the file
    again and hands in what it holds (the renewal is shown, never the token)."""
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    server = server_process("--jwt-secret-file", str(secret), "--token-refresh", "60")
    token = jwt.encode({"sub": "tom", "exp": time.time() + 30}, SECRET, "HS256")
    token_file = tmp_path / "token"
    token_file.write_text(token + "\n")
    client = start_client(server.url, "--token-file", str(token_file))
    client.expect(shown("\N{WHITE HEAVY CHECK MARK} Connected to server!"))
    client.expect("Your login token was renewed")
    client.child.sendline("/who")
    client.expect("In lobby: tom")
    assert token not in client.output
    assert token not in server.output
    client.child.sendline("exit")
    assert client.wait_for_exit() == 0


async def test_an_unreadable_token_file_is_one_line(
    tmp_path: Path, start_client: Callable[..., Client]
) -> None:
    missing = tmp_path / "missing"
    client = start_client("ws://127.0.0.1:9", "--token-file", str(missing))
    client.expect(f"cannot read the token file {missing}: No such file or directory")
    assert client.wait_for_exit() == 1
