"""The reference peers in scripts/ (the tutorial's server on websockets' asyncio and Trio
backends), each run as a subprocess and driven by websockets' sync client."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from ready_process import ReadyProcess
from support import ROOT, child_env

#: Generous: it only decides how long a broken test takes to fail.
TIMEOUT = 10.0
PEERS = ["scripts/peer_server.py", "scripts/peer_trio_server.py"]


class Peer(ReadyProcess):
    """A peer server subprocess, ready once its ready file is written; its merged stdout
    and stderr read line by line, so the test can wait for a line under a time limit."""

    def __init__(self, script: str, *args: str) -> None:
        super().__init__(
            [sys.executable, script, "--host", "127.0.0.1", "--port", "0", *args],
            env=child_env(),
            cwd=ROOT,
            start_timeout=TIMEOUT,
        )
        assert self.port != 0
        assert self.ready == {
            "pid": self.proc.pid,
            "urls": [f"ws://127.0.0.1:{self.port}"],
            "port": self.port,
        }
        # The tutorial's start-up line, for people; programs read the ready file.
        assert self.next_line(TIMEOUT) == f"✅ Server is running on {self.url}\n"

    def signal_and_wait(self, signum: int) -> int:
        """Send ``signum``; wait for the exit and for all the output; return the status.
        A clean exit has removed the ready file."""
        self.proc.send_signal(signum)
        status = self.wait(TIMEOUT)
        assert not self.ready_file.exists()
        return status


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
        peer.stop()


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

            assert peer.signal_and_wait(signal.SIGTERM) == 0
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
    assert peer.signal_and_wait(signal.SIGINT) == 0
    assert "Traceback" not in peer.output
    assert len(peer.lines) == 4


def test_quiet_by_default(start_peer: type[Peer]) -> None:
    """Without --verbose no per-message line is printed, only connects and disconnects."""
    peer = start_peer()
    with connect(peer.url, open_timeout=TIMEOUT) as a:
        say(a, "hi")
    assert peer.signal_and_wait(signal.SIGTERM) == 0
    assert peer.lines[1:] == ["✅ A client connected.\n", "❌ A client disconnected.\n"]
