"""Hostile frames (and requests) against a live in-process server: thousands of them,
random and mutated, over raw TCP; then a normal client still chats and nothing is left
behind.

Every fuzzing connection completes the opening handshake, writes bytes it builds itself
(bad or missing masks, reserved bits, unknown opcodes, fragments out of order, control
frames over 125 bytes, close frames with invalid codes, lengths that lie, headers cut
short, random bytes, valid frames with bits flipped), then its own close frame and the
end of its stream, and reads until the server closes. A case whose answer RFC 6455
fixes must get exactly that close code; any other must get a close code of the
protocol, or the TCP connection ended.

Afterwards the server is where it was: as many connections and Trio tasks as before,
and the memory Python allocated in the server's code and its libraries (tracemalloc;
RSS does not shrink in CPython, so it proves nothing) grown by no more than a bound.
The log holds no traceback (the ``inproc`` fixture fails the test on one).

The opening handshake gets the same treatment: upgrade requests with bytes and headers
mutated are each answered with one of the handshake's statuses, and closed.

Limits: the server's defaults, with ``nick_hold`` 0 (a session held after its
connection ends would be memory left behind by design), ``history_limit`` 20 (the chat
lines among the frames are stored: the store is full after the first round) and every
per-address and rate limit this server has lifted (:func:`lifted_limits`): the fuzzers
send fast from one address. Deterministic: the frames come from a seeded random generator.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import random
import re
import struct
import tracemalloc
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing
from inproc import SERVER_LOGGER, LiveServer, StartLiveServer, open_plain
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

from trio_chat.server.config import ServerConfig

from support import EVENT_TIMEOUT, PROTOCOL

pytest_plugins = ["inproc"]

#: Frames are made from this seed: the same bytes on every run.
SEED = 12_2026
#: The key RFC 6455 (section 1.3) uses, and the request every fuzzer opens with.
WEBSOCKET_KEY = "dGhlIHNhbXBsZSBub25jZQ=="
#: The server's message size limit in this test: small, so that oversized messages are cheap.
MAX_MESSAGE_SIZE = 4096
#: Fuzzing connections open at once.
CONCURRENCY = 20
#: Close codes a peer may not send (RFC 6455, section 7.4): reserved, local-only or unassigned.
INVALID_CLOSE_CODES = (0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535)
#: Close codes a peer may send, which the server echoes.
VALID_CLOSE_CODES = (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 4000, 4999)
#: What the server may close a fuzzer with when the case fixes no code: a protocol error,
#: invalid UTF-8, a message too big, the echo of a close the fuzzer's bytes made (any
#: valid code), or a binary message answered (the connection carries on, then the
#: fuzzer's own close 1000 is echoed).
ANY_SERVER_CODE = frozenset(VALID_CLOSE_CODES)

#: The server's limits against floods and against one address, each lifted here (they are
#: flags of ``config.SETTINGS``; 0 turns one off).
RATE_AND_ADDRESS_LIMITS = (
    "rate_limit",
    "rate_burst",
    "rate_backlog",
    "command_rate",
    "command_burst",
    "max_frame_lines",
    "max_connections_per_ip",
    "connect_rate_per_ip",
    "max_pending_handshakes",
    "max_pending_handshakes_per_ip",
)


def lifted_limits() -> dict[str, Any]:
    """``{name: 0}`` for every rate and per-address limit, so that no fuzzer is refused
    for sending fast. A name the server does not have fails here: a limit renamed must
    not be silently left on."""
    names = {entry.name for entry in dataclasses.fields(ServerConfig)}
    unknown = [name for name in RATE_AND_ADDRESS_LIMITS if name not in names]
    assert not unknown, f"no such server settings: {unknown}"
    return dict.fromkeys(RATE_AND_ADDRESS_LIMITS, 0)


# --- frames, built by hand -------------------------------------------------------------------


def frame(
    opcode: int,
    payload: bytes = b"",
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = b"\x37\xfa\x21\x3d",
    length: int | None = None,
    length_bytes: int | None = None,
) -> bytes:
    """One frame with every field chosen: ``rsv`` the three reserved bits (0 to 7),
    ``mask`` the masking key (None: unmasked, which a client may not send), ``length``
    the length the header declares (the payload's own by default) and ``length_bytes``
    how it is written (0, 2 or 8 extra bytes; the shortest by default)."""
    declared = len(payload) if length is None else length
    first = (0x80 if fin else 0) | (rsv & 7) << 4 | opcode & 0x0F
    mask_bit = 0 if mask is None else 0x80
    if length_bytes is None:
        length_bytes = 0 if declared < 126 else 2 if declared < 65536 else 8
    if length_bytes == 0:
        head = bytes([first, mask_bit | declared])
    elif length_bytes == 2:
        head = bytes([first, mask_bit | 126]) + struct.pack("!H", declared)
    else:
        head = bytes([first, mask_bit | 127]) + struct.pack("!Q", declared)
    if mask is None:
        return head + payload
    return head + mask + bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))


def text(payload: str | bytes, *, fin: bool = True, opcode: int = Opcode.TEXT) -> bytes:
    """A masked text frame (or a continuation, with ``opcode``)."""
    data = payload.encode() if isinstance(payload, str) else payload
    return frame(opcode, data, fin=fin)


def close(code: int | None = None, reason: bytes = b"") -> bytes:
    """A masked close frame with ``code`` and ``reason`` (None: an empty one)."""
    return frame(Opcode.CLOSE, b"" if code is None else struct.pack("!H", code) + reason)


# --- cases -----------------------------------------------------------------------------------

#: No close frame from the server: it just ended the TCP connection.
DROPPED = 0


@dataclass
class Case:
    """What one fuzzing connection sends, and what the server must answer: ``expect``,
    a close code, :data:`DROPPED`, or None for any code of :data:`ANY_SERVER_CODE` or a
    drop. ``pings``: the payloads of the pings sent, each to be answered by its pong,
    in order."""

    name: str
    data: bytes
    expect: int | None
    pings: list[bytes] = field(default_factory=list)
    #: Whether the fuzzer ends with its own close frame (not after bytes that leave a
    #: frame unfinished: the close would be read as its payload).
    then_close: bool = True
    #: Whether it speaks ``trio-chat.v1`` (offers it at the handshake), not plain text.
    json: bool = False


def chat_frames(rng: random.Random) -> bytes:
    """Zero to three valid frames first: a chat line, a ping, a message in two parts."""
    choices = [
        text("hello"),
        frame(Opcode.PING, b"p"),
        text("in ", fin=False) + text("parts", opcode=Opcode.CONTINUATION),
        frame(Opcode.PONG, b"unsolicited"),
        text("/nick " + rng.choice(["x", "bad nick!", "a" * 40])),
    ]
    return b"".join(rng.choice(choices) for _ in range(rng.randrange(4)))


def protocol_errors(rng: random.Random) -> list[Case]:
    """A frame each that RFC 6455 says fails the connection, after some valid ones."""
    long_payload = rng.randbytes(rng.randrange(126, 300))
    errors: list[tuple[str, bytes, int]] = [
        ("unmasked", frame(Opcode.TEXT, b"naked", mask=None), 1002),
        ("reserved bits", frame(Opcode.TEXT, b"x", rsv=rng.randrange(1, 8)), 1002),
        ("bad opcode", frame(rng.choice([3, 4, 5, 6, 7, 11, 12, 13, 14, 15]), b"x"), 1002),
        ("continuation first", text("x", opcode=Opcode.CONTINUATION), 1002),
        ("data frame in a fragmented message", text("a", fin=False) + text("b"), 1002),
        ("ping over 125 bytes", frame(Opcode.PING, long_payload), 1002),
        ("close over 125 bytes", close(1000, long_payload), 1002),
        ("fragmented ping", frame(Opcode.PING, b"x", fin=False), 1002),
        ("close with one byte", frame(Opcode.CLOSE, b"\x03"), 1002),
        ("close with invalid code", close(rng.choice(INVALID_CLOSE_CODES)), 1002),
        ("close reason not UTF-8", close(1000, b"\xff\xfe"), 1007),
        ("text not UTF-8", text(b"caf\xe9"), 1007),
        ("UTF-8 split wrong", text(b"\xc3", fin=False) + text(b"x", opcode=0), 1007),
        ("length in 2 bytes for 5", frame(Opcode.TEXT, b"hello", length_bytes=2), 1002),
        ("length in 8 bytes for 200", frame(Opcode.TEXT, b"x" * 200, length_bytes=8), 1002),
        ("length with its top bit set", frame(Opcode.TEXT, b"", length=2**63 + 5), 1002),
        ("message over the size limit", text("x" * (MAX_MESSAGE_SIZE + 1)), 1009),
        (
            # The server starts closing (1009), then cannot parse what comes: it must
            # not wait for a close frame that cannot come.
            "over the size limit, then a frame that does not parse",
            text("x" * (MAX_MESSAGE_SIZE + 1)) + frame(Opcode.TEXT, b"naked", mask=None),
            1009,
        ),
        (
            "fragments over the size limit",
            text("x" * 3000, fin=False) + text("y" * 3000, opcode=Opcode.CONTINUATION),
            1009,
        ),
    ]
    return [
        Case(name, chat_frames(rng) + data, code, then_close=False) for name, data, code in errors
    ]


def closes(rng: random.Random) -> list[Case]:
    """Valid close frames (echoed) and an empty one (answered 1005 by nobody: 1000)."""
    cases = [
        Case(f"close {code}", chat_frames(rng) + close(code, b"bye"), code, then_close=False)
        for code in VALID_CLOSE_CODES
    ]
    cases.append(Case("empty close", chat_frames(rng) + close(), 1005, then_close=False))
    return cases


def cut_short(rng: random.Random) -> list[Case]:
    """Frames that never end: a header cut short, a length that promises more than
    comes; the server sees the TCP connection end and drops it."""
    whole = text("hello there")
    huge = frame(Opcode.TEXT, b"abc", length=rng.randrange(2**40, 2**62))
    return [
        Case("header cut short", whole[: rng.randrange(1, 6)], DROPPED, then_close=False),
        Case("payload cut short", whole[:-3], DROPPED, then_close=False),
        Case("huge length, little payload", huge, DROPPED, then_close=False),
    ]


def ping_flood(count: int) -> Case:
    """``count`` pings in one write, each with its own payload: every one answered by its
    pong, in order, then the close."""
    payloads = [str(n).encode() * (1 + n % 11) for n in range(count)]
    payloads = [payload[:125] for payload in payloads]
    data = b"".join(frame(Opcode.PING, payload) for payload in payloads)
    return Case(f"{count} pings", data, 1000, pings=payloads)


def mutated(rng: random.Random) -> Case:
    """Valid frames with bytes flipped, cut, doubled or inserted: any answer but a hang
    or a traceback."""
    data = bytearray(chat_frames(rng) + text(rng.randbytes(rng.randrange(40)).hex()))
    for _ in range(rng.randrange(1, 4)):
        where = rng.randrange(len(data))
        match rng.randrange(4):
            case 0:
                data[where] ^= 1 << rng.randrange(8)
            case 1:
                data[where] = rng.randrange(256)
            case 2:
                data[where:where] = rng.randbytes(rng.randrange(1, 4))
            case _:
                del data[where : where + rng.randrange(1, 4)]
    return Case("mutated", bytes(data), None)


def random_bytes(rng: random.Random) -> Case:
    """Bytes at random after the handshake."""
    return Case("random", rng.randbytes(rng.randrange(1, 64)), None)


def random_frames(rng: random.Random) -> Case:
    """Frames with every field at random (masks, bits, opcodes, lengths), one to five."""
    data = b""
    for _ in range(rng.randrange(1, 6)):
        payload = rng.randbytes(rng.choice([0, 1, 5, 125, 126, 200]))
        data += frame(
            rng.randrange(16),
            payload,
            fin=rng.random() < 0.7,
            rsv=rng.choice([0, 0, 0, rng.randrange(8)]),
            mask=None if rng.random() < 0.1 else rng.randbytes(4),
            length_bytes=rng.choice([None, None, None, 2, 8]),
        )
    return Case("random frames", data, None)


def json_values(rng: random.Random, depth: int = 0) -> Any:
    """A JSON value at random, shaped like a command now and then."""
    kinds = ["null", "number", "text", "list", "object", "command"] if depth < 3 else ["text"]
    match rng.choice(kinds):
        case "null":
            return None
        case "number":
            return rng.choice([0, -1, 1.5, 2**63, 2**64 + 1, 10**30, True])
        case "text":
            return rng.choice(["", "lobby", "x" * 40, "a\nb", "\u2028", "\x1b[2K", "é"])
        case "list":
            return [json_values(rng, depth + 1) for _ in range(rng.randrange(3))]
        case "object":
            return {rng.choice(["type", "cid", "text"]): json_values(rng, depth + 1)}
    fields = ["room", "text", "to", "nick", "limit", "before", "since", "session", "cid"]
    command = {"type": rng.choice(["message", "me", "join", "history", "resume", "quit", "x"])}
    command |= {key: json_values(rng, depth + 1) for key in rng.sample(fields, 3)}
    return command


def json_frames(rng: random.Random) -> Case:
    """A JSON client's frames: documents at random, nested beyond what a decoder
    recurses, not JSON at all. Each is answered (an ack or an error), and the connection
    stays open until the fuzzer's own close."""
    documents = [json.dumps(json_values(rng)) for _ in range(rng.randrange(1, 4))]
    documents.append(rng.choice(["[" * 4000, '{"a":' * 800, "{", "", "\u0000"]))
    rng.shuffle(documents)
    data = b"".join(text(document) for document in documents if document != '{"type": "quit"}')
    return Case("JSON", data, 1000, json=True)


def make_cases(rng: random.Random, rounds: int) -> list[Case]:
    """``rounds`` of every kind of case, shuffled."""
    cases: list[Case] = []
    for _ in range(rounds):
        cases += protocol_errors(rng) + closes(rng) + cut_short(rng)
        cases += [mutated(rng) for _ in range(10)]
        cases += [random_frames(rng) for _ in range(10)]
        cases += [random_bytes(rng) for _ in range(5)]
        cases += [json_frames(rng) for _ in range(10)]
    rng.shuffle(cases)
    return cases


# --- a fuzzing connection --------------------------------------------------------------------


def upgrade_request(port: int, *, json_mode: bool) -> bytes:
    """A valid upgrade request, offering ``trio-chat.v1`` when ``json_mode``."""
    offer = f"Sec-WebSocket-Protocol: {PROTOCOL}\r\n" if json_mode else ""
    return (
        "GET / HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {WEBSOCKET_KEY}\r\n"
        f"{offer}"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


@dataclass
class Answer:
    """What the server sent a fuzzer after the handshake: its pongs, its close code
    (:data:`DROPPED` when it sent none) and how many text frames came first."""

    pongs: list[bytes] = field(default_factory=list)
    close_code: int = DROPPED
    texts: int = 0


async def read_answer(stream: trio.SocketStream, received: bytes) -> Answer:
    """Read the server's frames until it closes the TCP connection (a reset too)."""
    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(received)
    answer = Answer()
    while True:
        for server_frame in parser.received_frames():
            if server_frame.opcode is Opcode.PONG:
                answer.pongs.append(bytes(server_frame.payload))  # type: ignore[arg-type]
            elif server_frame.opcode is Opcode.CLOSE:
                assert answer.close_code == DROPPED, "two close frames"
                code, _ = server_frame.payload  # type: ignore[misc]
                answer.close_code = code
            elif server_frame.opcode is Opcode.TEXT:
                assert answer.close_code == DROPPED, "a text frame after the close"
                answer.texts += 1
        try:
            data = await stream.receive_some()
        except trio.BrokenResourceError:  # reset: the server closed with our bytes unread
            return answer
        if not data:
            return answer
        parser.receive_bytes(bytes(data))


async def fuzz_one(port: int, case: Case) -> Answer:
    """Open a WebSocket, send ``case``, then (unless it says not to) a close 1000 and
    the end of the stream, and read the server's answer until it closes the socket."""
    with trio.fail_after(EVENT_TIMEOUT):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(upgrade_request(port, json_mode=case.json))
            received = b""
            while b"\r\n\r\n" not in received:
                data = await stream.receive_some()
                assert data, "the server closed the connection during the handshake"
                received += data
            head, _, rest = received.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 101 "), head

            async def send() -> None:
                # The server may close before it has read everything sent.
                try:
                    await stream.send_all(case.data)
                    if case.then_close:
                        await stream.send_all(close(1000))
                    await stream.send_eof()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)  # while reading: the pongs of a flood come back
                answer = await read_answer(stream, rest)
    return answer


def check(case: Case, answer: Answer) -> str | None:
    """What is wrong with ``answer`` to ``case``, or None."""
    if case.pings and answer.pongs != case.pings:
        return f"{len(answer.pongs)} pongs to {len(case.pings)} pings, or out of order"
    if case.expect is None:
        if answer.close_code in ANY_SERVER_CODE or answer.close_code == DROPPED:
            return None
    elif answer.close_code == case.expect:
        return None
    return f"closed with {answer.close_code}, not {case.expect}"


# --- what the server holds -------------------------------------------------------------------


def task_count() -> int:
    """How many Trio tasks this run has (the test's, the server's, everyone's)."""

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(
            count(child) for nursery in task.child_nurseries for child in nursery.child_tasks
        )

    return count(trio.lowlevel.current_root_task())


#: Where the allocations that count were made: the server's code and the libraries it
#: runs on (not the test's, nor the log lines the test keeps).
SERVER_CODE = ("*/trio_chat/*", "*/trio/*", "*/wsproto/*", "*/h11/*")


def server_allocations() -> tracemalloc.Snapshot:
    """What Python holds that the server's code or its libraries allocated."""
    gc.collect()
    return tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, pattern) for pattern in SERVER_CODE]
    )


def growth(before: tracemalloc.Snapshot, after: tracemalloc.Snapshot) -> tuple[int, str]:
    """Bytes more held ``after`` than ``before``, and the ten lines that grew most."""
    stats = after.compare_to(before, "lineno")
    grown = sum(stat.size_diff for stat in stats)
    return grown, "\n".join(str(stat) for stat in stats[:10])


async def settle() -> None:
    """Wait until every task is blocked: the server has finished with what ended."""
    with trio.fail_after(EVENT_TIMEOUT):
        await trio.testing.wait_all_tasks_blocked(cushion=0.01)


async def fuzz(live: LiveServer, cases: list[Case], concurrency: int) -> list[str]:
    """Run ``cases``, ``concurrency`` at a time; return what went wrong, one line each."""
    problems: list[str] = []
    limiter = trio.Semaphore(concurrency)

    async def run(case: Case) -> None:
        async with limiter:
            answer = await fuzz_one(live.server.port, case)
        problem = check(case, answer)
        if problem is not None:
            problems.append(f"{case.name} ({case.data[:40]!r}): {problem}")

    async with trio.open_nursery() as nursery:
        for case in cases:
            nursery.start_soon(run, case)
    return problems


async def test_thousands_of_hostile_frames_leave_the_server_as_it_was(
    start_live_server: StartLiveServer,
) -> None:
    """A few thousand random and mutated frames, each case on its own connection, get
    the close code RFC 6455 says (or a drop, for bytes that never make a frame), and
    afterwards a normal client chats, and the server has the connections, the tasks
    and (within a bound) the memory it had before."""
    live = await start_live_server(
        max_message_size=MAX_MESSAGE_SIZE, nick_hold=0, history_limit=20, **lifted_limits()
    )
    rng = random.Random(SEED)
    # pytest's log capture keeps every record, and with it the arguments the server
    # made for it (its peer, its close code): memory the test holds, not the server.
    # Meanwhile the server's lines reach the test's ServerLog alone (which keeps their
    # text, and fails the test on an error or a traceback as ever).
    server_logger = logging.getLogger(SERVER_LOGGER)
    server_logger.propagate = False
    tracemalloc.start()
    try:
        # In a room of her own: the fuzzers' chat lines (in the lobby) do not reach her.
        async with open_plain(live, "/?room=quiet") as alice:
            await alice.ask("before", "You said: before")
            # A first round, as wide as the next, warms up what is made once (caches,
            # lazy imports, the sets of tasks at their largest) and fills the store.
            assert await fuzz(live, [*make_cases(rng, 1), ping_flood(2000)], CONCURRENCY) == []
            await settle()
            connections, tasks = len(live.server.connections), task_count()
            allocated = server_allocations()

            cases = [*make_cases(rng, 6), ping_flood(2000), ping_flood(500)]
            frames = sum(case.data.count(b"\x37\xfa\x21\x3d") for case in cases)
            assert frames > 2000  # at least, not counting random and mutated ones
            assert await fuzz(live, cases, CONCURRENCY) == []
            await settle()

            assert len(live.server.connections) == connections == 1
            assert task_count() == tasks
            grown, where = growth(allocated, server_allocations())
            assert grown < 64 * 1024, f"{grown} bytes more after {len(cases)} cases:\n{where}"
            await alice.ask("after", "You said: after")
    finally:
        tracemalloc.stop()
        server_logger.propagate = True


#: The statuses an opening handshake may be answered with: switched, or refused
#: (docs/protocol.md lists which request gets which).
HANDSHAKE_STATUSES = frozenset({101, 400, 403, 405, 426, 429, 431, 503})


def mutated_request(rng: random.Random, port: int) -> bytes:
    """A valid upgrade request with bytes flipped, cut, doubled or inserted, or headers
    dropped, repeated or swapped for random ones."""
    lines = upgrade_request(port, json_mode=rng.random() < 0.3).split(b"\r\n")
    for _ in range(rng.randrange(1, 4)):
        where = rng.randrange(len(lines))
        match rng.randrange(6):
            case 0:
                del lines[where]
            case 1:
                lines.insert(where, lines[where])
            case 2:
                lines.insert(where, rng.randbytes(rng.randrange(1, 30)))
            case 3:
                line = bytearray(lines[where] or b"x")
                line[rng.randrange(len(line))] = rng.randrange(256)
                lines[where] = bytes(line)
            case 4:
                lines[where] = lines[where].upper() if rng.random() < 0.5 else lines[where].lower()
            case _:
                lines[where] = lines[where][: rng.randrange(len(lines[where]) + 1)]
    return b"\r\n".join(lines)


async def handshake_answer(port: int, request: bytes) -> bytes:
    """Send ``request`` and the end of the stream; every byte the server sends until it
    closes the connection."""
    received = b""
    with trio.fail_after(EVENT_TIMEOUT):
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            try:
                await stream.send_all(request)
                await stream.send_eof()
            except trio.BrokenResourceError:
                pass  # answered and closed before it read everything
            try:
                while data := await stream.receive_some():
                    received += data
            except trio.BrokenResourceError:
                pass
    return received


async def test_mutated_upgrade_requests_get_an_http_answer_or_are_dropped(
    start_live_server: StartLiveServer,
) -> None:
    """Hundreds of upgrade requests with their bytes and headers mutated: each gets a
    status of the handshake's (or nothing, for a request that never ends), the server
    closes each connection, and is left with none; the log holds no traceback."""
    live = await start_live_server(**lifted_limits())
    rng = random.Random(SEED)
    port = live.server.port
    answers: list[bytes] = []
    limiter = trio.Semaphore(CONCURRENCY)

    async def run(request: bytes) -> None:
        async with limiter:
            answers.append(await handshake_answer(port, request))

    async with trio.open_nursery() as nursery:
        for _ in range(300):
            nursery.start_soon(run, mutated_request(rng, port))
    statuses = {answer[9:12] for answer in answers if answer}
    assert {int(status) for status in statuses} <= HANDSHAKE_STATUSES, statuses
    assert all(answer.startswith(b"HTTP/1.1 ") for answer in answers if answer)
    assert len(statuses) > 3  # the mutations reach several of the checks
    await settle()
    assert live.server.connections == {}
    async with open_plain(live) as alice:
        await alice.ask("hello", "You said: hello")


async def test_a_close_reason_is_logged_as_one_line_that_drives_no_terminal(
    start_live_server: StartLiveServer,
) -> None:
    """A peer's close reason with a line break (a forged log line after it) and escape
    sequences is logged in the one disconnect line, each written as an escape."""
    live = await start_live_server(**lifted_limits())
    reason = "bye\n\u2705 Client #99 connected from 10.0.0.1:1\x1b[2K\x1b]0;owned\x07"
    case = Case("forged", close(1000, reason.encode()), 1000, then_close=False)
    assert check(case, await fuzz_one(live.server.port, case)) is None
    line = await live.wait_for(re.compile(r"disconnected: 1000 .*"))
    assert line.group() == (
        "disconnected: 1000 bye\\n\u2705 Client #99 connected from 10.0.0.1:1"
        "\\x1b[2K\\x1b]0;owned\\x07"
    )
    assert not any(message.startswith("\u2705 Client #99") for message in live.log.messages)


def test_the_cases_say_what_they_expect() -> None:
    """A check of the cases themselves: wsproto's own parser (the server's) fails each
    protocol error case the way the case expects."""
    for case in protocol_errors(random.Random(SEED)):
        if case.expect == 1009:  # the size limit is the server's, not the parser's
            continue
        parser = FrameProtocol(client=False, extensions=[])
        parser.receive_bytes(case.data)
        with pytest.raises(ParseFailed) as failed:
            for _ in parser.received_frames():
                pass
        assert failed.value.code == case.expect, case.name
