"""The server's side of the WebSocket protocol: the opening handshake and the frames.

The protocol work is sans-I/O and belongs to two libraries: h11 reads the HTTP
request head and writes the responses, and wsproto checks the upgrade, parses frames
and runs the close handshake. This module is the thin shell that feeds them the bytes
of one :class:`~trio_chat.transport.ConnectionStream` and writes what they produce.

trio-websocket (which the client uses) was the server's shell until idle connections
had to get cheap: it runs its own reader task per connection, hands each message over
a memory channel, and keeps the whole handshake state (an h11 connection, its buffers,
the request) for the life of the connection. Here the task that accepted the
connection reads its frames itself, a message is returned straight from
:meth:`WebSocket.receive`, and after the handshake only wsproto's frame parser stays.

:class:`Handshake` is also where plain HTTP is told apart from an upgrade, and where an
upgrade is held to RFC 6455, section 4.2 (:func:`upgrade_refusal`): a method other than
GET gets 405, a request without ``Upgrade: websocket`` 426 and a line saying what this
port speaks, HTTP/1.0 400, a ``Sec-WebSocket-Version`` other than 13 gets 426 naming 13,
and a ``Sec-WebSocket-Key`` that is not 16 bytes in base64 400. wsproto checks the rest
(``Connection: Upgrade``, ``Host``, a missing key or version).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import struct
from collections.abc import Sequence
from http import HTTPStatus
from typing import NamedTuple

import h11
import trio
from wsproto.connection import Connection, ConnectionState, ConnectionType
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    TextMessage,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from trio_chat.core.close import CloseCode

from .stream import ConnectionStream

__all__ = [
    "NOT_A_WEBSOCKET",
    "WEBSOCKET_VERSION",
    "Handshake",
    "Refusal",
    "WebSocket",
    "encode_text_frame",
    "is_websocket_upgrade",
    "offered_subprotocols",
    "upgrade_refusal",
]

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


#: Fragments of one message held apart before they are joined: keeps a message sent in
#: thousands of tiny fragments at about its own size in memory.
MAX_PARTS = 64
#: Bytes written but not yet taken by the socket beyond which the reader waits for
#: the peer to read before it reads on (and answers more pings).
MAX_UNSENT_BYTES = 64 * 1024

#: The answer to a plain HTTP request on the WebSocket port.
NOT_A_WEBSOCKET = "this port speaks WebSocket: connect with a WebSocket client"
#: The one WebSocket version there is (RFC 6455); a client asking for another is told so.
WEBSOCKET_VERSION = "13"
#: Bytes of nonce a client's Sec-WebSocket-Key carries, base64-encoded (RFC 6455, 4.1).
KEY_NONCE_BYTES = 16


class Refusal(NamedTuple):
    """An HTTP answer that refuses a request: status, one line of text, extra headers."""

    status: int
    text: str
    headers: tuple[tuple[str, str], ...] = ()


def is_websocket_upgrade(request: h11.Request) -> bool:
    """True when ``request`` asks to switch to the WebSocket protocol."""
    return any(
        name == b"upgrade" and value.strip().lower() == b"websocket"
        for name, value in request.headers
    )


def _header_values(request: h11.Request, name: bytes) -> list[bytes]:
    return [value for key, value in request.headers if key == name]


def _is_websocket_key(key: bytes) -> bool:
    """True when ``key`` is 16 bytes in base64, as RFC 6455 (section 4.1) has it."""
    try:
        nonce = base64.b64decode(key, validate=True)
    except binascii.Error:
        return False
    return len(nonce) == KEY_NONCE_BYTES and len(key) == len(base64.b64encode(nonce))


def upgrade_refusal(request: h11.Request) -> Refusal | None:
    """Why ``request`` cannot open a WebSocket, as the answer to send (RFC 6455, section
    4.2.1), or None when it passes these checks. Sans-I/O; wsproto checks the rest."""
    if request.method != b"GET":
        return Refusal(405, "only GET is allowed: this port speaks WebSocket", (("allow", "GET"),))
    if not is_websocket_upgrade(request):
        return Refusal(426, NOT_A_WEBSOCKET, (("upgrade", "websocket"),))
    if request.http_version < b"1.1":
        return Refusal(400, "bad WebSocket handshake: HTTP/1.1 or later is required")
    versions = _header_values(request, b"sec-websocket-version")
    if any(version != WEBSOCKET_VERSION.encode() for version in versions):
        return Refusal(
            426,
            f"bad WebSocket handshake: unsupported Sec-WebSocket-Version"
            f" (this server speaks {WEBSOCKET_VERSION})",
            (("sec-websocket-version", WEBSOCKET_VERSION),),
        )
    keys = _header_values(request, b"sec-websocket-key")
    if keys and (len(keys) > 1 or not _is_websocket_key(keys[0])):
        return Refusal(
            400,
            f"bad WebSocket handshake: Sec-WebSocket-Key must be {KEY_NONCE_BYTES} bytes,"
            " base64-encoded",
        )
    return None


def offered_subprotocols(request: h11.Request) -> list[str]:
    """The subprotocols the client offered, in its order."""
    return [
        token.strip().decode("ascii", "replace")
        for name, value in request.headers
        if name == b"sec-websocket-protocol"
        for token in value.split(b",")
    ]


class Handshake:
    """The HTTP part of a new connection: one request, then a WebSocket or an answer.

    Borrows ``stream`` (the caller closes it). Every method may be cancelled; the
    caller then drops the connection.
    """

    __slots__ = ("_head", "_http", "_stream", "_upgrade")

    def __init__(self, stream: ConnectionStream) -> None:
        self._stream = stream
        # h11 bounds the request head (16 KiB) and answers 431 beyond it.
        self._http = h11.Connection(h11.SERVER)
        # wsproto's half of the handshake, once check() found the request valid.
        self._upgrade: H11Handshake | None = None
        # A HEAD request's answer has no body.
        self._head = False

    async def read_request(self) -> h11.Request | None:
        """The request head; None when the peer left first, or sent something that is
        not HTTP (it then gets a 4xx answer saying why)."""
        http = self._http
        while True:
            try:
                event = http.next_event()
            except h11.RemoteProtocolError as exc:
                await self.respond(exc.error_status_hint, f"bad HTTP request: {exc}")
                return None
            if event is h11.NEED_DATA:
                http.receive_data(await self._stream.receive_some())
                continue
            if isinstance(event, h11.Request):
                self._head = event.method == b"HEAD"
                return event
            return None  # the peer closed before sending a whole request

    def check(self, request: h11.Request) -> Refusal | None:
        """Why ``request`` cannot open a WebSocket (:func:`upgrade_refusal`, then
        wsproto's checks of the upgrade headers), or None when :meth:`accept` may
        answer it. Never waits."""
        refusal = upgrade_refusal(request)
        if refusal is not None:
            return refusal
        upgrade = H11Handshake(ConnectionType.SERVER)
        try:
            upgrade.initiate_upgrade_connection(list(request.headers), request.target)
        except RemoteProtocolError as exc:
            return Refusal(400, f"bad WebSocket handshake: {exc}")
        except UnicodeError:  # wsproto decodes the Host header as IDNA
            return Refusal(400, "bad WebSocket handshake: the Host header is not a host name")
        self._upgrade = upgrade
        return None

    async def accept(
        self,
        request: h11.Request,
        *,
        subprotocol: str | None,
        max_message_size: int,
    ) -> WebSocket | None:
        """Switch to the WebSocket protocol (answer 101) and return the WebSocket (None
        when the peer left meanwhile). :meth:`check` must have passed ``request``;
        ``subprotocol`` must be one the client offered, or None."""
        upgrade = self._upgrade
        if upgrade is None:
            raise RuntimeError("accept() needs a request that check() passed")
        answer = upgrade.send(AcceptConnection(subprotocol=subprotocol))
        protocol = upgrade.connection
        assert protocol is not None
        # Bytes the client sent after its request (frames, already) are the
        # WebSocket's first input.
        trailing, _ = self._http.trailing_data
        if trailing:
            protocol.receive_data(trailing)
        try:
            self._stream.write(answer)
            await self._stream.flush()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return None  # the peer left before the answer: nothing to serve
        return WebSocket(protocol, self._stream, max_message_size)

    async def respond(
        self, status: int, text: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Answer the request with ``status`` and ``text`` as a plain-text body (only
        the head for a HEAD request), and wait until the socket took it. The connection
        is closed after this."""
        body = f"{text}\n".encode()
        http = self._http
        try:
            data = http.send(
                h11.Response(
                    status_code=status,
                    reason=HTTPStatus(status).phrase,
                    headers=[
                        ("content-type", "text/plain; charset=utf-8"),
                        ("content-length", str(len(body))),
                        ("connection", "close"),
                        *headers,
                    ],
                )
            )
            data = data or b""
            if not self._head:
                data += http.send(h11.Data(data=body)) or b""
            data += http.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            return  # too late to answer (the peer left mid-request): just close
        # A peer that already left gets no answer; the caller closes the socket.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._stream.write(data)
            await self._stream.flush()


class WebSocket:
    """An accepted WebSocket: wsproto's frame parser over a :class:`ConnectionStream`.

    Borrows the stream; :meth:`aclose` closes it. One task reads (:meth:`receive`,
    then :meth:`aclose`); any task may write frames, since every write goes whole
    through the stream's ordered buffer.
    """

    __slots__ = (
        "_failed",
        "_max_message_size",
        "_parts",
        "_protocol",
        "_size",
        "close_code",
        "close_reason",
        "stream",
    )

    def __init__(
        self, protocol: Connection, stream: ConnectionStream, max_message_size: int
    ) -> None:
        self._protocol = protocol
        self.stream = stream
        self._max_message_size = max_message_size
        # The message being received, in parts, and its size in bytes so far.
        self._parts: list[str | bytes] = []
        self._size = 0
        # Set when the peer broke the protocol: its frames can no longer be parsed.
        self._failed = False
        #: How the WebSocket closed (or is closing): the code and reason of whichever
        #: side sent the first close frame, 1006 when the TCP connection just ended.
        self.close_code: int | None = None
        self.close_reason = ""

    def send_text(self, payload: bytes) -> None:
        """Queue one text message holding ``payload`` (UTF-8); never waits. Raises
        ``trio.BrokenResourceError`` when the peer is gone and
        ``trio.ClosedResourceError`` once a close frame was sent or received (nothing
        may follow it)."""
        if self._protocol.state is not ConnectionState.OPEN:
            raise trio.ClosedResourceError("the WebSocket is closing")
        self.stream.write(encode_text_frame(payload))

    async def receive(self) -> str | bytes | None:
        """The next whole message from the peer, or None once the WebSocket is closing.

        Answers pings on the way. A message over ``max_message_size`` bytes closes the
        WebSocket with 1009, a protocol error with wsproto's code (1002, 1007);
        :attr:`close_code` then says why. Cancel-safe: a message half received stays
        in progress for the next call.
        """
        protocol = self._protocol
        while True:
            for event in protocol.events():
                if isinstance(event, (TextMessage, BytesMessage)):
                    message = self._add_part(event)
                    if message is not None:
                        return message
                    if self.close_code is not None:
                        return None
                elif isinstance(event, Ping):
                    # Once closing, a ping gets no pong (wsproto refuses to send one).
                    if protocol.state is ConnectionState.OPEN:
                        self._write(protocol.send(event.response()))
                        if self.stream.buffered > MAX_UNSENT_BYTES:
                            await self._wait_for_reader()
                elif isinstance(event, CloseConnection):
                    self._closed_by_peer(event)
                    return None
                # Pongs need no answer.
            data = await self.stream.receive_some()
            protocol.receive_data(data or None)  # None: the TCP connection ended

    async def _wait_for_reader(self) -> None:
        """Stop reading until the peer took what was sent to it: a peer that pings
        without reading the pongs must not grow our buffer."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self.stream.flush()

    def _add_part(self, event: TextMessage | BytesMessage) -> str | bytes | None:
        """Add a received fragment; the whole message once it is complete."""
        data = event.data
        if self.close_code is not None:
            return None  # we are closing: what the peer sends meanwhile is dropped
        # Bytes, not characters: a limit on what the peer may make us hold.
        if isinstance(data, str) and not data.isascii():
            self._size += len(data.encode())
        else:
            self._size += len(data)
        if self._size > self._max_message_size:
            self._parts.clear()
            self.start_close(
                CloseCode.MESSAGE_TOO_BIG,
                f"Exceeded maximum message size: {self._max_message_size} bytes",
            )
            return None
        if not event.message_finished:
            parts = self._parts
            if data:
                parts.append(data)
            if len(parts) >= MAX_PARTS:
                # Many tiny fragments would cost an object each: join them as they come.
                parts[:] = [data[:0].join(parts)]  # type: ignore[arg-type]  # one type
            return None
        self._size = 0
        if not self._parts:
            return data
        self._parts.append(data)
        message = data[:0].join(self._parts)  # type: ignore[arg-type]  # one type
        self._parts.clear()
        return message

    def _closed_by_peer(self, event: CloseConnection) -> None:
        """The peer sent a close frame, the TCP connection ended, or a frame did not
        parse: answer as the protocol requires and note the code."""
        state = self._protocol.state
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer started the close handshake: echo its code, and we are done.
            self._write(self._protocol.send(event.response()))
        elif state is ConnectionState.OPEN:
            # wsproto could not parse a frame: fail the connection with its code.
            self._failed = True
            self.start_close(event.code, event.reason or "")
            return
        if self.close_code is None:
            self.close_code, self.close_reason = event.code, event.reason or ""

    def start_close(self, code: int, reason: str | None) -> None:
        """Send a close frame with ``code`` and ``reason`` unless either side already
        started closing; never waits. :meth:`aclose` waits for the answer."""
        if self._protocol.state is not ConnectionState.OPEN:
            return
        self.close_code, self.close_reason = code, reason or ""
        self._write(self._protocol.send(CloseConnection(code, reason)))

    def _write(self, frame: bytes) -> None:
        """Queue a control frame (pong, close). A peer that is gone cannot take it; the
        next read then finds the connection's end, so this need not say so."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self.stream.write(frame)

    async def aclose(self, code: int, reason: str | None) -> None:
        """Close with ``code`` and ``reason`` (unless a close already started), wait
        for the peer's close frame or the end of the TCP connection, then close the
        stream. The caller bounds the wait; cancelled, the stream is still closed."""
        try:
            self.start_close(code, reason)
            await self.stream.flush()
            if not self._failed:
                while self._protocol.state is not ConnectionState.CLOSED:
                    await self.receive()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(self.stream)
