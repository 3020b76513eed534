"""The server's end of one TCP connection, with a write path that does not wait.

trio's ``SocketStream.send_all`` yields to the scheduler on every call, and
trio-websocket's ``send_message`` adds a lock (another yield) and a frame encoder in
Python. At 5,000 recipients per message those round trips were most of the fan-out's
cost. :class:`ConnectionStream` keeps trio-websocket for what it is good at (the
handshake, reading and parsing frames, pings, the close handshake) and gives the
connection's writer a direct path: :meth:`ConnectionStream.write` hands a whole frame to
the socket at once, without a checkpoint, and keeps whatever the socket did not take in
an ordered buffer that :meth:`ConnectionStream.flush` drains when the socket is writable.
Every write, ours and trio-websocket's (pongs, close frames), goes through that one
buffer in order, so frames never interleave, and a cancelled flush never leaves half a
frame behind: the rest is still in the buffer.
"""

from __future__ import annotations

import os
import struct

import trio

__all__ = ["ConnectionStream", "encode_text_frame"]

_SHORT = struct.Struct("!BB")
_MEDIUM = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")
#: FIN + text opcode: every frame the writer sends is one whole text message.
_TEXT = 0x81


def encode_text_frame(payload: bytes) -> bytes:
    """One unmasked (server-to-client) WebSocket text frame holding ``payload``
    (RFC 6455, section 5.2); ``payload`` must be UTF-8."""
    length = len(payload)
    if length < 126:
        return _SHORT.pack(_TEXT, length) + payload
    if length < 65536:
        return _MEDIUM.pack(_TEXT, 126, length) + payload
    return _LONG.pack(_TEXT, 127, length) + payload


class ConnectionStream(trio.abc.Stream):
    """A :class:`trio.SocketStream` whose writes never wait unless asked to.

    Owns the socket stream: :meth:`aclose` closes it. ``prefix`` is data already read
    from the socket (by whoever looked at the request first), returned before anything
    else is read.
    """

    def __init__(self, stream: trio.SocketStream, prefix: bytes = b"") -> None:
        self._stream = stream
        self.socket = stream.socket
        self._prefix = prefix
        self._pending = bytearray()
        # Set while one task drains the buffer; others wait for it instead of
        # waiting on the socket themselves (trio allows one waiter per direction).
        self._draining: trio.Event | None = None
        self._closed = False

    @property
    def buffered(self) -> int:
        """Bytes written but not yet taken by the socket."""
        return len(self._pending)

    def write(self, data: bytes) -> None:
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

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write ``data`` and wait until the socket has taken it (what trio-websocket
        uses for the handshake, pongs and close frames)."""
        self.write(bytes(data))
        await self.flush()

    async def wait_send_all_might_not_block(self) -> None:
        await self.flush()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            size = max_bytes or len(self._prefix)
            data, self._prefix = self._prefix[:size], self._prefix[size:]
            await trio.lowlevel.checkpoint()
            return data
        return await self._stream.receive_some(max_bytes)

    async def aclose(self) -> None:
        """Close the socket; anything still queued is dropped. Idempotent."""
        self._closed = True
        self._pending.clear()
        await self._stream.aclose()
