"""A burst is not a slow consumer: members that read are kept through a room's burst,
and a member that does not read is still closed.

Rules: the server runs in-process on 127.0.0.1, port 0; presence notices are off
(``presence_limit=0``) so that the lines counted are the burst's. Limits: none of the
rate limits are lifted, and none need be: each member sends 5 lines, within the default
burst of any per-connection limit. Every wait is for an event (a line, a log line, all
tasks blocked) under a time limit; the stall grace is a rule of time, run on trio's
``MockClock``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from inproc import LiveServer, StartLiveServer, open_plains
from test_server import fill_until, stuck_client

from trio_chat.client.api import connect
from trio_chat.core.commands import PROTOCOL
from trio_chat.server.bus import STALL_GRACE
from trio_chat.server.server import ChatServer

pytest_plugins = ["inproc"]

StartServer = Callable[..., Awaitable[ChatServer]]

MEMBERS = 200
LINES_EACH = 5


async def test_members_that_read_are_not_closed_by_a_burst_of_200_times_5_lines(
    start_live_server: StartLiveServer,
) -> None:
    """200 members of one room each send 5 lines at once (1,000 messages: four times the
    default queue depth of 256, published in a few group commits before any writer's
    turn): every member stays connected and reads all 1,000, in the same order."""
    live: LiveServer = await start_live_server(presence_limit=0)
    async with open_plains(live, MEMBERS) as members:
        burst = "\n".join(f"line {n}" for n in range(LINES_EACH))
        async with trio.open_nursery() as senders:
            for member in members:
                senders.start_soon(member.send, burst)
        received: dict[int, list[str]] = {}

        async def read_all(index: int) -> None:
            member = members[index]
            received[index] = [await member.line() for _ in range(MEMBERS * LINES_EACH)]

        async with trio.open_nursery() as readers:
            for index in range(MEMBERS):
                readers.start_soon(read_all, index)
        assert len(live.server.connections) == MEMBERS
        assert not any("slow consumer" in message for message in live.log.messages)
    everyone = [line.replace("You said: ", "Someone says: ") for line in received[0]]
    for lines in received.values():
        assert lines.count(f"You said: line {LINES_EACH - 1}") == 1
        assert [line.replace("You said: ", "Someone says: ") for line in lines] == everyone
    assert everyone.count("Someone says: line 0") == MEMBERS


async def test_a_member_that_stalls_past_the_grace_is_closed_at_the_depth(
    mock_clock: trio.testing.MockClock,
    start_server: StartServer,
    nursery: trio.Nursery,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A member whose socket stops taking frames keeps events past --queue-depth for
    STALL_GRACE seconds; once stalled that long, the next event past the depth closes it
    as a slow consumer (long before the bound that holds whatever the progress)."""
    caplog.set_level(logging.INFO)
    server = await start_server(queue_depth=3, send_timeout=60)
    async with stuck_client(server, nursery):
        await trio.testing.wait_all_tasks_blocked()
        (connection,) = server.connections.values()
        await fill_until(server, lambda: connection.stalled)
        for n in range(5):
            server.chat.operator_says(f"within the grace {n}")
        await trio.testing.wait_all_tasks_blocked()
        assert len(server.chat.bus) == 1, "closed within the grace"
        mock_clock.jump(STALL_GRACE)
        server.chat.operator_says("behind")
        assert len(server.chat.bus) == 0
        # Its close frame waits (for --shutdown-grace) behind what it does not read.
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(server.config.shutdown_grace)
        with trio.fail_after(10):
            await connection.closed.wait()
    assert "has 5 events queued; closing it as a slow consumer" in caplog.text


async def test_a_member_dropped_as_slow_resumes_without_a_gap(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    """A JSON member that stops reading is closed as a slow consumer while bob floods the
    room; resuming its session with ``since`` = the last id it read, it is sent every
    message after that, in order, each once, then the live ones: no gap."""
    server = await start_server(queue_depth=4)
    url = f"ws://127.0.0.1:{server.port}"
    async with (
        connect(url, nick="bob") as bob,
        stuck_client(server, nursery, subprotocols=[PROTOCOL]) as stuck,
    ):
        welcome = json.loads(await stuck.get_message())
        secret = welcome["session"]
        last_read = (await bob.say("before"))["id"]
        with trio.fail_after(10):
            while True:  # what the stuck member reads: the welcome, then "before"
                event = json.loads(await stuck.get_message())
                if event.get("type") == "message" and event["id"] == last_read:
                    break
        sent: list[int] = []
        with trio.fail_after(60):
            while len(server.chat.bus) == 2:
                sent.append((await bob.say(f"{len(sent):03} " + "x" * 8000))["id"])
    async with connect(url, nick="bob-2") as carol:
        sent.append((await carol.say("after the drop"))["id"])
        async with connect(url, session=secret, since=last_read) as alice:
            assert alice.resumed
            received: list[int] = []
            with trio.fail_after(10):
                async for event in alice:
                    if event["type"] == "message":
                        received.append(event["id"])
                        if event["id"] == sent[-1]:
                            break
    assert len(sent) > 4  # past the depth: the drop came from the flood
    assert received == sent
