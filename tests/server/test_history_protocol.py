"""History on join and paging back over the wire, against "History and resume" in
docs/protocol.md.

The server runs in the test's nursery on a real socket (``inproc``), its messages in memory
unless the test is about the durable store's write path; clients are the independent
``websockets`` library's Trio client, plain or offering ``trio-chat.v1``. Frames are split
on ``\\n`` (the server batches). Nothing is awaited by time: to show that something did
*not* arrive, a later event is made to happen and must be the very next one received.
What needs a process (restarts, kill -9, a second server on the same file, the flags) is in
tests/e2e/test_history_e2e.py.
"""

from __future__ import annotations

from typing import Any

import pytest
from inproc import JsonClient, LiveServer, StartLiveServer, open_json, open_plain

from trio_chat.server.config import ServerConfig

from support import Event, ack, error, presence, stamped

pytest_plugins = ["inproc"]

#: How many stored messages a member gets on joining when nothing else is configured.
DEFAULT_HISTORY_ON_JOIN = ServerConfig().history_on_join

# --- helpers -------------------------------------------------------------------------------


def message(message_id: int, room: str, sender: str | None, text: str) -> Event:
    """A live room ``message`` event as compared after :func:`stamped`."""
    return {"type": "message", "id": message_id, "room": room, "from": sender, "text": text}


def history(event: Event) -> Event:
    """The replayed form of a live ``message`` or ``private`` event (``ts`` included)."""
    return {**event, "history": True}


async def say(client: JsonClient, nick: str | None, text: str, room: str = "lobby") -> Event:
    """``client`` (called ``nick``) says ``text`` in ``room``: check the ack, then its own
    copy; return that copy (with its ``ts``)."""
    answer = await client.call({"type": "message", "text": text, "room": room})
    assert isinstance(answer.get("id"), int), answer
    assert answer == ack("message", id=answer["id"], room=room)
    event = await client.event()
    assert stamped(event) == message(answer["id"], room, nick, text)
    return event


async def whisper(client: JsonClient, nick: str, to: str, text: str) -> Event:
    """``client`` (called ``nick``) sends ``text`` privately to ``to``: check the ack, then
    its own copy; return that copy (with its ``ts``)."""
    answer = await client.call({"type": "private", "to": to, "text": text})
    assert isinstance(answer.get("id"), int), answer
    assert answer == ack("private", id=answer["id"], to=to)
    event = await client.event()
    private = {"type": "private", "id": answer["id"], "from": nick, "to": to, "text": text}
    assert stamped(event) == private
    return event


# --- history on connect and on join ----------------------------------------------------------


async def test_history_on_join_comes_after_the_ack_and_before_live_lines(
    start_live_server: StartLiveServer,
) -> None:
    """/join replays the room's messages after the join ack; later ones arrive once, live."""
    live = await start_live_server(history_on_join=DEFAULT_HISTORY_ON_JOIN)
    async with open_plain(live) as alice:
        await alice.ask("/nick alice", "* You are now known as alice")
        await alice.ask("in lobby", "You said: in lobby")
        await alice.ask("/join dev", "* You joined dev (1 here)")
        await alice.ask("d1", "You said: d1")
        await alice.ask("d2", "You said: d2")
        async with open_plain(live) as bob:
            await bob.expect("[history] alice says: in lobby")  # on connect: the lobby's only
            await bob.ask("/nick bob", "* You are now known as bob")
            await alice.expect("[lobby] * bob joined lobby")
            await bob.ask(
                "/join dev",
                "* You joined dev (2 here)",
                "[history] alice says: d1",
                "[history] alice says: d2",
            )
            await alice.expect("* bob joined dev")
            await alice.ask("d3", "You said: d3")
            await bob.expect("alice says: d3")
            await bob.ask("after", "You said: after")  # d3 came once: this is next
            await alice.expect("bob says: after")


async def test_history_of_the_rooms_one_arrives_in_follows_the_room_prefix_rule(
    start_live_server: StartLiveServer,
) -> None:
    """Arriving in dev and lobby replays both; lines of the non-current room say [dev]."""
    live = await start_live_server(history_on_join=DEFAULT_HISTORY_ON_JOIN)
    async with open_plain(live) as alice:
        await alice.ask("/nick alice", "* You are now known as alice")
        await alice.ask("in lobby", "You said: in lobby")
        await alice.ask("/join dev", "* You joined dev (1 here)")
        await alice.ask("/me codes", "* alice codes")
        async with open_plain(live, "/?room=dev&room=lobby") as bob:
            # lobby is current (named last); the document fixes no order between rooms.
            assert sorted([await bob.line(), await bob.line()]) == [
                "[dev] [history] * alice codes",
                "[history] alice says: in lobby",
            ]
            await bob.ask("hi", "You said: hi")


@pytest.mark.parametrize("on_join", [2, 0])
async def test_history_on_join_sets_how_many(
    start_live_server: StartLiveServer, on_join: int
) -> None:
    """history_on_join N replays the last N messages on connect and on /join; 0 none."""
    live = await start_live_server(history_on_join=on_join)
    async with open_plain(live) as alice:
        await alice.ask("/nick alice", "* You are now known as alice")
        for n in range(1, 6):
            await alice.ask(f"m{n}", f"You said: m{n}")
        await alice.ask("/join dev", "* You joined dev (1 here)")
        for n in range(1, 4):
            await alice.ask(f"d{n}", f"You said: d{n}")
        async with open_plain(live) as newcomer:
            if on_join:
                await newcomer.expect("[history] alice says: m4", "[history] alice says: m5")
            await newcomer.ask(
                "/join dev",
                "* You joined dev (2 here)",
                *(["[history] alice says: d2", "[history] alice says: d3"] if on_join else []),
            )
            await newcomer.ask("hi", "You said: hi")  # nothing else came before it
            await alice.expect("Someone says: hi")


# --- paging back ---------------------------------------------------------------------------


async def test_history_command_pages_back_through_one_room(live_server: LiveServer) -> None:
    """history returns the last N of a room below an id, oldest first; wrong limits and
    rooms one is not in are errors."""
    async with (
        open_json(live_server, "/?nick=bob", nick="bob") as bob,
        open_json(live_server, "/?nick=alice", nick="alice") as alice,
    ):
        assert stamped(await bob.event()) == presence("join", "alice", room="lobby")
        assert await bob.call({"type": "join", "room": "dev"}) == ack(
            "join", room="dev", topic=None, members=["bob"], anonymous=0
        )
        lobby = [await say(alice, "alice", "l1"), await say(alice, "alice", "l2")]
        for event in lobby:
            assert await bob.event() == event
        in_dev = await say(bob, "bob", "d1", "dev")
        psst = await whisper(bob, "bob", "alice", "psst")
        assert await alice.event() == psst
        lobby += [await say(alice, "alice", text) for text in ("l3", "l4", "l5")]
        for event in lobby[2:]:
            assert await bob.event() == event
        ids = [event["id"] for event in lobby]

        async def page(cid: str, **request: Any) -> Event:
            return await alice.call({"type": "history", "cid": cid, **request})

        def messages(*events: Event) -> list[Event]:
            return [history(event) for event in events]

        assert await page("h1", limit=2) == ack(
            "history", "h1", room="lobby", messages=messages(*lobby[3:])
        )
        assert await page("h2", limit=2, before=ids[3]) == ack(
            "history", "h2", room="lobby", messages=messages(*lobby[1:3])
        )
        assert await page("h3", before=ids[1]) == ack(
            "history", "h3", room="lobby", messages=messages(lobby[0])
        )
        assert await page("h4", before=ids[0]) == ack("history", "h4", room="lobby", messages=[])
        assert await page("h5", room="lobby", limit=500) == ack(
            "history", "h5", room="lobby", messages=messages(*lobby)
        )
        assert await bob.call({"type": "history", "room": "dev", "cid": "b"}) == ack(
            "history", "b", room="dev", messages=messages(in_dev)
        )
        for limit in (0, 501):
            assert await page("bad", limit=limit) == error(
                "bad_request", "'limit' must be 1 to 500", "bad"
            )
        assert await page("away", room="dev") == error("not_in_room", "you are not in dev", "away")
