"""Nobody reads someone else's private messages by taking their nickname: the leak of a
resume by nick (URL ``since=``, the ``resume`` command) and of paging back through
private history, over the wire.

bob gets a private message and leaves; mallory connects with bob's nick. Before
principals, the server replayed bob's private messages to whoever held the nick bob.
Now a private message belongs to its sender's and its recipient's principals, and only
they read it again. (Resuming one's own session, which does bring them back, is in
tests/server/test_sessions.py.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from inproc import JsonClient, LiveServer, open_json, open_plain

from support import Event, ack, stamped

pytest_plugins = ["inproc"]


def private(message_id: int, sender: str, to: str, text: str) -> Event:
    """A live ``private`` event as compared after :func:`stamped`."""
    return {"type": "private", "id": message_id, "from": sender, "to": to, "text": text}


@asynccontextmanager
async def secret_for_bob(live: LiveServer) -> AsyncIterator[tuple[JsonClient, Event]]:
    """alice sends bob a private message, which bob reads, and leaves.
    Yields alice (still connected) and the message as bob got it."""
    async with open_json(live, "/?nick=alice", nick="alice") as alice:
        async with open_json(live, "/?nick=bob", nick="bob") as bob:
            await alice.event()  # bob joined
            answer = await alice.call({"type": "private", "to": "bob", "text": "the secret"})
            assert answer == ack("private", id=answer["id"], to="bob")
            assert stamped(await alice.event()) == private(
                answer["id"], "alice", "bob", "the secret"
            )
            received = await bob.event()
            assert stamped(received) == private(answer["id"], "alice", "bob", "the secret")
        await alice.event()  # bob quit
        yield alice, received


async def nothing_more(client: JsonClient) -> None:
    """Nothing else was queued for ``client``: the next event answers a new command."""
    before, _ = await client.events_until_ack("end")
    assert before == []


async def test_a_url_resume_with_someone_elses_nick_replays_none_of_their_messages(
    live_server: LiveServer,
) -> None:
    """?nick=bob&since=0 after bob left: the room's history, none of bob's private messages
    (JSON and plain alike)."""
    async with secret_for_bob(live_server) as (alice, _secret):
        async with open_json(live_server, "/?nick=bob&since=0", nick="bob") as mallory:
            assert await mallory.event() == ack("resume", since=0, recovered=True)
            await nothing_more(mallory)
        await alice.event()  # mallory, as bob, joined
        await alice.event()  # and quit
        async with open_plain(live_server, "/?nick=bob&since=0") as plain:
            await plain.ask("/rooms", "* Rooms: lobby (2)")


async def test_a_resume_command_with_someone_elses_nick_replays_none_of_their_messages(
    live_server: LiveServer,
) -> None:
    """The ``resume`` command from a connection that took bob's nick: no private messages."""
    async with (
        secret_for_bob(live_server) as (_alice, _secret),
        open_json(live_server, "/?nick=bob", nick="bob") as mallory,
    ):
        assert await mallory.call({"type": "resume", "since": 0, "cid": "r"}) == ack(
            "resume", "r", since=0, recovered=True
        )
        await nothing_more(mallory)


async def test_private_history_with_someone_elses_nick_is_empty(live_server: LiveServer) -> None:
    """Paging back through private messages (``history`` with ``private``) as bob's nick
    finds none of bob's; alice, who sent it, still finds it."""
    async with (
        secret_for_bob(live_server) as (alice, secret),
        open_json(live_server, "/?nick=bob", nick="bob") as mallory,
    ):
        page = await mallory.call({"type": "history", "private": True, "limit": 10, "cid": 1})
        assert page == ack("history", 1, private=True, messages=[])
        await alice.event()  # mallory, as bob, joined
        page = await alice.call({"type": "history", "private": True, "cid": 2})
        assert page == ack("history", 2, private=True, messages=[{**secret, "history": True}])


@pytest.mark.parametrize("value", [1, "yes", None])
async def test_private_history_needs_a_boolean(live_server: LiveServer, value: object) -> None:
    """``private`` is true or false; anything else is one clear error."""
    async with open_json(live_server) as client:
        answer = await client.call({"type": "history", "private": value, "cid": 1})
        if value is None:  # absent: the current room's history
            assert answer == ack("history", 1, room="lobby", messages=[])
        else:
            assert answer == {
                "type": "error",
                "cid": 1,
                "code": "bad_request",
                "text": "'private' must be true or false",
            }


async def test_private_history_pages_back_through_ones_own_messages(
    live_server: LiveServer,
) -> None:
    """``history`` with ``private``: one's own private messages (sent and received), oldest
    first, ``limit`` of them below ``before``; not the others'."""
    async with (
        open_json(live_server, "/?nick=alice", nick="alice") as alice,
        open_json(live_server, "/?nick=bob", nick="bob") as bob,
        open_json(live_server, "/?nick=carol", nick="carol") as carol,
    ):
        for n, (sender, to, text) in enumerate(
            [
                (alice, "bob", "one"),
                (bob, "alice", "two"),
                (carol, "bob", "not alice's"),
                (carol, "alice", "three"),
            ]
        ):
            await sender.send({"type": "private", "to": to, "text": text, "cid": n})
            while (await sender.event()).get("cid") != n:  # presence, earlier copies
                pass
        replayed, _ = await alice.events_until_ack("end")
        mine = [{**event, "history": True} for event in replayed if event["type"] == "private"]
        assert [event["text"] for event in mine] == ["one", "two", "three"]
        page = await alice.call({"type": "history", "private": True, "limit": 2, "cid": 1})
        assert page == ack("history", 1, private=True, messages=mine[1:])
        before = mine[1]["id"]
        page = await alice.call({"type": "history", "private": True, "before": before, "cid": 2})
        assert page == ack("history", 2, private=True, messages=mine[:1])
