"""The server's end of one connection's byte stream, with a write path that never waits.

A WebSocket library's send awaits the stream on every frame: a lock (a yield), a frame
encoder in Python, then ``send_all`` (another yield, for trio's ``SocketStream``). At
5,000 recipients per message those round trips were most of the fan-out's cost. Here
:meth:`ConnectionStream.write` queues a whole frame without a checkpoint, and
:meth:`ConnectionStream.flush` waits until the stream has taken everything written so
far. Every write (chat frames, the handshake's answer, pongs, close frames) goes
through that one ordered buffer, so frames never interleave.

:func:`open_connection_stream` picks one of two implementations:

* :class:`DirectSocketStream`, for a plain ``trio.SocketStream``: ``write`` hands the
  bytes to the socket at once (``os.write``, no yield) and keeps what the socket did not
  take; ``flush`` waits for the socket to be writable and goes on. A cancelled flush
  leaves the rest queued, whole and in order: nothing is lost or cut.
* :class:`SenderTaskStream`, for any other ``trio.abc.Stream`` (``trio.SSLStream``,
  ``trio.testing`` memory streams): ``write`` appends to the buffer and wakes a sender
  task that owns the stream's ``send_all``; ``flush`` only waits for that task. A
  cancelled flush therefore cancels no ``send_all`` and leaves the buffer as whole as
  above. trio leaves a stream whose ``send_all`` was cancelled half way in an unknown
  state (``SSLStream`` marks itself broken), so the sender's ``send_all`` is cancelled
  only when the connection is being dropped anyway, as :func:`open_connection_stream`
  exits. A ``send_all`` that fails breaks the stream for good: later writes and flushes
  raise ``trio.BrokenResourceError``, and the connection must be dropped.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from .seam import Address

__all__ = [
    "RECEIVE_SIZE",
    "ConnectionStream",
    "DirectSocketStream",
    "SenderTaskStream",
    "describe_transport",
    "open_connection_stream",
]

#: Bytes asked of the stream per read: a few chat lines usually come at once; a
#: large message takes several reads.
RECEIVE_SIZE = 16 * 1024


class ConnectionStream(trio.abc.AsyncResource):
    """The byte stream of one connection, as the WebSocket layer uses it: ordered writes
    that never wait, a flush that waits, reads that wait."""

    __slots__ = ()

    @property
    @abstractmethod
    def buffered(self) -> int:
        """Bytes written but not yet taken by the stream."""

    @abstractmethod
    def write(self, data: bytes | bytearray) -> None:
        """Queue ``data`` after everything written before; never blocks, never yields.
        Raises ``trio.ClosedResourceError`` after :meth:`aclose` and
        ``trio.BrokenResourceError`` once the stream is broken (the peer is gone)."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until the stream has taken everything written so far. Cancel-safe:
        whatever is left stays queued, whole and in order."""

    @abstractmethod
    async def receive_some(self) -> bytes:
        """Up to :data:`RECEIVE_SIZE` bytes, waiting for them; ``b""`` once the peer is
        gone (an orderly end or a reset: either way nothing more will come)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the stream; anything still queued is dropped. Idempotent."""


def open_connection_stream(
    stream: trio.abc.Stream,
) -> AbstractAsyncContextManager[ConnectionStream]:
    """``stream`` as a :class:`ConnectionStream`, to enter with ``async with``: the
    direct socket path for a plain ``trio.SocketStream``, a sender task for any other.

    The context owns ``stream`` and closes it on the way out, dropping whatever is still
    queued (a caller that wants its last frames delivered flushes them first). For the
    sender task it opens a nursery, whose task is cancelled on the way out.
    """
    if isinstance(stream, trio.SocketStream):
        # Only the socket is used from here on: trio's SocketStream set it up
        # (TCP_NODELAY), and its send_all would yield on every frame. No context of
        # its own either: every open connection would keep it, at a few hundred bytes.
        return DirectSocketStream(stream.socket)
    return _sender_task_stream(stream)


@asynccontextmanager
async def _sender_task_stream(stream: trio.abc.Stream) -> AsyncIterator[ConnectionStream]:
    sender = SenderTaskStream(stream)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender.send_queued)
            try:
                yield sender
            finally:
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(sender)


def describe_transport(stream: trio.abc.Stream) -> tuple[Address | None, bool]:
    """The peer's address (None when ``stream`` is not over a socket, or the peer already
    left) and whether ``stream`` is encrypted (a ``trio.SSLStream`` on the way down)."""
    tls = False
    while isinstance(stream, trio.SSLStream):
        tls = True
        stream = stream.transport_stream
    if not isinstance(stream, trio.SocketStream):
        return None, tls
    try:
        address = stream.socket.getpeername()
    except OSError:  # the peer already left
        return None, tls
    if isinstance(address, tuple) and len(address) >= 2:
        return Address(str(address[0]), int(address[1])), tls
    return None, tls


class DirectSocketStream(ConnectionStream):
    """The server's end of one plain TCP connection: reads that wait, writes that do not.

    Owns ``socket`` (a connected, non-blocking trio socket): :meth:`aclose` closes it.
    """

    __slots__ = ("_closed", "_draining", "_pending", "socket")

    def __init__(self, socket: trio.socket.SocketType) -> None:
        self.socket = socket
        # What the socket did not take yet; None while nothing waits (most connections
        # most of the time: an empty buffer each would cost every open connection).
        self._pending: bytearray | None = None
        # Set while one task drains the buffer; others wait for it instead of
        # waiting on the socket themselves (trio allows one waiter per direction).
        self._draining: trio.Event | None = None
        self._closed = False

    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket."""
        return 0 if self._pending is None else len(self._pending)

    def write(self, data: bytes | bytearray) -> None:
        """Queue ``data`` after everything written before, and give the socket what it
        takes right now. Never blocks and never yields. Raises ``trio.ClosedResourceError``
        after :meth:`aclose` and ``trio.BrokenResourceError`` when the peer is gone."""
        if self._closed:
            raise trio.ClosedResourceError("the connection is closed")
        pending = self._pending
        if pending:
            pending += data
            return
        sent = self._send(data)
        if sent < len(data):
            self._pending = bytearray(memoryview(data)[sent:])

    async def flush(self) -> None:
        """Wait until the socket has taken everything written so far.

        Cancel-safe: whatever is left stays queued, whole and in order.
        """
        if not self._pending:
            await trio.lowlevel.checkpoint()
            return
        while self._pending:
            if self._draining is not None:
                await self._draining.wait()
                continue
            self._draining = draining = trio.Event()
            try:
                # While bytes wait, writes append to this same buffer.
                while pending := self._pending:
                    await trio.lowlevel.wait_writable(self.socket)
                    del pending[: self._send(pending)]
                self._pending = None  # drained: let go of its memory
            finally:
                self._draining = None
                draining.set()

    def _send(self, data: bytes | bytearray) -> int:
        if self._closed:
            raise trio.ClosedResourceError("the connection is closed")
        try:
            return os.write(self.socket.fileno(), data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise trio.BrokenResourceError(f"the peer is gone: {exc}") from exc

    async def receive_some(self) -> bytes:
        """Up to RECEIVE_SIZE bytes, waiting for them; b"" once the peer is gone
        (an orderly end or a reset: either way nothing more will come)."""
        try:
            return await self.socket.recv(RECEIVE_SIZE)
        except (ConnectionResetError, ConnectionAbortedError, TimeoutError):
            return b""

    async def aclose(self) -> None:
        """Close the socket; anything still queued is dropped. Idempotent."""
        self._closed = True
        self._pending = None
        self.socket.close()
        await trio.lowlevel.checkpoint()


class SenderTaskStream(ConnectionStream):
    """Any ``trio.abc.Stream``, with writes that do not wait: :meth:`send_queued` (a task
    of its own) sends what :meth:`write` queued, in order, one ``send_all`` at a time.

    Owns ``stream``: :meth:`aclose` closes it.
    """

    __slots__ = (
        "_closed",
        "_failure",
        "_in_flight",
        "_pending",
        "_queued",
        "_sent",
        "_stream",
        "_written",
        "_wrote",
    )

    def __init__(self, stream: trio.abc.Stream) -> None:
        self._stream = stream
        self._pending = bytearray()
        # Bytes handed to the sender's current send_all, and counters of bytes written
        # and sent so far: flush() waits for _sent to reach what _written was.
        self._in_flight = 0
        self._written = 0
        self._sent = 0
        # Set when there is something to send (wakes the sender); set again, and
        # replaced, each time a send_all ends (wakes flushes).
        self._queued = trio.Event()
        self._wrote = trio.Event()
        # Why the stream cannot take more: a failed send_all, or aclose().
        self._failure: trio.BrokenResourceError | trio.ClosedResourceError | None = None
        self._closed = False

    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the stream (the send in flight included)."""
        return len(self._pending) + self._in_flight

    def write(self, data: bytes | bytearray) -> None:
        """Queue ``data`` after everything written before and wake the sender. Never
        blocks and never yields. Raises ``trio.ClosedResourceError`` after :meth:`aclose`
        and ``trio.BrokenResourceError`` once a send failed."""
        self._raise_failure()
        self._pending += data
        self._written += len(data)
        self._queued.set()

    async def flush(self) -> None:
        """Wait until the stream has taken everything written so far; raises
        ``trio.BrokenResourceError`` when a send fails meanwhile.

        Cancel-safe: it only waits for the sender task, whose send goes on; nothing is
        lost or cut.
        """
        target = self._written
        if self._sent >= target:
            await trio.lowlevel.checkpoint()
            return
        while self._sent < target:
            self._raise_failure()
            await self._wrote.wait()

    async def send_queued(self) -> None:
        """Send what is queued, in order, until cancelled or until a send fails (every
        later write and flush then raises ``trio.BrokenResourceError``).

        Cancelled in the middle of a send_all, the stream is left in an unknown state:
        the caller cancels this only to drop the connection (and closes the stream).
        """
        try:
            while True:
                if not self._pending:
                    self._queued = trio.Event()
                    await self._queued.wait()
                    continue
                data, self._pending = self._pending, bytearray()
                self._in_flight = len(data)
                try:
                    await self._stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    if self._failure is None:
                        self._failure = trio.BrokenResourceError(f"the peer is gone: {exc!r}")
                    return
                self._sent += len(data)
                self._in_flight = 0
                self._wake_flushes()
        finally:
            if self._failure is None:
                self._failure = trio.ClosedResourceError("the connection is closed")
            self._pending.clear()
            self._in_flight = 0
            self._wake_flushes()

    def _wake_flushes(self) -> None:
        self._wrote.set()
        self._wrote = trio.Event()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            # A new exception each time: one raised twice would grow its traceback.
            raise type(self._failure)(*self._failure.args)

    async def receive_some(self) -> bytes:
        """Up to RECEIVE_SIZE bytes, waiting for them; b"" once the peer is gone."""
        try:
            data = await self._stream.receive_some(RECEIVE_SIZE)
        except trio.BrokenResourceError:
            return b""
        return data if isinstance(data, bytes) else bytes(data)

    async def aclose(self) -> None:
        """Close the stream; anything still queued is dropped, a send in flight ends
        with the stream. Idempotent."""
        if self._failure is None or isinstance(self._failure, trio.BrokenResourceError):
            self._failure = trio.ClosedResourceError("the connection is closed")
        self._pending.clear()
        self._wake_flushes()
        if not self._closed:
            self._closed = True
            await trio.aclose_forcefully(self._stream)
        else:
            await trio.lowlevel.checkpoint()
