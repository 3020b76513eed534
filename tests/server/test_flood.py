"""Flood limits: the token buckets, fake lag, the backlog bound, the frame cap, costly
commands, and the room caps.

Limits are ON in this module, each test naming the ones it sets (the defaults where it
names none): ``--rate-limit 5``, ``--rate-burst 10``, ``--rate-backlog 50``,
``--max-frame-lines 50``, ``--command-rate 20`` a minute, ``--command-burst 5``. Time
rules run on trio's autojump clock over memory streams (no sockets, no real waiting): a
time read in a test is the fake clock's, exact up to float rounding, never a threshold.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import time
from collections import deque
from pathlib import Path
from typing import Any

import jwt
import pytest
import trio
import trio.testing
from inproc import LiveServer, StartLiveServer, open_json, open_plain
from trio_websocket import ConnectionClosed, WebSocketConnection, wrap_client_stream

from trio_chat.core import render
from trio_chat.core.commands import History, Join, Nick, Say
from trio_chat.server.config import ServerConfig
from trio_chat.server.limits import Allowances, RateLimits, TokenBucket, is_costly
from trio_chat.server.net.seam import Address
from trio_chat.server.server import ChatServer

from support import EVENT_TIMEOUT, PROTOCOL, welcome

pytest_plugins = ["inproc"]

#: ``ServerConfig()``'s limits as its welcome announces them: the defaults, on.
DEFAULT_LIMITS = {
    "message_bytes": 65536,
    "message_lines": 20,
    "frame_lines": 50,
    "rate": 5.0,
    "burst": 10,
    "backlog": 50,
    "commands_per_minute": 20.0,
    "command_burst": 5,
}


# --- the buckets, on a clock the test moves -------------------------------------------------


def test_a_bucket_gives_its_burst_then_one_token_per_interval() -> None:
    """A full bucket of 10 at 5/s gives 10 tokens at once, then one each 0.2 s; it
    never holds more than its burst however long it waits."""
    bucket = TokenBucket(5.0, 10, now=100.0)
    for _ in range(10):
        assert bucket.wait(100.0) == 0.0
        bucket.take(100.0)
    assert bucket.wait(100.0) == pytest.approx(0.2)
    assert bucket.wait(100.1) == pytest.approx(0.1)
    assert bucket.wait(100.2) == 0.0
    assert bucket.tokens(1000.0) == 10
    assert bucket.full(1000.0)


def test_a_principal_shares_one_allowance_and_full_ones_are_forgotten() -> None:
    """Allowances of one key are one object (its devices share it); a guest's (new())
    is its own; full allowances are swept once the registry doubled."""
    now = [0.0]
    allowances = Allowances(RateLimits(), lambda: now[0])
    shared = allowances.of("account:ada")
    assert allowances.of("account:ada") is shared
    assert allowances.new() is not allowances.new()
    shared.take(0.0, costly=False)
    for n in range(100):
        allowances.of(f"account:{n}")  # full, never used
    assert allowances.of("account:ada") is shared  # not full: kept
    now[0] = 10.0  # everything refilled
    for n in range(200):
        allowances.of(f"later:{n}")
    assert len(allowances) < 300


def test_costly_commands_are_new_joins_nick_changes_and_history() -> None:
    """A join of a room one is in already, and a chat line, cost only the message token."""
    assert is_costly(Join("new"), ["lobby"])
    assert not is_costly(Join("lobby"), ["lobby"])
    assert is_costly(Nick("ada"), ["lobby"])
    assert is_costly(History(), ["lobby"])
    assert not is_costly(Say("hi"), ["lobby"])


# --- a server over memory streams, on the autojump clock ------------------------------------


class _Listener(trio.abc.Listener[trio.abc.Stream]):
    """Memory-stream connections handed to the server (no sockets: the autojump clock
    must never race real I/O)."""

    def __init__(self) -> None:
        self._send, self._receive = trio.open_memory_channel[trio.abc.Stream](0)

    async def open_client(
        self, nursery: trio.Nursery, resource: str = "/", **options: Any
    ) -> WebSocketConnection:
        client_end, server_end = trio.testing.memory_stream_pair()
        await self._send.send(server_end)
        return await wrap_client_stream(
            nursery,
            client_end,  # type: ignore[arg-type]  # it takes any trio stream
            "localhost",
            resource,
            **options,
        )

    async def accept(self) -> trio.abc.Stream:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise trio.ClosedResourceError from None

    async def aclose(self) -> None:
        self._receive.close()


class _Lines:
    """A trio-websocket client read line by line, each with the (fake) time it came."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._pending: deque[tuple[float, str]] = deque()

    async def line(self) -> tuple[float, str]:
        with trio.fail_after(EVENT_TIMEOUT):
            while not self._pending:
                frame = await self.ws.get_message()
                assert isinstance(frame, str)
                now = trio.current_time()
                self._pending.extend((now, line) for line in frame.split("\n"))
        return self._pending.popleft()


async def _serve(nursery: trio.Nursery, **settings: Any) -> tuple[ChatServer, _Listener]:
    """A server with ``settings`` (limits at their defaults unless set) on memory streams."""
    listener = _Listener()
    server = ChatServer(ServerConfig(history_on_join=0, db=":memory:", **settings))
    started: ChatServer = await nursery.start(functools.partial(server.run, listeners=[listener]))
    return started, listener


async def test_a_burst_arrives_whole_but_slowly(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Limits on (5/s, burst 10): a frame of 30 lines is 30 messages; the first 10 are
    carried out at once, the rest one each 0.2 s (fake lag), every one in order."""
    _, listener = await _serve(nursery)
    client = _Lines(await listener.open_client(nursery))
    start = trio.current_time()
    await client.ws.send_message("\n".join(f"line {n}" for n in range(30)))
    for n in range(30):
        at, line = await client.line()
        assert line == f"You said: line {n}"
        assert at - start == pytest.approx(max(0, n - 9) * 0.2, abs=1e-6)


async def test_a_throttled_client_still_answers_and_gets_pings(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Limits on (defaults): while 40 of its lines wait for tokens, the server still reads
    the client's frames: its ping is answered at once, and a ping of the server's gets
    its pong, so a throttled client is never taken for a dead one."""
    server, listener = await _serve(nursery)
    client = _Lines(await listener.open_client(nursery))
    start = trio.current_time()
    await client.ws.send_message("\n".join(f"line {n}" for n in range(50)))
    with trio.fail_after(EVENT_TIMEOUT):
        await client.ws.ping(b"client")
    assert trio.current_time() == start  # before the first token came back
    (connection,) = server.connections.values()
    with trio.fail_after(EVENT_TIMEOUT):
        await connection.socket.ping(b"server")
    assert trio.current_time() == start
    for n in range(50):
        assert (await client.line())[1] == f"You said: line {n}"


async def test_a_backlog_past_its_bound_is_refused_and_closed_1008(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Limits on (defaults): 10 lines go at once, 40 wait; 20 more make 60 waiting, over
    the backlog of 50: what was carried out is delivered, then ``rate_limited``, then
    close 1008 ``rate limited``; none of the waiting lines is sent."""
    _, listener = await _serve(nursery)
    client = _Lines(await listener.open_client(nursery))
    await client.ws.send_message("\n".join(f"line {n}" for n in range(50)))
    await client.ws.send_message("\n".join(f"more {n}" for n in range(20)))
    for n in range(10):
        assert (await client.line())[1] == f"You said: line {n}"
    assert (await client.line())[1] == render.error_line(render.rate_limited(5.0, 50))
    with pytest.raises(ConnectionClosed) as closed:
        await client.line()
    assert (closed.value.reason.code, closed.value.reason.reason) == (1008, "rate limited")


async def test_refused_floods_from_one_address_are_one_log_line_and_a_count(
    nursery: trio.Nursery,
    autojump_clock: trio.testing.MockClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Limits on (defaults): three flooders from one address, each past its backlog and
    closed 1008, write one warning; the other two are counted, and the count is written
    at shutdown (``… repeated 2 times``)."""
    caplog.set_level(logging.INFO, logger="trio_chat")
    server, _ = await _serve(nursery)
    for _ in range(3):
        flooder = await _open_from(nursery, server, "203.0.113.7")
        # The address's allowance is spent after the first: the others are closed as
        # soon as their first frame passes the backlog, maybe before the second is sent.
        with contextlib.suppress(ConnectionClosed):
            await flooder.ws.send_message("\n".join(f"line {n}" for n in range(50)))
            await flooder.ws.send_message("\n".join(f"more {n}" for n in range(20)))
            while True:
                await flooder.line()
    server.shutdown()
    with trio.fail_after(EVENT_TIMEOUT):
        await server.stopped.wait()
    lines = [record.getMessage() for record in caplog.records]
    waited = [line for line in lines if "messages waiting for the rate limit" in line]
    assert len(waited) == 1, waited
    assert "203.0.113.7: rate_limited, closed with 1008 … repeated 2 times" in lines


async def test_a_frame_over_the_line_cap_is_refused_whole(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Limits on (``--max-frame-lines 50``): a frame of 32,000 lines is refused with one
    ``too_many_lines`` and nothing of it is said; the connection goes on."""
    _, listener = await _serve(nursery)
    client = _Lines(await listener.open_client(nursery))
    await client.ws.send_message("a\n" * 32_000)
    assert (await client.line())[1] == render.error_line(render.too_many_lines(32_000, 50))
    await client.ws.send_message("still here")
    assert (await client.line())[1] == "You said: still here"


async def test_without_a_frame_cap_a_huge_frame_is_many_messages_and_closes(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Limits on but the frame cap off (``--max-frame-lines 0``): a frame of 32,000 lines
    is 32,000 messages, far past the backlog as it arrives: ``rate_limited`` and 1008,
    and none of it was stored."""
    server, listener = await _serve(nursery, max_frame_lines=0)
    client = _Lines(await listener.open_client(nursery))
    await client.ws.send_message("a\n" * 32_000)
    assert (await client.line())[1] == render.error_line(render.rate_limited(5.0, 50))
    with pytest.raises(ConnectionClosed) as closed:
        await client.line()
    assert (closed.value.reason.code, closed.value.reason.reason) == (1008, "rate limited")
    assert server.chat.log.next_id == 1


async def test_costly_commands_wait_for_their_own_tokens(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Limits on (``--command-rate 20``/min, ``--command-burst 5``): five ``/nick`` go
    at once, the sixth waits 3 s (one costly command each 60/20 s); a chat line sent
    after it waits behind it (lines keep their order)."""
    _, listener = await _serve(nursery)
    client = _Lines(await listener.open_client(nursery))
    start = trio.current_time()
    await client.ws.send_message("\n".join(f"/nick n{n}" for n in range(6)) + "\nhi")
    times = []
    for n in range(6):
        at, line = await client.line()
        if n == 0:
            assert line == "* You are now known as n0"
        times.append(at - start)
    assert times[:5] == [0.0] * 5
    assert times[5] == pytest.approx(3.0, abs=1e-6)
    at, line = await client.line()
    assert line == "You said: hi"
    assert at - start == pytest.approx(3.0, abs=1e-6)


async def test_the_welcome_announces_the_limits(nursery: trio.Nursery) -> None:
    """Limits on (the defaults): a JSON client's welcome carries them."""
    _, listener = await _serve(nursery)
    ws = await listener.open_client(nursery, subprotocols=[PROTOCOL])
    with trio.fail_after(EVENT_TIMEOUT):
        greeting = json.loads(await ws.get_message())
    assert greeting == welcome(limits=DEFAULT_LIMITS)


# --- room caps (rate limits lifted: the fixture's servers) -----------------------------------


async def test_a_new_room_past_max_rooms_is_refused(start_live_server: StartLiveServer) -> None:
    """Rate limits lifted, ``--max-rooms 2``: the lobby and one more; a third is refused
    with ``too_many_rooms``, and joining the existing one still works."""
    live: LiveServer = await start_live_server(max_rooms=2)
    async with open_plain(live) as ada, open_plain(live) as bob:
        await ada.ask("/join one", "* You joined one (1 here)")
        await bob.ask("/join two", render.error_line(render.too_many_rooms(2)))
        await bob.send("/join one")
        assert (await bob.line()).startswith("* You joined one (2 here")


async def test_a_full_room_is_refused_at_join_and_at_arrival(
    start_live_server: StartLiveServer,
) -> None:
    """Rate limits lifted, ``--max-room-members 1``: a second member of ``one`` is
    refused with ``room_full`` (by ``/join``, and after the welcome when it asks at
    arrival, arriving in the lobby instead); the lobby is never full."""
    live: LiveServer = await start_live_server(max_room_members=1)
    async with open_plain(live, "?room=one") as ada, open_plain(live) as bob:
        assert ada.key
        await bob.ask("/join one", render.error_line(render.room_full("one", 1)))
        async with open_json(live, "?room=one", rooms=("lobby",)) as carol:
            assert await carol.event() == {
                "type": "error",
                "code": "room_full",
                "text": render.room_full("one", 1),
            }


# --- one allowance per principal; admins exempt (token logins, on the autojump clock) -------

_SECRET = "0123456789abcdef0123456789abcdef"


def _token(sub: str, **claims: Any) -> str:
    # exp is wall-clock time (the verifier's clock), far ahead of this test's fake minutes.
    return jwt.encode({"sub": sub, "exp": time.time() + 3600, **claims}, _SECRET, "HS256")


async def _serve_tokens(
    nursery: trio.Nursery, tmp_path: Path, **settings: Any
) -> tuple[ChatServer, _Listener]:
    """A server taking HS256 tokens (guests too), limits at their defaults unless set."""
    secret = tmp_path / "jwt-secret"
    secret.write_text(_SECRET + "\n")
    return await _serve(nursery, jwt_secret_file=str(secret), guests=True, **settings)


async def _own_echoes(client: _Lines, count: int) -> list[float]:
    """The times of the next ``count`` echoes of ``client``'s own lines (the lines of
    its principal's other devices, ``alice says: ...``, skipped)."""
    times = []
    while len(times) < count:
        at, line = await client.line()
        if line.startswith("You said: "):
            times.append(at)
    return times


async def test_more_connections_of_one_principal_buy_nothing(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Limits on (defaults): two connections of the token subject ``alice`` share one
    bucket: once the first spent the burst of 10, the second's line waits 0.2 s; a guest
    connection alongside has its own bucket and is not slowed."""
    _, listener = await _serve_tokens(nursery, tmp_path)
    first = _Lines(await listener.open_client(nursery, f"/?token={_token('alice')}"))
    second = _Lines(await listener.open_client(nursery, f"/?token={_token('alice')}"))
    guest = _Lines(await listener.open_client(nursery))
    start = trio.current_time()
    await first.ws.send_message("\n".join(f"line {n}" for n in range(10)))
    assert await _own_echoes(first, 10) == [start] * 10
    await second.ws.send_message("one more")
    await guest.ws.send_message("a guest")
    assert [at - start for at in await _own_echoes(guest, 1)] == [0.0]
    (waited,) = await _own_echoes(second, 1)
    assert waited - start == pytest.approx(0.2, abs=1e-6)


async def _open_from(nursery: trio.Nursery, server: ChatServer, host: str) -> _Lines:
    """A plain guest on a memory stream that the server takes for a peer at ``host``."""
    client_end, server_end = trio.testing.memory_stream_pair()
    nursery.start_soon(
        functools.partial(server.handle_stream, server_end, peer_address=Address(host, 40000))
    )
    ws = await wrap_client_stream(
        nursery,
        client_end,  # type: ignore[arg-type]  # it takes any trio stream
        "localhost",
        "/",
    )
    return _Lines(ws)


async def test_more_guest_connections_from_one_address_buy_nothing(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    """Limits on (defaults): guests from one address (one /64 for IPv6) share one bucket,
    since a reconnecting guest is a new guest: once the first spent the burst of 10, a
    second connection from its /64 waits 0.2 s for its line; a guest from another /64 is
    not slowed."""
    server, _ = await _serve(nursery)
    first = await _open_from(nursery, server, "2001:db8:0:1::1")
    start = trio.current_time()
    await first.ws.send_message("\n".join(f"line {n}" for n in range(10)))
    assert await _own_echoes(first, 10) == [start] * 10
    second = await _open_from(nursery, server, "2001:db8:0:1::ffff")
    elsewhere = await _open_from(nursery, server, "2001:db8:0:2::1")
    await second.ws.send_message("one more")
    await elsewhere.ws.send_message("from elsewhere")
    assert [at - start for at in await _own_echoes(elsewhere, 1)] == [0.0]
    (waited,) = await _own_echoes(second, 1)
    assert waited - start == pytest.approx(0.2, abs=1e-6)


async def test_an_admin_is_not_rate_limited(
    nursery: trio.Nursery, tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """Limits on (defaults, but no frame cap): an admin's 100 lines (a guest's would pass
    the backlog and be closed) are all carried out at once: no wait, no close."""
    server, listener = await _serve_tokens(nursery, tmp_path, max_frame_lines=0)
    root = _Lines(await listener.open_client(nursery, f"/?token={_token('root', admin=True)}"))
    start = trio.current_time()
    await root.ws.send_message("\n".join(f"line {n}" for n in range(100)))
    assert await _own_echoes(root, 100) == [start] * 100
    assert server.chat.log.next_id - 1 == 100
