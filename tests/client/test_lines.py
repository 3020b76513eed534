"""Reading lines from a file descriptor in a worker thread (the console and the client's input)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from trio_chat.lines import read_lines


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    """An OS pipe (read end, write end); both ends closed at teardown if still open."""
    read_fd, write_fd = os.pipe()
    yield read_fd, write_fd
    for fd in (read_fd, write_fd):
        with contextlib.suppress(OSError):  # the test closed it already
            os.close(fd)


async def collect(fd: int) -> list[str]:
    with trio.fail_after(5):
        return [line async for line in read_lines(fd)]


async def test_lines_are_split_and_endings_removed(pipe: tuple[int, int]) -> None:
    """LF and CRLF endings are removed; a last line without a newline still counts."""
    read_fd, write_fd = pipe
    os.write(write_fd, b"one\ntwo\r\n\nthree")
    os.close(write_fd)
    assert await collect(read_fd) == ["one", "two", "", "three"]


async def test_a_character_split_across_reads_is_decoded(pipe: tuple[int, int]) -> None:
    """A UTF-8 character cut in two by the pipe arrives whole; bad bytes become U+FFFD."""
    read_fd, write_fd = pipe
    snowman = "☃".encode()
    async with trio.open_nursery() as nursery:
        lines: list[str] = []

        async def reader() -> None:
            lines.extend(await collect(read_fd))

        nursery.start_soon(reader)
        os.write(write_fd, b"snow" + snowman[:1])
        await trio.testing.wait_all_tasks_blocked()
        os.write(write_fd, snowman[1:] + b"man\n\xff\n")
        os.close(write_fd)
    assert lines == ["snow☃man", "\ufffd"]


async def test_cancelling_a_blocked_read_returns_at_once(pipe: tuple[int, int]) -> None:
    """A read blocked on a silent pipe is abandoned on cancellation, not waited for."""
    read_fd, _write_fd = pipe
    with trio.move_on_after(0.2) as scope:
        async for _line in read_lines(read_fd):
            pytest.fail("nothing was written")
    assert scope.cancelled_caught


async def test_end_of_file_ends_the_iteration(pipe: tuple[int, int]) -> None:
    """An empty input yields nothing and ends (it does not spin)."""
    read_fd, write_fd = pipe
    os.close(write_fd)
    assert await collect(read_fd) == []
