"""The server in-process: real sockets on 127.0.0.1, several clients, exact frames.

trio-websocket clients and the independent ``websockets`` library (its asyncio client,
in a worker thread) talk to the same server. A stuck client is a real socket with the
smallest receive buffer the kernel allows, whose reader stops after one message. The
server also runs with no socket at all, on a listener of ``trio.testing`` memory streams.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
import websockets
from trio_websocket import ConnectionRejected, WebSocketConnection, wrap_client_stream

from trio_chat import _version
from trio_chat.core.commands import Command, Say
from trio_chat.server.bus import BURST_FACTOR
from trio_chat.server.chat import Chat, Member
from trio_chat.server.config import ServerConfig
from trio_chat.server.server import ChatServer

from support import (
    EVENT_TIMEOUT,
    LIMITS_LIFTED,
    PROTOCOL,
    open_client,
    read_until_closed,
    receive,
    say,
    stamped,
    welcome,
)

StartServer = Callable[..., Awaitable[ChatServer]]


async def expect_close(ws: WebSocketConnection, code: int, reason: str | None) -> None:
    """Wait for the server to close ``ws`` with exactly ``code`` and ``reason``."""
    _, closed = await read_until_closed(ws)
    assert closed is not None
    assert (closed.code, closed.reason) == (code, reason)


async def test_tutorial_wording_across_two_client_libraries(chat_server: ChatServer) -> None:
    """trio-websocket and websockets clients chat with the tutorial's exact wording."""
    url = chat_server.urls[0]
    ready = trio.Event()
    token = trio.lowlevel.current_trio_token()

    async def websockets_side() -> list[str | bytes]:
        async with websockets.connect(url) as ws:
            await ws.send("sync")
            received = [await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT)]
            trio.from_thread.run_sync(ready.set, trio_token=token)
            received.append(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT))
            await ws.send("from asyncio")
            received.append(await asyncio.wait_for(ws.recv(), EVENT_TIMEOUT))
            return received

    async with open_client(url) as alice, open_client(url) as bob:
        await say(alice, "hello")
        assert await receive(bob) == "Someone says: hello"
        async with trio.open_nursery() as nursery:
            results: list[list[str | bytes]] = []

            async def run_websockets_side() -> None:
                results.append(await trio.to_thread.run_sync(asyncio.run, websockets_side()))

            nursery.start_soon(run_websockets_side)
            with trio.fail_after(EVENT_TIMEOUT):
                await ready.wait()
            assert await receive(alice) == "Someone says: sync"
            assert await receive(bob) == "Someone says: sync"
            await say(alice, "from trio")
        assert results == [["You said: sync", "Someone says: from trio", "You said: from asyncio"]]
        assert await receive(bob) == "Someone says: from trio"
        assert await receive(bob) == "Someone says: from asyncio"


async def test_shutdown_closes_every_client_with_1001(chat_server: ChatServer) -> None:
    """shutdown() closes every connection with 1001 ``server shutting down``, then run()
    returns and new connections are refused."""
    url = chat_server.urls[0]
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(3):
            ws = await stack.enter_async_context(open_client(url))
            await say(ws, "here")  # the earlier clients' "Someone says" stay unread
            clients.append(ws)
        chat_server.shutdown()
        for ws in clients:
            await expect_close(ws, 1001, "server shutting down")
    with trio.fail_after(EVENT_TIMEOUT):
        await chat_server.stopped.wait()
    assert chat_server.connections == {}
    with pytest.raises(OSError, match="all attempts to connect"):
        await trio.open_tcp_stream("127.0.0.1", chat_server.port)


async def test_connections_over_the_limit_get_503(start_server: StartServer) -> None:
    """With --max-connections 1 the second handshake is refused with 503 ``server full``."""
    server = await start_server(max_connections=1)
    url = server.urls[0]
    async with open_client(url) as first:
        await say(first, "I'm in")
        with pytest.raises(ConnectionRejected) as info:
            async with open_client(url):
                pytest.fail("the second connection must be refused")
        assert info.value.status_code == 503
        assert info.value.body == b"server full\n"
        await say(first, "still here")


async def test_a_crash_in_one_connection_closes_only_it(
    start_server: StartServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception while handling one client's line is logged with its traceback and
    closes that client with 1011; the server and the other clients carry on."""
    original = Chat.execute

    async def explode_on_boom(
        self: Chat, member: Member, command: Command, cid: str | int | None
    ) -> None:
        if command == Say("boom"):
            raise RuntimeError("boom")
        await original(self, member, command, cid)

    monkeypatch.setattr(Chat, "execute", explode_on_boom)
    server = await start_server()
    url = server.urls[0]
    async with open_client(url) as victim:
        await say(victim, "hi")
        async with open_client(url) as bystander:
            await say(bystander, "hi")
            assert await receive(victim) == "Someone says: hi"
            await victim.send_message("boom")
            await expect_close(victim, 1011, "internal error")
            await say(bystander, "still chatting")
    assert "RuntimeError: boom" in caplog.text
    assert any(record.levelno == logging.ERROR and record.exc_info for record in caplog.records)


async def test_binary_frames_get_an_error_line_and_the_connection_stays(
    chat_server: ChatServer,
) -> None:
    """A binary frame is answered with one error line to its sender only."""
    async with open_client(chat_server.urls[0]) as ws:
        await ws.send_message(b"\x00\x01")
        assert await receive(ws) == "Error: binary messages are not supported; send text"
        await say(ws, "text works")


async def test_a_message_over_the_limit_closes_with_1009(start_server: StartServer) -> None:
    """A message longer than --max-message-size, counted in UTF-8 bytes, closes its sender
    with 1009; another client chats on."""
    server = await start_server(max_message_size=10)
    async with open_client(server.urls[0]) as ws:
        await say(ws, "é" * 5)  # 5 characters, 10 bytes: fits exactly
        async with open_client(server.urls[0]) as other:
            await ws.send_message("é" * 5 + "x")  # 6 characters, 11 bytes
            await expect_close(ws, 1009, "Exceeded maximum message size: 10 bytes")
            await say(other, "unaffected")


@asynccontextmanager
async def stuck_client(
    server: ChatServer, nursery: trio.Nursery, subprotocols: list[str] | None = None
) -> AsyncIterator[WebSocketConnection]:
    """A real client that reads only when the test calls get_message(): its socket's
    receive buffer is as small as the kernel allows and its queue holds one message, so
    the server soon cannot send to it. It offers ``subprotocols`` (none by default).
    Closed (its socket too) on the way out."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    stream = trio.SocketStream(sock)  # owns sock from here on
    try:
        await sock.connect(("127.0.0.1", server.port))
        yield await wrap_client_stream(
            nursery, stream, "127.0.0.1", "/", subprotocols=subprotocols, message_queue_size=1
        )
    finally:
        await trio.aclose_forcefully(stream)


async def fill_until(server: ChatServer, done: Callable[[], bool]) -> list[str]:
    """Publish 8 KB operator lines until ``done()``; return what was published."""
    published: list[str] = []
    for n in range(200):
        published.append(f"{n:03} " + "x" * 8000)
        server.chat.operator_says(published[-1])
        await trio.testing.wait_all_tasks_blocked()
        if done():
            return published
    raise AssertionError("the stuck client never fell behind")


async def test_a_slow_consumer_is_closed_with_1008_and_others_get_everything(
    start_server: StartServer, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """When a client's queue overflows it is closed with 1008 ``slow consumer`` after the
    frames already on their way; a fast client receives every event. (The stuck client
    is caught at the bound that holds whatever its progress: BURST_FACTOR x the depth.)"""
    server = await start_server(queue_depth=3)
    async with stuck_client(server, nursery) as stuck, open_client(server.urls[0]) as fast:
        await say(fast, "ready")
        await trio.testing.wait_all_tasks_blocked()
        assert len(server.chat.bus) == 2
        published = await fill_until(server, lambda: len(server.chat.bus) == 1)
        lines: list[str] = []
        while len(lines) < len(published):
            lines.extend((await receive(fast)).split("\n"))
        assert lines == [f"🟢 Server: {text}" for text in published]
        # The stuck client now reads: what was already sent or queued, then the close.
        received, closed = await read_until_closed(stuck)
    assert closed is not None
    assert (closed.code, closed.reason) == (1008, "slow consumer")
    everything = ["Someone says: ready"] + [f"🟢 Server: {text}" for text in published]
    assert received == everything[: len(received)]
    assert len(received) < len(everything)
    assert f"has {3 * BURST_FACTOR} events queued; closing it as a slow consumer" in caplog.text


async def test_a_client_that_never_reads_is_dropped_after_the_send_timeout(
    start_server: StartServer, nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A frame that cannot be sent within --send-timeout drops the client, and the
    writer does not hang on it."""
    caplog.set_level(logging.INFO)
    server = await start_server(send_timeout=0.5, queue_depth=1000)
    async with stuck_client(server, nursery):
        await trio.testing.wait_all_tasks_blocked()
        (connection,) = server.connections.values()
        flood(server)
        with trio.fail_after(EVENT_TIMEOUT):
            await connection.closed.wait()
        await trio.testing.wait_all_tasks_blocked()  # let the server log the disconnect
    assert "a frame took over 0.5 s to send" in caplog.text
    assert "disconnected: 1008 slow consumer" in caplog.text


async def test_a_handshake_during_shutdown_gets_503(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    """While shutdown waits for slow connections, a new handshake is refused with 503."""
    server = await start_server(shutdown_grace=EVENT_TIMEOUT)
    async with stuck_client(server, nursery) as stuck:
        await trio.testing.wait_all_tasks_blocked()
        flood(server)
        await trio.testing.wait_all_tasks_blocked()
        late = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with late:
            await trio.testing.wait_all_tasks_blocked()  # the server has accepted it
            server.shutdown()
            await trio.testing.wait_all_tasks_blocked()
            assert not server.stopped.is_set()
            refused = pytest.RaisesExc(
                ConnectionRejected,
                check=lambda exc: (exc.status_code, exc.body) == (503, b"server shutting down\n"),
            )
            with pytest.RaisesGroup(refused):
                async with trio.open_nursery() as handshake_nursery:
                    await wrap_client_stream(handshake_nursery, late, "127.0.0.1", "/")
        # Unstick the slow client: it gets its frames, then 1001, and the server stops.
        await expect_close(stuck, 1001, "server shutting down")
    with trio.fail_after(EVENT_TIMEOUT):
        await server.stopped.wait()


def flood(server: ChatServer) -> None:
    """Publish 800 KB at once: far more than a stuck client's socket buffers hold."""
    for n in range(100):
        server.chat.operator_says(f"{n:03} " + "x" * 8000)


# --- no sockets: memory streams ---------------------------------------------------------


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    """A listener of ``trio.testing`` memory streams: :meth:`connect` makes a stream pair,
    hands the server its end through :meth:`accept` and returns the client's end.
    ``failures`` are raised by the first calls to :meth:`accept`, one each."""

    def __init__(self, *failures: OSError) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](0)
        self._failures = list(failures)

    async def connect(self) -> trio.abc.Stream:
        client_end, server_end = trio.testing.memory_stream_pair()
        with trio.fail_after(EVENT_TIMEOUT):
            await self._send.send(server_end)
        return client_end

    async def open_client(
        self, nursery: trio.Nursery, resource: str = "/", **options: Any
    ) -> WebSocketConnection:
        """A trio-websocket client over a new connection, its tasks in ``nursery``."""
        return await wrap_client_stream(
            nursery,
            await self.connect(),  # type: ignore[arg-type]  # it takes any trio stream
            "localhost",
            resource,
            **options,
        )

    async def accept(self) -> trio.abc.Stream:
        if self._failures:
            raise self._failures.pop(0)
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError from None

    async def aclose(self) -> None:
        self._receive.close()
        await trio.lowlevel.checkpoint()


async def start_memory_server(
    nursery: trio.Nursery, listener: MemoryListener, **settings: Any
) -> ChatServer:
    """A server in ``nursery`` that listens on ``listener`` only (messages in memory, no
    history on join, the rate limits lifted unless ``settings`` set them)."""
    server = ChatServer(ServerConfig(**{"history_on_join": 0, **LIMITS_LIFTED, **settings}))
    run = functools.partial(server.run, listeners=[listener])
    started: ChatServer = await nursery.start(run)
    return started


async def test_a_whole_chat_over_memory_streams_without_sockets(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """handle_stream serves any trio stream: over memory streams a plain client and a
    JSON client chat both ways and close cleanly with 1000, and no socket is opened."""
    caplog.set_level(logging.INFO, logger="trio_chat")
    listener = MemoryListener()
    server = await start_memory_server(nursery, listener)
    assert server.addresses == []
    plain = await listener.open_client(nursery)
    structured = await listener.open_client(nursery, "/?nick=ada", subprotocols=[PROTOCOL])
    assert structured.subprotocol == PROTOCOL
    assert json.loads(await receive(structured)) == welcome("ada")

    assert await receive(plain) == "* ada joined lobby"
    await say(plain, "hello over memory")
    assert stamped(json.loads(await receive(structured))) == {
        "type": "message",
        "id": 1,
        "room": "lobby",
        "from": None,
        "text": "hello over memory",
    }
    await structured.send_message(json.dumps({"type": "message", "text": "and back"}))
    assert await receive(plain) == "ada says: and back"

    for ws in (plain, structured):
        with trio.fail_after(EVENT_TIMEOUT):
            await ws.aclose()
        assert ws.closed is not None
        assert (ws.closed.code, ws.closed.reason) == (1000, None)
    with trio.fail_after(EVENT_TIMEOUT):
        while server.connections:
            await trio.testing.wait_all_tasks_blocked()
    assert caplog.text.count("(unknown) disconnected: 1000 (normal closure)") == 2
    assert "Traceback" not in caplog.text
    server.shutdown()


async def test_out_of_file_descriptors_pauses_accepting_and_carries_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """accept() failing with EMFILE is logged, and the server accepts the next
    connection (trio.serve_listeners' pause and retry) instead of stopping."""
    listener = MemoryListener(OSError(errno.EMFILE, "Too many open files"))
    server = await start_memory_server(nursery, listener)
    ws = await listener.open_client(nursery)
    await say(ws, "served after EMFILE")
    assert "accept returned EMFILE (Too many open files)" in caplog.text
    with trio.fail_after(EVENT_TIMEOUT):
        await ws.aclose()
    server.shutdown()


def test_the_version_is_read_when_the_server_is_made_not_at_the_first_welcome() -> None:
    """The package metadata (importlib.metadata and what it loads) is read as the server
    starts: the first client neither waits for it nor brings its memory along."""
    _version.version.cache_clear()
    ChatServer(ServerConfig(db=":memory:"))
    assert _version.version.cache_info().currsize == 1
