"""No secret reaches the server's log or an error text by way of a request: request
targets are logged with their query redacted, protocol errors without the bytes they
quote, and the clients show URLs without their query or credentials.

Every request here carries :data:`SECRET` where a secret would be (a query parameter, a
header); after each, neither the log nor the answer may contain it.
"""

from __future__ import annotations

import re

import pytest
import trio
from inproc import LiveServer, open_plain

import trio_chat
from trio_chat.client.api import ChatError
from trio_chat.server.net.seam import Request

from support import EVENT_TIMEOUT

pytest_plugins = ["inproc"]

SECRET = "s3cr3t-VALUE"


async def raw_request(live: LiveServer, request: bytes) -> bytes:
    """Send ``request`` as it is; the whole answer, until the server closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", live.server.port)
    answer = b""
    async with stream:
        await stream.send_all(request)
        with trio.fail_after(EVENT_TIMEOUT):
            while data := await stream.receive_some():
                answer += data
    return answer


def assert_no_secret(live: LiveServer, *texts: bytes | str) -> None:
    for message in live.log.messages:
        assert SECRET not in message, message
    for text in texts:
        shown = text.decode("latin-1") if isinstance(text, bytes) else text
        assert SECRET not in shown, shown


UPGRADE = (
    "Host: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


async def test_a_refused_request_is_logged_with_its_query_redacted(
    live_server: LiveServer,
) -> None:
    """A resume URL the server refuses (400) is one line naming the path, not the query."""
    answer = await raw_request(
        live_server,
        f"GET /chat?session={SECRET}&since=soon HTTP/1.1\r\n{UPGRADE}\r\n".encode(),
    )
    assert answer.startswith(b"HTTP/1.1 400 ")
    await live_server.wait_for(
        re.compile(
            r"^127\.0\.0\.1:\d+: refused GET /chat\?…: 400 since must be one whole number: "
            r"the id of the last message seen$"
        )
    )
    assert_no_secret(live_server, answer)


async def test_what_a_refusal_quotes_of_the_query_is_not_logged(live_server: LiveServer) -> None:
    """The client is told which nickname is invalid; the log line leaves it out."""
    answer = await raw_request(
        live_server, f"GET /?nick={SECRET}! HTTP/1.1\r\n{UPGRADE}\r\n".encode()
    )
    assert answer.endswith(
        f"invalid nickname '{SECRET}!': use 1-32 letters, digits, '_', '-' or '.'\n".encode()
    )
    await live_server.wait_for(
        re.compile(
            r"^127\.0\.0\.1:\d+: refused GET /\?…: 400 invalid nickname …: "
            r"use 1-32 letters, digits, …, … or …$"
        )
    )
    assert_no_secret(live_server)


async def test_a_plain_http_request_is_logged_with_its_query_redacted(
    live_server: LiveServer,
) -> None:
    """A browser's plain GET (426) and a POST (405): logged, the query left out."""
    for method, status in (("GET", 426), ("POST", 405)):
        answer = await raw_request(
            live_server,
            f"{method} /?token={SECRET} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Length: 0\r\n\r\n".encode(),
        )
        assert answer.startswith(f"HTTP/1.1 {status} ".encode())
        await live_server.wait_for(
            re.compile(rf"^127\.0\.0\.1:\d+: refused {method} /\?…: {status} ")
        )
    assert_no_secret(live_server, answer)


@pytest.mark.parametrize(
    "request_text",
    [
        # A header line h11 cannot parse: it would quote it.
        f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization Bearer {SECRET}\r\n\r\n",
        # A header value with a NUL: h11 would quote the line.
        f"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {SECRET}\x00\r\n\r\n",
        # A request line h11 cannot parse: it would quote it, query and all.
        f"GET /?token={SECRET} HTTP/1.1 extra\r\nHost: x\r\n\r\n",
    ],
)
async def test_a_malformed_request_is_answered_without_the_bytes_it_quotes(
    live_server: LiveServer, request_text: str
) -> None:
    """h11's error texts quote the offending line; the 400 answer does not."""
    answer = await raw_request(live_server, request_text.encode("latin-1"))
    assert answer.startswith(b"HTTP/1.1 400 ")
    line = "illegal request line" if "extra" in request_text else "illegal header line"
    assert answer.endswith(f"\r\n\r\nbad HTTP request: {line}: \N{HORIZONTAL ELLIPSIS}\n".encode())
    assert_no_secret(live_server, answer)


async def test_an_accepted_connection_logs_no_query(live_server: LiveServer) -> None:
    """A connection whose URL carries a secret (here an unknown session, which the server
    answers with an error line) is logged by address only, and the answer has no secret."""
    async with open_plain(live_server, f"/?session={SECRET}&key={SECRET}") as client:
        answer = await client.line()
        assert answer.startswith("Error: ")
        await client.ask("hello", "You said: hello")
    assert_no_secret(live_server, answer)


async def test_our_clients_show_urls_without_query_or_credentials() -> None:
    """The library's error text (and the terminal client's lines, built the same way)
    never show a URL's query or user-info."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(ChatError) as refused:
            async with trio_chat.connect(f"ws://bob:{SECRET}@127.0.0.1:{port}/?token={SECRET}"):
                pass
    assert str(refused.value) == (
        f"Could not connect to ws://…@127.0.0.1:{port}/?…: connection refused. "
        "Is the server running?"
    )


async def test_a_refused_token_in_the_url_is_logged_without_it(live_server: LiveServer) -> None:
    """``?token=`` on a server that takes no tokens: 401, and the log line has no token."""
    answer = await raw_request(
        live_server, f"GET /?token={SECRET} HTTP/1.1\r\n{UPGRADE}\r\n".encode()
    )
    assert answer.startswith(b"HTTP/1.1 401 ")
    await live_server.wait_for(re.compile(r"^127\.0\.0\.1:\d+: refused GET /\?…: 401 "))
    assert_no_secret(live_server, answer)


def test_a_request_shows_no_secret_in_its_repr() -> None:
    """Should a Request reach a log line (a traceback, a debug line), its query and its
    header values stay out."""
    request = Request.of(
        f"/chat?token={SECRET}", [(b"authorization", f"Bearer {SECRET}".encode()), (b"host", b"x")]
    )
    assert repr(request) == "Request('/chat?…', headers=['authorization', 'host'])"
    assert request.query == f"token={SECRET}"  # the value itself is still all there
