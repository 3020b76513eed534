"""A member's last words come before the notice that it left.

Presence is published at once while messages are delivered after their commit: without
care, a client that says a line and closes at once is seen quitting before its line.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from inproc import StartLiveServer, open_plain, wait_disconnected

from support import EVENT_TIMEOUT

pytest_plugins = ["inproc"]


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_last_line_reaches_the_room_before_the_quit_notice(
    start_live_server: StartLiveServer, tmp_path: Path, store: str
) -> None:
    """A line sent right before closing is delivered before ``* carol quit``."""
    db = ":memory:" if store == "memory" else str(tmp_path / "history.db")
    live = await start_live_server(db=db)
    async with open_plain(live) as bob:
        await bob.ask("/nick bob", "* You are now known as bob")
        async with open_plain(live) as carol:
            await carol.ask("/nick carol", "* You are now known as carol")
            await bob.expect("* carol joined lobby")
            # The line and the close frame leave together: the server reads both
            # before the line's commit is done.
            for number in range(5):
                await carol.send(f"line {number}")
            with trio.fail_after(EVENT_TIMEOUT):
                await carol.ws.aclose()
        await wait_disconnected(live, carol)
        await bob.expect(*(f"carol says: line {number}" for number in range(5)), "* carol quit")


async def test_last_line_before_quit_reaches_the_room_first(
    start_live_server: StartLiveServer, tmp_path: Path
) -> None:
    """``/quit`` right after a line: the room sees the line, then ``* carol quit (bye)``."""
    live = await start_live_server(db=str(tmp_path / "history.db"))
    async with open_plain(live) as bob:
        await bob.ask("/nick bob", "* You are now known as bob")
        async with open_plain(live) as carol:
            await carol.ask("/nick carol", "* You are now known as carol")
            await bob.expect("* carol joined lobby")
            await carol.send("see you\n/quit bye")
            await carol.expect("You said: see you")
            assert (await carol.expect_close()).code == 1000
        await bob.expect("carol says: see you", "* carol quit (bye)")
