"""Reference peer: the asyncio tutorial chat server, on ``websockets``' Trio server.

The behaviour and wording of ``scripts/peer_server.py`` (the tutorial's server), built
on ``websockets.trio.server`` instead of asyncio, for benchmarks and interop tests. For
every message ``X`` a client sends, the server replies ``You said: X`` to the sender
first, then sends ``Someone says: X`` to every other open connection with the library's
``broadcast()``, which the handler awaits (so a slow client holds up the sender's next
message, as in the tutorial). Unlike the tutorial's ``asyncio.gather``, ``broadcast()``
skips connections that are not open and logs (rather than raises) a failed write, so
the sender's connection survives it. Default ``websockets`` settings (1 MiB message
limit, keepalive ping every 20 s).

As in ``peer_server.py``: no console thread, ``--host``/``--port`` options, a clean
exit on SIGINT/SIGTERM, and the per-message ``📩 Received from client: X`` line only
with ``--verbose`` (a print per message slows a benchmark down). Connect and disconnect
lines are always printed.

On start it prints exactly one line, ``✅ Server is running on ws://HOST:PORT``, with
the port actually bound (useful with ``--port 0``; if HOST resolves to several
addresses, the port is the first listener's). With ``--ready-file PATH`` it also writes
``{"pid": ..., "urls": [...], "port": ...}`` there once listening (removed at exit): what
programs should read instead of that line.

Run it with::

    .venv/bin/python scripts/peer_trio_server.py [--host HOST] [--port PORT] [--verbose]
        [--ready-file PATH]

It serves until SIGINT (Ctrl-C) or SIGTERM, then closes every connection (1001) and
exits with status 0.

Shutdown is bounded: a second signal, or 15 s without finishing, drops the connections
left (with a line on stderr) and exits 0 all the same. This is needed because of a
websockets 17 Trio-backend bug. A connection that has more than ``max_queue`` (16)
unread incoming frames when it closes leaves its reader task waiting on the flow-control
event forever, so ``Server.aclose()`` never returns. Under load this is easy to hit:
a client closes while its handler is held up fanning out.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

import peer_cli
import trio
from websockets.trio.server import Server, ServerConnection, broadcast, serve

DESCRIPTION = "The asyncio tutorial chat server, on websockets' Trio server."
#: Longer than websockets' close_timeout (10 s), so that normal closing handshakes
#: finish; it bounds a shutdown that websockets' Trio backend would not finish (see
#: the module docstring).
SHUTDOWN_TIMEOUT = 15.0


def make_handler(verbose: bool) -> Callable[[ServerConnection], Awaitable[None]]:
    """The tutorial's connection handler, fanning out with ``broadcast()``."""

    async def handler(websocket: ServerConnection) -> None:
        print("✅ A client connected.", flush=True)
        try:
            async for message in websocket:
                await websocket.send(f"You said: {message}")
                if verbose:
                    print(f"📩 Received from client: {message}", flush=True)
                # server.connections: every connection past its opening handshake and
                # not closing yet (this one included, hence the filter).
                others = [client for client in websocket.server.connections if client != websocket]
                await broadcast(others, f"Someone says: {message}")
        finally:
            print("❌ A client disconnected.", flush=True)

    return handler


async def watch_signals(
    signals: AsyncIterator[int], stop: trio.Event, shutdown: trio.CancelScope
) -> None:
    """The first SIGINT or SIGTERM sets ``stop``; a second one cancels ``shutdown``.
    Later ones are consumed and ignored (a signal still queued when the receiver
    closes would be redelivered, and SIGTERM would then kill the process)."""
    async for _ in signals:
        if stop.is_set():
            shutdown.cancel()
        stop.set()


async def run(host: str, port: int, verbose: bool, ready_file: Path | None) -> None:
    """Serve until SIGINT or SIGTERM, then close the server and its connections."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        # Listening here rather than in serve() makes a bind error a plain OSError.
        listeners = await trio.open_tcp_listeners(port, host=host)
        async with trio.open_nursery() as nursery:
            stop = trio.Event()
            shutdown = trio.CancelScope(relative_deadline=SHUTDOWN_TIMEOUT)
            nursery.start_soon(watch_signals, signals, stop, shutdown)
            server: Server = await nursery.start(
                partial(serve, make_handler(verbose), listeners=listeners)
            )
            bound_port: int = listeners[0].socket.getsockname()[1]
            peer_cli.announce(host, bound_port, ready_file)
            await stop.wait()
            with shutdown:
                # Stops listening, closes open connections (1001), waits for every
                # handler and every connection's reader task.
                await server.aclose()
            if shutdown.cancelled_caught:
                print(
                    f"shutdown cut short (second signal, or still not done after "
                    f"{SHUTDOWN_TIMEOUT:g} s): dropping the connections left",
                    file=sys.stderr,
                    flush=True,
                )
            # The signal watcher, and whatever a cut-short shutdown left running.
            nursery.cancel_scope.cancel()


def main(argv: Sequence[str] | None = None) -> int:
    return peer_cli.main(
        DESCRIPTION,
        lambda host, port, verbose, ready: trio.run(run, host, port, verbose, ready),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
