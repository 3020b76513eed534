"""The server's side of the WebSocket protocol: the opening handshake and the frames.

The protocol work is sans-I/O and belongs to two libraries: h11 reads the HTTP
request head and writes the responses, and wsproto checks the upgrade, parses frames
and runs the close handshake. This module is the thin shell that feeds them the bytes
of one :class:`~trio_chat.server.net.stream.ConnectionStream` and writes what they
produce.

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
and a ``Sec-WebSocket-Key`` that is not 16 bytes in base64 400. h11 requires one ``Host``
header (400 otherwise); wsproto checks the rest (the ``Upgrade`` token among those of
``Connection``, a missing key or version).

:class:`WebSocket` is the :class:`~trio_chat.server.net.seam.ChatSocket` the chat uses.
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
    Pong,
    TextMessage,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from trio_chat.core.close import CloseCode
from trio_chat.core.redact import redact_text

from .seam import Address, Request
from .stream import ConnectionStream

__all__ = [
    "HEARTBEAT",
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


#: The payload of the server's heartbeat pings: apart from any payload a caller of
#: :meth:`WebSocket.ping` would choose, and short (every idle connection gets one).
HEARTBEAT = b"hb"

#: Fragments of one message held apart before they are joined: keeps a message sent in
#: thousands of tiny fragments at about its own size in memory.
MAX_PARTS = 64
#: Bytes written but not yet taken by the socket beyond which the reader waits for
#: the peer to read before it reads on (and answers more pings).
MAX_UNSENT_BYTES = 64 * 1024

#: Seconds, and bytes, a close that does not wait for the peer's answer still reads (and
#: drops, unparsed) what the peer sends: closing a socket with unread input sends a reset,
#: which can destroy the close frame, and what came before it, before the peer reads them.
#: A client that sent a paste too long gets its answer; one still flooding passes the
#: bytes at once and is hung up on (reading a flood costs CPU, even unparsed).
LINGER_SECONDS = 0.5
LINGER_BYTES = 256 * 1024

#: The answer to a plain HTTP request on the WebSocket port.
NOT_A_WEBSOCKET = "this port speaks WebSocket: connect with a WebSocket client"
#: The one WebSocket version there is (RFC 6455); a client asking for another is told so.
WEBSOCKET_VERSION = "13"
#: Bytes of nonce a client's Sec-WebSocket-Key carries, base64-encoded (RFC 6455, 4.1).
KEY_NONCE_BYTES = 16
#: The largest payload a control frame (a ping) may carry (RFC 6455, section 5.5).
MAX_CONTROL_PAYLOAD = 125


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
                # h11 quotes the offending line (a request line, a header): it may hold
                # a secret, so the answer leaves it out.
                text = redact_text(str(exc))
                await self.respond(exc.error_status_hint, f"bad HTTP request: {text}")
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
            # wsproto's texts name headers, never quote what the client sent.
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
        peer_address: Address | None = None,
        tls: bool = False,
    ) -> WebSocket | None:
        """Switch to the WebSocket protocol (answer 101) and return the WebSocket (None
        when the peer left meanwhile). :meth:`check` must have passed ``request``;
        ``subprotocol`` must be one the client offered, or None. ``peer_address`` and
        ``tls`` are what the WebSocket tells of its connection."""
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
        return WebSocket(
            protocol,
            self._stream,
            max_message_size,
            request=Request.of(request.target.decode("ascii"), request.headers),
            peer_address=peer_address,
            tls=tls,
        )

    async def respond(
        self, status: int, text: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        """Answer the request with ``status`` and ``text`` as a plain-text body (only
        the head for a HEAD request), and wait until the stream took it. The connection
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
        # A peer that already left gets no answer; the caller closes the stream.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._stream.write(data)
            await self._stream.flush()


class WebSocket:
    """An accepted WebSocket: wsproto's frame parser over a :class:`ConnectionStream`;
    the :class:`~trio_chat.server.net.seam.ChatSocket` of one client.

    Borrows the stream; :meth:`aclose` and :meth:`abort` close it. One task reads
    (:meth:`receive`, then :meth:`aclose`); any task may write frames, since every write
    goes whole through the stream's ordered buffer.
    """

    __slots__ = (
        "_failed",
        "_heartbeat_unanswered",
        "_max_message_size",
        "_parts",
        "_pings",
        "_protocol",
        "_size",
        "_stream",
        "close_code",
        "close_reason",
        "peer_address",
        "request",
        "tls",
    )

    def __init__(
        self,
        protocol: Connection,
        stream: ConnectionStream,
        max_message_size: int,
        *,
        request: Request,
        peer_address: Address | None = None,
        tls: bool = False,
    ) -> None:
        self._protocol = protocol
        self._stream = stream
        self._max_message_size = max_message_size
        #: The HTTP request that opened this WebSocket.
        self.request = request
        #: The peer's address; None when the stream is not over a socket.
        self.peer_address = peer_address
        #: True when the connection is encrypted.
        self.tls = tls
        # The message being received, in parts (None until a message comes in more than
        # one: most never do, and every open connection would keep an empty list), and
        # its size in bytes so far.
        self._parts: list[str | bytes] | None = None
        self._size = 0
        # Set when the peer broke the protocol: its frames can no longer be parsed.
        self._failed = False
        # Pings waiting for their pong, by payload, oldest first (made on first use:
        # most connections never ping).
        self._pings: dict[bytes, trio.Event] | None = None
        # Set while a heartbeat ping waits for its pong.
        self._heartbeat_unanswered = False
        #: How the WebSocket closed (or is closing): the code and reason of whichever
        #: side sent the first close frame, 1006 when the TCP connection just ended.
        self.close_code: int | None = None
        self.close_reason = ""

    @property
    def buffered(self) -> int:
        """Bytes written to the peer that its stream has not taken yet."""
        return self._stream.buffered

    def send_text(self, payload: bytes) -> None:
        """Queue one text message holding ``payload`` (UTF-8); never waits. Raises
        ``trio.BrokenResourceError`` when the peer is gone and
        ``trio.ClosedResourceError`` once a close frame was sent or received (nothing
        may follow it)."""
        if self._protocol.state is not ConnectionState.OPEN:
            raise trio.ClosedResourceError("the WebSocket is closing")
        self._stream.write(encode_text_frame(payload))

    async def flush(self) -> None:
        """Wait until the stream took everything sent so far. Raises
        ``trio.BrokenResourceError`` when the peer is gone. Cancel-safe: the rest stays
        queued, whole and in order."""
        await self._stream.flush()

    async def ping(self, payload: bytes) -> None:
        """Send a ping carrying ``payload`` and wait until :meth:`receive` meets its pong
        (or the pong of a later ping). The caller bounds the wait; cancelled, the ping
        stays sent and its pong is ignored. Raises ``ValueError`` for a payload over 125
        bytes or one already waiting, ``trio.ClosedResourceError`` when the WebSocket is
        closing or closes first, ``trio.BrokenResourceError`` when the peer is gone."""
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise ValueError(f"a ping carries at most {MAX_CONTROL_PAYLOAD} bytes")
        if self._protocol.state is not ConnectionState.OPEN:
            raise trio.ClosedResourceError("the WebSocket is closing")
        if self._pings is None:
            self._pings = {}
        pings = self._pings
        if payload in pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        pings[payload] = answered = trio.Event()
        try:
            self._stream.write(self._protocol.send(Ping(payload)))
            await answered.wait()
        finally:
            # A pong removes its ping before waking it; a close wakes it and leaves it.
            unanswered = pings.get(payload) is answered
            if unanswered:
                del pings[payload]
        if unanswered:
            raise trio.ClosedResourceError("the WebSocket closed before the pong")

    def send_heartbeat(self) -> None:
        """Send a heartbeat ping (payload :data:`HEARTBEAT`); never waits.
        :attr:`heartbeat_answered` is False until :meth:`receive` meets its pong. The
        connection's writer calls this, so no task waits per ping. Raises
        ``trio.ClosedResourceError`` once the WebSocket is closing and
        ``trio.BrokenResourceError`` when the peer is gone."""
        if self._protocol.state is not ConnectionState.OPEN:
            raise trio.ClosedResourceError("the WebSocket is closing")
        self._stream.write(self._protocol.send(Ping(HEARTBEAT)))
        self._heartbeat_unanswered = True

    @property
    def heartbeat_answered(self) -> bool:
        """False while the last heartbeat ping waits for its pong (True before the first)."""
        return not self._heartbeat_unanswered

    def _pong_received(self, payload: bytes) -> None:
        """A pong answers the ping with its payload and every ping sent before it (a
        heartbeat's pong answers the heartbeat)."""
        if payload == HEARTBEAT:
            self._heartbeat_unanswered = False
            return
        pings = self._pings
        if not pings or payload not in pings:
            return  # unsolicited (a heartbeat of the peer's own), or too late
        while pings:
            sent, answered = next(iter(pings.items()))
            del pings[sent]
            answered.set()
            if sent == payload:
                return

    def _closing(self) -> None:
        """Wake every ping still waiting: no pong will come."""
        if self._pings:
            for answered in self._pings.values():
                answered.set()

    async def receive(self) -> str | bytes | None:
        """The next whole message from the peer, or None once the WebSocket is closing.

        Answers pings and notes pongs on the way. A message over ``max_message_size``
        bytes closes the WebSocket with 1009, a protocol error with wsproto's code
        (1002, 1007); :attr:`close_code` then says why. Cancel-safe: a message half
        received stays in progress for the next call.
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
                        if self._stream.buffered > MAX_UNSENT_BYTES:
                            await self._wait_for_reader()
                elif isinstance(event, Pong):
                    self._pong_received(event.payload)
                elif isinstance(event, CloseConnection):
                    self._closed_by_peer(event)
                    return None
            data = await self._stream.receive_some()
            protocol.receive_data(data or None)  # None: the TCP connection ended

    async def _wait_for_reader(self) -> None:
        """Stop reading until the peer took what was sent to it: a peer that pings
        without reading the pongs must not grow our buffer."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._stream.flush()

    def _add_part(self, event: TextMessage | BytesMessage) -> str | bytes | None:
        """Add a received fragment; the whole message once it is complete."""
        raw = event.data
        data: str | bytes = bytes(raw) if isinstance(raw, bytearray) else raw
        if self.close_code is not None:
            return None  # we are closing: what the peer sends meanwhile is dropped
        # Bytes, not characters: a limit on what the peer may make us hold.
        if isinstance(data, str) and not data.isascii():
            self._size += len(data.encode())
        else:
            self._size += len(data)
        if self._size > self._max_message_size:
            self._parts = None
            self.start_close(
                CloseCode.MESSAGE_TOO_BIG,
                f"Exceeded maximum message size: {self._max_message_size} bytes",
            )
            return None
        if not event.message_finished:
            parts = self._parts
            if parts is None:
                parts = self._parts = []
            if data:
                parts.append(data)
            if len(parts) >= MAX_PARTS:
                # Many tiny fragments would cost an object each: join them as they come.
                parts[:] = [data[:0].join(parts)]  # type: ignore[arg-type]  # one type
            return None
        self._size = 0
        parts = self._parts
        if not parts:
            return data
        self._parts = None
        parts.append(data)
        return data[:0].join(parts)  # type: ignore[arg-type]  # one type

    def _closed_by_peer(self, event: CloseConnection) -> None:
        """The peer sent a close frame, the TCP connection ended, or a frame did not
        parse: answer as the protocol requires and note the code."""
        self._closing()
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
        self._closing()
        self.close_code, self.close_reason = code, reason or ""
        self._write(self._protocol.send(CloseConnection(code, reason)))

    def _write(self, frame: bytes) -> None:
        """Queue a control frame (pong, close). A peer that is gone cannot take it; the
        next read then finds the connection's end, so this need not say so."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            self._stream.write(frame)

    async def aclose(self, code: int, reason: str | None, *, wait_for_peer: bool = True) -> None:
        """Close with ``code`` and ``reason`` (unless a close already started), wait
        for the peer's close frame or the end of the TCP connection (unless not
        ``wait_for_peer``: a flooder's answer would come behind its flood; its bytes are
        then only drained, unparsed, for at most :data:`LINGER_SECONDS` and
        :data:`LINGER_BYTES`), then close the stream. The caller bounds the wait;
        cancelled, the stream is still closed."""
        try:
            self.start_close(code, reason)
            await self._stream.flush()
            if wait_for_peer and not self._failed:
                while self._protocol.state is not ConnectionState.CLOSED:
                    await self.receive()
            elif not wait_for_peer:
                drained = 0
                with trio.move_on_after(LINGER_SECONDS):
                    while drained <= LINGER_BYTES:
                        data = await self._stream.receive_some()
                        if not data:
                            break
                        drained += len(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            self._closing()
            await trio.aclose_forcefully(self._stream)

    async def hang_up(self, code: int, reason: str | None) -> bool:
        """Close for a peer that stopped answering: send a close frame with ``code`` and
        ``reason`` when the peer took everything sent before it, wait until the stream
        took that frame, then close the stream without waiting for an answer. True when
        the close frame was written; False when it could not be (bytes were still
        waiting for the peer: it is not reading, so the connection is just dropped).
        The caller bounds the wait; cancelled, the stream is still closed."""
        written = False
        try:
            if not self._stream.buffered:
                self.start_close(code, reason)
                await self._stream.flush()
                written = True
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            if self.close_code is None:
                self.close_code, self.close_reason = code, reason or ""
            await self.abort()
        return written

    async def abort(self) -> None:
        """Close the stream at once, without a close frame (for a peer that cannot take
        one). Idempotent."""
        self._closing()
        await trio.aclose_forcefully(self._stream)
