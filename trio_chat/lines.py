"""Reading lines from a file descriptor (stdin) without blocking Trio.

``input()`` and ``sys.stdin`` in a worker thread are traps: an abandoned thread holds
the buffered reader's lock and CPython aborts at exit. ``os.read`` on the raw file
descriptor holds no lock, so the thread can be abandoned when its reader is cancelled
and the process still exits at once (worker threads are daemons). This works alike
for a terminal, a pipe and ``/dev/null``.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import AsyncIterator

import trio

__all__ = ["read_lines"]

#: Bytes per ``os.read``. A terminal returns one line per read whatever the size;
#: for a pipe this only sets how much is taken per thread round trip.
READ_SIZE = 4096


async def read_lines(fd: int) -> AsyncIterator[str]:
    """Yield each line read from ``fd``, without its line ending, until end of file.

    A last line with no newline is yielded at end of file. Undecodable bytes become
    U+FFFD rather than an error. Cancellation abandons the blocked read at once; the
    descriptor is not closed (the caller owns it).
    """
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    while True:
        chunk = await trio.to_thread.run_sync(os.read, fd, READ_SIZE, abandon_on_cancel=True)
        pending += decoder.decode(chunk, final=not chunk)
        *complete, pending = pending.split("\n")
        for line in complete:
            yield line.removesuffix("\r")
        if not chunk:
            if pending:
                yield pending.removesuffix("\r")
            return
