"""The server's heartbeat: pings from each connection's writer, and what a silent peer gets.

Rules: the server runs in-process on 127.0.0.1, port 0, with the default limits (no
rate limits on this path: nothing here sends fast). Time is trio's ``MockClock`` (it
stands still unless a test jumps it), so ``--ping-interval`` and ``--ping-timeout`` keep
their defaults (20 s each) and a test of minutes takes milliseconds; the sockets are
real, and every wait for them is ``wait_all_tasks_blocked`` or an event (a frame, a log
line). No sleeps; a failing wait ends at the test's timeout.
"""

from __future__ import annotations

import struct
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from inproc import connect_to
from test_websocket import (
    TRANSPORTS,
    ServerLog,
    client_frame,
    expect_eof,
    open_raw,
    open_seam,
    read_until_closing,
    server_log,
    text,
)
from wsproto.frame_protocol import Opcode

from trio_chat.core.close import PING_TIMEOUT, CloseCode
from trio_chat.server.config import ServerConfig
from trio_chat.server.net.websocket import HEARTBEAT
from trio_chat.server.server import ChatServer

__all__ = ["server_log"]  # the fixture, used by name

StartServer = Callable[..., Awaitable[ChatServer]]

INTERVAL = ServerConfig().ping_interval
TIMEOUT = ServerConfig().ping_timeout
#: A jump that is not quite enough for a deadline (a power of two: the sums stay exact).
JUST_BEFORE = 0.125


def test_the_defaults_are_twenty_seconds_each() -> None:
    """--ping-interval and --ping-timeout default to 20 s, as documented."""
    assert (INTERVAL, TIMEOUT) == (20.0, 20.0)


async def settle() -> None:
    """Let every task (the server's and the clients') run until all are blocked."""
    with trio.fail_after(10):
        await trio.testing.wait_all_tasks_blocked()


async def test_a_peer_that_stops_answering_is_closed_with_1011_within_interval_plus_timeout(
    mock_clock: trio.testing.MockClock, start_server: StartServer, server_log: ServerLog
) -> None:
    """A client that completed the handshake and then neither reads nor answers is sent
    one ping after the interval and closed 1011 ``ping timeout`` when the timeout runs
    out after it: not a moment before interval + timeout, and then at once."""
    server = await start_server()
    started = trio.current_time()
    async with open_raw(server.port) as silent:
        peer = silent.peer
        await settle()
        assert len(server.connections) == 1
        mock_clock.jump(INTERVAL)
        await settle()  # the ping is out
        mock_clock.jump(TIMEOUT - JUST_BEFORE)
        await settle()
        assert len(server.connections) == 1, "closed before interval + timeout"
        mock_clock.jump(JUST_BEFORE)
        await server_log.wait_for(f"disconnected: 1011 {PING_TIMEOUT}")
        assert trio.current_time() - started == pytest.approx(INTERVAL + TIMEOUT)
        assert server.connections == {}
        # What the silent peer would have read: one ping, then the close, then the end
        # (the server does not wait for an answer nobody will send).
        assert await silent.frame() == (Opcode.PING, HEARTBEAT)
        assert await silent.frame() == (Opcode.CLOSE, (CloseCode.INTERNAL_ERROR, PING_TIMEOUT))
        await expect_eof(silent.stream)
    assert (
        f"client #1 ({peer}) did not answer a ping within {TIMEOUT:g} s; closing it"
        in server_log.messages
    )


async def test_a_peer_that_answers_is_pinged_every_interval_and_never_dropped(
    mock_clock: trio.testing.MockClock, start_server: StartServer
) -> None:
    """An idle client that answers each ping gets one every interval, for as long as it
    stays (half an hour here), and still chats afterwards."""
    server = await start_server()
    async with open_raw(server.port) as client:
        await settle()
        for _ in range(90):
            mock_clock.jump(INTERVAL)
            assert await client.frame() == (Opcode.PING, HEARTBEAT)
            await client.send(client_frame(Opcode.PONG, HEARTBEAT))
            await settle()
            assert len(server.connections) == 1
        await client.say("still here")


async def test_an_idle_websockets_client_is_never_dropped(
    mock_clock: trio.testing.MockClock, start_server: StartServer
) -> None:
    """The independent websockets client (which answers pings by itself) sits idle for an
    hour of pings and timeouts and is still connected and chatting."""
    server = await start_server()
    async with connect_to(f"ws://127.0.0.1:{server.port}") as ws:
        await settle()
        for _ in range(180):
            mock_clock.jump(INTERVAL)
            await settle()
        assert len(server.connections) == 1
        await ws.send("after an hour")
        with trio.fail_after(10):
            assert await ws.recv() == "You said: after an hour"


async def test_a_busy_peer_that_never_answers_is_closed_too(
    mock_clock: trio.testing.MockClock, start_server: StartServer, server_log: ServerLog
) -> None:
    """Sending (and reading) is not answering: a client that chats but ignores pings is
    closed 1011 all the same."""
    server = await start_server()
    async with open_raw(server.port) as client:
        await settle()
        mock_clock.jump(INTERVAL)
        assert await client.frame() == (Opcode.PING, HEARTBEAT)
        await client.say("busy")
        mock_clock.jump(TIMEOUT)
        await server_log.wait_for(f"disconnected: 1011 {PING_TIMEOUT}")
        assert await client.expect_close(answer=False) == (CloseCode.INTERNAL_ERROR, PING_TIMEOUT)


async def test_a_shorter_timeout_is_counted_in_ticks_of_its_own(
    mock_clock: trio.testing.MockClock, start_server: StartServer, server_log: ServerLog
) -> None:
    """--ping-interval 20 --ping-timeout 5: the heartbeat ticks every 5 s. A new client
    is pinged at the first tick; answered, the next ping comes 20 s later, and left
    unanswered it closes the client 5 s after that."""
    server = await start_server(ping_interval=20, ping_timeout=5)
    started = trio.current_time()
    async with open_raw(server.port) as client:
        await settle()
        mock_clock.jump(5)
        assert await client.frame() == (Opcode.PING, HEARTBEAT)
        await client.send(client_frame(Opcode.PONG, HEARTBEAT))
        for _ in range(4):  # 10, 15, 20 s: nothing due; 25 s: the next ping
            await settle()
            mock_clock.jump(5)
        assert await client.frame() == (Opcode.PING, HEARTBEAT)
        await settle()
        assert len(server.connections) == 1
        mock_clock.jump(5)
        await server_log.wait_for(f"disconnected: 1011 {PING_TIMEOUT}")
        assert trio.current_time() - started == 30


async def test_ping_interval_0_sends_no_pings(
    mock_clock: trio.testing.MockClock, start_server: StartServer
) -> None:
    """--ping-interval 0: no heartbeat at all; a silent client stays."""
    server = await start_server(ping_interval=0)
    async with open_raw(server.port) as client:
        await settle()
        mock_clock.jump(10 * (INTERVAL + TIMEOUT))
        await settle()
        assert len(server.connections) == 1
        await client.say("first frame is this echo, not a ping")


async def test_ping_timeout_0_pings_but_closes_nobody(
    mock_clock: trio.testing.MockClock, start_server: StartServer
) -> None:
    """--ping-timeout 0: pings still go out (they keep NAT mappings alive), and a client
    that never answers them stays."""
    server = await start_server(ping_timeout=0)
    async with open_raw(server.port) as client:
        await settle()
        for _ in range(3):
            mock_clock.jump(INTERVAL)
            assert await client.frame() == (Opcode.PING, HEARTBEAT)
            await settle()
        assert len(server.connections) == 1
        await client.send(text("hi"))
        assert await client.frame() == (Opcode.TEXT, "You said: hi")


# --- the WebSocket's side: hang_up -------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_hang_up_writes_the_close_and_does_not_wait_for_an_answer(transport: str) -> None:
    """With nothing waiting unsent, hang_up writes the close frame, closes the stream at
    once (no answer awaited), and says so."""
    async with open_seam(transport) as (ws, raw):
        written: list[bool] = []

        async def hang_up() -> None:
            written.append(await ws.hang_up(CloseCode.INTERNAL_ERROR, PING_TIMEOUT))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(hang_up)
            assert await raw.frame() == (Opcode.CLOSE, (1011, PING_TIMEOUT))
            await expect_eof(raw.stream)
        assert written == [True]
        assert (ws.close_code, ws.close_reason) == (1011, PING_TIMEOUT)


async def test_hang_up_drops_a_peer_that_is_not_reading_without_a_close_frame() -> None:
    """When bytes still wait for the peer (it stopped reading), hang_up writes no close
    frame behind them: it drops the connection at once and says so."""
    async with open_seam("tcp") as (ws, raw):
        while not ws.buffered:
            ws.send_text(b"x" * 60_000)
        with trio.fail_after(10):
            assert not await ws.hang_up(CloseCode.INTERNAL_ERROR, PING_TIMEOUT)
        assert ws.close_code == 1011
        received = b""
        with trio.fail_after(10):
            while data := await raw.stream.receive_some():
                received += data
        assert struct.pack("!BB", 0x88, 2 + len(PING_TIMEOUT)) not in received


async def test_a_heartbeat_is_answered_by_its_pong_only() -> None:
    """heartbeat_answered turns False when the ping leaves and True again with a pong
    carrying its payload; a pong with another payload does not count."""
    async with open_seam("memory") as (ws, raw), trio.open_nursery() as nursery:
        nursery.start_soon(read_until_closing, ws)
        assert ws.heartbeat_answered
        ws.send_heartbeat()
        assert not ws.heartbeat_answered
        assert await raw.frame() == (Opcode.PING, HEARTBEAT)
        await raw.send(client_frame(Opcode.PONG, b"something else"))
        await trio.testing.wait_all_tasks_blocked()
        assert not ws.heartbeat_answered
        await raw.send(client_frame(Opcode.PONG, HEARTBEAT))
        await trio.testing.wait_all_tasks_blocked()
        assert ws.heartbeat_answered
        nursery.cancel_scope.cancel()
