"""Logging in with a token another application signed (``--jwt-secret-file``): at the
handshake (``Authorization: Bearer``, ``?token=``) or as the first command, room limits,
admin rights, refresh on a live connection, expiry, and the login phase's rules.

In-process servers and the independent ``websockets`` client; token lifetimes of a
fraction of a second stand in for minutes (every wait is for an event, under a limit).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import jwt
import pytest
from inproc import (
    JsonClient,
    LiveServer,
    PlainClient,
    StartLiveServer,
    connect_to,
    wait_connected,
)
from websockets.exceptions import InvalidStatus

from support import PROTOCOL, ack, error, presence, stamped, welcome

pytest_plugins = ["inproc"]

SECRET = "0123456789abcdef0123456789abcdef"


def token(sub: str = "alice", *, lifetime: float = 600, secret: str = SECRET, **claims: Any) -> str:
    return jwt.encode({"sub": sub, "exp": time.time() + lifetime, **claims}, secret, "HS256")


@pytest.fixture
def secret_file(tmp_path: Path) -> str:
    path = tmp_path / "jwt-secret"
    path.write_text(SECRET + "\n")
    return str(path)


@pytest.fixture
async def token_server(start_live_server: StartLiveServer, secret_file: str) -> LiveServer:
    return await start_live_server(jwt_secret_file=secret_file)


@asynccontextmanager
async def json_client(
    live: LiveServer, query: str = "", headers: dict[str, str] | None = None
) -> AsyncIterator[JsonClient]:
    """A JSON client that has not read anything yet."""
    async with connect_to(live.url + query, [PROTOCOL], headers) as ws:
        yield JsonClient(ws)


@asynccontextmanager
async def plain_client(live: LiveServer, query: str = "") -> AsyncIterator[PlainClient]:
    async with connect_to(live.url + query) as ws:
        yield PlainClient(ws, await wait_connected(live, ws))


async def refused(live: LiveServer, query: str = "", **headers: str) -> tuple[int, str]:
    with pytest.raises(InvalidStatus) as info:
        async with connect_to(live.url + query, [PROTOCOL], headers):
            pass
    response = info.value.response
    return response.status_code, response.body.decode()


async def test_a_token_in_the_query_or_the_header_logs_in_at_the_handshake(
    token_server: LiveServer,
) -> None:
    """No login command: the welcome names the token's nick (its ``sub`` here)."""
    async with json_client(token_server, f"/?token={token()}") as alice:
        assert await alice.event() == welcome("alice")
        headers = {"Authorization": f"Bearer {token('bob')}"}
        async with json_client(token_server, headers=headers) as bob:
            assert await bob.event() == welcome("bob")
            assert stamped(await alice.event()) == presence("join", "bob", room="lobby")
    await token_server.wait_for("logged in as token alice")


async def test_a_plain_client_logs_in_with_a_token_in_its_url(token_server: LiveServer) -> None:
    async with plain_client(token_server, f"/?token={token(nick='Ali')}") as alice:
        await alice.ask("hello", "You said: hello")
        await alice.ask("/who", "* In lobby: Ali")


async def test_a_bad_token_at_the_handshake_gets_401(token_server: LiveServer) -> None:
    """Expired, signed with another key, or unreadable: 401 and one line, no chat."""
    assert await refused(token_server, f"/?token={token(lifetime=-1)}") == (
        401,
        "invalid login token: it has expired\n",
    )
    forged = token(secret="another secret, just as long as ours")
    assert await refused(token_server, Authorization=f"Bearer {forged}") == (
        401,
        "invalid login token: its signature does not match this server's key\n",
    )
    assert await refused(token_server, "/?token=nonsense") == (
        401,
        "invalid login token: it is not a signed JWT\n",
    )


async def test_a_token_as_the_first_command(token_server: LiveServer) -> None:
    """Nothing is sent before the login; then the ack, then the welcome."""
    async with json_client(token_server) as alice:
        await alice.send({"type": "login", "token": token(), "cid": 1})
        answer = await alice.event()
        assert answer.pop("expires").endswith("Z")
        assert answer == ack("login", 1, nick="alice", admin=False)
        assert await alice.event() == welcome("alice")


async def test_anything_before_the_login_is_refused(token_server: LiveServer) -> None:
    """login_required for chat commands; help is answered; binary frames too."""
    async with json_client(token_server) as client:
        assert await client.call({"type": "message", "text": "hi", "cid": "m"}) == error(
            "login_required",
            "log in first with your login token (a login command with a token)",
            "m",
        )
        help_ack = await client.call({"type": "help", "cid": 2})
        assert help_ack["command"] == "help"
        assert await client.call({"type": "login", "name": "al", "password": "x"}) == error(
            "no_accounts", "this server has no accounts; just chat"
        )
        await client.send({"type": "login", "token": token()})
        assert (await client.event())["command"] == "login"


async def test_a_bad_token_as_the_first_command_closes_1008(token_server: LiveServer) -> None:
    async with json_client(token_server) as client:
        assert await client.call({"type": "login", "token": token(lifetime=-5), "cid": 1}) == (
            error("invalid_token", "invalid login token: it has expired", 1)
        )
        close = await client.expect_close()
        assert (close.code, close.reason) == (1008, "invalid token")


async def test_quit_before_logging_in(token_server: LiveServer) -> None:
    async with json_client(token_server) as client:
        assert await client.call({"type": "quit", "cid": 1}) == ack("quit", 1)
        close = await client.expect_close()
        assert (close.code, close.reason) == (1000, "bye")


async def test_no_login_within_the_login_timeout_closes_1008(
    start_live_server: StartLiveServer, secret_file: str
) -> None:
    live = await start_live_server(jwt_secret_file=secret_file, login_timeout=0.2)
    async with json_client(live) as client:
        close = await client.expect_close()
        assert (close.code, close.reason) == (1008, "no login in time")
    await live.wait_for("did not log in within 0.2 s")


async def test_the_rooms_claim_limits_the_rooms(token_server: LiveServer) -> None:
    """The connection starts in the first room allowed; others are refused."""
    limited = token(rooms=["support", "dev"])
    async with json_client(token_server, f"/?token={limited}") as alice:
        assert await alice.event() == welcome("alice", ("support",))
        assert (await alice.call({"type": "join", "room": "dev"}))["command"] == "join"
        assert await alice.call({"type": "join", "room": "lobby", "cid": 1}) == error(
            "room_not_allowed", "you may not join lobby", 1
        )
    async with json_client(token_server, f"/?token={limited}&room=lobby&room=dev") as alice:
        assert await alice.event() == welcome("alice", ("dev",))
        assert await alice.event() == error("room_not_allowed", "you may not join lobby")


async def test_refresh_on_a_live_connection(
    start_live_server: StartLiveServer, secret_file: str
) -> None:
    """Within token_refresh of exp the server asks; a new token (same sub) is taken, and
    a token for someone else is refused."""
    live = await start_live_server(jwt_secret_file=secret_file, token_refresh=60)
    async with json_client(live, f"/?token={token(lifetime=30)}") as alice:
        assert await alice.event() == welcome("alice")
        asked = await alice.event()
        assert asked["type"] == "refresh"
        assert 29 <= asked["seconds"] <= 30
        answer = await alice.call({"type": "refresh", "token": token(lifetime=45), "cid": 1})
        assert answer["command"] == "refresh"
        assert answer["expires"] > asked["expires"]
        # Still within token_refresh of the new exp: asked once more, for the new token.
        again = await alice.event()
        assert (again["type"], again["expires"]) == ("refresh", answer["expires"])
        assert await alice.call({"type": "refresh", "token": token("mallory"), "cid": 2}) == (
            error("invalid_token", "the new token is for another subject; log in again instead", 2)
        )
        assert await alice.call({"type": "refresh", "token": token(lifetime=-1), "cid": 3}) == (
            error("invalid_token", "invalid login token: it has expired", 3)
        )


async def test_an_expired_token_without_refresh_closes_1008(
    start_live_server: StartLiveServer, secret_file: str
) -> None:
    live = await start_live_server(jwt_secret_file=secret_file, token_refresh=60)
    async with json_client(live, f"/?token={token(lifetime=0.5)}") as alice:
        assert await alice.event() == welcome("alice")
        assert (await alice.event())["type"] == "refresh"
        close = await alice.expect_close()
        assert (close.code, close.reason) == (1008, "token expired")
    await live.wait_for("its login token expired")


async def test_a_refresh_keeps_an_expiring_connection_open(
    start_live_server: StartLiveServer, secret_file: str
) -> None:
    """Refreshed before its exp, the connection outlives its first token."""
    live = await start_live_server(jwt_secret_file=secret_file, token_refresh=60)
    first = token(lifetime=0.5)
    async with json_client(live, f"/?token={first}") as alice:
        assert await alice.event() == welcome("alice")
        assert (await alice.event())["type"] == "refresh"
        await alice.send({"type": "refresh", "token": token(lifetime=45), "cid": 1})
        assert (await alice.event())["command"] == "refresh"
        assert (await alice.event())["type"] == "refresh"  # asked again (token_refresh=60)
        # Past the first token's exp: still open.
        while time.time() < jwt.decode(first, options={"verify_signature": False})["exp"] + 0.2:
            assert (await alice.call({"type": "rooms"}))["command"] == "rooms"


async def test_refresh_without_a_token_login(start_live_server: StartLiveServer) -> None:
    live = await start_live_server()
    async with json_client(live) as guest:
        await guest.event()
        assert await guest.call({"type": "refresh", "token": token(), "cid": 1}) == error(
            "not_token",
            "this connection did not log in with a token; there is nothing to refresh",
            1,
        )


async def test_guests_may_chat_and_log_in_later(
    start_live_server: StartLiveServer, secret_file: str
) -> None:
    """With --guests a connection is in the chat at once; a token login turns it into
    the token's subject, announced as a nick change, and its expiry is watched from then
    on (asked for at once: it is within token_refresh)."""
    live = await start_live_server(jwt_secret_file=secret_file, guests=True, token_refresh=60)
    async with json_client(live, "/?nick=visitor") as guest, json_client(live) as other:
        assert await guest.event() == welcome("visitor")
        assert await other.event() == welcome()
        login = {"type": "login", "token": token(nick="Alice", lifetime=30), "cid": 1}
        answer = await guest.call(login)
        expires = answer.pop("expires")
        assert answer == ack("login", 1, nick="Alice", admin=False)
        assert stamped(await other.event()) == presence("nick", "visitor", new_nick="Alice")
        asked = await guest.event()
        assert (asked["type"], asked["expires"]) == ("refresh", expires)
        assert await guest.call({"type": "login", "token": token(), "cid": 2}) == error(
            "already_logged_in", "you are already logged in as Alice", 2
        )


async def test_admins_moderate_from_their_own_client(token_server: LiveServer) -> None:
    """An admin token may /kick, /say and set the topic of a room it is not in; others
    get not_admin."""
    admin = token("root", admin=True)
    async with (
        plain_client(token_server, f"/?token={admin}") as root,
        json_client(token_server, f"/?token={token('bob')}&room=dev") as bob,
        json_client(token_server, f"/?token={token('carol')}&room=dev") as carol,
    ):
        assert await bob.event() == welcome("bob", ("dev",))
        assert await carol.event() == welcome("carol", ("dev",))
        assert stamped(await bob.event()) == presence("join", "carol", room="dev")
        assert await bob.call({"type": "kick", "nick": "carol", "cid": 1}) == error(
            "not_admin", "only an admin may do that", 1
        )
        await root.ask("/say dev maintenance at noon", "* Said in dev (2 reached)")
        notice = {"type": "notice", "from": "server", "text": "maintenance at noon", "room": "dev"}
        assert await bob.event() == notice
        assert await carol.event() == notice
        await root.send(json.dumps({"type": "topic"}))  # a plain line, said in the lobby
        await root.expect('You said: {"type": "topic"}')
        await root.ask("/kick carol", "* You kicked carol")
        assert stamped(await bob.event()) == presence("kick", "carol", reason="kicked by root")
        close = await carol.expect_close()
        assert (close.code, close.reason) == (1008, "kicked by root")
        await root.ask("/kick nobody", "Error: nobody is called nobody")


async def test_an_admin_sets_the_topic_of_any_room(token_server: LiveServer) -> None:
    async with (
        json_client(token_server, f"/?token={token('root', admin=True)}") as root,
        json_client(token_server, f"/?token={token('bob')}&room=dev") as bob,
    ):
        assert await root.event() == welcome("root")
        assert await bob.event() == welcome("bob", ("dev",))
        answer = await root.call({"type": "topic", "room": "dev", "text": "release", "cid": 1})
        assert answer == ack("topic", 1, room="dev", topic="release")
        assert await bob.event() == {
            "type": "topic",
            "room": "dev",
            "topic": "release",
            "by": "root",
        }
        assert await bob.call({"type": "topic", "room": "lobby", "text": "x", "cid": 2}) == error(
            "not_in_room", "you are not in lobby", 2
        )


async def test_a_shutdown_closes_a_connection_still_logging_in_with_1001(
    token_server: LiveServer,
) -> None:
    async with json_client(token_server) as client:
        await client.ws.send(b"\x00binary")
        assert await client.event() == error(
            "binary_frame", "binary messages are not supported; send text"
        )
        token_server.server.shutdown()
        close = await client.expect_close()
        assert (close.code, close.reason) == (1001, "server shutting down")


async def test_a_token_session_resumes_only_with_a_valid_token(token_server: LiveServer) -> None:
    """The secret alone is no login for a token's session; with a token it resumes."""
    async with json_client(token_server, f"/?token={token()}") as alice:
        secret = (await alice.event())["session"]
        await alice.ws.aclose(code=4000)
    async with json_client(token_server, f"/?session={secret}") as bare:
        answer = await bare.call({"type": "who", "cid": 1})
        assert (answer["type"], answer["code"]) == ("error", "login_required")
    async with json_client(token_server, f"/?session={secret}&token={token()}") as again:
        assert await again.event() == welcome("alice", session=secret)
