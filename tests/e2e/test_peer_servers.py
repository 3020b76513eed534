"""The reference peers in scripts/ (the tutorial's server on websockets' asyncio and Trio
backends), each run as a subprocess and driven by websockets' sync client."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from support import ROOT, child_env

#: Generous: it only decides how long a broken test takes to fail.
TIMEOUT = 10.0
START_LINE = re.compile(r"✅ Server is running on (ws://127\.0\.0\.1:(\d+))\n")
PEERS = ["scripts/peer_server.py", "scripts/peer_trio_server.py"]


class Peer:
    """A peer server subprocess; its merged stdout and stderr read line by line by a
    thread, so the test can wait for a line under a time limit."""

    def __init__(self, script: str, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, script, "--host", "127.0.0.1", "--port", "0", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            encoding="utf-8",
            errors="replace",
            env=child_env(),
            cwd=ROOT,
        )
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        first = self.next_line()
        match = START_LINE.fullmatch(first)
        assert match, f"unexpected start-up line {first!r}"
        assert int(match.group(2)) != 0
        self.url = match.group(1)

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            self._queue.put(line)
        self._queue.put(None)  # end of output

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def next_line(self) -> str:
        """The next line of output; fails after the time limit or at end of output."""
        try:
            line = self._queue.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"no output within {TIMEOUT} s; so far:\n{self.output}")
        if line is None:
            pytest.fail(f"output ended; it was:\n{self.output}")
        return line

    def stop(self, signum: int) -> int:
        """Send ``signum``; wait for the exit and for all the output; return the status."""
        self.proc.send_signal(signum)
        status = self.proc.wait(TIMEOUT)
        self._reader.join(TIMEOUT)
        return status

    def close(self) -> None:
        """Kill the process if it is still running, and release its pipe."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture(params=PEERS, ids=["asyncio", "trio"])
def start_peer(request: pytest.FixtureRequest) -> Iterator[type[Peer]]:
    """A factory for subprocesses of one peer script; all are killed at teardown."""
    started: list[Peer] = []
    script: str = request.param

    class Tracked(Peer):
        def __init__(self, *args: str) -> None:
            started.append(self)
            super().__init__(script, *args)

    yield Tracked
    for peer in started:
        peer.close()


def recv(ws: ClientConnection) -> str | bytes:
    """The next message, within the time limit."""
    return ws.recv(timeout=TIMEOUT)


def say(ws: ClientConnection, text: str) -> None:
    """Send ``text`` and wait for its echo, after which the server surely counts ``ws``."""
    ws.send(text)
    assert recv(ws) == f"You said: {text}"


def assert_closed_going_away(ws: ClientConnection) -> None:
    """``ws`` gets no more messages: the server closes it with 1001 (going away)."""
    with pytest.raises(ConnectionClosed) as closed:
        recv(ws)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1001


def test_echo_fan_out_and_sigterm(start_peer: type[Peer]) -> None:
    """Echo to the sender, "Someone says" to the other client, SIGTERM exits 0 cleanly."""
    peer = start_peer()
    with connect(peer.url, open_timeout=TIMEOUT) as a:
        assert peer.next_line() == "✅ A client connected.\n"
        say(a, "a is here")
        with connect(peer.url, open_timeout=TIMEOUT) as b:
            assert peer.next_line() == "✅ A client connected.\n"
            say(b, "b is here")
            assert recv(a) == "Someone says: b is here"

            a.send("hi")
            assert recv(a) == "You said: hi"
            assert recv(b) == "Someone says: hi"

            assert peer.stop(signal.SIGTERM) == 0
            assert_closed_going_away(a)
            assert_closed_going_away(b)
    assert peer.lines[1:] == ["✅ A client connected.\n"] * 2 + ["❌ A client disconnected.\n"] * 2
    assert "Traceback" not in peer.output


def test_verbose_prints_messages_and_sigint(start_peer: type[Peer]) -> None:
    """--verbose prints each received message; SIGINT exits 0 without a traceback."""
    peer = start_peer("--verbose")
    with connect(peer.url, open_timeout=TIMEOUT) as a:
        say(a, "hi")
        assert peer.next_line() == "✅ A client connected.\n"
        assert peer.next_line() == "📩 Received from client: hi\n"
    assert peer.next_line() == "❌ A client disconnected.\n"
    assert peer.stop(signal.SIGINT) == 0
    assert "Traceback" not in peer.output
    assert len(peer.lines) == 4


def test_quiet_by_default(start_peer: type[Peer]) -> None:
    """Without --verbose no per-message line is printed, only connects and disconnects."""
    peer = start_peer()
    with connect(peer.url, open_timeout=TIMEOUT) as a:
        say(a, "hi")
    assert peer.stop(signal.SIGTERM) == 0
    assert peer.lines[1:] == ["✅ A client connected.\n", "❌ A client disconnected.\n"]
