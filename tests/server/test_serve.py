"""``trio_chat.server.serve`` called from a program: settings, start-up, clean stop.

In-process servers on 127.0.0.1, port 0, history in memory; clients are trio-websocket.
"""

from __future__ import annotations

import signal
from functools import partial

import pytest
import trio
from trio_websocket import ConnectionClosed

from trio_chat.server import ChatServer, ServerConfig, serve

from support import EVENT_TIMEOUT, open_client, receive, say


async def test_serve_takes_keyword_settings_and_stops_on_shutdown() -> None:
    """``nursery.start(serve, ...)`` gives the running server (the settings laid over the
    defaults); ``server.shutdown()`` closes every client with 1001 and serve returns."""
    with trio.fail_after(EVENT_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: ChatServer = await nursery.start(
                partial(serve, host="127.0.0.1", port=0, db=":memory:", queue_depth=7)
            )
            assert server.config == ServerConfig(
                host="127.0.0.1", port=0, db=":memory:", queue_depth=7
            )
            assert server.urls == [f"ws://127.0.0.1:{server.port}"]
            async with open_client(server.urls[0]) as ws:
                await say(ws, "hello from a program")
                server.shutdown()
                with pytest.raises(ConnectionClosed) as closed:
                    await receive(ws)
                assert (closed.value.reason.code, closed.value.reason.reason) == (
                    1001,
                    "server shutting down",
                )
        assert server.stopped.is_set()


async def test_serve_lays_settings_over_a_config() -> None:
    """A ServerConfig and keyword settings: the keywords win."""
    base = ServerConfig(host="127.0.0.1", port=0, db=":memory:", history_on_join=3)
    async with trio.open_nursery() as nursery:
        server: ChatServer = await nursery.start(partial(serve, base, history_on_join=0))
        assert server.config == ServerConfig(
            host="127.0.0.1", port=0, db=":memory:", history_on_join=0
        )
        server.shutdown()


async def test_serve_leaves_signals_alone_unless_asked() -> None:
    """A program owns its signals: serve() installs no handler by default, and does with
    ``handle_signals=True`` (then SIGTERM is a clean shutdown)."""
    before = signal.getsignal(signal.SIGTERM)
    settings = {"host": "127.0.0.1", "port": 0, "db": ":memory:"}
    async with trio.open_nursery() as nursery:
        quiet: ChatServer = await nursery.start(partial(serve, **settings))
        assert signal.getsignal(signal.SIGTERM) is before
        quiet.shutdown()
    with trio.fail_after(EVENT_TIMEOUT):
        async with trio.open_nursery() as nursery:
            handling: ChatServer = await nursery.start(
                partial(serve, handle_signals=True, **settings)
            )
            assert signal.getsignal(signal.SIGTERM) is not before
            signal.raise_signal(signal.SIGTERM)
            await handling.stopped.wait()
    assert signal.getsignal(signal.SIGTERM) is before


async def test_cancelling_serve_is_a_hard_stop() -> None:
    """serve() runs until cancelled: cancelling it stops the server and returns."""
    with trio.fail_after(EVENT_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server: ChatServer = await nursery.start(
                partial(serve, host="127.0.0.1", port=0, db=":memory:")
            )
            nursery.cancel_scope.cancel()
    assert server.stopped.is_set()
