"""Our clients keep the server session's secret in memory and come back with it: the
terminal client on every reconnect (URL ``session=``), the library client when given
``connect(session=...)``. Coming back with it keeps the nick (never ``alice-2``) and
brings back the private messages sent meanwhile; the secret is never written to disk.

The terminal client (:class:`ChatClient`) runs in the test's Trio loop against an
in-process server, its screen a string buffer, its input a pipe the test owns; the
server drops the client's connection as it drops a slow consumer (which the client
reconnects after, and whose session the server holds). Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio

from trio_chat.client.api import connect
from trio_chat.client.connection import Backoff, ChatClient, Phase
from trio_chat.client.session import JsonSession
from trio_chat.client.terminal import Screen
from trio_chat.client.view import Style
from trio_chat.core.close import SLOW_CONSUMER, CloseCode
from trio_chat.server.server import ChatServer

from support import EVENT_TIMEOUT, open_client, receive

OFF = Style(colour=False)


class RecordingClient(ChatClient):
    """A client that lets a test wait until it has entered a phase a number of times."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.entries: dict[Phase, int] = dict.fromkeys(Phase, 0)
        self._changed = trio.Event()

    def _move_to(self, phase: Phase) -> None:
        super()._move_to(phase)
        self.entries[phase] += 1
        self._changed.set()
        self._changed = trio.Event()

    async def entered(self, phase: Phase, times: int = 1) -> None:
        while self.entries[phase] < times:
            await self._changed.wait()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """The client's stdin: (read end, write end), both closed at teardown."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(fd)


class Output(io.StringIO):
    """The client's screen: what it printed, and a way to wait for a line of it."""

    def __init__(self) -> None:
        super().__init__()
        self._changed = trio.Event()

    def write(self, text: str) -> int:
        written = super().write(text)
        self._changed.set()
        self._changed = trio.Event()
        return written

    async def shows(self, fragment: str) -> None:
        """Wait (bounded by the caller) until ``fragment`` has been printed."""
        while fragment not in self.getvalue():
            await self._changed.wait()


def drop(server: ChatServer, nick: str) -> None:
    """The server drops ``nick``'s connection as it drops a slow consumer."""
    for connection in server.connections.values():
        member = server.chat.members.get(connection.key)
        if member is not None and member.nick == nick:
            connection.close_soon(CloseCode.POLICY_VIOLATION, SLOW_CONSUMER)
            return
    raise AssertionError(f"nobody called {nick} is connected")


def test_the_session_secret_goes_into_the_resume_url_and_nowhere_else() -> None:
    """The welcome's secret is kept and sent back as session= on reconnecting, replaced by
    a new welcome's; it is never part of what is shown or sent as a command."""
    session = JsonSession(OFF, "sam", cid_prefix="t")
    shown = session.receive(
        json.dumps(
            {
                "type": "welcome",
                "nick": None,
                "room": "lobby",
                "rooms": ["lobby"],
                "session": "S3cret-1",
            }
        )
    )
    assert session.session == "S3cret-1"
    answered = session.receive(
        json.dumps({"type": "ack", "cid": "t-1", "command": "nick", "nick": "sam"})
    )
    session.reconnecting()
    assert session.resume_resource("/") == "/?nick=sam&room=lobby&session=S3cret-1"
    again = session.receive(
        json.dumps(
            {
                "type": "welcome",
                "nick": "sam",
                "room": "lobby",
                "rooms": ["lobby"],
                "session": "S3cret-2",
            }
        )
    )
    assert session.session == "S3cret-2"
    for output in (shown, answered, again):
        assert not any("S3cret" in line for line in [*output.show, *output.send])


def test_another_device_renaming_us_is_followed() -> None:
    """/nick on another device of the same account renames us too: a resume asks for the
    new nick."""
    session = JsonSession(OFF, "sam", cid_prefix="t")
    session.receive(
        json.dumps({"type": "welcome", "nick": None, "room": "lobby", "rooms": ["lobby"]})
    )
    session.receive(json.dumps({"type": "ack", "cid": "t-1", "command": "nick", "nick": "sam"}))
    session.receive(
        json.dumps(
            {
                "type": "presence",
                "event": "nick",
                "nick": "bob",
                "new_nick": "rob",
                "ts": "2026-01-01T00:00:00.000Z",
            }
        )
    )
    session.receive(
        json.dumps(
            {
                "type": "presence",
                "event": "nick",
                "nick": "Sam",
                "new_nick": "samuel",
                "ts": "2026-01-01T00:00:00.000Z",
            }
        )
    )
    session.reconnecting()
    assert session.resume_resource("/").startswith("/?nick=samuel&")


async def test_the_terminal_client_comes_back_as_itself(
    start_server: Callable[..., Awaitable[ChatServer]],
    pipe: tuple[int, int],
    tmp_path: Path,
) -> None:
    """Dropped, the client reconnects with its secret: it keeps its nick (nobody could take
    it meanwhile) and is shown the private message sent while it was away; the secret
    is never written to disk (its home, its data folders, the working folder)."""
    server = await start_server()
    url = f"ws://127.0.0.1:{server.port}"
    output = Output()
    client = RecordingClient(
        url,
        Screen(output, interactive=False),
        pipe[0],
        nick="alice",
        environ={},
        backoff=Backoff(0.01, 0.01, uniform=lambda low, high: high),
    )
    async with (
        trio.open_nursery() as nursery,
        open_client(url, subprotocols=["trio-chat.v1"]) as bob,
    ):
        status: list[int] = []

        async def run() -> None:
            status.append(await client.run())

        nursery.start_soon(run)
        with trio.fail_after(EVENT_TIMEOUT):
            assert json.loads(await receive(bob))["type"] == "welcome"
            await bob.send_message(json.dumps({"type": "nick", "nick": "bob", "cid": 1}))
            await output.shows("You are now known as alice")
            drop(server, "alice")
            await client.entered(Phase.WAITING_TO_RECONNECT)
            # Away: her nick is held, and a private message to it waits for her.
            await bob.send_message(json.dumps({"type": "nick", "nick": "alice", "cid": 2}))
            await bob.send_message(
                json.dumps({"type": "private", "to": "alice", "text": "while away", "cid": 3})
            )
            answers: dict[int, dict[str, object]] = {}
            while 3 not in answers:
                for line in (await receive(bob)).split("\n"):
                    event = json.loads(line)
                    if "cid" in event:
                        answers[event["cid"]] = event
            assert answers[2]["code"] == "nick_taken"
            assert answers[3]["type"] == "ack"
            await client.entered(Phase.CHATTING, times=2)
            await output.shows("[private] bob → alice: while away")
            secret = client._json.session if client._json is not None else None
            client.leave()
    assert status == [0]
    text = output.getvalue()
    assert "alice-2" not in text
    [line] = [line for line in text.splitlines() if "while away" in line]
    assert line.startswith("[history] ")
    assert line.endswith(" [private] bob → alice: while away")
    assert secret is not None
    assert secret not in text
    for folder in {
        Path.home(),
        Path(os.environ.get("XDG_DATA_HOME", Path.home())),
        Path.cwd(),
        tmp_path,
    }:
        for path in folder.rglob("*"):
            if path.is_file() and path.stat().st_size < 10_000_000:
                assert secret.encode() not in path.read_bytes(), path


async def test_the_library_client_resumes_a_session(chat_server: ChatServer) -> None:
    """connect(session=..., since=...) comes back as the same participant: resumed, the
    nick back, the private message sent meanwhile replayed; an unknown secret is a new
    participant (not resumed, a new secret, an invalid_session event)."""
    url = f"ws://127.0.0.1:{chat_server.port}"
    async with connect(url, nick="bot") as first:
        assert first.session is not None
        assert not first.resumed
        secret = first.session
        drop(chat_server, "bot")
        with trio.fail_after(EVENT_TIMEOUT):
            assert [event async for event in first] == []
    async with connect(url, nick="carol") as carol:
        await carol.private("bot", "while away")
    async with connect(url, session=secret, since=0) as again:
        assert again.resumed
        assert again.session == secret
        assert again.nick == "bot"
        with trio.fail_after(EVENT_TIMEOUT):
            ack = await anext(aiter(again))
            assert (ack["type"], ack["command"], ack["recovered"]) == ("ack", "resume", True)
            replayed = await anext(aiter(again))
        assert (replayed["type"], replayed["text"], replayed["history"]) == (
            "private",
            "while away",
            True,
        )
    async with connect(url, session="n" * 43) as stranger:
        assert not stranger.resumed
        assert stranger.session not in (None, "n" * 43)
        assert stranger.nick is None
        with trio.fail_after(EVENT_TIMEOUT):
            event = await anext(aiter(stranger))
        assert (event["type"], event["code"]) == ("error", "invalid_session")
