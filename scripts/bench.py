"""Load generator for chat servers that speak the tutorial's plain protocol.

Starts each server under test itself (trio_chat and the two peers in scripts/), measures
them in the same run, and prints the figures with trio_chat / peer ratios.

Two modes:

* ``throughput``: CLIENTS clients connect; SENDERS of them each send MESSAGES messages,
  with at most WINDOW unacknowledged (a message is acknowledged when its own
  ``You said:`` echo returns). Every client scans every frame it receives. Reports
  deliveries per second, latency p50/p99/max (send to receipt, over every delivery),
  and checks that every message reached every client exactly once.
* ``fanout``: FANOUT_CLIENTS idle connections; reports the server's RSS per connection
  and the time for one message to reach all of them (median of ROUNDS rounds, each
  started once the server is idle).

trio_chat runs with its flood limits LIFTED (``--rate-limit 0 --command-rate 0``): the
bench floods by design. With ``--limits`` it is measured a second time, as
``trio_chat+limits``, its limits on and set just above what the bench sends (every message
takes a token, none waits): the report gives what the limits' bookkeeping costs as ratios.

With ``--tls`` trio_chat is measured a second time, as ``trio_chat+tls``: serving
``wss://`` with a certificate from a throwaway CA the bench makes (trustme), its clients
speaking TLS (asyncio's ssl). The report then gives the cost of TLS as ratios to plain TCP
in the same run: server CPU per delivery, deliveries per second, RSS per connection.

The load side is a minimal WebSocket client on asyncio's Protocol API: one callback
per TCP read, frames parsed with slicing, bytes never decoded to text, and client frames
masked with an all-zero key (valid framing; a server must not depend on the key's value,
and it saves a per-byte XOR). Its CPU time per delivery is printed beside the server's, so
a run where the load side was the bottleneck shows itself.

    .venv/bin/python scripts/bench.py                     # everything, full scale
    .venv/bin/python scripts/bench.py --mode throughput --clients 20 --messages 20
    .venv/bin/python scripts/bench.py --tls --servers trio_chat   # what TLS costs
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import os
import resource
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The subprocess helper the tests use (standard library only).
sys.path.insert(0, str(ROOT / "tests"))
from ready_process import ReadyProcess  # noqa: E402

START_TIMEOUT = 30.0


# --- the servers under test ------------------------------------------------------------


#: The name trio_chat is reported under when it serves TLS (``--tls``).
TLS_NAME = "trio_chat+tls"
#: The name trio_chat is reported under with its flood limits on (``--limits``), set just
#: above what the bench sends: every message takes a token, none ever waits.
LIMITS_NAME = "trio_chat+limits"
#: trio_chat with every limit at its default (the ``abuse`` mode's server).
DEFAULTS_NAME = "trio_chat+defaults"


@dataclass
class ServerSpec:
    name: str
    command: list[str]
    #: What the load side verifies the server's certificate with; None: plain TCP.
    client_ssl: ssl.SSLContext | None = None


@dataclass
class Certificates:
    certfile: str
    keyfile: str
    client_ssl: ssl.SSLContext


def make_certificates(folder: str) -> Certificates:
    """A throwaway CA (trustme, a test dependency) and a certificate for 127.0.0.1 from
    it, as PEM files in ``folder``; the client context that trusts that CA only."""
    import trustme

    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    certfile, keyfile = Path(folder) / "bench.crt", Path(folder) / "bench.key"
    certfile.write_bytes(b"".join(pem.bytes() for pem in issued.cert_chain_pems))
    issued.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return Certificates(str(certfile), str(keyfile), context)


def server_specs(
    db_dir: str, certificates: Certificates | None = None, messages: int = 0
) -> dict[str, ServerSpec]:
    """Every server the benchmark knows, each run with its default settings (trio_chat
    with its durable history store on, in a fresh database, its per-address limits
    lifted for loopback, since every benchmark client connects from there, thousands at
    once, and its flood limits LIFTED, since the bench floods by design); with
    ``certificates``, trio_chat serving TLS too (:data:`TLS_NAME`); with ``messages``
    (what one sender sends), trio_chat with its flood limits ON just above that
    (:data:`LIMITS_NAME`); and trio_chat with every limit at its default, the per-address
    ones too (:data:`DEFAULTS_NAME`, the abuse mode's)."""
    python = sys.executable
    trio_chat = [
        python,
        "-m",
        "trio_chat.server",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--no-console",
        "--db",
        str(Path(db_dir) / "bench.db"),
    ]
    defaults = list(trio_chat)
    trio_chat += ["--limits-exempt", "127.0.0.0/8"]
    lifted = ["--rate-limit", "0", "--command-rate", "0"]
    specs = {
        "trio_chat": ServerSpec("trio_chat", trio_chat),
        "asyncio": ServerSpec(
            "asyncio",
            [
                python,
                str(ROOT / "scripts" / "peer_server.py"),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
        ),
        "trio": ServerSpec(
            "trio",
            [
                python,
                str(ROOT / "scripts" / "peer_trio_server.py"),
                "--host",
                "127.0.0.1",
                "--port",
                "0",
            ],
        ),
    }
    if certificates is not None:
        specs[TLS_NAME] = ServerSpec(
            TLS_NAME,
            [
                *trio_chat,
                *lifted,
                "--certfile",
                certificates.certfile,
                "--keyfile",
                certificates.keyfile,
            ],
            certificates.client_ssl,
        )
    if messages:
        # A burst that holds everything one sender sends, refilled as fast: the buckets'
        # bookkeeping runs for every message, and no message waits.
        above = str(messages + 1)
        specs[LIMITS_NAME] = ServerSpec(
            LIMITS_NAME,
            [*trio_chat, "--rate-limit", above, "--rate-burst", above, "--rate-backlog", above],
        )
    specs[DEFAULTS_NAME] = ServerSpec(DEFAULTS_NAME, defaults)
    specs["trio_chat"].command += lifted
    return specs


class RunningServer(ReadyProcess):
    """A server subprocess (the tests' helper: ready once its --ready-file is written,
    its output collected by a thread so it never blocks), with the figures the bench reads
    from /proc."""

    def __init__(self, spec: ServerSpec) -> None:
        self.client_ssl = spec.client_ssl
        super().__init__(
            spec.command,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            cwd=ROOT,
            start_timeout=START_TIMEOUT,
        )

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def rss_bytes(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self) -> None:
        """SIGTERM, so that the server shuts down as it would in use; killed if it takes
        more than 15 s. Then the helper's own clean-up."""
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(15)
        super().stop()

    async def wait_idle(self, quiet: float = 0.05, limit: float = 30.0) -> None:
        """Wait (at most ``limit`` seconds) until the server uses no CPU over ``quiet``."""
        deadline = time.monotonic() + limit
        before = self.cpu_seconds()
        while time.monotonic() < deadline:
            await asyncio.sleep(quiet)
            now = self.cpu_seconds()
            if now == before:
                return
            before = now


# --- a minimal WebSocket client ----------------------------------------------------------


class BenchClient(asyncio.Protocol):
    """One connection: handshake, frame parsing, and a callback per received line."""

    def __init__(self, on_line: Callable[[bytes], None]) -> None:
        self.on_line = on_line
        self.transport: asyncio.Transport | None = None
        self.handshake = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self._upgraded = False
        self._buffer = b""
        self._fragments: list[bytes] = []
        self._key = base64.b64encode(os.urandom(16)).decode()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(
            (
                "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {self._key}\r\n\r\n"
            ).encode()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.handshake.done():
            self.handshake.set_exception(ConnectionError("closed during the handshake"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data if self._buffer else data
        if not self._upgraded:
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                self._buffer = buffer
                return
            if not buffer.startswith(b"HTTP/1.1 101"):
                self.handshake.set_exception(ConnectionError(buffer[:end].decode(errors="replace")))
                return
            self._upgraded = True
            self.handshake.set_result(None)
            buffer = buffer[end + 4 :]
        position, size = 0, len(buffer)
        while size - position >= 2:
            first, second = buffer[position], buffer[position + 1]
            length = second & 0x7F
            header = 2
            if length == 126:
                if size - position < 4:
                    break
                length = struct.unpack_from("!H", buffer, position + 2)[0]
                header = 4
            elif length == 127:
                if size - position < 10:
                    break
                length = struct.unpack_from("!Q", buffer, position + 2)[0]
                header = 10
            end = position + header + length
            if end > size:
                break
            self._frame(first, buffer[position + header : end])
            position = end
        self._buffer = buffer[position:]

    def _frame(self, first: int, payload: bytes) -> None:
        opcode = first & 0x0F
        if opcode in (0x1, 0x0):  # text, continuation
            if not first & 0x80:
                self._fragments.append(payload)
                return
            if self._fragments:
                payload = b"".join([*self._fragments, payload])
                self._fragments = []
            on_line = self.on_line
            for line in payload.split(b"\n"):
                on_line(line)
        elif opcode == 0x9:  # ping: answer with a pong
            self._send(0xA, payload)
        elif opcode == 0x8 and self.transport is not None:
            self.transport.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        length = len(payload)
        if length < 126:
            header = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 65536:
            header = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            header = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        assert self.transport is not None
        # An all-zero masking key: the payload goes as it is.
        self.transport.write(header + b"\0\0\0\0" + payload)

    def send_text(self, payload: bytes) -> None:
        self._send(0x1, payload)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self._send(0x8, struct.pack("!H", 1000))
            self.transport.close()


async def connect_all(
    server: RunningServer, count: int, make: Callable[[int], BenchClient]
) -> list[BenchClient]:
    """Connect ``count`` clients, 200 handshakes at a time (over TLS when the server
    speaks it). Client i binds to a loopback address of its own group, so that many runs
    do not exhaust one address's ports."""
    port, context = server.port, server.client_ssl
    tls = {} if context is None else {"ssl": context, "server_hostname": "127.0.0.1"}
    loop = asyncio.get_running_loop()
    clients: list[BenchClient] = []
    for start in range(0, count, 200):
        batch = [make(i) for i in range(start, min(count, start + 200))]
        for index, client in enumerate(batch, start):
            source = f"127.0.{1 + index // 20000}.{1 + (os.getpid() % 200)}"
            await loop.create_connection(
                lambda client=client: client, "127.0.0.1", port, local_addr=(source, 0), **tls
            )
        await asyncio.gather(*(client.handshake for client in batch))
        clients.extend(batch)
    return clients


async def close_all(clients: list[BenchClient]) -> None:
    for client in clients:
        client.close()
    await asyncio.wait_for(asyncio.gather(*(c.closed for c in clients)), 30)


# --- throughput ------------------------------------------------------------------------


@dataclass
class ThroughputResult:
    deliveries_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    server_cpu_us_per_delivery: float
    load_cpu_us_per_delivery: float
    duplicates: int
    missing: int


@dataclass
class ThroughputRun:
    clients: int
    senders: int
    messages: int
    window: int
    latencies: list[int] = field(default_factory=list)
    received: int = 0
    duplicates: int = 0


async def throughput(server: RunningServer, args: argparse.Namespace) -> ThroughputResult:
    run = ThroughputRun(args.clients, args.senders, args.messages, args.window)
    total = args.clients * args.senders * args.messages
    done = asyncio.get_running_loop().create_future()
    seen = [bytearray(args.senders * args.messages) for _ in range(args.clients)]
    senders: list[Sender] = []
    perf_counter_ns = time.perf_counter_ns
    messages = args.messages

    def make(index: int) -> BenchClient:
        marks = seen[index]
        latencies = run.latencies

        def on_line(line: bytes) -> None:
            # "You said: m <sender> <seq> <t0>" or "Someone says: m ..."
            at = line.find(b": m ")
            if at < 0:
                return
            _, sender, seq, sent = line[at + 2 :].split(b" ")
            slot = int(sender) * messages + int(seq)
            if marks[slot]:
                run.duplicates += 1
            marks[slot] = 1
            latencies.append(perf_counter_ns() - int(sent))
            if index < len(senders) and int(sender) == index:
                senders[index].acknowledged()
            run.received += 1
            if run.received == total and not done.done():
                done.set_result(None)

        return BenchClient(on_line)

    clients = await connect_all(server, args.clients, make)
    senders.extend(Sender(i, clients[i], args.messages, args.window) for i in range(args.senders))
    await server.wait_idle()
    cpu_server, cpu_load = server.cpu_seconds(), time.process_time()
    started = time.perf_counter()
    for sender in senders:
        sender.start()
    await asyncio.wait_for(done, args.timeout)
    elapsed = time.perf_counter() - started
    cpu_server = server.cpu_seconds() - cpu_server
    cpu_load = time.process_time() - cpu_load
    await close_all(clients)
    missing = sum(len(marks) - sum(marks) for marks in seen)
    latencies = sorted(run.latencies)
    quantiles = statistics.quantiles(latencies, n=100)
    return ThroughputResult(
        deliveries_per_second=total / elapsed,
        p50_ms=quantiles[49] / 1e6,
        p99_ms=quantiles[98] / 1e6,
        max_ms=latencies[-1] / 1e6,
        server_cpu_us_per_delivery=cpu_server / total * 1e6,
        load_cpu_us_per_delivery=cpu_load / total * 1e6,
        duplicates=run.duplicates,
        missing=missing,
    )


class Sender:
    """Sends its messages, keeping at most ``window`` unacknowledged."""

    def __init__(self, index: int, client: BenchClient, messages: int, window: int) -> None:
        self.index, self.client, self.messages, self.window = index, client, messages, window
        self.sent = 0

    def start(self) -> None:
        for _ in range(min(self.window, self.messages)):
            self._send_next()

    def acknowledged(self) -> None:
        if self.sent < self.messages:
            self._send_next()

    def _send_next(self) -> None:
        self.client.send_text(b"m %d %d %d" % (self.index, self.sent, time.perf_counter_ns()))
        self.sent += 1


# --- fan-out ---------------------------------------------------------------------------


@dataclass
class FanoutResult:
    connections: int
    rss_per_connection_kib: float
    median_ms: float
    rounds_ms: list[float]


async def fanout(server: RunningServer, args: argparse.Namespace) -> FanoutResult:
    count = args.fanout_clients
    await server.wait_idle()
    rss_before = server.rss_bytes()
    state = {"remaining": 0, "round": -1}
    finished: list[asyncio.Future[None]] = []

    def make(index: int) -> BenchClient:
        def on_line(line: bytes) -> None:
            if line.endswith(b"r %d" % state["round"]):
                state["remaining"] -= 1
                if state["remaining"] == 0:
                    finished[-1].set_result(None)

        return BenchClient(on_line)

    clients = await connect_all(server, count, make)
    await server.wait_idle()
    rss_per_connection = (server.rss_bytes() - rss_before) / count / 1024
    rounds: list[float] = []
    for number in range(args.rounds):
        await server.wait_idle()
        finished.append(asyncio.get_running_loop().create_future())
        state["remaining"], state["round"] = count, number
        started = time.perf_counter()
        clients[0].send_text(b"r %d" % number)
        await asyncio.wait_for(finished[-1], args.timeout)
        rounds.append((time.perf_counter() - started) * 1000)
    await close_all(clients)
    return FanoutResult(count, rss_per_connection, statistics.median(rounds), rounds)


# --- abuse: floods and connection storms, against the default limits ------------------------

#: Each normal client ("probe") sends one message every this many seconds: 4 a second,
#: under the default rate limit (5 a second), so that its own limit never delays it.
PROBE_INTERVAL = 0.25
#: The normal clients measured, each a guest with its own allowance, from addresses of
#: their own (127.0.2.x); the attackers come from one address each scenario.
PROBES = 5
#: Lines in one flood frame: the default --max-frame-lines, so that no frame is refused
#: whole and each line counts against the rate limit.
FLOOD_FRAME_LINES = 50
#: The flooders keep at most this many bytes unsent each: full speed, bounded memory.
FLOOD_UNSENT = 64 * 1024


class AbuseClient(BenchClient):
    """A bench client that keeps its handshake's answer and the close code it got."""

    def __init__(self, on_line: Callable[[bytes], None]) -> None:
        super().__init__(on_line)
        self.close_code: int | None = None
        self.close_reason = ""

    def _frame(self, first: int, payload: bytes) -> None:
        if first & 0x0F == 0x8 and len(payload) >= 2:
            self.close_code = struct.unpack_from("!H", payload)[0]
            self.close_reason = payload[2:].decode(errors="replace")
        super()._frame(first, payload)


async def open_abuse_client(
    server: RunningServer, source: str, on_line: Callable[[bytes], None] = lambda line: None
) -> AbuseClient:
    """One connection from loopback address ``source``; raises ConnectionError when its
    handshake is refused (the status line says how)."""
    client = AbuseClient(on_line)
    await asyncio.get_running_loop().create_connection(
        lambda: client, "127.0.0.1", server.port, local_addr=(source, 0)
    )
    await asyncio.wait_for(client.handshake, 30)
    return client


@dataclass
class FloodResult:
    connections: int
    idle_p99_ms: float
    flood_p99_ms: float
    samples: int
    lines_sent: int
    flood_lines_seen: int
    #: Flooder connections the server closed (each followed by a reconnection).
    closed: int
    refused: int
    #: The close codes of the normal clients the server closed meanwhile.
    probes_closed: list[str]
    #: CPU seconds per second while flooding: the server's, and the load side's.
    server_cpu_share: float
    load_cpu_share: float
    rss_before_mib: float
    rss_after_mib: float


async def flood(
    server: RunningServer, args: argparse.Namespace, connections: int, source: str
) -> FloodResult:
    """Normal clients measure their round trip for ``args.flood_seconds`` idle, then as
    long again while ``connections`` flooders from ``source`` send as fast as their
    sockets take it (reconnecting when closed, as an attacker would)."""
    latencies: dict[str, list[int]] = {"idle": [], "flood": []}
    phase = {"name": "idle"}
    seen = {"flood": 0}

    def on_probe_line(line: bytes) -> None:
        at = line.find(b"You said: p ")
        if at >= 0:
            sent = int(line[at + len(b"You said: p ") :])
            latencies[phase["name"]].append(time.perf_counter_ns() - sent)
        elif line.endswith(b"x" * 8):
            seen["flood"] += 1

    probes = [
        await open_abuse_client(server, f"127.0.2.{1 + n}", on_probe_line) for n in range(PROBES)
    ]
    stop = asyncio.Event()

    async def probe(client: AbuseClient) -> None:
        transport = client.transport
        assert transport is not None
        while not stop.is_set() and not transport.is_closing():
            client.send_text(b"p %d" % time.perf_counter_ns())
            await asyncio.sleep(PROBE_INTERVAL)

    probing = [asyncio.create_task(probe(client)) for client in probes]
    await asyncio.sleep(args.flood_seconds)
    await server.wait_idle()
    rss_before = server.rss_bytes()
    phase["name"] = "flood"
    counts = {"sent": 0, "closed": 0, "refused": 0}
    frame = b"\n".join([b"f " + b"x" * 8] * FLOOD_FRAME_LINES)

    async def flooder() -> None:
        while not stop.is_set():
            try:
                client = await open_abuse_client(server, source)
            except (TimeoutError, ConnectionError, OSError):
                counts["refused"] += 1
                await asyncio.sleep(0.05)
                continue
            transport = client.transport
            assert transport is not None
            while not stop.is_set() and not transport.is_closing():
                # As much as its socket takes, then a turn for everyone else.
                while (
                    transport.get_write_buffer_size() < FLOOD_UNSENT and not transport.is_closing()
                ):
                    client.send_text(frame)
                    counts["sent"] += FLOOD_FRAME_LINES
                await asyncio.sleep(0.001)
            counts["closed"] += 1
            client.close()

    cpu_server, cpu_load = server.cpu_seconds(), time.process_time()
    flooding = [asyncio.create_task(flooder()) for _ in range(connections)]
    await asyncio.sleep(args.flood_seconds)
    cpu_server = server.cpu_seconds() - cpu_server
    cpu_load = time.process_time() - cpu_load
    stop.set()
    await asyncio.gather(*probing, *flooding)
    dropped = sorted(
        f"{p.close_code} {p.close_reason}".strip() for p in probes if p.close_code is not None
    )
    await close_all(probes)
    await server.wait_idle()
    rss_after = server.rss_bytes()

    def p99(values: list[int]) -> float:
        return statistics.quantiles(values, n=100)[98] / 1e6 if len(values) > 1 else math.nan

    return FloodResult(
        connections=connections,
        idle_p99_ms=p99(latencies["idle"]),
        flood_p99_ms=p99(latencies["flood"]),
        samples=min(len(latencies["idle"]), len(latencies["flood"])),
        lines_sent=counts["sent"],
        flood_lines_seen=seen["flood"],
        closed=counts["closed"],
        refused=counts["refused"],
        probes_closed=dropped,
        server_cpu_share=cpu_server / args.flood_seconds,
        load_cpu_share=cpu_load / args.flood_seconds,
        rss_before_mib=rss_before / 2**20,
        rss_after_mib=rss_after / 2**20,
    )


@dataclass
class StormResult:
    attempts: int
    admitted: int
    refusals: dict[str, int]
    normal_got_in: bool
    normal_ms: float


async def storm(server: RunningServer, args: argparse.Namespace) -> StormResult:
    """``args.attempts`` handshakes from one address, 200 at a time, each kept open; then
    a normal client from another address: does it get in, and how fast?"""
    admitted: list[AbuseClient] = []
    refusals: dict[str, int] = {}

    async def attempt() -> None:
        try:
            admitted.append(await open_abuse_client(server, "127.0.4.1"))
        except (TimeoutError, ConnectionError, OSError) as exc:
            why = str(exc).split("\r\n", 1)[0] or type(exc).__name__
            refusals[why] = refusals.get(why, 0) + 1

    for start in range(0, args.attempts, 200):
        await asyncio.gather(*(attempt() for _ in range(min(200, args.attempts - start))))
    started = time.perf_counter()
    try:
        normal = await open_abuse_client(server, "127.0.5.1")
    except (TimeoutError, ConnectionError, OSError):
        normal_got_in = False
    else:
        normal_got_in = True
        await close_all([normal])
    normal_ms = (time.perf_counter() - started) * 1000
    await close_all(admitted)
    return StormResult(args.attempts, len(admitted), refusals, normal_got_in, normal_ms)


async def abuse(spec: ServerSpec, args: argparse.Namespace) -> None:
    """The abuse scenarios against trio_chat with its default limits, each on a fresh
    server, printed as they finish."""
    extra = f" (and {args.abuse_server_args})" if args.abuse_server_args else ""
    print(
        f"abuse: trio_chat with its default limits{extra}, {PROBES} normal clients at 4 messages/s"
    )
    for connections, source in ((1, "127.0.3.1"), (args.flood_connections, "127.0.3.2")):
        server = RunningServer(spec)
        try:
            f = await flood(server, args, connections, source)
        finally:
            server.stop()
        ratio_text = ratio(f.flood_p99_ms, f.idle_p99_ms)
        closed = ", ".join(f.probes_closed) or "none"
        print(
            f"flood from {f.connections} connection(s) of one address, {args.flood_seconds:g} s:"
            f" normal client p99 idle {f.idle_p99_ms:.2f} ms, during {f.flood_p99_ms:.2f} ms"
            f" ({ratio_text}; {f.samples} samples each); flood lines sent {f.lines_sent},"
            f" seen by normal clients {f.flood_lines_seen}; flooders closed {f.closed}"
            f" times, refused {f.refused} times; normal clients closed: {closed};"
            f" server RSS {f.rss_before_mib:.1f} MiB before, {f.rss_after_mib:.1f} MiB after;"
            f" CPU while flooding: server {f.server_cpu_share:.0%}, load {f.load_cpu_share:.0%}"
        )
    server = RunningServer(spec)
    try:
        s = await storm(server, args)
    finally:
        server.stop()
    refused = ", ".join(f"{count} {why}" for why, count in sorted(s.refusals.items())) or "none"
    verdict = "got in" if s.normal_got_in else "was REFUSED"
    print(
        f"{s.attempts} connection attempts from one address: {s.admitted} got in, refused:"
        f" {refused}; a normal client from another address then {verdict} in"
        f" {s.normal_ms:.1f} ms"
    )


# --- main --------------------------------------------------------------------------------


def raise_file_limit() -> int:
    """Raise the soft limit on open files to the hard limit (the servers inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


async def main(args: argparse.Namespace) -> None:
    limit = raise_file_limit()
    if args.fanout_clients + 100 > limit and args.mode in ("fanout", "all"):
        sys.exit(f"open-file limit {limit} is too low for {args.fanout_clients} connections")
    names = args.servers.split(",")
    if args.tls and TLS_NAME not in names:
        names.append(TLS_NAME)
    if args.limits and LIMITS_NAME not in names:
        names.append(LIMITS_NAME)
    throughput_runs: dict[str, list[ThroughputResult]] = {name: [] for name in names}
    fanout_runs: dict[str, list[FanoutResult]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory() as db_dir, tempfile.TemporaryDirectory() as tls_dir:
        specs = server_specs(
            db_dir,
            make_certificates(tls_dir) if TLS_NAME in names else None,
            args.messages if LIMITS_NAME in names else 0,
        )
        # Repetitions interleave the servers, so that a disturbance of the machine lands
        # on all of them alike; the report takes the median of each figure.
        for _ in range(args.repeat):
            for name in names:
                if args.mode in ("throughput", "all"):
                    server = RunningServer(specs[name])
                    try:
                        throughput_runs[name].append(await throughput(server, args))
                    finally:
                        server.stop()
                    fresh_database(db_dir)
                if args.mode in ("fanout", "all"):
                    server = RunningServer(specs[name])
                    try:
                        fanout_runs[name].append(await fanout(server, args))
                    finally:
                        server.stop()
                    fresh_database(db_dir)
    throughput_results = {
        name: median_throughput(runs) for name, runs in throughput_runs.items() if runs
    }
    fanout_results = {name: median_fanout(runs) for name, runs in fanout_runs.items() if runs}
    if throughput_results or fanout_results:
        report(args, names, throughput_results, fanout_results)
    if args.mode in ("abuse", "all"):
        with tempfile.TemporaryDirectory() as db_dir:
            spec = server_specs(db_dir)[DEFAULTS_NAME]
            spec.command += args.abuse_server_args.split()
            await abuse(spec, args)


def median_throughput(runs: list[ThroughputResult]) -> ThroughputResult:
    """Each figure's median over the runs; delivery errors are summed, never hidden."""
    return ThroughputResult(
        deliveries_per_second=statistics.median(r.deliveries_per_second for r in runs),
        p50_ms=statistics.median(r.p50_ms for r in runs),
        p99_ms=statistics.median(r.p99_ms for r in runs),
        max_ms=statistics.median(r.max_ms for r in runs),
        server_cpu_us_per_delivery=statistics.median(r.server_cpu_us_per_delivery for r in runs),
        load_cpu_us_per_delivery=statistics.median(r.load_cpu_us_per_delivery for r in runs),
        duplicates=sum(r.duplicates for r in runs),
        missing=sum(r.missing for r in runs),
    )


def median_fanout(runs: list[FanoutResult]) -> FanoutResult:
    """The median RSS and fan-out time over the runs; every round's time is listed."""
    return FanoutResult(
        connections=runs[0].connections,
        rss_per_connection_kib=statistics.median(r.rss_per_connection_kib for r in runs),
        median_ms=statistics.median(r.median_ms for r in runs),
        rounds_ms=[value for r in runs for value in r.rounds_ms],
    )


def fresh_database(db_dir: str) -> None:
    """Remove trio_chat's database (and its WAL files) so each run starts empty."""
    for path in Path(db_dir).iterdir():
        path.unlink()


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs else "n/a"


def report(
    args: argparse.Namespace,
    names: list[str],
    throughput_results: dict[str, ThroughputResult],
    fanout_results: dict[str, FanoutResult],
) -> None:
    peers = [name for name in names if name not in ("trio_chat", TLS_NAME, LIMITS_NAME)]
    runs = f" (median of {args.repeat} runs each)" if args.repeat > 1 else ""
    if throughput_results:
        print(
            f"throughput: {args.clients} clients, {args.senders} senders"
            f" x {args.messages} messages, window {args.window}{runs}"
        )
        print(
            f"{'server':<16} {'deliveries/s':>13} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}"
            f" {'server us/dlv':>13} {'load us/dlv':>11} {'dup':>4} {'miss':>5}"
        )
        for name, r in throughput_results.items():
            print(
                f"{name:<16} {r.deliveries_per_second:>13.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f}"
                f" {r.max_ms:>8.2f} {r.server_cpu_us_per_delivery:>13.2f}"
                f" {r.load_cpu_us_per_delivery:>11.2f} {r.duplicates:>4} {r.missing:>5}"
            )
        ours = throughput_results.get("trio_chat")
        for peer in peers:
            theirs = throughput_results.get(peer)
            if ours and theirs:
                speed = ratio(ours.deliveries_per_second, theirs.deliveries_per_second)
                print(
                    f"trio_chat / {peer}: deliveries/s {speed},"
                    f" p99 {ratio(ours.p99_ms, theirs.p99_ms)}"
                )
        tls = throughput_results.get(TLS_NAME)
        if ours and tls:
            print(
                f"{TLS_NAME} / trio_chat: server CPU per delivery"
                f" {ratio(tls.server_cpu_us_per_delivery, ours.server_cpu_us_per_delivery)},"
                f" deliveries/s {ratio(tls.deliveries_per_second, ours.deliveries_per_second)}"
            )
        limited = throughput_results.get(LIMITS_NAME)
        if ours and limited:
            cpu = ratio(limited.server_cpu_us_per_delivery, ours.server_cpu_us_per_delivery)
            speed = ratio(limited.deliveries_per_second, ours.deliveries_per_second)
            print(
                f"{LIMITS_NAME} / trio_chat (limits lifted): server CPU per delivery {cpu},"
                f" deliveries/s {speed}, p99 {ratio(limited.p99_ms, ours.p99_ms)}"
            )
    if fanout_results:
        print(f"fan-out: {args.fanout_clients} idle connections, {args.rounds} rounds{runs}")
        print(f"{'server':<16} {'RSS KiB/conn':>12} {'median ms':>10}  rounds ms")
        for name, f in fanout_results.items():
            rounds = " ".join(f"{value:.1f}" for value in f.rounds_ms)
            print(f"{name:<16} {f.rss_per_connection_kib:>12.1f} {f.median_ms:>10.2f}  {rounds}")
        ours_fanout = fanout_results.get("trio_chat")
        for peer in peers:
            theirs_fanout = fanout_results.get(peer)
            if ours_fanout and theirs_fanout:
                time_ratio = ratio(ours_fanout.median_ms, theirs_fanout.median_ms)
                rss_ratio = ratio(
                    ours_fanout.rss_per_connection_kib, theirs_fanout.rss_per_connection_kib
                )
                print(
                    f"trio_chat / {peer}: fan-out time {time_ratio}, RSS per connection {rss_ratio}"
                )
        tls_fanout = fanout_results.get(TLS_NAME)
        if ours_fanout and tls_fanout:
            print(
                f"{TLS_NAME} / trio_chat: fan-out time"
                f" {ratio(tls_fanout.median_ms, ours_fanout.median_ms)}, RSS per connection"
                f" {ratio(tls_fanout.rss_per_connection_kib, ours_fanout.rss_per_connection_kib)}"
            )
    bad = [n for n, r in throughput_results.items() if r.duplicates or r.missing]
    if bad:
        print(f"DELIVERY CHECK FAILED for: {', '.join(bad)}")
        sys.exit(1)
    print("delivery check: every message reached every client exactly once")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=["throughput", "fanout", "abuse", "all"], default="all")
    parser.add_argument("--servers", default="trio_chat,asyncio,trio", help="comma-separated")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--senders", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--window", type=int, default=10, help="unacknowledged messages per sender")
    parser.add_argument("--fanout-clients", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per measurement")
    parser.add_argument(
        "--repeat", type=int, default=1, help="runs per server (interleaved); medians reported"
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help=f"measure trio_chat over TLS too ({TLS_NAME}), against plain TCP in the same run",
    )
    parser.add_argument(
        "--flood-seconds", type=float, default=5.0, help="abuse: seconds idle, then flooding"
    )
    parser.add_argument(
        "--flood-connections", type=int, default=50, help="abuse: flooders from one address"
    )
    parser.add_argument(
        "--attempts", type=int, default=2000, help="abuse: handshakes from one address"
    )
    parser.add_argument(
        "--abuse-server-args",
        default="",
        help="abuse: more server flags, e.g. '--queue-depth 4096' (default: none, every limit"
        " at its default)",
    )
    parser.add_argument(
        "--limits",
        action="store_true",
        help=f"measure trio_chat with its flood limits on too ({LIMITS_NAME}: set just above"
        " what the bench sends), against limits lifted in the same run",
    )
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
