"""The connection's byte stream (server/net/stream.py): ordered writes that never wait.

Both paths are checked: a plain TCP socket on 127.0.0.1 (the direct ``os.write`` path)
and ``trio.testing`` lockstep memory streams (the sender-task path used for any other
stream), whose sends wait until the other end reads, as a peer that stops reading makes
a socket do. Every wait is for an event under ``trio.fail_after``, never a sleep.
"""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing

from trio_chat.server.net.seam import Address
from trio_chat.server.net.stream import (
    ConnectionStream,
    DirectSocketStream,
    SenderTaskStream,
    describe_transport,
    open_connection_stream,
)

from support import EVENT_TIMEOUT, transport_pair

TRANSPORTS = ["tcp", "memory"]
#: More than a socket's kernel buffers hold, so a peer that does not read blocks it.
MANY_BYTES = 4 * 1024 * 1024


async def read_exactly(stream: trio.abc.Stream, size: int) -> bytes:
    """``size`` bytes from ``stream``; fails if it ends first."""
    received = bytearray()
    with trio.fail_after(EVENT_TIMEOUT):
        while len(received) < size:
            data = await stream.receive_some()
            assert data, f"the stream ended after {len(received)} of {size} bytes"
            received += data
    return bytes(received)


def pattern(size: int, seed: int) -> bytes:
    """``size`` bytes that show where a cut or a reordering happened: ``seed``,
    ``seed + 1``, ... modulo 251 (a prime, so no power-of-two cut lines up)."""
    cycle = bytes(range(251))
    cycle = cycle[seed:] + cycle[:seed]
    return (cycle * (size // 251 + 1))[:size]


@pytest.mark.parametrize(
    ("transport", "kind"), [("tcp", DirectSocketStream), ("memory", SenderTaskStream)]
)
async def test_a_plain_socket_gets_the_direct_path_any_other_stream_a_sender_task(
    transport: str, kind: type[ConnectionStream]
) -> None:
    """open_connection_stream picks the direct os.write path for trio.SocketStream, and
    the sender task for anything else."""
    peer, server_end = await transport_pair(transport)
    async with peer, open_connection_stream(server_end) as stream:
        assert type(stream) is kind


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_cancelled_flush_loses_nothing_and_cuts_nothing(transport: str) -> None:
    """A flush cancelled while the peer does not read leaves what is unsent queued, whole
    and in order: the peer later reads exactly every byte written, and a new flush
    completes."""
    first, second = pattern(MANY_BYTES, 1), pattern(1000, 7)
    peer, server_end = await transport_pair(transport)
    async with peer, open_connection_stream(server_end) as stream:
        stream.write(first)
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.flush)
                await trio.testing.wait_all_tasks_blocked()
                assert 0 < stream.buffered <= MANY_BYTES
                scope.cancel()
        assert scope.cancelled_caught
        stream.write(second)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stream.flush)
            assert await read_exactly(peer, len(first) + len(second)) == first + second
        assert stream.buffered == 0


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_frames_written_by_several_tasks_never_interleave(transport: str) -> None:
    """Two tasks writing and flushing at once: every frame arrives whole, each task's
    frames in its order."""
    frames = {seed: [pattern(5000 + n, seed) for n in range(50)] for seed in (1, 2)}
    peer, server_end = await transport_pair(transport)
    async with peer, open_connection_stream(server_end) as stream:

        async def write_all(seed: int) -> None:
            for frame in frames[seed]:
                stream.write(frame)
                await stream.flush()

        total = sum(len(frame) for chunk in frames.values() for frame in chunk)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write_all, 1)
            nursery.start_soon(write_all, 2)
            received = await read_exactly(peer, total)
    seen: dict[int, list[bytes]] = {1: [], 2: []}
    offset = 0
    while offset < len(received):
        seed = received[offset]  # every frame starts with its seed
        frame = frames[seed][len(seen[seed])]
        assert received[offset : offset + len(frame)] == frame
        seen[seed].append(frame)
        offset += len(frame)
    assert seen == frames


async def test_a_failed_send_breaks_the_stream_for_good() -> None:
    """When the peer is gone, a flush raises BrokenResourceError, and so does every
    later write: the connection must be dropped."""
    peer, server_end = trio.testing.memory_stream_pair()
    async with open_connection_stream(server_end) as stream:
        await peer.aclose()
        stream.write(b"into the void")
        with trio.fail_after(EVENT_TIMEOUT), pytest.raises(trio.BrokenResourceError):
            await stream.flush()
        with pytest.raises(trio.BrokenResourceError):
            stream.write(b"more")
        assert await stream.receive_some() == b""


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_leaving_drops_what_is_unsent_and_closes_the_stream(transport: str) -> None:
    """Leaving open_connection_stream while a send waits for a peer that does not read
    returns at once; the stream is closed (the peer reads its end) and writes after
    aclose raise ClosedResourceError."""
    peer, server_end = await transport_pair(transport)
    async with peer:
        with trio.fail_after(EVENT_TIMEOUT):
            async with open_connection_stream(server_end) as stream:
                stream.write(pattern(MANY_BYTES, 3))
                await trio.testing.wait_all_tasks_blocked()
                assert stream.buffered > 0
        with pytest.raises(trio.ClosedResourceError):
            stream.write(b"after")
        with trio.fail_after(EVENT_TIMEOUT):
            while await peer.receive_some():
                pass


async def test_the_transport_is_described_through_tls() -> None:
    """describe_transport finds the peer's address under a trio.SSLStream and says it is
    encrypted; a memory stream has no address."""
    peer, server_end = await transport_pair("tcp")
    async with peer, server_end:
        assert isinstance(peer, trio.SocketStream)
        host, port = peer.socket.getsockname()
        assert describe_transport(server_end) == (Address(host, port), False)
        encrypted = trio.SSLStream(
            server_end, ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), server_side=True
        )
        assert describe_transport(encrypted) == (Address(host, port), True)
    assert describe_transport(trio.testing.memory_stream_pair()[1]) == (None, False)
