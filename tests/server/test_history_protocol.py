"""History on join, paging back and resume over the wire, against "History and resume" in
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

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from inproc import (
    JsonClient,
    LiveServer,
    StartLiveServer,
    connect_to,
    lose_connection,
    open_json,
    open_plain,
)
from websockets.exceptions import InvalidStatus

from trio_chat.server.config import ServerConfig

from support import Event, ack, error, presence, stamped

pytest_plugins = ["inproc"]

#: How many stored messages a member gets on joining when nothing else is configured.
DEFAULT_HISTORY_ON_JOIN = ServerConfig().history_on_join
#: How long a whole scenario of several concurrent clients may take before the test fails.
SCENARIO_TIMEOUT = 60.0

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
        await alice.ask("/me codes", "alice * codes")
        async with open_plain(live, "/?room=dev&room=lobby") as bob:
            # lobby is current (named last); the document fixes no order between rooms.
            assert sorted([await bob.line(), await bob.line()]) == [
                "[dev] [history] alice * codes",
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


# --- resume --------------------------------------------------------------------------------


@asynccontextmanager
async def missed_while_away(
    live: LiveServer,
) -> AsyncIterator[tuple[JsonClient, int, list[Event], str]]:
    """alice (JSON) sees message K, then bob and carol send K+1..K+5 and alice's connection
    is lost before she reads them. Yields carol (still connected, in the lobby), K, what
    alice must be replayed (the lobby messages and the private one to her, in id order)
    and alice's session secret."""
    async with (
        open_json(live, "/?nick=bob", nick="bob") as bob,
        open_json(live, "/?nick=carol", nick="carol") as carol,
    ):
        assert stamped(await bob.event()) == presence("join", "carol", room="lobby")
        async with open_json(live, "/?nick=alice", nick="alice") as alice:
            for other in (bob, carol):
                assert stamped(await other.event()) == presence("join", "alice", room="lobby")
            seen = await say(alice, "alice", "seen")
            for other in (bob, carol):
                assert await other.event() == seen
            assert await bob.call({"type": "join", "room": "dev"}) == ack(
                "join", room="dev", topic=None, members=["bob"], anonymous=0
            )
            one = await say(bob, "bob", "one")
            assert await carol.event() == one
            to_alice = await whisper(bob, "bob", "alice", "psst")
            await say(bob, "bob", "in dev", "dev")
            to_carol = await whisper(bob, "bob", "carol", "not for alice")
            assert await carol.event() == to_carol
            two = await say(carol, "carol", "two")
            assert await bob.event() == two
            # alice's connection is lost before she reads any of it.
            await lose_connection(alice)
            assert alice.session is not None
            secret = alice.session
        for other in (bob, carol):
            assert stamped(await other.event()) == presence("quit", "alice", reason=None)
        missed = [one, to_alice, two]
        ids = [seen["id"]] + [event["id"] for event in missed]
        assert ids == sorted(set(ids))
        yield carol, seen["id"], missed, secret


def in_rooms(events: list[Event]) -> list[Event]:
    """``events`` without the private messages."""
    return [event for event in events if event["type"] != "private"]


async def expect_missed_then_live(
    alice: JsonClient, carol: JsonClient, since: int, missed: list[Event], cid: str | None = None
) -> None:
    """alice, back, is told that nothing after ``since`` was lost (the ``resume`` ack,
    answering ``cid``) and replayed exactly ``missed`` as history; carol sees her join, and
    carol's next line is alice's next event: nothing else was replayed."""
    assert await alice.event() == ack("resume", cid, since=since, recovered=True)
    for event in missed:
        assert await alice.event() == history(event)
    assert stamped(await carol.event()) == presence("join", "alice", room="lobby")
    live = await say(carol, "carol", "live")
    assert await alice.event() == live


async def test_resume_by_url_replays_exactly_what_was_missed(
    start_live_server: StartLiveServer,
) -> None:
    """?nick=alice&room=lobby&since=K&session=S replays the lobby's messages and alice's
    private messages after K, in id order, instead of the recent history; then the live
    stream. The welcome gives the same secret back."""
    live = await start_live_server(history_on_join=DEFAULT_HISTORY_ON_JOIN)
    async with missed_while_away(live) as (carol, since, missed, secret):
        query = f"/?nick=alice&room=lobby&since={since}&session={secret}"
        async with open_json(live, query, nick="alice") as alice:
            assert alice.session == secret
            await expect_missed_then_live(alice, carol, since, missed)


async def test_resume_by_url_without_the_session_replays_no_private_messages(
    start_live_server: StartLiveServer,
) -> None:
    """?room=lobby&since=K without the secret: the lobby's messages after K, none of
    alice's private ones, and not her nick (held for her session)."""
    live = await start_live_server(history_on_join=DEFAULT_HISTORY_ON_JOIN)
    async with (
        missed_while_away(live) as (_carol, since, missed, _secret),
        open_json(live, f"/?nick=alice&room=lobby&since={since}") as other,
    ):
        assert await other.event() == error("nick_taken", "nick alice is taken")
        assert await other.event() == ack("resume", since=since, recovered=True)
        for event in in_rooms(missed):
            assert await other.event() == history(event)
        assert (await other.events_until_ack("end"))[0] == []


async def test_resume_command_replays_exactly_what_was_missed(live_server: LiveServer) -> None:
    """resume with the session as the first command (no history on join) brings alice
    back (her nick, announced as a join) and replays the same, after its ack."""
    async with (
        missed_while_away(live_server) as (carol, since, missed, secret),
        open_json(live_server) as alice,
    ):
        await alice.send({"type": "resume", "since": since, "session": secret, "cid": "r"})
        await expect_missed_then_live(alice, carol, since, missed, "r")
        assert (await alice.call({"type": "nick", "nick": "alice", "cid": 1})) == ack(
            "nick", 1, nick="alice"
        )


async def test_resume_command_after_history_on_join_misses_nothing(
    start_live_server: StartLiveServer,
) -> None:
    """resume after the on-join history still sends every message after K exactly once."""
    live = await start_live_server(history_on_join=1)
    async with (
        missed_while_away(live) as (_carol, since, missed, secret),
        open_json(live) as alice,
    ):
        on_join = await alice.event()
        assert on_join == history(missed[-1])  # the lobby's last message
        answer = await alice.call({"type": "resume", "since": since, "session": secret, "cid": "r"})
        assert answer == ack("resume", "r", since=since, recovered=True)
        replayed, _ = await alice.events_until_ack("end")
        received = sorted([on_join, *replayed], key=lambda event: event["id"])
        assert received == [history(event) for event in missed]


async def test_resume_url_with_an_invalid_since_is_refused(live_server: LiveServer) -> None:
    """A since that is not one whole number gets HTTP 400 with a one-line reason."""
    reason = b"since must be one whole number: the id of the last message seen\n"
    for query in ("/?since=abc", "/?since=-1", "/?since=", "/?nick=alice&since=1&since=2"):
        with pytest.raises(InvalidStatus) as info:
            async with connect_to(live_server.url + query):
                pass
        assert info.value.response.status_code == 400, query
        assert bytes(info.value.response.body or b"") == reason, query
    async with open_json(live_server, "/?nick=alice&since=0", nick="alice") as alice:
        assert await alice.event() == ack("resume", since=0, recovered=True)
        assert (await say(alice, "alice", "still serving"))["text"] == "still serving"


class Published:
    """The ids acked to the publisher so far, in order, and a way to wait for more."""

    def __init__(self) -> None:
        self.ids: list[int] = []
        self._changed = trio.Event()

    def add(self, message_id: int) -> None:
        """Record one more acked id and wake whoever waits for a count."""
        self.ids.append(message_id)
        self._changed.set()
        self._changed = trio.Event()

    async def reach(self, count: int) -> None:
        """Return once at least ``count`` ids are acked (the caller bounds the wait)."""
        while len(self.ids) < count:
            await self._changed.wait()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
async def test_resume_while_messages_flow_misses_nothing_and_repeats_nothing(
    start_live_server: StartLiveServer, tmp_path: Path, store: str
) -> None:
    """Clients resuming from several ids while 300 messages flow get every later id exactly
    once, in increasing order: history first, then live. With either store: SQLite commits
    in a worker thread, so its writes finish while replays are being read."""
    db = str(tmp_path / "race.db") if store == "sqlite" else ":memory:"
    live = await start_live_server(db=db)
    total = 300
    published = Published()

    async def publish() -> None:
        async with open_json(live) as publisher:
            for n in range(total):
                await publisher.send({"type": "message", "text": f"m{n}", "cid": n})
                answer = await publisher.event()
                while answer.get("type") == "message":  # own copy of the previous one
                    answer = await publisher.event()
                assert answer == ack("message", n, id=answer.get("id"), room="lobby")
                published.add(answer["id"])

    async def resume_and_read(
        since: int, received: list[Event], *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Arrive with ``since`` (started once welcomed), then read to the last message."""
        async with open_json(live, f"/?since={since}") as client:
            task_status.started()
            assert await client.event() == ack("resume", since=since, recovered=True)
            while not received or received[-1]["text"] != f"m{total - 1}":
                received.append(await client.event())
            extra, _ = await client.events_until_ack("end")
            received.extend(extra)

    resumes: list[tuple[int, list[Event]]] = []
    with trio.fail_after(SCENARIO_TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish)
            for count in range(40, total, 40):
                await published.reach(count)
                since = published.ids[count // 2]
                received: list[Event] = []
                resumes.append((since, received))
                await nursery.start(resume_and_read, since, received)
    assert len(published.ids) == total
    assert published.ids == sorted(set(published.ids))
    text = {message_id: f"m{n}" for n, message_id in enumerate(published.ids)}
    for since, received in resumes:
        assert [event["id"] for event in received] == [i for i in published.ids if i > since]
        replayed = ["history" in event for event in received]
        assert replayed == sorted(replayed, reverse=True)  # history, then live
        assert replayed[0], "the resume point was before the stream's end"
        for event, was_replayed in zip(received, replayed, strict=True):
            expected = message(event["id"], "lobby", None, text[event["id"]])
            if was_replayed:
                expected["history"] = True
            assert stamped(event) == expected
