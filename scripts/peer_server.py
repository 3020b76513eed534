"""Reference peer: the asyncio tutorial chat server, on ``websockets``' asyncio server.

A standalone copy of the tutorial's server for benchmarks and interop tests, with the
tutorial's behaviour and wording, flaws included. For every message ``X`` a client
sends, the server replies ``You said: X`` to the sender first, then sends
``Someone says: X`` to every other connected client with one ``asyncio.gather`` (so a
slow client holds up the sender's next message, and a failed send to another client
ends the sender's own connection, as in the tutorial). Default ``websockets`` settings
(1 MiB message limit, keepalive ping every 20 s): what a user would otherwise run.

Differences from the tutorial: no console thread (these peers are driven by programs),
``--host``/``--port`` options, a clean exit on SIGINT/SIGTERM, and the per-message
``📩 Received from client: X`` line is printed only with ``--verbose``, because a print
per message slows a benchmark down. Connect and disconnect lines are always printed.

On start it prints exactly one line, ``✅ Server is running on ws://HOST:PORT``, with
the port actually bound (useful with ``--port 0``; if HOST resolves to several
addresses, the port is the first listener's). With ``--ready-file PATH`` it also writes
``{"pid": ..., "urls": [...], "port": ...}`` there once listening (removed at exit): what
programs should read instead of that line.

Run it with::

    .venv/bin/python scripts/peer_server.py [--host HOST] [--port PORT] [--verbose]
        [--ready-file PATH]

It serves until SIGINT (Ctrl-C) or SIGTERM, then closes every connection (1001) and
exits with status 0.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import peer_cli
from websockets.asyncio.server import ServerConnection, serve

DESCRIPTION = "The asyncio tutorial chat server, on websockets' asyncio server."


def make_handler(verbose: bool) -> Callable[[ServerConnection], Awaitable[None]]:
    """The tutorial's connection handler, sharing one set of connected clients."""
    connected_clients: set[ServerConnection] = set()

    async def handler(websocket: ServerConnection) -> None:
        connected_clients.add(websocket)
        print("✅ A client connected.", flush=True)
        try:
            async for message in websocket:
                await websocket.send(f"You said: {message}")
                if verbose:
                    print(f"📩 Received from client: {message}", flush=True)
                await asyncio.gather(
                    *[
                        client.send(f"Someone says: {message}")
                        for client in connected_clients
                        if client != websocket
                    ]
                )
        finally:
            connected_clients.remove(websocket)
            print("❌ A client disconnected.", flush=True)

    return handler


async def run(host: str, port: int, verbose: bool, ready_file: Path | None) -> None:
    """Serve until SIGINT or SIGTERM, then close the server and its connections."""
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[None] = loop.create_future()

    def request_stop() -> None:
        if not stop.done():  # a second signal changes nothing
            stop.set_result(None)

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, request_stop)
    async with serve(make_handler(verbose), host, port) as server:
        bound_port: int = server.sockets[0].getsockname()[1]
        peer_cli.announce(host, bound_port, ready_file)
        await stop


def main(argv: Sequence[str] | None = None) -> int:
    return peer_cli.main(
        DESCRIPTION,
        lambda host, port, verbose, ready: asyncio.run(run(host, port, verbose, ready)),
        argv,
    )


if __name__ == "__main__":
    sys.exit(main())
