"""Test machinery shared by the test modules (import it as ``support``).

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
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from trio_websocket import (
    CloseReason,
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    wrap_client_stream,
)

from trio_chat.client import parse_url

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


#: Runs the server with the soft open-file limit lowered to argv[1] (exec, so the pid,
#: the output and the signals are the server's own).
_LOW_FILE_LIMIT_LAUNCHER = (
    "import os, resource, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, "
    "(int(sys.argv[1]), resource.getrlimit(resource.RLIMIT_NOFILE)[1])); "
    "os.execv(sys.executable, [sys.executable, '-m', 'trio_chat.server', *sys.argv[2:]])"
)


class ServerProcess:
    """``python -m trio_chat.server`` in a subprocess, its output collected by a thread.

    stdout and stderr are merged into :attr:`output`; :meth:`wait_for` blocks until a
    pattern appears (or fails after a time limit). ``port=None`` leaves ``--port`` out
    (so ``TRIO_CHAT_PORT`` in ``env`` decides); ``db`` and ``history_on_join`` default to
    an in-memory store and no history on join (None leaves the flag out).
    """

    def __init__(
        self,
        *args: str,
        stdin: int | None = subprocess.PIPE,
        port: int | None = 0,
        env: dict[str, str] | None = None,
        db: str | None = ":memory:",
        history_on_join: int | None = 0,
        soft_file_limit: int | None = None,
    ) -> None:
        # Tests get a private store and no history on join unless they ask: a test
        # about history says so, and no test sees another's messages.
        options = [] if port is None else ["--port", str(port)]
        if db is not None:
            options += ["--db", db]
        if history_on_join is not None:
            options += ["--history-on-join", str(history_on_join)]
        launch = ["-m", "trio_chat.server"]
        if soft_file_limit is not None:
            launch = ["-c", _LOW_FILE_LIMIT_LAUNCHER, str(soft_file_limit)]
        self.proc = subprocess.Popen(
            [sys.executable, *launch, "--host", "127.0.0.1", *options, *args],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env() if env is None else env,
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


@asynccontextmanager
async def open_client(url: str, **options: Any) -> AsyncIterator[WebSocketConnection]:
    """A trio-websocket client connected to ``url``; closed (1000) on the way out.

    Owns its TCP stream and closes it however the block ends (the library's own
    ``open_websocket`` can leak the socket when the server closes first). A refused
    handshake raises a bare ``ConnectionRejected``.
    """
    host, port, resource = parse_url(url)
    stream = await trio.open_tcp_stream(host, port)
    try:
        async with trio.open_nursery() as nursery:
            ws = await wrap_client_stream(nursery, stream, host, resource, **options)
            try:
                yield ws
            finally:
                with trio.move_on_after(EVENT_TIMEOUT, shield=True):
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    except* ConnectionRejected as group:
        raise group.exceptions[0] from None
    finally:
        await trio.aclose_forcefully(stream)


async def receive(ws: WebSocketConnection) -> str:
    """The next message, within the event time limit."""
    with trio.fail_after(EVENT_TIMEOUT):
        message = await ws.get_message()
    assert isinstance(message, str)
    return message


async def say(ws: WebSocketConnection, text: str) -> None:
    """Send ``text`` and wait for its own echo. Once the echo is back, the connection is
    certainly subscribed to the bus, so nothing published after this call is missed."""
    await ws.send_message(text)
    assert await receive(ws) == f"You said: {text}"


async def read_until_closed(ws: WebSocketConnection) -> tuple[list[str], CloseReason | None]:
    """Every line received until the server closes ``ws``, and how it closed."""
    lines: list[str] = []
    with trio.fail_after(EVENT_TIMEOUT):
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as closed:
                return lines, closed.reason
            assert isinstance(message, str)
            lines.extend(message.split("\n"))


@dataclass
class FakeViewer:
    """A recipient for rendering events without a connection."""

    key: int
    json: bool = False
    current_room: str = "lobby"
