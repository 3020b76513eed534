"""Shared test machinery.

Rules every test here keeps: servers listen on 127.0.0.1, port 0; every wait is for an
event (a line of output, a message, a closed connection) under a time limit, never a
sleep; expected strings are exact.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trio

from trio_chat.config import ServerConfig
from trio_chat.server import ChatServer

ROOT = Path(__file__).resolve().parent.parent
#: Generous limits: they only decide how long a broken test takes to fail.
EVENT_TIMEOUT = 10.0

URL_LINE = re.compile(r"Server is running on (ws://\S+)")


def child_env() -> dict[str, str]:
    """The environment for a subprocess: unbuffered, no colour, our package importable."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = str(ROOT)
    env.pop("TRIO_CHAT_HOST", None)
    env.pop("TRIO_CHAT_PORT", None)
    return env


class ServerProcess:
    """``python -m trio_chat.server`` in a subprocess, its output collected by a thread.

    stdout and stderr are merged into :attr:`output`; :meth:`wait_for` blocks until a
    pattern appears (or fails after a time limit).
    """

    def __init__(self, *args: str, stdin: int | None = subprocess.PIPE) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "trio_chat.server", "--host", "127.0.0.1", "--port", "0", *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env(),
            cwd=ROOT,
        )
        self._output: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        self.url = self.wait_for(URL_LINE).group(1)

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self._output.append(raw.decode("utf-8", "replace"))
                self._changed.notify_all()
        with self._changed:
            self._output.append("")  # marks end of output
            self._changed.notify_all()

    @property
    def output(self) -> str:
        with self._changed:
            return "".join(self._output)

    def wait_for(
        self, pattern: str | re.Pattern[str], timeout: float = EVENT_TIMEOUT
    ) -> re.Match[str]:
        """Block until ``pattern`` matches the output so far; fail after ``timeout``."""
        regex = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search("".join(self._output))
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"{regex.pattern!r} not in server output:\n{''.join(self._output)}"
                    )
                self._changed.wait(remaining)

    def send_console(self, line: str) -> None:
        """Type a line at the server's console."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{line}\n".encode())
        self.proc.stdin.flush()

    def wait(self, timeout: float = EVENT_TIMEOUT) -> int:
        """Wait for the process to exit and for all its output; return the status."""
        status = self.proc.wait(timeout)
        self._reader.join(timeout)
        return status

    def stop(self) -> None:
        """Kill the process if it is still running, and release its pipes."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(EVENT_TIMEOUT)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def server_process() -> Iterator[type[ServerProcess]]:
    """A factory for server subprocesses; every one started is killed at teardown."""
    started: list[ServerProcess] = []

    class Tracked(ServerProcess):
        def __init__(self, *args: str, **kwargs: object) -> None:
            started.append(self)
            super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    yield Tracked
    for process in started:
        process.stop()


@pytest.fixture
async def chat_server(nursery: trio.Nursery) -> AsyncIterator[ChatServer]:
    """A server running in the test's nursery on 127.0.0.1, port 0, default limits."""
    server = await nursery.start(ChatServer(ServerConfig(host="127.0.0.1", port=0)).run)
    yield server
    server.shutdown()


@pytest.fixture
def start_server(nursery: trio.Nursery) -> Callable[..., Awaitable[ChatServer]]:
    """A factory: ``await start_server(queue_depth=4)`` runs a server with those limits
    in the test's nursery (127.0.0.1, port 0) and returns it once it listens."""

    async def start(**limits: object) -> ChatServer:
        config = ServerConfig(host="127.0.0.1", port=0, **limits)  # type: ignore[arg-type]
        return await nursery.start(ChatServer(config).run)

    return start
