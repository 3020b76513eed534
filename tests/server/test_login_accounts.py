"""Logging in with an account (``--accounts``): every path (a JSON ``login``, a plain
``/login``, HTTP Basic at the handshake), wrong passwords, registration, guests beside
accounts, several devices of one account, admins, passwords in clear from another
machine, and a whole run whose log must hold no password and no token.

In-process servers and the independent ``websockets`` client; passwords hashed with
argon2id at its cheapest parameters, so that a test pays microseconds per hash.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import argon2
import jwt
import pytest
import trio
import trio.testing
from inproc import (
    JsonClient,
    LiveServer,
    PlainClient,
    StartLiveServer,
    connect_to,
    wait_connected,
)
from trio_websocket import WebSocketConnection, wrap_client_stream
from websockets.exceptions import InvalidStatus

from trio_chat.server.accounts import passwords
from trio_chat.server.net.seam import Address

from support import EVENT_TIMEOUT, PROTOCOL, ack, error, presence, stamped, welcome

pytest_plugins = ["inproc"]

SECRET = "0123456789abcdef0123456789abcdef"
WRONG = "wrong name or password"


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id with its smallest parameters: the same code paths, no 64 MiB per hash."""

    hasher = argon2.PasswordHasher

    def cheap() -> argon2.PasswordHasher:
        return hasher(time_cost=1, memory_cost=8, parallelism=1)

    monkeypatch.setattr(passwords.argon2, "PasswordHasher", cheap)


async def accounts_server(start: StartLiveServer, **settings: object) -> LiveServer:
    """A server with accounts, where alice (password ``wonder land``) and root (an
    admin, password ``toor``) are registered."""
    live = await start(accounts=True, **settings)
    accounts = live.server.accounts
    assert accounts is not None
    await accounts.add("alice", "wonder land")
    await accounts.add("root", "toor", admin=True)
    return live


@pytest.fixture
async def live(start_live_server: StartLiveServer) -> LiveServer:
    return await accounts_server(start_live_server)


def basic(name: str, password: str) -> dict[str, str]:
    credentials = base64.b64encode(f"{name}:{password}".encode()).decode()
    return {"Authorization": f"Basic {credentials}"}


@asynccontextmanager
async def json_client(
    live: LiveServer, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[JsonClient]:
    """A JSON client that has read nothing yet."""
    async with connect_to(live.url + query, [PROTOCOL], headers) as ws:
        yield JsonClient(ws)


PROMPT = "* Log in first: /login NAME PASSWORD"


@asynccontextmanager
async def plain_client(
    live: LiveServer, query: str = "", *, prompt: str | None = PROMPT
) -> AsyncIterator[PlainClient]:
    """A plain client that has read the server's login ``prompt`` (None: a server that
    takes guests prompts nothing)."""
    async with connect_to(live.url + query) as ws:
        client = PlainClient(ws, await wait_connected(live, ws))
        if prompt is not None:
            await client.expect(prompt)
        yield client


@asynccontextmanager
async def logged_in(live: LiveServer, name: str, password: str) -> AsyncIterator[JsonClient]:
    """A JSON client logged in as ``name``, its ack and welcome read."""
    async with json_client(live) as client:
        answer = await client.call({"type": "login", "name": name, "password": password})
        assert answer["command"] == "login"
        welcomed = await client.event()
        assert welcomed["type"] == "welcome"
        yield client


async def test_a_json_login_is_answered_then_welcomed(live: LiveServer) -> None:
    async with json_client(live) as alice:
        login = {"type": "login", "name": "alice", "password": "wonder land", "cid": 1}
        assert await alice.call(login) == ack("login", 1, nick="alice", admin=False)
        assert await alice.event() == welcome("alice")
    await live.wait_for("logged in as account alice")


async def test_a_plain_login_then_the_rest_of_its_frame(live: LiveServer) -> None:
    """/login's answer, and the lines after it in the same frame are carried out."""
    async with plain_client(live) as alice:
        await alice.send("/login alice wonder land\nhello")
        await alice.expect("* You are logged in as alice", "You said: hello")
        await alice.ask("/who", "* In lobby: alice")


async def test_basic_credentials_at_the_handshake(live: LiveServer) -> None:
    async with json_client(live, headers=basic("alice", "wonder land")) as alice:
        assert await alice.event() == welcome("alice")
    with pytest.raises(InvalidStatus) as info:
        async with json_client(live, headers=basic("alice", "wrong")):
            pass
    assert info.value.response.status_code == 401
    assert info.value.response.body == f"{WRONG}\n".encode()
    assert info.value.response.headers["WWW-Authenticate"] == (
        'Basic realm="trio_chat", charset="UTF-8"'
    )


async def test_a_wrong_password_gets_the_same_answer_as_an_unknown_name(
    live: LiveServer,
) -> None:
    """login_failed, the same text for both; the connection may try again."""
    async with json_client(live) as client:
        for name, password in (("alice", "nope"), ("nobody", "nope")):
            answer = await client.call({"type": "login", "name": name, "password": password})
            assert answer == error("login_failed", WRONG)
        await client.send({"type": "login", "name": "alice", "password": "wonder land"})
        assert (await client.event())["command"] == "login"
        assert await client.event() == welcome("alice")


async def test_nothing_but_a_login_before_logging_in(live: LiveServer) -> None:
    """A plain client is told how to log in (JSON ones are sent nothing unasked); chat
    lines get login_required."""
    async with plain_client(live) as client:
        await client.ask("hello", "Error: log in first: /login NAME PASSWORD")
        await client.ask("/join dev", "Error: log in first: /login NAME PASSWORD")
        await client.send("/help")
        assert (await client.line()).startswith("* /nick NAME")


async def test_registration_when_open(start_live_server: StartLiveServer) -> None:
    live = await accounts_server(start_live_server, open_registration=True)
    prompt = "* Log in first: /login NAME PASSWORD, or /register NAME PASSWORD"
    async with plain_client(live, prompt=prompt) as newcomer:
        await newcomer.ask(
            "hi", "Error: log in first: /login NAME PASSWORD, or /register NAME PASSWORD"
        )
        await newcomer.ask("/register alice x", "Error: there is already an account called alice")
        await newcomer.ask("/register bob build it", "* Registered bob; you are logged in")
        await newcomer.ask("/who", "* In lobby: bob")
    async with json_client(live) as again:
        assert (await again.call({"type": "login", "name": "bob", "password": "build it"}))[
            "nick"
        ] == "bob"


async def test_registration_when_closed(live: LiveServer) -> None:
    async with json_client(live) as client:
        assert await client.call({"type": "register", "name": "bob", "password": "x"}) == error(
            "registration_closed",
            "registration is closed on this server; ask its operator for an account",
        )


async def test_guests_chat_but_never_take_a_registered_name(
    start_live_server: StartLiveServer,
) -> None:
    """With --guests, a guest is in at once; alice is reserved for the account; a guest
    that logs in becomes the account, announced as a nick change."""
    live = await accounts_server(start_live_server, guests=True)
    async with (
        plain_client(live, "/?nick=visitor", prompt=None) as guest,
        json_client(live) as watcher,
    ):
        assert await watcher.event() == welcome()
        await guest.ask("/nick alice", "Error: nick alice is taken")
        await guest.ask("/nick ALICE", "Error: nick ALICE is taken")
        await guest.ask("/login alice wonder land", "* You are logged in as alice")
        assert stamped(await watcher.event()) == presence("nick", "visitor", new_nick="alice")
        await guest.ask("/login root toor", "Error: you are already logged in as alice")
    async with json_client(live, "/?nick=alice") as impostor:
        assert await impostor.event() == welcome(None)
        assert await impostor.event() == error("nick_taken", "nick alice is taken")


async def test_two_devices_of_one_account_both_get_a_private_message(live: LiveServer) -> None:
    async with (
        logged_in(live, "alice", "wonder land") as phone,
        logged_in(live, "alice", "wonder land") as laptop,
        plain_client(live) as root,
    ):
        await root.ask("/login root toor", "* You are logged in as root (admin)")
        await root.ask("/msg alice are you there?", "[private] You said to alice: are you there?")
        for device in (phone, laptop):
            assert stamped(await device.event()) == presence("join", "root", room="lobby")
            message = stamped(await device.event())
            assert (message["type"], message["from"], message["to"], message["text"]) == (
                "private",
                "root",
                "alice",
                "are you there?",
            )
        # One presence for the account: root joined once, alice is listed once.
        await root.ask("/who", "* In lobby: alice and root")


async def test_a_name_removed_and_registered_again_reads_nothing_of_the_old_account(
    live: LiveServer,
) -> None:
    """bob gets a private message and his account is removed; a new account called bob
    logs in and finds none of it, by URL resume, the ``resume`` command or paging back:
    the message belongs to the old account's principal, whose id is never reused."""
    accounts = live.server.accounts
    assert accounts is not None
    await accounts.add("bob", "first bob")
    async with (
        logged_in(live, "alice", "wonder land") as alice,
        logged_in(live, "bob", "first bob") as bob,
    ):
        assert stamped(await alice.event()) == presence("join", "bob", room="lobby")
        sent = await alice.call({"type": "private", "to": "bob", "text": "for bob", "cid": 1})
        received = stamped(await bob.event())
        assert (received["id"], received["text"]) == (sent["id"], "for bob")
        page = await bob.call({"type": "history", "private": True, "cid": 2})
        assert [m["text"] for m in page["messages"]] == ["for bob"]
    assert await accounts.remove("bob") is True
    await accounts.add("bob", "second bob")
    credentials = basic("bob", "second bob")
    async with json_client(live, "/?since=0", credentials) as new_bob:
        welcomed = await new_bob.event()
        assert (welcomed["type"], welcomed["nick"]) == ("welcome", "bob")
        report = await new_bob.event()
        assert report == ack("resume", since=0, recovered=True)
        assert await new_bob.call({"type": "resume", "since": 0, "cid": 3}) == ack(
            "resume", 3, since=0, recovered=True
        )
        page = await new_bob.call({"type": "history", "private": True, "cid": 4})
        assert page == ack("history", 4, private=True, messages=[])
        # Nothing was replayed in between: the next event answers the next command.
        assert await new_bob.call({"type": "who", "cid": 5}) == ack(
            "who", 5, room="lobby", members=["bob"], anonymous=0
        )


async def test_an_admin_account_kicks_from_its_client(live: LiveServer) -> None:
    async with logged_in(live, "alice", "wonder land") as alice, plain_client(live) as root:
        await root.ask("/login root toor", "* You are logged in as root (admin)")
        assert stamped(await alice.event()) == presence("join", "root", room="lobby")
        await root.ask("/kick alice enough", "* alice was kicked (enough)", "* You kicked alice")
        close = await alice.expect_close()
        assert (close.code, close.reason) == (1008, "enough")


async def test_an_account_that_is_not_an_admin_cannot_moderate(live: LiveServer) -> None:
    async with plain_client(live) as alice:
        await alice.ask("/login alice wonder land", "* You are logged in as alice")
        await alice.ask("/kick root", "Error: only an admin may do that")
        await alice.ask("/say lobby hi", "Error: only an admin may do that")


# --- passwords in clear from another machine ------------------------------------------------


async def open_over_memory(
    nursery: trio.Nursery,
    live: LiveServer,
    peer: Address,
) -> WebSocketConnection:
    """A trio-websocket client over a memory stream whose far end the server takes as
    coming from ``peer`` (a plain, unencrypted connection)."""
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(lambda: live.server.handle_stream(server_end, peer_address=peer))
    return await wrap_client_stream(
        nursery,
        client_end,  # type: ignore[arg-type]  # any trio stream works
        "chat.example",
        "/",
        subprotocols=[PROTOCOL],
    )


async def test_passwords_in_clear_from_another_machine_are_refused(
    live: LiveServer, nursery: trio.Nursery
) -> None:
    """A login command gets insecure_auth; HTTP Basic gets 403; both say how to fix it."""
    remote = Address("203.0.113.7", 40000)
    insecure = (
        "passwords are refused over an unencrypted connection from another machine: "
        "connect with wss://, or the operator may allow it with --allow-insecure-auth"
    )
    ws = await open_over_memory(nursery, live, remote)
    with trio.fail_after(EVENT_TIMEOUT):
        await ws.send_message(
            json.dumps({"type": "login", "name": "alice", "password": "wonder land"})
        )
        assert json.loads(await ws.get_message()) == error("insecure_auth", insecure)
        await ws.aclose()
    # HTTP Basic, in a hand-written upgrade request: the answer is the whole response.
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(lambda: live.server.handle_stream(server_end, peer_address=remote))
    credentials = basic("alice", "wonder land")["Authorization"]
    await client_end.send_all(
        b"GET / HTTP/1.1\r\nHost: chat.example\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nAuthorization: " + credentials.encode() + b"\r\n\r\n"
    )
    response = b""
    with trio.fail_after(EVENT_TIMEOUT):
        while chunk := await client_end.receive_some():
            response += chunk
    head, _, body = response.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    assert body == f"{insecure}\n".encode()


async def test_allow_insecure_auth_takes_them(
    start_live_server: StartLiveServer, nursery: trio.Nursery
) -> None:
    live = await accounts_server(start_live_server, allow_insecure_auth=True)
    ws = await open_over_memory(nursery, live, Address("203.0.113.7", 40000))
    with trio.fail_after(EVENT_TIMEOUT):
        await ws.send_message(
            json.dumps({"type": "login", "name": "alice", "password": "wonder land"})
        )
        assert json.loads(await ws.get_message())["command"] == "login"
        await ws.aclose()


# --- no secret in the log -----------------------------------------------------------------


async def test_no_password_or_token_reaches_the_log(
    start_live_server: StartLiveServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Every login path, a wrong password, a registration, a refresh, chat and errors,
    with the server's loggers at DEBUG: no password and no token appears in any line
    the server logs (the websockets client's own debug lines show what it sent)."""
    caplog.set_level(logging.DEBUG, logger="trio_chat")
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET)
    live = await accounts_server(
        start_live_server,
        open_registration=True,
        guests=True,
        jwt_secret_file=str(secret_file),
        token_refresh=3600,
    )
    tokens = [
        jwt.encode({"sub": f"user{n}", "exp": time.time() + 600}, SECRET, "HS256") for n in range(4)
    ]
    renewal = jwt.encode({"sub": "user0", "exp": time.time() + 900}, SECRET, "HS256")
    expired = jwt.encode({"sub": "late", "exp": time.time() - 5}, SECRET, "HS256")
    secrets = ["wonder land", "toor", "wrong guess", "fresh pass", SECRET, *tokens, renewal]
    secrets.append(expired)

    async with json_client(live) as alice:
        assert await alice.event() == welcome()  # --guests: in at once
        await alice.send({"type": "login", "name": "alice", "password": "wonder land"})
        assert (await alice.event())["command"] == "login"
        assert await alice.call({"type": "login", "name": "x", "password": "wrong guess"}) == (
            error("already_logged_in", "you are already logged in as alice")
        )
        answer = await alice.call({"type": "message", "text": "hello", "cid": "m"})
        assert (answer["type"], answer["command"]) == ("ack", "message")
    async with plain_client(live, prompt=None) as guest:
        await guest.ask("/login alice wrong guess", f"Error: {WRONG}")
        await guest.ask("/register carol fresh pass", "* Registered carol; you are logged in")
        await guest.ask("/msg nobody hi", "Error: nobody is called nobody")
    async with json_client(live, headers=basic("root", "toor")) as root:
        assert (await root.event())["nick"] == "root"
    with pytest.raises(InvalidStatus):
        async with json_client(live, headers=basic("root", "wrong guess")):
            pass
    async with json_client(live, f"/?token={tokens[0]}") as user0:
        assert (await user0.event())["nick"] == "user0"
        assert (await user0.event())["type"] == "refresh"  # token_refresh is an hour
        answer = await user0.call({"type": "refresh", "token": renewal})
        assert answer["command"] == "refresh"
    async with json_client(live, headers={"Authorization": f"Bearer {tokens[2]}"}) as user2:
        assert (await user2.event())["nick"] == "user2"
    async with json_client(live) as user3:
        assert await user3.event() == welcome()
        assert (await user3.call({"type": "login", "token": tokens[3]}))["command"] == "login"
    with pytest.raises(InvalidStatus):
        async with json_client(live, f"/?token={expired}"):
            pass
    await live.wait_for("logged in as token user3")

    server_records = [r for r in caplog.records if r.name.split(".")[0] == "trio_chat"]
    logged = "\n".join(
        [*(logging.Formatter().format(r) for r in server_records), *live.log.messages]
    )
    assert "logged in as account alice" in logged
    for secret in secrets:
        assert secret not in logged


async def test_a_device_resumes_its_session_without_the_password(live: LiveServer) -> None:
    """An account's session secret logs its device back in within the hold; an unknown
    secret is no login."""
    async with json_client(live) as phone:
        await phone.send({"type": "login", "name": "alice", "password": "wonder land"})
        assert (await phone.event())["command"] == "login"
        secret = (await phone.event())["session"]
        await phone.ws.aclose(code=4000)  # dropped, not a goodbye: the session is held
    await live.wait_for(re.compile(r"Client #\d+ \(.*\) disconnected: 4000"))
    async with json_client(live, f"/?session={secret}") as again:
        welcomed = await again.event()
        assert (welcomed["type"], welcomed["nick"]) == ("welcome", "alice")
    async with json_client(live, "/?session=not-a-secret") as stranger:
        assert await stranger.call({"type": "who", "cid": 1}) == error(
            "login_required", "log in first: /login NAME PASSWORD", 1
        )
    assert secret not in "\n".join(live.log.messages)


async def test_a_locked_out_pair_gets_429_at_the_handshake(
    start_live_server: StartLiveServer,
) -> None:
    """After --login-failures wrong passwords from one address, HTTP Basic for that
    name from there is refused with 429 and the time to wait, without a hash."""
    live = await accounts_server(start_live_server, login_failures=1, login_lockout=900)
    answers = []
    for _ in range(2):
        with pytest.raises(InvalidStatus) as info:
            async with json_client(live, headers=basic("alice", "wrong")):
                pass
        answers.append((info.value.response.status_code, info.value.response.body.decode()))
    assert answers == [
        (401, f"{WRONG}\n"),
        (429, "too many failed logins from your address; try again in 15 minutes\n"),
    ]
    # Like every 429, with the seconds to wait (the lockout's, less what has passed).
    assert 890 <= int(info.value.response.headers["Retry-After"]) <= 900
