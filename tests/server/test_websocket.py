"""The server's WebSocket layer (h11 + wsproto), byte for byte, against a real server.

Rules: the server runs in-process on 127.0.0.1, port 0. Most clients here are raw TCP
streams, so that the test writes exactly the bytes it means (a request that is not
HTTP, an unmasked frame, a message in fragments) and checks exactly the bytes it gets:
HTTP answers are parsed with h11, the server's frames with wsproto's frame parser.
The independent ``websockets`` library checks the same layer once more. Every wait is
for an event (an answer, a frame, a closed socket, a log line) under
``trio.fail_after(EVENT_TIMEOUT)``, never a sleep; expected strings are exact.
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager

import h11
import pytest
import trio
import trio.testing
from websockets.frames import Close
from websockets.sync.client import connect
from wsproto.frame_protocol import FrameProtocol, Opcode

from trio_chat.core.redact import redact_text
from trio_chat.server.net.seam import Address, ChatSocket
from trio_chat.server.net.stream import describe_transport, open_connection_stream
from trio_chat.server.net.websocket import Handshake, WebSocket, encode_text_frame
from trio_chat.server.server import ChatServer

from support import EVENT_TIMEOUT, local_port, open_client, receive, say, transport_pair

StartServer = Callable[..., Awaitable[ChatServer]]

#: The key and the answer to it from RFC 6455, section 1.3.
WEBSOCKET_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
WEBSOCKET_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#: The masking key of every frame the raw clients send.
MASK = b"\x37\xfa\x21\x3d"
#: What the first write of a TLS client looks like to a plain-TCP server.
TLS_HELLO = b"\x16\x03\x01 hello\r\n\r\n"


# --- raw HTTP ----------------------------------------------------------------------------------


async def read_response(stream: trio.abc.Stream) -> tuple[h11.Response, bytes]:
    """The server's whole HTTP response on ``stream``: its head and its body. Nothing
    may follow the body in what was read."""
    http = h11.Connection(h11.CLIENT)
    response: h11.Response | None = None
    body = b""
    with trio.fail_after(EVENT_TIMEOUT):
        while True:
            event = http.next_event()
            if event is h11.NEED_DATA:
                http.receive_data(bytes(await stream.receive_some()))
            elif isinstance(event, h11.Response):
                response = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                break
            else:
                pytest.fail(f"unexpected {event!r} before the end of the response")
    assert response is not None
    assert http.trailing_data == (b"", False), "bytes after the response"
    return response, body


def headers_of(response: h11.Response | h11.InformationalResponse) -> dict[bytes, bytes]:
    """The response's headers by (lower-case) name."""
    return dict(response.headers)


async def expect_eof(stream: trio.abc.Stream) -> None:
    """The server closes ``stream`` and sends nothing more first."""
    with trio.fail_after(EVENT_TIMEOUT):
        assert await stream.receive_some() == b""


def get_request(*headers: str, request_line: str = "GET / HTTP/1.1") -> bytes:
    """The bytes of a ``GET /`` request (or ``request_line``) with exactly ``headers``
    (``Name: value``)."""
    return "".join(f"{line}\r\n" for line in (request_line, *headers, "")).encode()


#: The headers of a valid upgrade request, but for the key.
UPGRADE_HEADERS = ("Host: 127.0.0.1", "Upgrade: websocket", "Connection: Upgrade")


def upgrade_request(
    *,
    request_line: str = "GET / HTTP/1.1",
    key: str | None = WEBSOCKET_KEY,
    version: str | None = "13",
    extra: tuple[str, ...] = (),
) -> bytes:
    """An upgrade request, valid unless told otherwise: ``key`` and ``version`` are the
    Sec-WebSocket-Key and Sec-WebSocket-Version sent (None: none)."""
    headers = list(UPGRADE_HEADERS)
    if key is not None:
        headers.append(f"Sec-WebSocket-Key: {key}")
    if version is not None:
        headers.append(f"Sec-WebSocket-Version: {version}")
    return get_request(*headers, *extra, request_line=request_line)


async def answer_to(port: int, request: bytes) -> bytes:
    """Every byte the server on ``port`` sends in answer to ``request``, up to its close."""
    received = b""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        await stream.send_all(request)
        with trio.fail_after(EVENT_TIMEOUT):
            while data := await stream.receive_some():
                received += data
    return received


def plain_answer(status: str, body: bytes, *headers: bytes) -> bytes:
    """The bytes of the server's plain-text answer: ``status`` (``405 Method Not
    Allowed``), its usual headers, ``headers``, then ``body``."""
    return (
        f"HTTP/1.1 {status}\r\n".encode()
        + b"content-type: text/plain; charset=utf-8\r\n"
        + f"content-length: {len(body)}\r\n".encode()
        + b"connection: close\r\n"
        + b"".join(header + b"\r\n" for header in headers)
        + b"\r\n"
        + body
    )


def h11_error(data: bytes) -> str:
    """What h11 (the server's HTTP parser) says about ``data`` as a request."""
    http = h11.Connection(h11.SERVER)
    http.receive_data(data)
    with pytest.raises(h11.RemoteProtocolError) as info:
        http.next_event()
    return str(info.value)


# --- raw WebSocket -----------------------------------------------------------------------------


def client_frame(
    opcode: Opcode, payload: bytes = b"", *, fin: bool = True, masked: bool = True
) -> bytes:
    """One client-to-server frame (RFC 6455, section 5.2), masked with MASK unless
    ``masked`` is False (which the protocol forbids)."""
    head = bytes([(0x80 if fin else 0) | opcode])
    mask_bit = 0x80 if masked else 0
    length = len(payload)
    if length < 126:
        head += bytes([mask_bit | length])
    elif length < 65536:
        head += bytes([mask_bit | 126]) + struct.pack("!H", length)
    else:
        head += bytes([mask_bit | 127]) + struct.pack("!Q", length)
    if not masked:
        return head + payload
    return head + MASK + bytes(byte ^ MASK[i % 4] for i, byte in enumerate(payload))


def text(payload: str, *, fin: bool = True) -> bytes:
    """A masked text frame holding ``payload``."""
    return client_frame(Opcode.TEXT, payload.encode(), fin=fin)


class RawWebSocket:
    """A client after a successful handshake, made of raw bytes: the test sends the
    frames it builds, and reads the server's frames through wsproto's parser (which
    also insists that they are unmasked)."""

    def __init__(self, stream: trio.abc.Stream, received: bytes) -> None:
        self.stream = stream
        self._parser = FrameProtocol(client=True, extensions=[])
        self._parser.receive_bytes(received)

    @property
    def peer(self) -> str:
        """This client as the server's log names it: ``127.0.0.1:port``."""
        assert isinstance(self.stream, trio.SocketStream)
        return f"127.0.0.1:{self.stream.socket.getsockname()[1]}"

    async def send(self, *frames: bytes) -> None:
        """Write ``frames`` in one write."""
        await self.stream.send_all(b"".join(frames))

    async def frame(self) -> tuple[Opcode, bytes | str | tuple[int, str]]:
        """The server's next whole frame: its opcode and payload (text decoded, a
        close frame's payload as ``(code, reason)``)."""
        opcode: Opcode | None = None
        parts: list[bytes | str] = []
        with trio.fail_after(EVENT_TIMEOUT):
            while True:
                frame = next(self._parser.received_frames(), None)
                if frame is None:
                    data = await self.stream.receive_some()
                    assert data, "the server closed the connection without a frame"
                    self._parser.receive_bytes(bytes(data))
                    continue
                if isinstance(frame.payload, tuple):
                    return frame.opcode, frame.payload
                opcode = opcode or frame.opcode
                parts.append(frame.payload)
                if frame.frame_finished:
                    return opcode, parts[0][:0].join(parts)  # type: ignore[arg-type]

    async def receive(self) -> str:
        """The server's next frame, which must be text."""
        opcode, payload = await self.frame()
        assert opcode is Opcode.TEXT, (opcode, payload)
        assert isinstance(payload, str)
        return payload

    async def say(self, line: str) -> None:
        """Send ``line`` and receive its echo."""
        await self.send(text(line))
        assert await self.receive() == f"You said: {line}"

    async def expect_close(self, *, answer: bool = True) -> tuple[int, str]:
        """The server's next frame is a close frame: answer it with the same code
        (unless not ``answer``: a server failing the connection does not wait for one),
        wait for the server to close the socket, and return the frame's code and
        reason."""
        opcode, payload = await self.frame()
        assert opcode is Opcode.CLOSE, (opcode, payload)
        assert isinstance(payload, tuple)
        code, reason = payload
        if answer:
            await self.send(client_frame(Opcode.CLOSE, struct.pack("!H", code)))
        await expect_eof(self.stream)
        return code, reason


@asynccontextmanager
async def open_raw(
    port: int, *, first: bytes = b"", stuck: bool = False
) -> AsyncIterator[RawWebSocket]:
    """A raw client that completed the handshake with the server on ``port``, having
    sent ``first`` in the same write as its request. ``stuck``: its socket's receive
    buffer is as small as the kernel allows, so the server soon cannot send to it
    while it does not read. Its socket is closed on the way out."""
    sock = trio.socket.socket()
    if stuck:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    stream = trio.SocketStream(sock)  # owns sock from here on
    async with stream:
        await sock.connect(("127.0.0.1", port))
        # h11 writes the request, and so expects (and checks) the 101 that answers it.
        http = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method="GET",
            target="/",
            headers=[
                ("Host", f"127.0.0.1:{port}"),
                ("Upgrade", "websocket"),
                ("Connection", "Upgrade"),
                ("Sec-WebSocket-Key", WEBSOCKET_KEY),
                ("Sec-WebSocket-Version", "13"),
            ],
        )
        await stream.send_all(http.send(request) + http.send(h11.EndOfMessage()) + first)
        with trio.fail_after(EVENT_TIMEOUT):
            while (event := http.next_event()) is h11.NEED_DATA:
                http.receive_data(await stream.receive_some())
        assert isinstance(event, h11.InformationalResponse), event
        assert event.status_code == 101
        assert headers_of(event)[b"sec-websocket-accept"] == WEBSOCKET_ACCEPT
        assert http.next_event() is h11.PAUSED
        received, _ = http.trailing_data
        yield RawWebSocket(stream, received)


# --- the server's log --------------------------------------------------------------------------


class ServerLog(logging.Handler):
    """The messages logged under ``trio_chat``, in order, with a wait for one to come."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []
        self._logged = trio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self._logged.set()
        self._logged = trio.Event()

    async def wait_for(self, ending: str) -> None:
        """Wait until a message ending with ``ending`` has been logged."""
        with trio.fail_after(EVENT_TIMEOUT):
            while not any(message.endswith(ending) for message in self.messages):
                await self._logged.wait()


@pytest.fixture
def server_log(caplog: pytest.LogCaptureFixture) -> Iterator[ServerLog]:
    """The server's log from INFO up, also in ``caplog``."""
    caplog.set_level(logging.INFO, logger="trio_chat")
    handler = ServerLog()
    logger = logging.getLogger("trio_chat")
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def assert_no_errors(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing under ``trio_chat`` was logged as an error, and no traceback at all."""
    assert "Traceback" not in caplog.text
    errors = [
        record
        for record in caplog.records
        if record.name.startswith("trio_chat") and record.levelno >= logging.ERROR
    ]
    assert errors == []


# --- the frame encoder (no sockets) -------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 125, 126, 65535, 65536, 70000])
def test_the_text_frame_encoder_agrees_with_wsproto(length: int) -> None:
    """encode_text_frame gives the bytes wsproto's server side gives for the same text,
    at every boundary of the three length forms."""
    payload = "é" * (length // 2) + "x" * (length % 2)
    assert len(payload.encode()) == length
    wsproto_server = FrameProtocol(client=False, extensions=[])
    assert encode_text_frame(payload.encode()) == bytes(wsproto_server.send_data(payload))


# --- refused requests --------------------------------------------------------------------------


async def test_plain_http_gets_426_and_the_server_carries_on(
    chat_server: ChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A plain GET is answered 426 with ``upgrade: websocket`` and one line saying what
    the port speaks; the socket is closed, and WebSocket clients are served after it."""
    async with await trio.open_tcp_stream("127.0.0.1", chat_server.port) as stream:
        await stream.send_all(get_request("Host: 127.0.0.1"))
        response, body = await read_response(stream)
        await expect_eof(stream)
    assert (response.status_code, response.reason) == (426, b"Upgrade Required")
    headers = headers_of(response)
    assert headers[b"upgrade"] == b"websocket"
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert headers[b"connection"] == b"close"
    assert body == b"this port speaks WebSocket: connect with a WebSocket client\n"
    async with open_client(chat_server.urls[0]) as ws:
        await say(ws, "still serving")
    assert_no_errors(caplog)


async def test_bytes_that_are_not_http_get_400_without_a_traceback(
    chat_server: ChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    """What a TLS client sends first is answered 400 ``bad HTTP request: `` and h11's
    reason (without the bytes it quotes, which might hold a secret), and logs no error."""
    async with await trio.open_tcp_stream("127.0.0.1", chat_server.port) as stream:
        await stream.send_all(TLS_HELLO)
        response, body = await read_response(stream)
        await expect_eof(stream)
    assert response.status_code == 400
    assert body.startswith(b"bad HTTP request: ")
    assert body == f"bad HTTP request: {redact_text(h11_error(TLS_HELLO))}\n".encode()
    assert body.endswith(": \N{HORIZONTAL ELLIPSIS}\n".encode())
    assert_no_errors(caplog)


async def test_an_upgrade_without_its_key_gets_400(chat_server: ChatServer) -> None:
    """An upgrade request without Sec-WebSocket-Key is answered 400 saying so."""
    async with await trio.open_tcp_stream("127.0.0.1", chat_server.port) as stream:
        await stream.send_all(
            get_request(
                "Host: 127.0.0.1",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Version: 13",
            )
        )
        response, body = await read_response(stream)
        await expect_eof(stream)
    assert response.status_code == 400
    assert body == b"bad WebSocket handshake: Missing header, 'Sec-WebSocket-Key'\n"


async def test_a_request_head_over_h11s_limit_gets_431(chat_server: ChatServer) -> None:
    """A request head that grows past 16 KiB without ending is answered 431."""
    async with await trio.open_tcp_stream("127.0.0.1", chat_server.port) as stream:
        head = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"x" * 20_000
        await stream.send_all(head)
        response, body = await read_response(stream)
    assert (response.status_code, response.reason) == (431, b"Request Header Fields Too Large")
    assert body.startswith(b"bad HTTP request: ")


# --- RFC 6455, section 4.2: what an upgrade must be -------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS"])
async def test_a_method_other_than_get_gets_405(chat_server: ChatServer, method: str) -> None:
    """An upgrade request with another method than GET is answered 405 with
    ``allow: GET``, byte for byte."""
    request = upgrade_request(request_line=f"{method} / HTTP/1.1", extra=("Content-Length: 0",))
    assert await answer_to(chat_server.port, request) == plain_answer(
        "405 Method Not Allowed",
        b"only GET is allowed: this port speaks WebSocket\n",
        b"allow: GET",
    )


async def test_a_head_request_gets_the_head_of_405_only(chat_server: ChatServer) -> None:
    """HEAD gets the 405's head and no body (HTTP forbids one)."""
    request = get_request("Host: 127.0.0.1", request_line="HEAD / HTTP/1.1")
    body = b"only GET is allowed: this port speaks WebSocket\n"
    assert await answer_to(chat_server.port, request) == plain_answer(
        "405 Method Not Allowed", body, b"allow: GET"
    ).removesuffix(body)


async def test_an_http_1_0_upgrade_gets_400(chat_server: ChatServer) -> None:
    """An upgrade over HTTP/1.0 is answered 400: WebSocket needs HTTP/1.1 or later."""
    request = upgrade_request(request_line="GET / HTTP/1.0")
    # h11 writes its own Connection header to an HTTP/1.0 client.
    assert await answer_to(chat_server.port, request) == (
        plain_answer(
            "400 Bad Request", b"bad WebSocket handshake: HTTP/1.1 or later is required\n"
        ).replace(b"connection: close", b"Connection: close")
    )


@pytest.mark.parametrize("version", ["8", "14", "13, 8"])
async def test_an_unsupported_websocket_version_gets_426_naming_13(
    chat_server: ChatServer, version: str
) -> None:
    """A Sec-WebSocket-Version other than 13 is answered 426 with
    ``sec-websocket-version: 13``, byte for byte."""
    assert await answer_to(chat_server.port, upgrade_request(version=version)) == plain_answer(
        "426 Upgrade Required",
        b"bad WebSocket handshake: unsupported Sec-WebSocket-Version (this server speaks 13)\n",
        b"sec-websocket-version: 13",
    )


async def test_a_missing_websocket_version_gets_400(chat_server: ChatServer) -> None:
    """An upgrade without Sec-WebSocket-Version is malformed: 400, as wsproto says."""
    assert await answer_to(chat_server.port, upgrade_request(version=None)) == plain_answer(
        "400 Bad Request", b"bad WebSocket handshake: Missing header, 'Sec-WebSocket-Version'\n"
    )


@pytest.mark.parametrize(
    "key",
    [
        "hello",  # not base64
        "dGhlIHNhbXBsZSBub25jZQ",  # 16 bytes, but unpadded
        "dGhlIHNhbXBsZSBub25jZSE=",  # 17 bytes
        "dGhlIHNhbXBsZSBub25j",  # 15 bytes
        "dGhlIHNhbXBsZSBub25jZQ==, dGhlIHNhbXBsZSBub25jZQ==",  # two keys in one header
        "",
    ],
)
async def test_a_key_that_is_not_16_bytes_of_base64_gets_400(
    chat_server: ChatServer, key: str
) -> None:
    """A Sec-WebSocket-Key that is not 16 bytes, base64-encoded, is answered 400."""
    assert await answer_to(chat_server.port, upgrade_request(key=key)) == plain_answer(
        "400 Bad Request",
        b"bad WebSocket handshake: Sec-WebSocket-Key must be 16 bytes, base64-encoded\n",
    )


async def test_two_key_headers_get_400(chat_server: ChatServer) -> None:
    """Two Sec-WebSocket-Key headers, each valid, are one too many: 400."""
    request = upgrade_request(extra=(f"Sec-WebSocket-Key: {WEBSOCKET_KEY}",))
    assert await answer_to(chat_server.port, request) == plain_answer(
        "400 Bad Request",
        b"bad WebSocket handshake: Sec-WebSocket-Key must be 16 bytes, base64-encoded\n",
    )


async def test_a_host_that_is_not_a_host_name_gets_400(
    chat_server: ChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A Host header with bytes that are no host name (HTTP allows them in a value) is
    answered 400, with no traceback in the log."""
    request = upgrade_request().replace(b"Host: 127.0.0.1", b"Host: caf\xe9.example")
    assert await answer_to(chat_server.port, request) == plain_answer(
        "400 Bad Request", b"bad WebSocket handshake: the Host header is not a host name\n"
    )
    assert_no_errors(caplog)


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ((), "Missing mandatory Host: header"),
        (("Host: 127.0.0.1", "Host: example.com"), "Found multiple Host: headers"),
    ],
)
async def test_a_request_without_one_host_gets_400(
    chat_server: ChatServer, headers: tuple[str, ...], problem: str
) -> None:
    """HTTP/1.1 requires exactly one Host header (RFC 9112, section 3.2): an upgrade
    with none, or with two, is answered 400 saying so, as h11 words it."""
    request = get_request(
        *headers,
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {WEBSOCKET_KEY}",
        "Sec-WebSocket-Version: 13",
    )
    assert h11_error(request) == problem
    assert await answer_to(chat_server.port, request) == plain_answer(
        "400 Bad Request", f"bad HTTP request: {problem}\n".encode()
    )


@pytest.mark.parametrize("connection", ["keep-alive", "close", "upgrade-please", ""])
async def test_a_connection_header_without_the_upgrade_token_gets_400(
    chat_server: ChatServer, connection: str
) -> None:
    """An upgrade whose Connection header does not list the ``Upgrade`` token (RFC
    6455, section 4.2.1, item 4) is answered 400."""
    request = upgrade_request().replace(
        b"Connection: Upgrade", f"Connection: {connection}".encode()
    )
    expected = plain_answer(
        "400 Bad Request", b"bad WebSocket handshake: Missing header, 'Connection: Upgrade'\n"
    )
    if connection == "close":  # h11 then writes its own Connection header
        expected = expected.replace(b"connection: close", b"Connection: close")
    assert await answer_to(chat_server.port, request) == expected


@pytest.mark.parametrize(
    "replace",
    [
        (b"Connection: Upgrade", b"Connection: keep-alive, Upgrade"),  # what Firefox sends
        (b"Connection: Upgrade", b"Connection: upgrade"),
        (b"Upgrade: websocket", b"Upgrade: WebSocket"),
        (b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version:   13  "),
    ],
)
async def test_tokens_are_read_as_rfc_6455_says(
    chat_server: ChatServer, replace: tuple[bytes, bytes]
) -> None:
    """The tokens of an upgrade are case-insensitive, ``Upgrade`` may be one of several
    Connection tokens, and whitespace around a header value is no part of it: each such
    request is switched (101) to a WebSocket that chats."""
    request = upgrade_request().replace(*replace)
    async with await trio.open_tcp_stream("127.0.0.1", chat_server.port) as stream:
        await stream.send_all(request + text("hi"))
        received = b""
        with trio.fail_after(EVENT_TIMEOUT):
            while b"\r\n\r\n" not in received:
                data = await stream.receive_some()
                assert data, received
                received += data
        head, _, frames = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 "), head
        assert b"\r\nSec-WebSocket-Accept: " + WEBSOCKET_ACCEPT in head
        assert await RawWebSocket(stream, frames).receive() == "You said: hi"


async def test_a_refused_upgrade_is_refused_before_the_server_is_full(
    start_server: StartServer,
) -> None:
    """What is wrong with the request is said even when the server is full (4xx before
    503), and a valid request is then refused with 503."""
    server = await start_server(max_connections=1)
    async with open_client(server.urls[0]) as ws:
        await say(ws, "the one connection")
        assert (await answer_to(server.port, upgrade_request(version="8"))).startswith(
            b"HTTP/1.1 426 Upgrade Required\r\n"
        )
        assert (await answer_to(server.port, upgrade_request())).startswith(
            b"HTTP/1.1 503 Service Unavailable\r\n"
        )


# --- frames ------------------------------------------------------------------------------------


async def test_a_frame_sent_with_the_request_is_not_lost(chat_server: ChatServer) -> None:
    """A text frame written together with the upgrade request is read after the 101."""
    async with open_raw(chat_server.port, first=text("hi")) as raw:
        assert await raw.receive() == "You said: hi"
        await raw.say("and more")


async def test_an_unmasked_frame_closes_only_its_sender_with_1002(
    chat_server: ChatServer, server_log: ServerLog
) -> None:
    """An unmasked client frame closes that client with 1002 (logged); another client
    connected meanwhile keeps chatting."""
    async with open_client(chat_server.urls[0]) as bystander:
        await say(bystander, "hello")
        async with open_raw(chat_server.port) as raw:
            await raw.say("hi")
            assert await receive(bystander) == "Someone says: hi"
            await raw.send(client_frame(Opcode.TEXT, b"naked", masked=False))
            reason = "server received unexpected unmasked frame"
            assert await raw.expect_close(answer=False) == (1002, reason)
            await server_log.wait_for(f"({raw.peer}) disconnected: 1002 {reason}")
        await say(bystander, "still chatting")


async def test_invalid_utf8_in_a_text_frame_closes_with_1007(chat_server: ChatServer) -> None:
    """A text frame that is not UTF-8 closes the connection with 1007."""
    async with open_raw(chat_server.port) as raw:
        await raw.send(client_frame(Opcode.TEXT, b"caf\xe9"))
        assert await raw.expect_close(answer=False) == (
            1007,
            "'utf-8' codec can't decode byte 0xe9 in position 3: unexpected end of data",
        )


async def test_a_fragmented_message_arrives_whole(chat_server: ChatServer) -> None:
    """A text message in two frames (FIN unset, then a continuation) is one message."""
    async with open_raw(chat_server.port) as raw:
        await raw.send(text("hello ", fin=False))
        await raw.send(client_frame(Opcode.CONTINUATION, b"world"))
        assert await raw.receive() == "You said: hello world"


async def test_fragments_over_the_size_limit_together_close_with_1009(
    start_server: StartServer,
) -> None:
    """The size limit counts a message's fragments together: 5 + 5 bytes pass a limit
    of 10, 6 + 5 bytes close with 1009 though each fragment is under it."""
    server = await start_server(max_message_size=10)
    async with open_raw(server.port) as raw:
        await raw.send(text("01234", fin=False), client_frame(Opcode.CONTINUATION, b"56789"))
        assert await raw.receive() == "You said: 0123456789"
        await raw.send(text("hello ", fin=False), client_frame(Opcode.CONTINUATION, b"world"))
        assert await raw.expect_close() == (1009, "Exceeded maximum message size: 10 bytes")


async def test_a_ping_gets_a_pong_with_its_payload(chat_server: ChatServer) -> None:
    """A ping is answered with a pong carrying the same payload; chat goes on."""
    async with open_raw(chat_server.port) as raw:
        await raw.send(client_frame(Opcode.PING, b"are you there?"))
        assert await raw.frame() == (Opcode.PONG, b"are you there?")
        await raw.say("good")


async def test_a_ping_while_the_server_closes_is_not_answered(
    start_server: StartServer, server_log: ServerLog, caplog: pytest.LogCaptureFixture
) -> None:
    """A ping that comes after the server's close frame gets no pong and breaks
    nothing (the trap of trio-websocket issue 184): the close handshake completes
    and the server logs the 1009 close, no error."""
    server = await start_server(max_message_size=10)
    async with open_raw(server.port) as raw:
        await raw.send(text("x" * 11))
        opcode, payload = await raw.frame()
        assert (opcode, payload) == (
            Opcode.CLOSE,
            (1009, "Exceeded maximum message size: 10 bytes"),
        )
        await raw.send(
            client_frame(Opcode.PING, b"still there?"),
            client_frame(Opcode.CLOSE, struct.pack("!H", 1009)),
        )
        await expect_eof(raw.stream)
        await server_log.wait_for(
            f"({raw.peer}) disconnected: 1009 Exceeded maximum message size: 10 bytes"
        )
    assert_no_errors(caplog)


async def test_a_message_in_thousands_of_fragments_arrives_whole(
    start_server: StartServer,
) -> None:
    """A message sent as 1,000 two-byte fragments with empty ones between them arrives
    whole, and the size limit still counts all of them together."""
    server = await start_server(max_message_size=2000)
    fragments = [text("ab", fin=False)]
    for _ in range(999):
        fragments += [
            client_frame(Opcode.CONTINUATION, b"", fin=False),
            client_frame(Opcode.CONTINUATION, b"ab", fin=False),
        ]
    async with open_raw(server.port) as raw:
        await raw.send(*fragments, client_frame(Opcode.CONTINUATION, b""))
        assert await raw.receive() == "You said: " + "ab" * 1000
        await raw.send(*fragments, client_frame(Opcode.CONTINUATION, b"!"))
        assert await raw.expect_close() == (1009, "Exceeded maximum message size: 2000 bytes")


@pytest.mark.parametrize("ending", ["fin", "reset"])
async def test_a_dropped_connection_is_logged_as_1006(
    chat_server: ChatServer, server_log: ServerLog, ending: str
) -> None:
    """A client whose TCP connection ends (orderly or by a reset) without a close frame
    is logged as ``1006 (abnormal closure)``; the others are still served."""
    async with open_client(chat_server.urls[0]) as bystander:
        await say(bystander, "hello")
        async with open_raw(chat_server.port) as raw:
            await raw.say("hi")
            peer = raw.peer
            assert isinstance(raw.stream, trio.SocketStream)
            if ending == "reset":  # closing with a zero linger time sends RST
                raw.stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            await raw.stream.aclose()
            await server_log.wait_for(f"({peer}) disconnected: 1006 (abnormal closure)")
        assert await receive(bystander) == "Someone says: hi"
        await say(bystander, "still chatting")


async def test_a_client_that_resets_before_the_answer_leaves_no_error(
    chat_server: ChatServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that sends its upgrade request and resets the connection at once (so
    the 101 cannot be written) is dropped quietly: no error, no traceback."""
    request = get_request(
        "Host: 127.0.0.1",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {WEBSOCKET_KEY}",
        "Sec-WebSocket-Version: 13",
    )
    # A blocking socket, so that the request and the reset are both on their way
    # before the server's task first runs: it reads the request, then cannot answer.
    with socket.create_connection(("127.0.0.1", chat_server.port)) as sock:
        sock.sendall(request)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await trio.testing.wait_all_tasks_blocked()
    assert_no_errors(caplog)
    assert chat_server.connections == {}
    async with open_client(chat_server.urls[0]) as ws:
        await say(ws, "still serving")


@pytest.mark.parametrize("sent", [b"", b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"])
async def test_no_handshake_within_the_timeout_closes_the_socket(
    start_server: StartServer, server_log: ServerLog, sent: bytes
) -> None:
    """A connection that sends nothing, or never finishes its request head, is closed
    after --handshake-timeout, which is logged."""
    server = await start_server(handshake_timeout=0.2)
    async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
        await stream.send_all(sent)
        await expect_eof(stream)
        peer = f"127.0.0.1:{stream.socket.getsockname()[1]}"
    assert f"{peer}: no WebSocket handshake within 0.2 s" in server_log.messages


# --- the seam (ChatSocket), without a server ---------------------------------------------------

#: The two kinds of stream the server serves: a plain TCP socket (the direct write path)
#: and any other trio stream (a sender task), here a lockstep memory stream pair, whose
#: sends wait until the other end reads.
TRANSPORTS = ["tcp", "memory"]


@asynccontextmanager
async def open_seam(
    transport: str, target: str = "/"
) -> AsyncIterator[tuple[ChatSocket, RawWebSocket]]:
    """The server's end of an accepted WebSocket (what the chat sees of it) and a raw
    client at the other end, over ``transport``; the request asked for ``target``. Both
    ends are closed on the way out."""
    client_end, server_end = await transport_pair(transport)
    async with client_end, open_connection_stream(server_end) as stream:
        answer: list[bytes] = []

        async def handshake_client() -> None:
            await client_end.send_all(upgrade_request(request_line=f"GET {target} HTTP/1.1"))
            received = b""
            while b"\r\n\r\n" not in received:
                received += await client_end.receive_some()
            answer.append(received)

        handshake = Handshake(stream)
        with trio.fail_after(EVENT_TIMEOUT):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(handshake_client)
                request = await handshake.read_request()
                assert request is not None
                assert handshake.check(request) is None
                address, tls = describe_transport(server_end)
                ws = await handshake.accept(
                    request,
                    subprotocol=None,
                    max_message_size=64 * 1024,
                    peer_address=address,
                    tls=tls,
                )
        assert isinstance(ws, WebSocket)
        head, _, rest = answer[0].partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 ")
        yield ws, RawWebSocket(client_end, rest)


async def read_until_closing(ws: ChatSocket) -> None:
    """Receive (and so answer pings, note pongs) until the WebSocket is closing."""
    while await ws.receive() is not None:
        pass


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_pings_from_a_client_that_never_reads_do_not_pile_up(transport: str) -> None:
    """A client that sends pings but never reads the pongs is read no further once
    64 KiB of pongs wait unsent, instead of having pongs queued without end."""
    ping = client_frame(Opcode.PING, b"p" * 125)
    async with open_seam(transport) as (ws, raw), trio.open_nursery() as nursery:
        nursery.start_soon(read_until_closing, ws)
        nursery.start_soon(raw.send, ping * 20_000)  # 2.6 MB of pings: 2.5 MB of pongs
        await trio.testing.wait_all_tasks_blocked()
        assert 64 * 1024 < ws.buffered <= 64 * 1024 + 127
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_ping_returns_once_its_pong_arrives(transport: str) -> None:
    """ping() sends a ping with its payload and returns when the pong comes back."""
    async with open_seam(transport) as (ws, raw), trio.open_nursery() as nursery:
        nursery.start_soon(read_until_closing, ws)
        answered = trio.Event()

        async def ping() -> None:
            await ws.ping(b"are you there?")
            answered.set()

        nursery.start_soon(ping)
        assert await raw.frame() == (Opcode.PING, b"are you there?")
        await raw.send(client_frame(Opcode.PONG, b"something else"))  # unsolicited
        await trio.testing.wait_all_tasks_blocked()
        assert not answered.is_set()
        await raw.send(client_frame(Opcode.PONG, b"are you there?"))
        with trio.fail_after(EVENT_TIMEOUT):
            await answered.wait()
        nursery.cancel_scope.cancel()


async def test_a_pong_answers_the_pings_before_it_too() -> None:
    """A pong for the latest ping answers the earlier ones (RFC 6455 lets a peer answer
    only the latest); a later ping still waits for its own."""
    async with open_seam("memory") as (ws, raw), trio.open_nursery() as nursery:
        nursery.start_soon(read_until_closing, ws)
        answered: list[bytes] = []

        async def ping(payload: bytes) -> None:
            await ws.ping(payload)
            answered.append(payload)

        for payload in (b"1", b"2", b"3"):
            nursery.start_soon(ping, payload)
            assert await raw.frame() == (Opcode.PING, payload)
        await raw.send(client_frame(Opcode.PONG, b"2"))
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(answered) == [b"1", b"2"]
        await raw.send(client_frame(Opcode.PONG, b"3"))
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(answered) == [b"1", b"2", b"3"]
        nursery.cancel_scope.cancel()


async def test_a_ping_is_refused_or_ended_by_closing() -> None:
    """A ping waiting when the peer closes raises ClosedResourceError, and so does a ping
    once closing; a payload over 125 bytes, or one already waiting, is a ValueError."""
    async with open_seam("memory") as (ws, raw), trio.open_nursery() as nursery:
        nursery.start_soon(read_until_closing, ws)
        with pytest.raises(ValueError, match="at most 125 bytes"):
            await ws.ping(b"x" * 126)
        outcome: list[type[BaseException]] = []

        async def ping() -> None:
            try:
                await ws.ping(b"last")
            except trio.ClosedResourceError as exc:
                outcome.append(type(exc))

        nursery.start_soon(ping)
        assert await raw.frame() == (Opcode.PING, b"last")
        with pytest.raises(ValueError, match="already waiting"):
            await ws.ping(b"last")
        await raw.send(client_frame(Opcode.CLOSE, struct.pack("!H", 1000)))
        assert await raw.frame() == (Opcode.CLOSE, (1000, ""))
        await trio.testing.wait_all_tasks_blocked()
        assert outcome == [trio.ClosedResourceError]
        with pytest.raises(trio.ClosedResourceError):
            await ws.ping(b"after")


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_the_seam_tells_the_request_the_peer_and_no_tls(transport: str) -> None:
    """A ChatSocket knows its request's path, query and headers, the peer's address
    (none over a memory stream) and that it is not encrypted."""
    async with open_seam(transport, "/chat?nick=ada&room=dev") as (ws, raw):
        assert ws.request.path == "/chat"
        assert ws.request.query == "nick=ada&room=dev"
        assert ws.request.header("Host") == "127.0.0.1"
        assert ws.request.header("sec-websocket-version") == "13"
        assert ws.request.header("cookie") is None
        assert ws.request.headers[:2] == ((b"host", b"127.0.0.1"), (b"upgrade", b"websocket"))
        assert ws.tls is False
        if transport == "memory":
            assert ws.peer_address is None
        else:
            assert isinstance(raw.stream, trio.SocketStream)
            host, port = raw.stream.socket.getsockname()
            assert ws.peer_address == Address(host, port)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_text_message_each_way_and_a_clean_close(transport: str) -> None:
    """Over either stream a text message goes each way, and aclose() completes the close
    handshake, then closes the stream."""
    async with open_seam(transport) as (ws, raw):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(raw.send, text("hello server"))  # a lockstep send waits
            with trio.fail_after(EVENT_TIMEOUT):
                assert await ws.receive() == "hello server"
        ws.send_text(b"hello client")
        assert await raw.receive() == "hello client"
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.aclose, 1000, "bye")
            assert await raw.expect_close() == (1000, "bye")
        assert (ws.close_code, ws.close_reason) == (1000, "bye")
        with pytest.raises(trio.ClosedResourceError):
            ws.send_text(b"too late")


# --- an independent client ---------------------------------------------------------------------


async def test_the_websockets_library_pings_and_closes_with_1000(
    chat_server: ChatServer, server_log: ServerLog
) -> None:
    """The ``websockets`` sync client gets its pong, and its close with 1000 is answered
    with 1000 and logged as ``1000 (normal closure)``."""
    url = chat_server.urls[0]

    def session() -> tuple[int, Close | None]:
        with connect(url, open_timeout=EVENT_TIMEOUT, proxy=None) as ws:
            port = local_port(ws)
            ws.send("hi")
            assert ws.recv(timeout=EVENT_TIMEOUT) == "You said: hi"
            assert ws.ping(b"ping!").wait(EVENT_TIMEOUT), "no pong"
            ws.send("pinged")
            assert ws.recv(timeout=EVENT_TIMEOUT) == "You said: pinged"
            ws.close(1000)
            return port, ws.protocol.close_rcvd

    with trio.fail_after(EVENT_TIMEOUT):
        port, close = await trio.to_thread.run_sync(session, abandon_on_cancel=True)
    assert close == Close(1000, "")
    await server_log.wait_for(f"(127.0.0.1:{port}) disconnected: 1000 (normal closure)")
