"""Sent once, in id order: history on join and resume bounded by the member's arrival, the
live copies a replay makes redundant, and resumes past the retention window.

In-process servers on 127.0.0.1 (port 0). The fast-sender cases use a WebSocket client
written by hand (:class:`RawClient`), so that a test decides exactly which bytes share one
TCP write: the handshake and a first message, or several commands.
"""

from __future__ import annotations

import base64
import json
import os
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

from trio_chat.core.commands import PROTOCOL
from trio_chat.core.events import Message
from trio_chat.server.bus import Instruction
from trio_chat.server.history import MessageLog
from trio_chat.server.replay import Replayer, ReplayRecent, ReplaySince, missed_since
from trio_chat.server.server import ChatServer
from trio_chat.server.store import MemoryStore, Record, StoreError

from support import EVENT_TIMEOUT, FakeViewer, open_client, receive, say, welcome

StartServer = Callable[..., Awaitable[ChatServer]]
Event = dict[str, Any]


# --- a WebSocket client by hand ------------------------------------------------------------


def handshake(resource: str = "/", *, json_mode: bool = False) -> bytes:
    """An opening handshake for ``resource``, offering ``trio-chat.v1`` if ``json_mode``."""
    key = base64.b64encode(os.urandom(16)).decode()
    protocol = f"Sec-WebSocket-Protocol: {PROTOCOL}\r\n" if json_mode else ""
    return (
        f"GET {resource} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"{protocol}\r\n"
    ).encode()


def frame(text: str | Event) -> bytes:
    """One masked text frame (the all-zero mask: valid, and the payload stays readable)."""
    payload = (json.dumps(text) if isinstance(text, dict) else text).encode()
    assert len(payload) < 126
    return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload


class RawClient:
    """A connection whose every TCP write the test chose. Reads the server's text frames
    (unmasked, unfragmented) and hands them out line by line."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._lines: deque[str] = deque()

    @classmethod
    async def open(cls, port: int, first_write: bytes) -> RawClient:
        """Connect, send ``first_write`` (a handshake, and maybe frames after it) as one
        write, and read the 101."""
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        client = cls(stream)
        await stream.send_all(first_write)
        response = await client._read_until(b"\r\n\r\n")
        assert response.startswith(b"HTTP/1.1 101 "), response
        return client

    async def send(self, data: bytes) -> None:
        await self._stream.send_all(data)

    async def _fill(self) -> None:
        chunk = await self._stream.receive_some(65536)
        assert chunk, "the server closed the connection"
        self._buffer += chunk

    async def _read_until(self, end: bytes) -> bytes:
        while end not in self._buffer:
            await self._fill()
        index = self._buffer.index(end) + len(end)
        head = bytes(self._buffer[:index])
        del self._buffer[:index]
        return head

    async def _read(self, count: int) -> bytes:
        while len(self._buffer) < count:
            await self._fill()
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def line(self) -> str:
        """The next line of text the server sent, within the event time limit."""
        with trio.fail_after(EVENT_TIMEOUT):
            while not self._lines:
                opcode, length = await self._read(2)
                assert opcode == 0x81, f"not a final text frame: {opcode:#x}"
                if length == 126:
                    length = int.from_bytes(await self._read(2), "big")
                elif length == 127:
                    length = int.from_bytes(await self._read(8), "big")
                self._lines.extend((await self._read(length)).decode().split("\n"))
        return self._lines.popleft()

    async def event(self) -> Event:
        """The next JSON event, without its ``ts``."""
        event = json.loads(await self.line())
        assert isinstance(event, dict)
        event.pop("ts", None)
        return event

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self._stream)


def message(message_id: int, text: str, room: str = "lobby", sender: str | None = None) -> Event:
    return {"type": "message", "id": message_id, "room": room, "from": sender, "text": text}


def replayed(event: Event) -> Event:
    return {**event, "history": True}


def ack(command: str, cid: str | None = None, **result: Any) -> Event:
    event: Event = {"type": "ack"}
    if cid is not None:
        event["cid"] = cid
    return {**event, "command": command, **result}


async def say_lines(port: int, *texts: str) -> None:
    """An anonymous plain client says ``texts`` (each echoed; ``/join ROOM`` joins it),
    then leaves."""
    async with open_client(f"ws://127.0.0.1:{port}") as ws:
        for text in texts:
            if text.startswith("/join "):
                await ws.send_message(text)
                assert (await receive(ws)).startswith(f"* You joined {text[6:]} ")
            else:
                await say(ws, text)


# --- a fast sender gets its own echo -------------------------------------------------------


async def test_a_line_in_the_handshakes_write_is_echoed_live(start_server: StartServer) -> None:
    """Text in the same TCP write as the handshake comes back as ``You said:``, after the
    history from before the client arrived, never as history itself."""
    server = await start_server(history_on_join=50)
    await say_lines(server.port, "before")
    for n in range(5):
        client = await RawClient.open(server.port, handshake() + frame(f"hi {n}"))
        try:
            assert await client.line() == "[history] Someone says: before"
            for earlier in range(n):
                assert await client.line() == f"[history] Someone says: hi {earlier}"
            assert await client.line() == f"You said: hi {n}"
        finally:
            await client.aclose()


async def test_ten_fresh_clients_sending_at_once_each_get_their_own_echo(
    start_server: StartServer,
) -> None:
    """Ten clients sending right after the 101, all at once: each one's own line is its
    ``You said:`` echo; the others' lines come once each, as history or live."""
    server = await start_server(history_on_join=50)
    count = 10
    seen: dict[int, list[str]] = {}

    async def client(n: int) -> None:
        raw = await RawClient.open(server.port, handshake())
        try:
            await raw.send(frame(f"hi {n}"))
            lines: list[str] = []
            while (line := await raw.line()) != f"You said: hi {n}":
                lines.append(line)
            seen[n] = lines
        finally:
            await raw.aclose()

    async with trio.open_nursery() as nursery:
        for n in range(count):
            nursery.start_soon(client, n)
    for n, lines in seen.items():
        assert f"[history] Someone says: hi {n}" not in lines
        others = [line.removeprefix("[history] ") for line in lines]
        assert len(set(others)) == len(others), lines
        assert all(line.startswith("Someone says: hi ") for line in others), lines
    assert sorted(seen) == list(range(count))


async def test_a_plain_line_right_after_join_is_echoed_live(start_server: StartServer) -> None:
    """``/join dev`` and a line in one frame: dev's history, then ``You said:``."""
    server = await start_server(history_on_join=50)
    async with open_client(f"ws://127.0.0.1:{server.port}") as ws:
        await ws.send_message("/join dev")
        assert await receive(ws) == "* You joined dev (1 here)"
        await say(ws, "old")
    client = await RawClient.open(server.port, handshake() + frame("/join dev\nhello"))
    try:
        assert await client.line() == "* You joined dev (1 here)"
        assert await client.line() == "[history] Someone says: old"
        assert await client.line() == "You said: hello"
    finally:
        await client.aclose()


async def test_a_json_message_right_after_join_is_live(start_server: StartServer) -> None:
    """A JSON ``join`` and a ``message`` in one write: the ack, the room's history, then the
    message's ack and its live copy (no ``history`` mark). Eight times, each in a room of
    its own, so that no lucky scheduling hides a replay that came too late."""
    server = await start_server(history_on_join=50)
    await say_lines(server.port, "/join dev", "old")  # id 1, in dev
    client = await RawClient.open(server.port, handshake(json_mode=True))
    try:
        assert await client.event() == welcome()
        for n in range(8):
            room = "dev" if n == 0 else f"dev{n}"
            await client.send(
                frame({"type": "join", "room": room, "cid": "j"})
                + frame({"type": "message", "text": f"first {n}", "cid": "m"})
            )
            joined = ack("join", "j", room=room, topic=None, members=[], anonymous=1)
            assert await client.event() == joined
            if n == 0:
                assert await client.event() == replayed(message(1, "old", "dev"))
            assert await client.event() == ack("message", "m", id=n + 2, room=room)
            assert await client.event() == message(n + 2, f"first {n}", room)
    finally:
        await client.aclose()


def sent(count: int) -> list[Event]:
    """The history a resume after id 1 replays once ``count`` lines followed "seen"."""
    return [replayed(message(2, "missed"))] + [
        replayed(message(3 + n, f"new {n}")) for n in range(count - 1)
    ]


async def test_a_message_in_the_resume_urls_handshake_is_live(start_server: StartServer) -> None:
    """Connecting with ``?since=`` and sending at once: the resume ack, what was missed,
    then the new message live. Five connections, each adding one."""
    server = await start_server()
    await say_lines(server.port, "seen", "missed")  # ids 1, 2
    for n in range(5):
        first = handshake("/?since=1", json_mode=True)
        new = frame({"type": "message", "text": f"new {n}", "cid": "m"})
        client = await RawClient.open(server.port, first + new)
        try:
            assert await client.event() == welcome()
            assert await client.event() == ack("resume", since=1, recovered=True)
            for event in sent(n + 1):
                assert await client.event() == event
            assert await client.event() == ack("message", "m", id=n + 3, room="lobby")
            assert await client.event() == message(n + 3, f"new {n}")
        finally:
            await client.aclose()


async def test_a_message_right_after_the_resume_command_is_live(start_server: StartServer) -> None:
    """``resume`` and a ``message`` in one write: the ack, what was missed, then the new
    message live. Five connections, each adding one."""
    server = await start_server()
    await say_lines(server.port, "seen", "missed")  # ids 1, 2
    for n in range(5):
        client = await RawClient.open(server.port, handshake(json_mode=True))
        try:
            assert await client.event() == welcome()
            await client.send(
                frame({"type": "resume", "since": 1, "cid": "r"})
                + frame({"type": "message", "text": f"new {n}", "cid": "m"})
            )
            assert await client.event() == ack("resume", "r", since=1, recovered=True)
            for event in sent(n + 1):
                assert await client.event() == event
            assert await client.event() == ack("message", "m", id=n + 3, room="lobby")
            assert await client.event() == message(n + 3, f"new {n}")
        finally:
            await client.aclose()


# --- resume past the retention window ------------------------------------------------------


async def plain_lines(ws: Any, count: int) -> list[str]:
    """The next ``count`` lines a trio-websocket client receives (frames split on ``\\n``)."""
    lines: list[str] = []
    while len(lines) < count:
        lines.extend((await receive(ws)).split("\n"))
    assert len(lines) == count, lines
    return lines


async def json_events(ws: Any, count: int) -> list[Event]:
    """The next ``count`` JSON events of a trio-websocket client, without ``ts``."""
    events: list[Event] = [json.loads(line) for line in await plain_lines(ws, count)]
    for event in events:
        event.pop("ts", None)
    return events


async def test_a_resume_past_retention_says_what_was_lost(start_server: StartServer) -> None:
    """With ``--history-limit 3``, a resume from before what is kept says
    ``recovered: false`` and the id from which nothing is missing, in the URL form (an ack
    without cid) and as the resume command's ack; a plain client gets one notice line."""
    server = await start_server(history_limit=3)
    url = f"ws://127.0.0.1:{server.port}"
    await say_lines(server.port, *(f"m{n}" for n in range(1, 7)))  # 1-3 are dropped
    kept = [replayed(message(n, f"m{n}")) for n in (4, 5, 6)]
    async with open_client(url + "/?since=1", subprotocols=[PROTOCOL]) as ws:
        assert await json_events(ws, 5) == [
            welcome(),
            ack("resume", since=1, recovered=False, oldest=4),
            *kept,
        ]
    async with open_client(url + "/?since=3", subprotocols=[PROTOCOL]) as ws:
        assert await json_events(ws, 5) == [
            welcome(),
            ack("resume", since=3, recovered=True),
            *kept,
        ]
    async with open_client(url, subprotocols=[PROTOCOL]) as ws:
        assert await json_events(ws, 1) == [welcome()]
        await ws.send_message(json.dumps({"type": "resume", "since": 2, "cid": "r"}))
        expected = [ack("resume", "r", since=2, recovered=False, oldest=4), *kept]
        assert await json_events(ws, 4) == expected
    async with open_client(url + "/?since=1") as ws:
        lines = await plain_lines(ws, 4)
    assert lines == [
        "* Some messages since 1 are no longer kept and were missed; replaying from 4",
        "[history] Someone says: m4",
        "[history] Someone says: m5",
        "[history] Someone says: m6",
    ]
    async with open_client(url + "/?since=3") as ws:
        assert (await receive(ws)).split("\n") == [
            "[history] Someone says: m4",
            "[history] Someone says: m5",
            "[history] Someone says: m6",
        ]


async def test_private_retention_counts_only_for_a_principal(start_server: StartServer) -> None:
    """Dropped private messages make a resume incomplete for their principal (alice's
    ``resume`` command on her connection); a resume of anyone else (a new connection that
    takes her nick once she is gone: it replays no private messages) is complete."""
    server = await start_server(history_limit=2)
    url = f"ws://127.0.0.1:{server.port}"
    async with (
        open_client(url + "/?nick=bob", subprotocols=[PROTOCOL]) as bob,
        open_client(url + "/?nick=alice", subprotocols=[PROTOCOL]) as alice,
    ):
        await json_events(bob, 1)
        await json_events(alice, 1)
        for n in range(1, 4):  # ids 1-3: the first is dropped
            await bob.send_message(json.dumps({"type": "private", "to": "alice", "text": f"p{n}"}))
            assert (await json_events(alice, 1))[0]["id"] == n
        await alice.send_message(json.dumps({"type": "resume", "since": 0}))
        events = await json_events(alice, 3)
        assert events[0] == ack("resume", since=0, recovered=False, oldest=2)
        assert [event["text"] for event in events[1:]] == ["p2", "p3"]
    async with open_client(url + "/?nick=alice&since=0", subprotocols=[PROTOCOL]) as ws:
        assert await json_events(ws, 2) == [
            welcome("alice"),
            ack("resume", since=0, recovered=True),
        ]


# --- the replayer alone ----------------------------------------------------------------------


def stored(message_id: int, room: str = "lobby") -> Record:
    return Record(message_id, "2026-01-01T00:00:00.000Z", room, None, None, f"m{message_id}")


class Frames:
    """What a :class:`Replayer` sends, frame by frame."""

    def __init__(self) -> None:
        self.frames: list[list[str]] = []

    async def __call__(self, lines: list[str]) -> bool:
        await trio.lowlevel.checkpoint()
        self.frames.append(list(lines))
        return True

    @property
    def lines(self) -> list[str]:
        return [line for lines in self.frames for line in lines]


async def replayer_over(records: list[Record]) -> tuple[Replayer, MessageLog]:
    store = MemoryStore(100)
    await store.write(records)
    log = MessageLog(store)
    await log.open()
    return Replayer(log, FakeViewer(1), 1000), log


async def test_live_copies_of_a_replay_are_dropped_until_a_later_id() -> None:
    """After a replay of lobby 1-3, live copies of 2 and 3 are dropped; dev's 2 (not in a
    run) and lobby's 4 pass, and 4 ends the filtering: nothing replayed can follow it."""
    replayer, log = await replayer_over([stored(1), stored(2), stored(3)])
    assert replayer.live_filter is None  # before any replay the writer checks nothing
    frames = Frames()
    assert await replayer.carry_out(ReplayRecent("lobby", 10, log.next_id), frames)
    assert frames.lines == [f"[history] Someone says: m{n}" for n in (1, 2, 3)]
    drop = replayer.live_filter
    assert drop is not None
    assert drop(Message(stored(2), 2))
    assert drop(Message(stored(3), 2))
    assert not drop(Message(stored(2, "dev"), 2))
    assert not drop(Message(stored(4), 2))
    assert replayer.live_filter is None


async def test_a_replay_is_bounded_and_a_later_one_skips_what_was_sent() -> None:
    """An order covers ids below its ``until`` only; a resume after history on join sends
    only what the join's replay did not."""
    replayer, log = await replayer_over([stored(1), stored(2), stored(3, "dev"), stored(4)])
    frames = Frames()
    assert await replayer.carry_out(ReplayRecent("lobby", 1, 3), frames)
    assert frames.lines == ["[history] Someone says: m2"]
    order = missed_since(log, 0, ["lobby", "dev"], None, "r")
    assert isinstance(order, ReplaySince)
    assert order.until == 5
    assert await replayer.carry_out(order, frames)
    assert frames.lines[1:] == [  # (a complete resume's ack reads as nothing in plain)
        "[history] Someone says: m1",
        "[dev] [history] Someone says: m3",
        "[history] Someone says: m4",
    ]


class BrokenStore(MemoryStore):
    async def since(self, *args: Any, **kwargs: Any) -> list[Record]:
        raise StoreError("disk on fire")


async def test_a_store_failure_answers_the_resume_with_one_error() -> None:
    """A store that fails before the ack answers the resume command with its cid."""
    log = MessageLog(BrokenStore(10))
    await log.open()
    viewer = FakeViewer(1, json=True)
    replayer = Replayer(log, viewer, 1000)
    frames = Frames()
    assert await replayer.carry_out(missed_since(log, 0, ["lobby"], None, "r"), frames)
    assert frames.lines == [
        '{"type":"error","cid":"r","code":"store_failed","text":"history is unavailable right now"}'
    ]
    with pytest.raises(TypeError):
        await replayer.carry_out(Instruction(), frames)
