"""Admission by address and by page, on live in-process servers: the per-address limits
(429 with ``Retry-After``), ``--limits-exempt``, the caps on handshakes in progress, the
handshake timeout against trickled requests, the ``Origin`` rule (403) and the folded
log lines of refusals and of a full disk.

Limits: every server here says which are on. The fixture lifts the per-address limits
for loopback (``EXEMPT_LOOPBACK``); tests of those limits pass ``limits_exempt=()``, or
connect over memory streams whose far end the server takes as another address. Tests
of time rules run on memory streams with trio's autojump clock (no sockets then).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import websockets.exceptions
from inproc import LiveServer, StartLiveServer, connect_to, open_plain, wait_connected
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from trio_chat.server.config import ServerConfig
from trio_chat.server.console import answer_console_line
from trio_chat.server.net.seam import Address
from trio_chat.server.server import ChatServer
from trio_chat.server.store import StoreError

from support import EVENT_TIMEOUT, PROTOCOL

pytest_plugins = ["inproc"]

REMOTE = Address("203.0.113.7", 40000)
#: Another host of the same IPv6 /64, and one of the next /64.
SAME_64 = (Address("2001:db8:1:2::a", 40000), Address("2001:db8:1:2::b", 40001))
NEXT_64 = Address("2001:db8:1:3::a", 40002)


# --- raw HTTP over a memory stream --------------------------------------------------------


def upgrade(*extra: str, target: str = "/", host: str = "chat.example") -> bytes:
    """A valid upgrade request for ``target``, with ``extra`` header lines."""
    lines = [
        f"GET {target} HTTP/1.1",
        f"Host: {host}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return "".join(f"{line}\r\n" for line in [*lines, ""]).encode()


async def answer_of(stream: trio.abc.Stream, request: bytes) -> tuple[int, dict[str, str], str]:
    """Send ``request`` and read the server's HTTP answer: status, headers (names in
    lower case), body text (read to the end of the stream; a 101's frames are left
    unread)."""
    await stream.send_all(request)
    received = b""
    with trio.fail_after(EVENT_TIMEOUT):
        while b"\r\n\r\n" not in received:
            chunk = await stream.receive_some()
            assert chunk, f"the server closed the connection after {received!r}"
            received += chunk
        head, _, body = received.partition(b"\r\n\r\n")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        status = int(status_line.split(" ")[1])
        headers = {}
        for line in header_lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if status != 101:
            while chunk := await stream.receive_some():
                body += chunk
    return status, headers, "" if status == 101 else body.decode()


def connect_memory(
    nursery: trio.Nursery, server: ChatServer, peer: Address | None
) -> trio.testing.MemoryStream:
    """A new connection to ``server`` over a memory stream, which it takes as coming
    from ``peer``; the client's end."""
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(functools.partial(server.handle_stream, server_end, peer_address=peer))
    return client_end


async def status_from(
    nursery: trio.Nursery, server: ChatServer, peer: Address | None, *extra: str
) -> tuple[int, dict[str, str], str]:
    """The answer to an upgrade from ``peer``; a connection let in stays open (in
    ``nursery``) until the test ends."""
    return await answer_of(connect_memory(nursery, server, peer), upgrade(*extra))


async def open_ws(nursery: trio.Nursery, server: ChatServer, peer: Address) -> WebSocketConnection:
    """A trio-websocket JSON client over a memory stream from ``peer``."""
    return await wrap_client_stream(
        nursery,
        connect_memory(nursery, server, peer),  # type: ignore[arg-type]  # any trio stream
        "chat.example",
        "/",
        subprotocols=[PROTOCOL],
    )


class NoConnections(trio.abc.Listener[trio.abc.Stream]):
    """A listener nobody connects to: connections come through :func:`connect_memory`."""

    async def accept(self) -> trio.abc.Stream:
        await trio.sleep_forever()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


async def start_memory_server(nursery: trio.Nursery, **settings: object) -> ChatServer:
    """A server with no listener (connections come through :func:`connect_memory`), its
    messages in memory; every limit at its default unless given. Its shutdown grace is
    short: the raw clients here never answer a close frame."""
    settings = {"shutdown_grace": 0.1, **settings}
    config = ServerConfig(db=":memory:", history_on_join=0, **settings)  # type: ignore[arg-type]
    run = functools.partial(ChatServer(config).run, listeners=[NoConnections()])
    server: ChatServer = await nursery.start(run)
    return server


TOO_MANY = (
    "too many connections from your address (at most 2 at once); close one, or try again later"
)


# --- connections per address -----------------------------------------------------------------


async def test_an_address_over_its_connections_gets_429_while_others_get_in(
    start_live_server: StartLiveServer, nursery: trio.Nursery
) -> None:
    """Limits on for everyone (limits_exempt=()): 127.0.0.1 holds two, its third is
    refused with 429 and Retry-After, while another address still gets in; once one of
    the two closes, 127.0.0.1 gets in again."""
    live = await start_live_server(limits_exempt=(), max_connections_per_ip=2)
    async with connect_to(live.url), connect_to(live.url) as second:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            async with connect_to(live.url):
                pass
        response = refused.value.response
        assert (response.status_code, response.headers["Retry-After"]) == (429, "10")
        assert response.body == f"{TOO_MANY}\n".encode()
        refused_line = rf"^127\.0\.0\.1:\d+: refused GET /: 429 {re.escape(TOO_MANY)}$"
        await live.wait_for(re.compile(refused_line))
        other = await open_ws(nursery, live.server, REMOTE)
        assert json.loads(await other.get_message())["type"] == "welcome"
        await other.aclose()
        await second.aclose()
        await live.wait_for(re.compile(r"\(127\.0\.0\.1:\d+\) disconnected: 1000"))
        async with connect_to(live.url) as again:
            await wait_connected(live, again)


async def test_ipv6_is_counted_per_64(nursery: trio.Nursery) -> None:
    server = await start_memory_server(nursery, max_connections_per_ip=2)
    for peer in SAME_64:
        assert (await status_from(nursery, server, peer))[0] == 101
    status, headers, _ = await status_from(nursery, server, Address("2001:db8:1:2::c", 1))
    assert (status, headers["retry-after"]) == (429, "10")
    assert (await status_from(nursery, server, NEXT_64))[0] == 101


async def test_behind_a_trusted_proxy_the_client_is_counted_not_the_proxy(
    nursery: trio.Nursery,
) -> None:
    proxy = Address("10.0.0.1", 50000)
    server = await start_memory_server(
        nursery, max_connections_per_ip=2, trusted_proxy=(ipaddress.ip_network("10.0.0.1"),)
    )
    for _ in range(2):
        status, _, _ = await status_from(nursery, server, proxy, "X-Forwarded-For: 198.51.100.4")
        assert status == 101
    status, _, body = await status_from(nursery, server, proxy, "X-Forwarded-For: 198.51.100.4")
    assert (status, body) == (429, f"{TOO_MANY}\n")
    for client in ("198.51.100.5", "198.51.100.6"):
        status, _, _ = await status_from(nursery, server, proxy, f"X-Forwarded-For: {client}")
        assert status == 101


async def test_an_exempt_block_and_a_cap_of_zero_are_not_limited(nursery: trio.Nursery) -> None:
    exempt = await start_memory_server(
        nursery,
        max_connections_per_ip=1,
        connect_rate_per_ip=1,
        limits_exempt=(ipaddress.ip_network("203.0.113.0/24"),),
    )
    off = await start_memory_server(nursery, max_connections_per_ip=0, connect_rate_per_ip=0)
    for server in (exempt, off):
        for _ in range(5):
            assert (await status_from(nursery, server, REMOTE))[0] == 101


# --- the connect rate, on a fake clock -------------------------------------------------------


async def test_the_connect_rate_refuses_with_the_seconds_to_wait_and_they_are_enough(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """3 a minute: three at once, the fourth 429 with Retry-After 20 (and the text says
    so); 20 s later one more gets in. Refusals spend nothing."""
    server = await start_memory_server(nursery, connect_rate_per_ip=3, max_connections_per_ip=0)
    for _ in range(3):
        assert (await status_from(nursery, server, REMOTE))[0] == 101
    for _ in range(3):
        status, headers, body = await status_from(nursery, server, REMOTE)
        assert (status, headers["retry-after"]) == (429, "20")
        assert body == (
            "too many new connections from your address (at most 3 a minute); try again in 20 s\n"
        )
    await trio.sleep(20)
    assert (await status_from(nursery, server, REMOTE))[0] == 101
    assert (await status_from(nursery, server, REMOTE))[0] == 429


async def test_a_default_server_lets_20_connections_of_an_address_in_and_60_a_minute(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """The defaults: 20 open at once; 60 new ones a minute."""
    server = await start_memory_server(nursery)
    assert ServerConfig().max_connections_per_ip == 20
    streams, answers = [], []
    for _ in range(21):  # one after the other: at most 10 handshakes at once may be
        streams.append(connect_memory(nursery, server, REMOTE))
        answers.append((await answer_of(streams[-1], upgrade()))[0])
    assert answers == [101] * 20 + [429]
    for stream in streams[:20]:
        await stream.aclose()
    with trio.fail_after(EVENT_TIMEOUT):
        while server.connections:
            await trio.testing.wait_all_tasks_blocked()
    # 21 handshakes spent 20 of 60 (the refused one spent none): 40 more, then 429.
    answers = []
    for _ in range(41):
        stream = connect_memory(nursery, server, REMOTE)
        answers.append((await answer_of(stream, upgrade()))[0])
        await stream.aclose()
    assert answers == [101] * 40 + [429]


# --- handshakes in progress ------------------------------------------------------------------


async def open_from(live: LiveServer, local: str) -> trio.SocketStream:
    """A TCP connection to ``live`` from the loopback address ``local``."""
    with trio.fail_after(EVENT_TIMEOUT):
        return await trio.open_tcp_stream("127.0.0.1", live.server.port, local_address=local)


async def expect_closed_unanswered(stream: trio.abc.Stream) -> None:
    """The server closes ``stream`` without a byte."""
    with trio.fail_after(EVENT_TIMEOUT):
        assert await stream.receive_some() == b""


@asynccontextmanager
async def trickling(
    live: LiveServer, count: int, local: str
) -> AsyncIterator[list[trio.SocketStream]]:
    """``count`` connections from ``local`` that each sent the first byte of a request
    and nothing more; closed on the way out."""
    streams: list[trio.SocketStream] = []
    try:
        for _ in range(count):
            stream = await open_from(live, local)
            streams.append(stream)
            await stream.send_all(b"G")
        yield streams
    finally:
        for stream in streams:
            await trio.aclose_forcefully(stream)


async def test_handshakes_in_progress_from_one_peer_are_capped_before_a_byte_is_read(
    start_live_server: StartLiveServer,
) -> None:
    """Three connections from 127.0.0.2 trickle their requests; its fourth is closed at
    once, unanswered, while a client from 127.0.0.1 gets in and chats."""
    live = await start_live_server(limits_exempt=(), max_pending_handshakes_per_ip=3)
    async with trickling(live, 3, "127.0.0.2"):
        async with await open_from(live, "127.0.0.2") as fourth:
            await expect_closed_unanswered(fourth)
        await live.wait_for(
            re.compile(
                r"^127\.0\.0\.2:\d+: closed at once: 3 handshakes in progress from this address$"
            )
        )
        async with open_plain(live) as alice:
            await alice.ask("/nick alice", "* You are now known as alice")
        assert live.server.handshakes.in_progress == 3
    with trio.fail_after(EVENT_TIMEOUT):
        while live.server.handshakes.in_progress:
            await trio.testing.wait_all_tasks_blocked()
    async with open_plain(live) as bob:
        await bob.ask("/nick bob", "* You are now known as bob")


async def test_handshakes_in_progress_are_capped_in_all(start_live_server: StartLiveServer) -> None:
    live = await start_live_server(max_pending_handshakes=2)
    async with trickling(live, 2, "127.0.0.1") as streams:
        async with await open_from(live, "127.0.0.3") as late:
            await expect_closed_unanswered(late)
        await live.wait_for(
            re.compile(r"^127\.0\.0\.3:\d+: closed at once: 2 handshakes in progress$")
        )
        await trio.aclose_forcefully(streams.pop())
        with trio.fail_after(EVENT_TIMEOUT):
            while live.server.handshakes.in_progress > 1:
                await trio.testing.wait_all_tasks_blocked()
        async with open_plain(live) as alice:
            await alice.ask("/nick alice", "* You are now known as alice")


async def test_200_trickling_connections_are_dropped_at_the_timeout_and_a_client_gets_in(
    start_live_server: StartLiveServer,
) -> None:
    """Slowloris, limits lifted for loopback: 200 connections that trickle a byte at a
    time are all held (not refused) and all dropped at the handshake timeout, however
    often they send; meanwhile a normal client gets in and chats. Their 200 timeout
    lines are one line and a count."""
    live = await start_live_server(handshake_timeout=3)
    async with trickling(live, 200, "127.0.0.1") as streams:

        async def trickle(stream: trio.SocketStream) -> None:
            # A byte every tenth of a second: the time limit is on the whole request.
            with trio.move_on_after(EVENT_TIMEOUT):
                while True:
                    await trio.sleep(0.1)
                    try:
                        await stream.send_all(b"E")
                    except trio.BrokenResourceError:
                        return

        async with trio.open_nursery() as tricklers:
            tricklers.start_soon(trickle, streams[0])
            async with open_plain(live) as alice:
                await alice.ask("/nick alice", "* You are now known as alice")
            for stream in streams[1:]:
                await expect_closed_unanswered(stream)
            tricklers.cancel_scope.cancel()
    lines = [line for line in live.log.messages if "no WebSocket handshake within 3 s" in line]
    assert len(lines) == 1
    live.server.shutdown()
    with trio.fail_after(EVENT_TIMEOUT):
        await live.server.stopped.wait()
    summaries = [line for line in live.log.messages if "no WebSocket handshake" in line][1:]
    assert summaries == ["127.0.0.1: no WebSocket handshake within 3 s … repeated 199 times"]


async def test_with_limits_on_a_trickling_host_holds_ten_and_a_normal_client_gets_in(
    start_live_server: StartLiveServer,
) -> None:
    """Slowloris from one address with the default caps: ten held, 190 closed at once."""
    live = await start_live_server(limits_exempt=())
    assert ServerConfig().max_pending_handshakes_per_ip == 10
    async with trickling(live, 200, "127.0.0.2") as streams:
        for stream in streams[10:]:
            await expect_closed_unanswered(stream)
        assert live.server.handshakes.in_progress == 10
        async with open_plain(live) as alice:
            await alice.ask("/nick alice", "* You are now known as alice")
    live.server.shutdown()
    with trio.fail_after(EVENT_TIMEOUT):
        await live.server.stopped.wait()
    crowded = [line for line in live.log.messages if "closed at once" in line]
    assert crowded[1:] == [
        "127.0.0.2: closed at once: 10 handshakes in progress from this address"
        " … repeated 189 times"
    ]


# --- Origin ----------------------------------------------------------------------------------


async def refused_origin(live: LiveServer, origin: str) -> websockets.http11.Response:
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with connect_to(live.url, headers={"Origin": origin}):
            pass
    return refused.value.response


async def test_a_page_from_another_origin_gets_403_and_the_servers_own_gets_in(
    live_server: LiveServer,
) -> None:
    """Default rules: the server's own origin (Host with http) and no Origin pass;
    another site, null (a file:// page) and file:// are refused with 403."""
    own = live_server.url.replace("ws://", "http://")
    async with connect_to(live_server.url, headers={"Origin": own}) as ws:
        await wait_connected(live_server, ws)
    async with connect_to(live_server.url) as ws:
        await wait_connected(live_server, ws)
    response = await refused_origin(live_server, "http://evil.example")
    assert response.status_code == 403
    assert response.body == (
        b"pages from http://evil.example may not open a WebSocket on this server; "
        b"its operator may allow them with --allow-origin\n"
    )
    await live_server.wait_for(
        re.compile(r"^127\.0\.0\.1:\d+: refused GET /: 403 pages from http://evil\.example ")
    )
    assert (await refused_origin(live_server, "null")).body.startswith(b"pages from null may")
    assert (await refused_origin(live_server, "file://")).status_code == 403
    assert (await refused_origin(live_server, own + "/page")).body.startswith(
        b"a page with that Origin may not"
    )
    assert (await refused_origin(live_server, own.replace("http:", "https:"))).status_code == 403


async def test_allow_origin_lets_those_pages_in_and_star_lets_every_page_in(
    start_live_server: StartLiveServer,
) -> None:
    listed = await start_live_server(allow_origin=("https://app.example", "null"))
    for origin in ("https://app.example", "null"):
        async with connect_to(listed.url, headers={"Origin": origin}) as ws:
            await wait_connected(listed, ws)
    assert (await refused_origin(listed, "https://other.example")).status_code == 403
    star = await start_live_server(allow_origin=("*",))
    for origin in ("http://evil.example", "null", "file://"):
        async with connect_to(star.url, headers={"Origin": origin}) as ws:
            await wait_connected(star, ws)


async def test_the_public_origin_is_the_servers_own_behind_a_proxy(nursery: trio.Nursery) -> None:
    """Behind a proxy the Host may be the proxy's upstream name: --public-origin says
    the origin instead. Without it, a trusted proxy's X-Forwarded-Proto gives the scheme."""
    server = await start_memory_server(nursery, public_origin="https://chat.example.org")
    origin = "Origin: https://chat.example.org"
    assert (await status_from(nursery, server, REMOTE, origin))[0] == 101
    own_host = "Origin: http://chat.example"
    assert (await status_from(nursery, server, REMOTE, own_host))[0] == 403
    proxied = await start_memory_server(nursery, trusted_proxy=(ipaddress.ip_network("10.0.0.1"),))
    proxy = Address("10.0.0.1", 50000)
    headers = ("X-Forwarded-For: 198.51.100.4", "X-Forwarded-Proto: https")
    answer = await status_from(nursery, proxied, proxy, *headers, "Origin: https://chat.example")
    assert answer[0] == 101
    answer = await status_from(nursery, proxied, proxy, *headers, "Origin: http://chat.example")
    assert answer[0] == 403


async def test_a_refused_page_spends_nothing_of_its_addresses_allowance(
    nursery: trio.Nursery,
) -> None:
    """The Origin rule comes before the per-address limits."""
    server = await start_memory_server(nursery, connect_rate_per_ip=1)
    for _ in range(5):
        assert (await status_from(nursery, server, REMOTE, "Origin: http://evil.example"))[0] == 403
    assert (await status_from(nursery, server, REMOTE))[0] == 101


async def test_a_banned_address_spends_nothing_of_its_allowance(nursery: trio.Nursery) -> None:
    """Bans come before the per-address limits: refused with 403 five times, the address
    still has its one connection a minute once the ban is lifted."""
    server = await start_memory_server(nursery, connect_rate_per_ip=1)
    with trio.fail_after(EVENT_TIMEOUT):
        await answer_console_line("/ban 203.0.113.0/24", server.chat, server.shutdown)
    for _ in range(5):
        assert (await status_from(nursery, server, REMOTE))[0] == 403
    with trio.fail_after(EVENT_TIMEOUT):
        await answer_console_line("/unban 203.0.113.0/24", server.chat, server.shutdown)
    assert (await status_from(nursery, server, REMOTE))[0] == 101
    assert (await status_from(nursery, server, REMOTE))[0] == 429


# --- login timeout and idle guests -----------------------------------------------------------


async def test_a_connection_that_does_not_log_in_is_closed_at_the_login_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """With --accounts, the default 30 s: closed 1008, its address's place given back."""
    server = await start_memory_server(nursery, accounts=True, max_connections_per_ip=1)
    ws = await open_ws(nursery, server, REMOTE)
    start = trio.current_time()
    with trio.fail_after(60), pytest.raises(ConnectionClosed) as closed:
        await ws.get_message()
    assert (closed.value.reason.code, closed.value.reason.reason) == (1008, "no login in time")
    assert trio.current_time() - start == pytest.approx(30, abs=1)
    with trio.fail_after(EVENT_TIMEOUT):
        while server.connections:
            await trio.testing.wait_all_tasks_blocked()
    assert (await status_from(nursery, server, REMOTE))[0] == 101


async def test_an_idle_guest_is_never_dropped(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """--accounts --guests: a guest that says nothing for a day is still there, and still
    answers pings; the login timeout is for connections that must log in."""
    server = await start_memory_server(nursery, accounts=True, guests=True, login_timeout=1)
    ws = await open_ws(nursery, server, REMOTE)
    assert json.loads(await ws.get_message())["type"] == "welcome"
    await trio.sleep(24 * 3600)
    with trio.fail_after(EVENT_TIMEOUT):
        await ws.ping()
        await ws.send_message(json.dumps({"type": "who", "cid": 1}))
        answer = json.loads(await ws.get_message())
    assert (answer["type"], answer["cid"]) == ("ack", 1)
    assert len(server.connections) == 1


# --- folded log lines ------------------------------------------------------------------------


async def test_repeated_refusals_are_one_line_and_a_count(
    start_live_server: StartLiveServer, nursery: trio.Nursery
) -> None:
    # A short shutdown grace: the raw client let in never answers the close frame.
    live = await start_live_server(max_connections_per_ip=1, shutdown_grace=0.1)
    assert (await status_from(nursery, live.server, REMOTE))[0] == 101
    for _ in range(5):
        assert (await status_from(nursery, live.server, REMOTE))[0] == 429
    refused = "refused GET /: 429 too many connections from your address (at most 1 at once)"
    assert [line for line in live.log.messages if refused in line] == [
        f"203.0.113.7:40000: {refused}; close one, or try again later"
    ]
    live.server.shutdown()
    with trio.fail_after(EVENT_TIMEOUT):
        await live.server.stopped.wait()
    assert [line for line in live.log.messages if refused in line][1:] == [
        f"203.0.113.7: {refused}; close one, or try again later … repeated 4 times"
    ]


async def test_a_full_disk_logs_one_error_and_a_count(
    live_server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every message fails to be stored (each sender gets store_failed); the log has one
    ERROR line while it lasts, and the count at shutdown."""

    async def full(records: object) -> None:
        await trio.lowlevel.checkpoint()
        raise StoreError("database or disk is full")

    monkeypatch.setattr(live_server.server.chat.log.store, "write", full)
    async with connect_to(live_server.url, subprotocols=[PROTOCOL]) as ws:  # type: ignore[list-item]
        with trio.fail_after(EVENT_TIMEOUT):
            assert json.loads(await ws.recv())["type"] == "welcome"
            for n in range(30):
                await ws.send(json.dumps({"type": "message", "text": f"m{n}", "cid": n}))
                answer = json.loads(await ws.recv())
                assert (answer["code"], answer["cid"]) == ("store_failed", n)
    live_server.server.shutdown()
    with trio.fail_after(EVENT_TIMEOUT):
        await live_server.server.stopped.wait()
    assert [line for line in live_server.log.messages if "could not store" in line] == [
        "could not store 1 message(s): database or disk is full",
        "could not store messages: database or disk is full … repeated 29 times",
    ]
    assert len(live_server.log.errors) == 2
    live_server.log.errors.clear()  # expected: the fixture fails a test on any other error
