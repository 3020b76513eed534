"""The interactive client: ``python -m trio_chat.client [URL]``.

One nursery holds the two chat tasks: the sender reads the user's lines (stdin, in a
worker thread that is abandoned on exit) and the receiver shows what the server sends.
Whichever side ends the chat cancels the other:

* the user leaves (``exit``, end of input, Ctrl-C): close with 1000, exit status 0;
* the server closes: print its code and reason, exit status 1, at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Sequence
from urllib.parse import urlsplit

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from .config import DEFAULT_PORT
from .lines import read_lines
from .protocol import CloseCode, describe_close
from .terminal import Screen

__all__ = ["ChatClient", "main", "parse_args"]

DEFAULT_URL = f"ws://localhost:{DEFAULT_PORT}"

#: Time allowed for TCP connect plus the WebSocket handshake.
CONNECT_TIMEOUT = 10.0
#: Time allowed for the server to answer our close frame; the user asked to leave,
#: so this is kept short (the whole exit must take well under a second).
CLOSE_TIMEOUT = 0.5
#: Largest message accepted from the server: the server batches lines into frames of
#: about 64 KiB, plus one line of up to its own message limit.
MAX_INCOMING_MESSAGE = 1024 * 1024


class ClientError(Exception):
    """A failure to report to the user as one line, with exit status 1."""


def parse_url(url: str) -> tuple[str, int, str]:
    """Split a ``ws://host[:port][/path]`` URL into host, port and resource."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ClientError(f"Invalid URL {url!r}: {exc}") from None
    if parts.scheme != "ws":
        raise ClientError(f"Invalid URL {url!r}: expected ws://HOST[:PORT][/PATH]")
    if not parts.hostname:
        raise ClientError(f"Invalid URL {url!r}: no host")
    resource = parts.path or "/"
    if parts.query:
        resource += f"?{parts.query}"
    return parts.hostname, port if port is not None else 80, resource


def explain_connect_error(exc: OSError) -> str:
    """A short human reason for a failed TCP connect."""
    causes: list[BaseException] = [exc]
    if isinstance(exc.__cause__, BaseExceptionGroup):
        causes.extend(exc.__cause__.exceptions)
    if any(isinstance(cause, ConnectionRefusedError) for cause in causes):
        return "connection refused. Is the server running?"
    if isinstance(exc, socket.gaierror):
        return "unknown host"
    return exc.strerror or str(exc)


def is_exit_command(line: str) -> bool:
    """``exit`` in any case, surrounded by any spaces."""
    return line.strip().lower() == "exit"


class ChatClient:
    """One chat session against ``url``, shown on ``screen``, typed on ``input_fd``."""

    def __init__(self, url: str, screen: Screen, input_fd: int) -> None:
        self.url = url
        self._screen = screen
        self._input_fd = input_fd
        # The scope of the current phase (connecting, then chatting): cancelled when
        # the chat should end, from either side.
        self._phase_scope: trio.CancelScope | None = None
        self._leaving = False
        self._exit_status = 0

    def leave(self) -> None:
        """End the session at the user's wish: close with 1000, exit status 0."""
        self._leaving = True
        if self._phase_scope is not None:
            self._phase_scope.cancel()

    def _enter_phase(self) -> trio.CancelScope:
        """A new scope for the next phase, already cancelled if the user has left."""
        self._phase_scope = trio.CancelScope()
        if self._leaving:
            self._phase_scope.cancel()
        return self._phase_scope

    async def run(self) -> int:
        """Connect, chat until one side leaves, close; return the exit status.

        Owns the TCP stream, the WebSocket's reader task, the chat tasks and the
        signal watcher; all are closed or cancelled before this returns. SIGINT and
        SIGTERM are taken as the user leaving.
        """
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_signals, signals)
                try:
                    status = await self._session()
                except ClientError as exc:
                    self._screen.status(str(exc))
                    status = 1
                nursery.cancel_scope.cancel()
        self._screen.finish()
        return status

    async def _watch_signals(self, signals: AsyncIterator[int]) -> None:
        async for _ in signals:
            self.leave()

    async def _session(self) -> int:
        host, port, resource = parse_url(self.url)
        self._screen.status(f"Connecting to server at {self.url}...")
        with self._enter_phase():
            stream = await self._open_stream(host, port)
        if self._leaving:
            self._screen.status("Exiting chat...")
            return 0
        try:
            try:
                async with trio.open_nursery() as websocket_tasks:
                    await self._chat(websocket_tasks, stream, host, resource)
                    websocket_tasks.cancel_scope.cancel()
            except* ConnectionRejected as group:
                rejected = group.exceptions[0]
                assert isinstance(rejected, ConnectionRejected)
                body = (rejected.body or b"").decode(errors="replace").strip()
                detail = f" ({body})" if body else ""
                raise ClientError(
                    f"Could not connect to {self.url}: the server refused with HTTP "
                    f"{rejected.status_code}{detail}"
                ) from None
            except* ClientError as group:
                raise group.exceptions[0] from None
            except* HandshakeError:
                raise ClientError(f"Could not connect to {self.url}: handshake failed") from None
        finally:
            await trio.aclose_forcefully(stream)
        return self._exit_status

    async def _open_stream(self, host: str, port: int) -> trio.SocketStream:
        """Open the TCP connection, or raise :class:`ClientError` saying why not."""
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                return await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise ClientError(
                f"Could not connect to {self.url}: {explain_connect_error(exc)}"
            ) from None
        except trio.TooSlowError:
            raise ClientError(f"Could not connect to {self.url}: timed out") from None

    async def _chat(
        self, websocket_tasks: trio.Nursery, stream: trio.SocketStream, host: str, resource: str
    ) -> None:
        """Handshake, run the sender and the receiver until one ends the chat, then close.

        The WebSocket's reader task runs in ``websocket_tasks``; the caller cancels it.
        """
        with self._enter_phase():
            with trio.move_on_after(CONNECT_TIMEOUT) as handshake_scope:
                ws = await wrap_client_stream(
                    websocket_tasks,
                    stream,
                    host,
                    resource,
                    max_message_size=MAX_INCOMING_MESSAGE,
                )
            if handshake_scope.cancelled_caught:
                raise ClientError(f"Could not connect to {self.url}: the handshake timed out")
            self._screen.status("\N{WHITE HEAVY CHECK MARK} Connected to server!")
            self._screen.status("Start chatting (type messages and press Enter; 'exit' to quit)")
            self._screen.prompt()
            async with trio.open_nursery() as chat:
                chat.start_soon(self._receive_loop, ws)
                chat.start_soon(self._send_loop, ws)
        if self._leaving:
            self._screen.status("Exiting chat...")
            with trio.move_on_after(CLOSE_TIMEOUT):
                await ws.aclose(CloseCode.NORMAL_CLOSURE)

    async def _receive_loop(self, ws: WebSocketConnection) -> None:
        """Show every line the server sends; when the server closes, say how and end the chat."""
        try:
            while True:
                message = await ws.get_message()
                if isinstance(message, bytes):
                    self._screen.status(f"(a binary message of {len(message)} bytes)")
                    continue
                for line in message.split("\n"):
                    self._screen.incoming(line)
        except ConnectionClosed as closed:
            reason = closed.reason
            self._screen.status(
                "Server closed the connection: "
                + describe_close(reason.code if reason else None, reason.reason if reason else None)
            )
            self._exit_status = 1
            assert self._phase_scope is not None
            self._phase_scope.cancel()

    async def _send_loop(self, ws: WebSocketConnection) -> None:
        """Send each typed line until ``exit`` or end of input, then leave."""
        async for line in read_lines(self._input_fd):
            if is_exit_command(line):
                break
            if line.strip():
                try:
                    await ws.send_message(line)
                except ConnectionClosed:
                    return  # the receiver reports the close
            self._screen.prompt()
        self.leave()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The client's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_chat.client",
        description="Chat on a trio_chat server (or any server speaking plain text "
        "over WebSocket). Type a line and press Enter to send it; 'exit', Ctrl-D or "
        "Ctrl-C to leave.",
    )
    parser.add_argument(
        "url",
        nargs="?",
        default=DEFAULT_URL,
        help=f"the server's WebSocket URL (default: {DEFAULT_URL})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m trio_chat.client`` and ``trio-chat``.

    Exits 0 when the user leaves, 1 when the server closes the connection or cannot
    be reached.
    """
    args = parse_args(argv)
    client = ChatClient(
        args.url, Screen(), sys.stdin.fileno() if sys.stdin else os.open(os.devnull, os.O_RDONLY)
    )
    sys.exit(trio.run(client.run))


if __name__ == "__main__":
    main()
