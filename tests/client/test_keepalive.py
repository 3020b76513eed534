"""Our clients towards a server that stops answering, or refuses them for now.

The terminal client (:class:`ChatClient`) and the library (:func:`trio_chat.connect`) ping
the server and take a ping left unanswered as a lost connection; the terminal client
keeps trying after 429 and 503, waiting what ``Retry-After`` says (with jitter). The
servers here are in-process on 127.0.0.1, port 0: the real one, or small fakes made of
wsproto and h11 (one completes the handshake and then never reads again, one answers
every handshake with 429). Limits: the real server's defaults. Ping intervals are
short (50 ms) and every wait is for a phase or an event under ``EVENT_TIMEOUT``; the
jitter is a fixed draw, so printed delays are exact.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from functools import partial

import pytest
import trio
from test_client_phases import RecordingClient
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

import trio_chat
from trio_chat.client.api import ChatClosed, connect
from trio_chat.client.connection import MAX_RETRY_AFTER, Backoff, Phase, retry_after
from trio_chat.client.terminal import Screen
from trio_chat.core.commands import PROTOCOL
from trio_chat.server.server import ChatServer

from support import EVENT_TIMEOUT, open_client

#: The client's pings in these tests: every 50 ms, each answered within 50 ms.
PING = 0.05


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """The client's stdin: (read end, write end), both closed at teardown."""
    read_end, write_end = os.pipe()
    yield read_end, write_end
    for fd in (read_end, write_end):
        with contextlib.suppress(OSError):
            os.close(fd)


def lowest(low: float, high: float) -> float:
    """The jitter's draw, fixed at its lowest."""
    return low


def make_client(url: str, input_fd: int, **options: object) -> tuple[RecordingClient, io.StringIO]:
    """A terminal client of ``url`` writing plain lines to a buffer (no jitter: each delay
    drawn at its lowest); the buffer."""
    output = io.StringIO()
    options.setdefault("backoff", Backoff(uniform=lowest))
    client = RecordingClient(
        url, Screen(output, interactive=False), input_fd, nick="alice", environ={}, **options
    )
    return client, output


# --- fake servers -----------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def fake_server(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[str]:
    """``handler`` serving each connection on 127.0.0.1, port 0, for the block; its URL."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield f"ws://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
        nursery.cancel_scope.cancel()


async def accept_then_go_silent(stream: trio.SocketStream) -> None:
    """Complete the WebSocket handshake (with ``trio-chat.v1`` and a welcome when the
    client offers it), then never read again: pings go unanswered."""
    ws = WSConnection(ConnectionType.SERVER)
    while True:
        data = await stream.receive_some()
        if not data:
            return
        ws.receive_data(data)
        for event in ws.events():
            if isinstance(event, Request):
                json_mode = PROTOCOL in event.subprotocols
                answer = ws.send(AcceptConnection(subprotocol=PROTOCOL if json_mode else None))
                if json_mode:
                    welcome = {
                        "type": "welcome",
                        "protocol": PROTOCOL,
                        "server": f"trio_chat/{trio_chat.__version__}",
                        "nick": None,
                        "room": "lobby",
                        "rooms": ["lobby"],
                        "session": "s" * 43,
                    }
                    answer += ws.send(TextMessage(json.dumps(welcome)))
                await stream.send_all(answer)
                await trio.sleep_forever()


def refuse_with(status: int, *headers: str) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """A handler that answers every request with ``status`` and ``headers``."""

    async def refuse(stream: trio.SocketStream) -> None:
        received = b""
        while b"\r\n\r\n" not in received:
            data = await stream.receive_some()
            if not data:
                return
            received += data
        head = "".join(f"{header}\r\n" for header in headers)
        body = b"come back later\n"
        with contextlib.suppress(trio.BrokenResourceError):
            await stream.send_all(
                f"HTTP/1.1 {status} Busy\r\n{head}content-length: {len(body)}\r\n"
                "connection: close\r\n\r\n".encode()
                + body
            )

    return refuse


# --- Retry-After and the delay after it (pure) ------------------------------------------------


NOW = datetime(2026, 12, 2, 20, 0, 0, tzinfo=UTC)
IN_90_S = format_datetime(NOW + timedelta(seconds=90), usegmt=True).encode()
FIVE_S_AGO = format_datetime(NOW - timedelta(seconds=5), usegmt=True).encode()


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ([], None),
        ([(b"retry-after", b"7")], 7.0),
        ([(b"Retry-After", b" 0 ")], 0.0),
        (
            [(b"retry-after", format_datetime(NOW + timedelta(seconds=90), usegmt=True).encode())],
            90.0,
        ),
        (
            [(b"retry-after", format_datetime(NOW - timedelta(seconds=5), usegmt=True).encode())],
            0.0,
        ),
        ([(b"retry-after", b"999999")], MAX_RETRY_AFTER),
        ([(b"retry-after", b"soon")], None),
        ([(b"retry-after", b"-3")], None),
    ],
)
def test_retry_after_reads_seconds_or_a_date(
    headers: list[tuple[bytes, bytes]], seconds: float | None
) -> None:
    """Retry-After as delay-seconds or an HTTP date (a past one is 0), capped at an hour;
    absent or unreadable, None (the backoff decides)."""
    assert retry_after(headers, now=NOW) == seconds


def test_the_delay_after_retry_after_is_never_shorter_and_jittered() -> None:
    """After Retry-After: N, the client waits between N and 1.5 N (never less than its
    own backoff, which advances too)."""
    draws: list[tuple[float, float]] = []

    def highest(low: float, high: float) -> float:
        draws.append((low, high))
        return high

    backoff = Backoff(uniform=highest)
    assert backoff.after(4.0) == 6.0
    assert draws == [(0.25, 0.5), (0.0, 2.0)]
    assert Backoff(uniform=lowest).after(4.0) == 4.0
    assert Backoff(8.0, uniform=lowest).after(1.0) == 4.0  # the backoff's own 8/2


# --- the terminal client --------------------------------------------------------------------


async def test_the_terminal_client_takes_an_unanswered_ping_as_a_lost_connection(
    pipe: tuple[int, int],
) -> None:
    """A server that stops answering (it never reads again) is noticed by the client's
    pings: ``Connection lost: no answer to a ping``, then it waits to reconnect."""
    async with fake_server(accept_then_go_silent) as url:
        client, output = make_client(
            url, pipe[0], plain=True, ping_interval=PING, ping_timeout=PING
        )
        async with trio.open_nursery() as nursery:
            status: list[int] = []

            async def run() -> None:
                status.append(await client.run())

            nursery.start_soon(run)
            with trio.fail_after(EVENT_TIMEOUT):
                await client.entered(Phase.WAITING_TO_RECONNECT)
                client.leave()
    assert status == [0]
    lines = output.getvalue().splitlines()
    assert lines[-3:] == [
        f"Connection lost: no answer to a ping within {PING:g} s",
        "reconnecting in 0.2 s…",
        "Exiting chat...",
    ]
    assert client.phases[:4] == [
        Phase.CONNECTING,
        Phase.HANDSHAKING,
        Phase.CHATTING,
        Phase.WAITING_TO_RECONNECT,
    ]


async def test_a_429_with_retry_after_is_tried_again_after_that_long(
    pipe: tuple[int, int],
) -> None:
    """Refused with 429 and ``Retry-After: 2`` at the very first handshake, the client
    does not give up: it says so and waits 2 s (at the jitter's lowest) to try again."""
    async with fake_server(refuse_with(429, "Retry-After: 2")) as url:
        client, output = make_client(url, pipe[0])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run)
            with trio.fail_after(EVENT_TIMEOUT):
                await client.entered(Phase.WAITING_TO_RECONNECT)
                client.leave()
    assert output.getvalue().splitlines() == [
        f"Connecting to server at {url}...",
        f"Could not connect to {url}: the server refused with HTTP 429 (come back later)",
        "reconnecting in 2.0 s…",
        "Exiting chat...",
    ]


async def test_another_4xx_still_ends_the_client(pipe: tuple[int, int]) -> None:
    """A refusal that waiting cannot cure (403) is one line and exit status 1."""
    async with fake_server(refuse_with(403)) as url:
        client, output = make_client(url, pipe[0])
        with trio.fail_after(EVENT_TIMEOUT):
            assert await client.run() == 1
    assert output.getvalue().splitlines()[-1] == (
        f"Could not connect to {url}: the server refused with HTTP 403 (come back later)"
    )


async def test_a_full_server_is_tried_until_there_is_room(
    start_server: Callable[..., Awaitable[ChatServer]], pipe: tuple[int, int]
) -> None:
    """503 ``server full`` at the first handshake: the client keeps trying (with its
    backoff: the server names no Retry-After) and gets in once a place is free."""
    server = await start_server(max_connections=1)
    url = f"ws://127.0.0.1:{server.port}"
    client, output = make_client(url, pipe[0], backoff=Backoff(0.01, 0.05, uniform=lowest))
    async with trio.open_nursery() as nursery:
        async with open_client(url):
            nursery.start_soon(client.run)
            with trio.fail_after(EVENT_TIMEOUT):
                await client.entered(Phase.WAITING_TO_RECONNECT)
        with trio.fail_after(EVENT_TIMEOUT):
            await client.entered(Phase.CHATTING)
        client.leave()
    lines = output.getvalue().splitlines()
    assert lines[1] == f"Could not connect to {url}: the server refused with HTTP 503 (server full)"
    assert "\N{WHITE HEAVY CHECK MARK} Connected to server!" in lines


# --- the library -------------------------------------------------------------------------------


async def test_the_library_ends_a_connection_whose_pings_go_unanswered() -> None:
    """trio_chat.connect pings too: a server that stops answering ends the iteration with
    ChatClosed 1006 ``no answer to a ping within 0.05 s``; commands raise it."""
    async with fake_server(accept_then_go_silent) as url:
        with trio.fail_after(EVENT_TIMEOUT):
            async with connect(url, ping_interval=PING, ping_timeout=PING) as chat:
                assert [event async for event in chat] == []
                assert isinstance(chat.closed, ChatClosed)
                assert (chat.closed.code, chat.closed.reason) == (
                    1006,
                    f"no answer to a ping within {PING:g} s",
                )
                with pytest.raises(ChatClosed):
                    await chat.say("anyone?")


async def test_the_library_keeps_a_connection_whose_pings_are_answered(
    chat_server: ChatServer,
) -> None:
    """Against our server, pings every 10 ms are answered: after many of them the
    connection is open and chats."""
    url = f"ws://127.0.0.1:{chat_server.port}"
    async with connect(url, ping_interval=0.01, ping_timeout=EVENT_TIMEOUT) as chat:
        answered = 0
        with trio.fail_after(EVENT_TIMEOUT):
            while answered < 20:
                await chat._ws.ping()  # one more round trip, beside the keepalive's
                answered += 1
        assert chat.closed is None
        ack = await chat.say("still here")
        assert ack["type"] == "ack"
