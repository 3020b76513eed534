"""``trio_chat.connect`` logging in: an account's ``login=(name, password)``, a token
provider (plain or async) called on connect and on the server's ``refresh``, and what a
refused login looks like. Against an in-process server; every wait is bounded."""

from __future__ import annotations

import time
from pathlib import Path

import argon2
import jwt
import pytest
import trio
from inproc import LiveServer, StartLiveServer

from trio_chat import ChatClosed, ChatError, connect
from trio_chat.server.accounts import passwords

from support import EVENT_TIMEOUT

pytest_plugins = ["inproc"]

SECRET = "0123456789abcdef0123456789abcdef"


def token(sub: str = "alice", lifetime: float = 600) -> str:
    return jwt.encode({"sub": sub, "exp": time.time() + lifetime}, SECRET, "HS256")


@pytest.fixture(autouse=True)
def cheap_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = argon2.PasswordHasher
    monkeypatch.setattr(
        passwords.argon2,
        "PasswordHasher",
        lambda: hasher(time_cost=1, memory_cost=8, parallelism=1),
    )


@pytest.fixture
async def live(start_live_server: StartLiveServer, tmp_path: Path) -> LiveServer:
    """Accounts (alice, password ``wonder land``) and tokens; a refresh asked a minute
    before a token expires."""
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    server = await start_live_server(accounts=True, jwt_secret_file=str(secret), token_refresh=60)
    assert server.server.accounts is not None
    await server.server.accounts.add("alice", "wonder land")
    return server


async def test_login_with_an_account(live: LiveServer) -> None:
    async with connect(live.url, login=("alice", "wonder land")) as chat:
        assert chat.nick == "alice"
        assert (await chat.say("hi"))["command"] == "message"


async def test_a_wrong_password_is_a_refused_handshake(live: LiveServer) -> None:
    with pytest.raises(ChatError) as info:
        async with connect(live.url, login=("alice", "guess")):
            pass
    assert str(info.value) == (
        f"Could not connect to {live.url}: the server refused with HTTP 401 "
        "(wrong name or password)"
    )
    assert "guess" not in str(info.value)


async def test_a_plain_token_provider(live: LiveServer) -> None:
    async with connect(live.url, token=lambda: token("bob")) as chat:
        assert chat.nick == "bob"


async def test_an_async_provider_is_asked_again_on_refresh(live: LiveServer) -> None:
    """A token within token_refresh of its exp: the server asks, the library calls the
    provider again and hands the new token in; the event is not yielded."""
    lifetimes = [30.0, 3600.0]
    asked = trio.Event()
    calls = 0

    async def provider() -> str:
        nonlocal calls
        calls += 1
        await trio.lowlevel.checkpoint()
        if calls == 2:
            asked.set()
        return token("tina", lifetime=lifetimes[calls - 1])

    async with connect(live.url, token=provider) as chat:
        with trio.fail_after(EVENT_TIMEOUT):
            await asked.wait()
        # A command after the refresh: by its answer the refresh was answered too.
        await chat.list_rooms()
        assert chat.refresh_failure is None
        assert calls == 2
        with trio.move_on_after(0.05):
            async for event in chat:
                raise AssertionError(f"an event was yielded: {event}")


async def test_without_a_new_token_the_connection_ends_at_exp(live: LiveServer) -> None:
    """A provider that fails on refresh: the failure is kept, and the server closes with
    1008 token expired when the first token runs out."""
    calls = 0

    def provider() -> str:
        nonlocal calls
        calls += 1
        if calls > 1:
            return ""
        return token("tina", lifetime=0.5)

    async with connect(live.url, token=provider) as chat:
        with trio.fail_after(EVENT_TIMEOUT):
            async for _ in chat:
                pass
        assert isinstance(chat.closed, ChatClosed)
        assert (chat.closed.code, chat.closed.reason) == (1008, "token expired")
        assert str(chat.refresh_failure) == (
            "the token provider returned no token (it must return a string)"
        )


async def test_login_and_token_together_is_a_mistake(live: LiveServer) -> None:
    with pytest.raises(ValueError, match="give login or token, not both"):
        async with connect(live.url, login=("a", "b"), token=lambda: "t"):
            pass
