"""The client's state machines: the connection's phases (in-process, with failures mapped
to one line) and the JSON session's start-up (pure).

:class:`ChatClient` runs in the test's Trio loop against an in-process server (port 0 on
127.0.0.1), its screen a string buffer (not a terminal: plain lines), its input a pipe
the test owns. Every wait is bounded by :data:`support.EVENT_TIMEOUT`.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import Awaitable, Callable, Iterator

import pytest
import trio

from trio_chat.client.connection import NEXT_PHASES, Backoff, ChatClient, Phase
from trio_chat.client.session import NEXT_STEPS, JsonSession, StartUp
from trio_chat.client.terminal import Screen
from trio_chat.client.view import Style
from trio_chat.server.server import ChatServer

from support import EVENT_TIMEOUT, open_client


class RecordingClient(ChatClient):
    """A client that keeps every phase it enters, in order, and lets a test wait for one."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.phases = [self.phase]
        self._entered = {phase: trio.Event() for phase in Phase}

    def _move_to(self, phase: Phase) -> None:
        super()._move_to(phase)
        self.phases.append(phase)
        self._entered[phase].set()

    async def entered(self, phase: Phase) -> None:
        """Wait until the client has entered ``phase`` (at least once)."""
        await self._entered[phase].wait()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """The client's stdin: (read end, write end), both closed at teardown."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):  # the test may have closed it
            os.close(fd)


def make_client(url: str, input_fd: int, **options: object) -> tuple[RecordingClient, io.StringIO]:
    """A client of ``url`` writing plain lines to a buffer; the buffer."""
    output = io.StringIO()
    client = RecordingClient(
        url, Screen(output, interactive=False), input_fd, nick="alice", environ={}, **options
    )
    return client, output


async def test_a_session_moves_through_its_phases_in_order(
    chat_server: ChatServer, pipe: tuple[int, int]
) -> None:
    """Connect, handshake, chat, then end of input: CLOSING and DONE, status 0."""
    read_end, write_end = pipe
    os.close(write_end)  # end of input: the client leaves once it is chatting
    client, output = make_client(f"ws://127.0.0.1:{chat_server.port}", read_end)
    with trio.fail_after(EVENT_TIMEOUT):
        assert await client.run() == 0
    assert client.phases == [
        Phase.CONNECTING,
        Phase.HANDSHAKING,
        Phase.CHATTING,
        Phase.CLOSING,
        Phase.DONE,
    ]
    assert output.getvalue().splitlines()[-1] == "Exiting chat..."


async def test_a_server_shutdown_waits_then_reconnects_and_the_user_leaves_while_waiting(
    start_server: Callable[..., Awaitable[ChatServer]], pipe: tuple[int, int]
) -> None:
    """A 1001 close moves to WAITING_TO_RECONNECT; leaving there goes to CLOSING, DONE."""
    read_end, _ = pipe
    server = await start_server()
    client, output = make_client(
        f"ws://127.0.0.1:{server.port}",
        read_end,
        backoff=Backoff(30, 30, uniform=lambda low, high: high),
    )
    async with trio.open_nursery() as nursery:
        status: list[int] = []

        async def run() -> None:
            status.append(await client.run())

        nursery.start_soon(run)
        with trio.fail_after(EVENT_TIMEOUT):
            await client.entered(Phase.CHATTING)
            server.shutdown()
            await client.entered(Phase.WAITING_TO_RECONNECT)
            client.leave()
    assert status == [0]
    assert client.phases[-4:] == [
        Phase.CHATTING,
        Phase.WAITING_TO_RECONNECT,
        Phase.CLOSING,
        Phase.DONE,
    ]
    lines = output.getvalue().splitlines()
    assert lines[-3:] == [
        "Server closed the connection: 1001 server shutting down",
        "reconnecting in 30.0 s…",
        "Exiting chat...",
    ]


async def test_a_full_server_without_reconnect_is_one_line_and_status_1(
    start_server: Callable[..., Awaitable[ChatServer]], pipe: tuple[int, int]
) -> None:
    """With --no-reconnect, a 503 at the first handshake is one line with the server's
    reason, exit status 1 (the refusal comes out of the WebSocket's reader task in a
    group, on every Python). Without it the client keeps trying: test_keepalive.py."""
    server = await start_server(max_connections=1)
    url = f"ws://127.0.0.1:{server.port}"
    async with open_client(url):
        client, output = make_client(url, pipe[0], reconnect=False)
        with trio.fail_after(EVENT_TIMEOUT):
            assert await client.run() == 1
    assert output.getvalue().splitlines() == [
        f"Connecting to server at {url}...",
        f"Could not connect to {url}: the server refused with HTTP 503 (server full)",
    ]
    assert client.phases == [Phase.CONNECTING, Phase.HANDSHAKING, Phase.DONE]


async def test_a_refused_resume_url_is_one_line_and_status_1(
    chat_server: ChatServer, pipe: tuple[int, int]
) -> None:
    """A 400 (an invalid resume query in the URL) is not retried: one line, status 1. The
    URL is shown without its query (it may hold a secret)."""
    url = f"ws://127.0.0.1:{chat_server.port}/?since=soon"
    shown = f"ws://127.0.0.1:{chat_server.port}/?\N{HORIZONTAL ELLIPSIS}"
    client, output = make_client(url, pipe[0])
    with trio.fail_after(EVENT_TIMEOUT):
        assert await client.run() == 1
    (connecting, refused) = output.getvalue().splitlines()
    assert connecting == f"Connecting to server at {shown}..."
    assert refused.startswith(f"Could not connect to {shown}: the server refused with HTTP 400 (")


def test_moves_outside_the_table_are_refused() -> None:
    """Only the moves NEXT_PHASES lists are possible; DONE is the end."""
    client = ChatClient("ws://127.0.0.1:1", Screen(io.StringIO(), interactive=False), 0)
    with pytest.raises(RuntimeError, match="no move from connecting to chatting"):
        client._move_to(Phase.CHATTING)
    assert NEXT_PHASES[Phase.DONE] == frozenset()
    assert NEXT_PHASES[Phase.CLOSING] == frozenset({Phase.DONE})


# --- the JSON session's start-up ------------------------------------------------------------


def welcome_line(nick: str | None, rooms: list[str]) -> str:
    return json.dumps({"type": "welcome", "nick": nick, "room": rooms[-1], "rooms": rooms})


def answer(request: str, kind: str = "ack", **fields: object) -> str:
    """The answer to the JSON ``request``, echoing its cid."""
    sent = json.loads(request)
    return json.dumps({"type": kind, "cid": sent["cid"], "command": sent["type"], **fields})


def test_the_first_start_up_steps_through_nick_retries_and_the_join() -> None:
    """welcome → TAKING_NICK (again on nick_taken) → JOINING → READY, then it resumes."""
    session = JsonSession(Style(colour=False), "sam", room="dev", cid_prefix="t")
    assert session.startup is StartUp.AWAITING_WELCOME
    (nick,) = session.receive(welcome_line(None, ["lobby"])).send
    assert session.startup is StartUp.TAKING_NICK
    taken = answer(nick, "error", code="nick_taken", text="nick sam is taken")
    (retry,) = session.receive(taken).send
    assert (json.loads(retry)["nick"], session.startup) == ("sam-2", StartUp.TAKING_NICK)
    (join,) = session.receive(answer(retry, nick="sam-2")).send
    assert (json.loads(join)["room"], session.startup) == ("dev", StartUp.JOINING)
    assert not session.ready
    session.receive(answer(join, room="dev", topic=None, members=["sam-2"], anonymous=0))
    assert session.startup is StartUp.READY
    assert session.ready
    session.reconnecting()
    assert (session.startup, session.welcomed) == (StartUp.AWAITING_WELCOME, False)
    assert session.receive(welcome_line("sam-2", ["lobby", "dev"])).send == []
    assert session.startup is StartUp.READY


def test_start_up_moves_outside_the_table_are_refused() -> None:
    """Only the moves NEXT_STEPS lists are possible: nothing follows READY but a new
    connection."""
    session = JsonSession(Style(colour=False), "sam")
    with pytest.raises(
        RuntimeError, match="no start-up step from awaiting welcome to awaiting welcome"
    ):
        session._move_to(StartUp.AWAITING_WELCOME)
    assert NEXT_STEPS[StartUp.READY] == frozenset()
