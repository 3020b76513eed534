"""A server subprocess that says where it listens through ``--ready-file``.

The one subprocess helper of the tests (``support.ServerProcess`` builds on it), the peer
tests and ``scripts/bench.py``; standard library only, so the bench can use it as is. The
server is started with ``--ready-file PATH`` in a private temporary folder and is ready
once that file exists: the servers write it atomically (complete or absent) once they
listen, with their pid, URLs and port as JSON. Nothing reads the port from the log.

The output (stdout and stderr merged) is collected by a thread, so the server never blocks
on a full pipe and a test can wait for a line under a time limit.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["READY_POLL", "ReadyProcess", "StartFailed"]

#: How often the ready file is looked for while the server starts. There is no portable
#: "file appeared" event in the standard library; new output or the exit wakes the wait
#: at once, and a start takes some 200 ms, so 10 ms costs nothing.
READY_POLL = 0.010


class StartFailed(AssertionError):
    """The server exited, or wrote no ready file in time; the message has its output."""


class ReadyProcess:
    """``command --ready-file PATH`` in a subprocess, ready once ``PATH`` is written.

    :attr:`ready` is the ready file's content; :attr:`url` the first listener's URL and
    :attr:`port` its port. :meth:`stop` kills what is still running and removes the
    temporary folder.
    """

    def __init__(
        self,
        command: Sequence[str],
        *,
        stdin: int | None = subprocess.DEVNULL,
        env: Mapping[str, str] | None = None,
        cwd: str | Path | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        self._folder = Path(tempfile.mkdtemp(prefix="trio_chat-ready-"))
        self.ready_file = self._folder / "ready.json"
        self.lines: list[str] = []
        self._ended = False
        self._cursor = 0
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [*command, "--ready-file", str(self.ready_file)],
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=None if env is None else dict(env),
            cwd=cwd,
        )
        self._reader = threading.Thread(target=self._collect, daemon=True)
        self._reader.start()
        try:
            self.ready: dict[str, Any] = self._wait_ready(start_timeout)
        except BaseException:
            self.stop()
            raise
        self.url: str = self.ready["urls"][0]
        self.port: int = self.ready["port"]

    def _collect(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace"))
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def _wait_ready(self, timeout: float) -> dict[str, Any]:
        """The ready file's content once it exists; fails when the process exits first or
        after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self.ready_file.exists():
                    ready = json.loads(self.ready_file.read_text(encoding="utf-8"))
                    assert isinstance(ready, dict), ready
                    return ready
                if self._ended and self.proc.poll() is not None:
                    raise StartFailed(
                        f"exited with status {self.proc.returncode} before it was ready:\n"
                        f"{self.output}"
                    )
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise StartFailed(f"not ready after {timeout} s; output:\n{self.output}")
                self._changed.wait(min(READY_POLL, remaining))

    @property
    def output(self) -> str:
        """Everything the process printed so far."""
        with self._changed:
            return "".join(self.lines)

    def wait_for(self, pattern: str | re.Pattern[str], timeout: float = 10.0) -> re.Match[str]:
        """Block until ``pattern`` matches the output so far; fail after ``timeout``."""
        regex = re.compile(re.escape(pattern)) if isinstance(pattern, str) else pattern
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                match = regex.search("".join(self.lines))
                if match:
                    return match
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._ended:
                    raise AssertionError(f"{regex.pattern!r} not in the output:\n{self.output}")
                self._changed.wait(remaining)

    def next_line(self, timeout: float = 10.0) -> str:
        """The next line of output not yet returned; fails after ``timeout`` or at its end."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._cursor >= len(self.lines):
                remaining = deadline - time.monotonic()
                if self._ended or remaining <= 0:
                    ended = "ended" if self._ended else f"had no new line within {timeout} s"
                    raise AssertionError(f"the output {ended}; it was:\n{self.output}")
                self._changed.wait(remaining)
            line = self.lines[self._cursor]
            self._cursor += 1
            return line

    def wait(self, timeout: float = 10.0) -> int:
        """Wait for the process to exit and for all its output; return the status."""
        status = self.proc.wait(timeout)
        self._reader.join(timeout)
        return status

    def stop(self) -> None:
        """Kill the process if it is still running, release its pipes and remove the
        temporary folder (and the ready file in it). Idempotent."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(10.0)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        shutil.rmtree(self._folder, ignore_errors=True)
