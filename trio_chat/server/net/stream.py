"""The server's end of one TCP connection, with a write path that does not wait.

trio's ``SocketStream.send_all`` yields to the scheduler on every call, and a
WebSocket library's send adds a lock (another yield) and a frame encoder in Python. At
5,000 recipients per message those round trips were most of the fan-out's cost.
:meth:`ConnectionStream.write` hands a whole frame to the socket at once, without a
checkpoint, and keeps whatever the socket did not take in an ordered buffer that
:meth:`ConnectionStream.flush` drains when the socket is writable. Every write (chat
frames, the handshake's answer, pongs, close frames) goes through that one buffer in
order, so frames never interleave, and a cancelled flush never leaves half a frame
behind: the rest is still in the buffer.
"""

from __future__ import annotations

import os

import trio

__all__ = ["ConnectionStream"]

#: Bytes asked of the socket per read: a few chat lines usually come at once; a
#: large message takes several reads.
RECEIVE_SIZE = 16 * 1024


class ConnectionStream:
    """The server's end of one TCP connection: reads that wait, writes that do not.

    Owns ``socket`` (a connected, non-blocking trio socket): :meth:`aclose` closes it.
    """

    __slots__ = ("_closed", "_draining", "_pending", "socket")

    def __init__(self, socket: trio.socket.SocketType) -> None:
        self.socket = socket
        self._pending = bytearray()
        # Set while one task drains the buffer; others wait for it instead of
        # waiting on the socket themselves (trio allows one waiter per direction).
        self._draining: trio.Event | None = None
        self._closed = False

    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket."""
        return len(self._pending)

    def write(self, data: bytes | bytearray) -> None:
        """Queue ``data`` after everything written before, and give the socket what it
        takes right now. Never blocks and never yields. Raises ``trio.ClosedResourceError``
        after :meth:`aclose` and ``trio.BrokenResourceError`` when the peer is gone."""
        if self._closed:
            raise trio.ClosedResourceError("the connection is closed")
        if self._pending:
            self._pending += data
            return
        sent = self._send(data)
        if sent < len(data):
            self._pending += memoryview(data)[sent:]

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
                while self._pending:
                    await trio.lowlevel.wait_writable(self.socket)
                    sent = self._send(self._pending)
                    del self._pending[:sent]
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
        self._pending.clear()
        self.socket.close()
        await trio.lowlevel.checkpoint()
