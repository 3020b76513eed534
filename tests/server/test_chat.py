"""The chat's rules, with no sockets: members, nicknames, rooms, presence, the operator.

Each test drives :class:`Chat` directly and reads what every member's subscription
received, so a rule is checked exactly where it is made.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from contextlib import ExitStack

import pytest
import trio
import trio.testing
from chat_harness import Harness, receive_text, running_log

from trio_chat.server.chat import LOBBY
from trio_chat.server.cli import parse_args
from trio_chat.server.config import ServerConfig
from trio_chat.server.history import MessageLog
from trio_chat.server.messaging import MAX_UNCONFIRMED
from trio_chat.server.server import ChatServer
from trio_chat.server.store import MemoryStore, Record, StoreError

pytest_plugins = ["chat_harness"]


async def test_anonymous_members_are_silent_until_named(room: Harness) -> None:
    """An anonymous member's arrival is not announced; taking a nick is, as a join."""
    watcher = await room.connect("watcher")
    await watcher.received()
    newcomer = await room.connect()
    assert await watcher.received() == []
    await room.say(newcomer, "/nick alice")
    assert await newcomer.received() == ["* You are now known as alice"]
    assert await watcher.received() == ["* alice joined lobby"]


async def test_nicks_are_unique_ignoring_case_and_server_is_reserved(room: Harness) -> None:
    """A taken nick (in any case) and 'server' are refused; one's own nick is fine."""
    alice = await room.connect("alice")
    other = await room.connect()
    await alice.received()
    for name in ("ALICE", "Server"):
        await room.say(other, f"/nick {name}")
        assert await other.received() == [f"Error: nick {name} is taken"]
    await room.say(alice, "/nick Alice")
    assert await alice.received() == ["* You are now known as Alice"]


async def test_a_released_nick_can_be_taken_again(room: Harness) -> None:
    """After a nick change or a quit, the old nick is free."""
    alice = await room.connect("alice")
    await room.say(alice, "/nick al")
    bob = await room.connect("alice")
    assert await bob.received() == ["* You are now known as alice"]
    room.disconnect(bob)
    carol = await room.connect("alice")
    assert await carol.received() == ["* You are now known as alice"]


async def test_rooms_isolate_and_lines_go_to_the_current_room(room: Harness) -> None:
    """A line goes to the sender's current room only; switching rooms switches it."""
    alice, bob, carol = [await room.connect(n) for n in ("alice", "bob", "carol")]
    await room.say(alice, "/join dev")
    await room.say(carol, "/join dev")
    for client in (alice, bob, carol):
        await client.received()
    await room.say(alice, "for dev")
    assert await alice.received() == ["You said: for dev"]
    assert await carol.received() == ["alice says: for dev"]
    assert await bob.received() == []
    await room.say(carol, "/join lobby")
    assert await carol.received() == ["* You are now talking in lobby (3 here)"]
    await room.say(alice, "still dev")
    assert await carol.received() == ["[dev] alice says: still dev"]


async def test_leaving_rooms(room: Harness) -> None:
    """Leave the current room (the previous one becomes current), never the only one;
    an emptied room disappears, the lobby stays."""
    alice = await room.connect("alice")
    await room.say(alice, "/join dev")
    await room.say(alice, "/leave")
    await room.say(alice, "/leave")
    await room.say(alice, "/leave dev")
    assert await alice.received() == [
        "* You are now known as alice",
        "* You joined dev (1 here)",
        "* You left dev; now talking in lobby",
        "Error: lobby is your only room; /join another first",
        "Error: you are not in dev",
    ]
    assert [name for name, _, _ in room.chat.room_list()] == [LOBBY]
    room.disconnect(alice)
    assert room.chat.room_list() == [(LOBBY, 0, None)]


async def test_private_messages_reach_only_their_target(room: Harness) -> None:
    """/msg: sender and recipient only; unknown nick and anonymous sender are errors."""
    alice, bob, carol, anon = [await room.connect(n) for n in ("alice", "bob", "carol", None)]
    for client in (alice, bob, carol):
        await client.received()
    await room.say(alice, "/msg BOB psst")
    await room.say(alice, "/msg zed hello")
    await room.say(anon, "/msg bob hi")
    assert await alice.received() == [
        "[private] You said to bob: psst",
        "Error: nobody is called zed",
    ]
    assert await bob.received() == ["[private] alice says: psst"]
    assert await carol.received() == []
    assert await anon.received() == ["Error: set a nickname with /nick before /msg"]


async def test_a_nick_change_is_announced_once_to_each_member(room: Harness) -> None:
    """Sharing two rooms with the one who changes nick still means one notice."""
    alice, bob = await room.connect("alice"), await room.connect("bob")
    for client in (alice, bob):
        await room.say(client, "/join dev")
    await bob.received()
    await room.say(alice, "/nick al")
    assert await bob.received() == ["* alice is now known as al"]


async def test_presence_is_not_broadcast_in_rooms_over_the_limit(nursery: trio.Nursery) -> None:
    """Over --presence-limit members a room gets no presence notices; /who still works."""
    with ExitStack() as stack:
        room = Harness(stack, await running_log(nursery), presence_limit=2)
        alice, bob = await room.connect("alice"), await room.connect("bob")
        assert await alice.received() == ["* You are now known as alice", "* bob joined lobby"]
        carol = await room.connect("carol")  # now 3 in the lobby: over the limit
        await room.say(bob, "/nick robert")
        await room.say(carol, "/who")
        assert await alice.received() == []
        assert await carol.received() == [
            "* You are now known as carol",
            "* In lobby: alice, carol and robert",
        ]
        await room.say(alice, "/join dev")
        await room.say(carol, "/join dev")  # dev has 2 members: within the limit
        assert await alice.received() == ["* You joined dev (1 here)", "* carol joined dev"]


async def test_topic(room: Harness) -> None:
    """A topic is shown, set for the room's members, and cleared."""
    alice, bob = await room.connect("alice"), await room.connect("bob")
    await alice.received()
    await room.say(bob, "/topic")
    await room.say(bob, "/topic release day")
    await room.say(bob, "/topic")
    assert await bob.received() == [
        "* You are now known as bob",
        "* lobby has no topic",
        "* bob set the topic of lobby: release day",
        "* Topic of lobby: release day",
    ]
    assert await alice.received() == ["* bob set the topic of lobby: release day"]
    await room.say(bob, json.dumps({"type": "topic", "text": ""}))  # plain member sent JSON
    assert await bob.received() == [
        'bob says: {"type": "topic", "text": ""}'.replace("bob says", "You said")
    ]


async def test_json_members_get_an_ack_before_their_message(room: Harness) -> None:
    """The ack (with the id) comes before the message event it acknowledges."""
    alice = await room.connect(json_mode=True)
    await room.say(alice, json.dumps({"type": "message", "text": "hi", "cid": "m1"}))
    welcome, ack, message = (json.loads(line) for line in await alice.received())
    assert welcome["type"] == "welcome"
    assert ack == {"type": "ack", "cid": "m1", "command": "message", "id": 1, "room": "lobby"}
    assert message == {
        "type": "message",
        "id": 1,
        "room": "lobby",
        "from": None,
        "text": "hi",
        "ts": "2026-01-02T03:04:05.000Z",
    }


async def test_quit_answers_then_closes_after_flushing(room: Harness) -> None:
    """/quit announces the departure, acks, and asks for a 1000 close after a flush."""
    alice, bob = await room.connect("alice"), await room.connect("bob")
    await alice.received()
    await room.say(bob, "/quit gone fishing")
    assert bob.closes == [(1000, "bye", True)]
    assert await alice.received() == ["* bob quit (gone fishing)"]
    room.disconnect(bob)  # the connection closing later announces nothing more
    assert await alice.received() == []


async def test_kick(room: Harness) -> None:
    """The operator's kick announces it and closes the member with 1008 at once."""
    alice, bob = await room.connect("alice"), await room.connect("bob")
    await alice.received()
    assert room.chat.kick("BOB", "spamming")
    assert not room.chat.kick("nobody", "x")
    assert bob.closes == [(1008, "spamming", False)]
    assert await alice.received() == ["* bob was kicked (spamming)"]
    carol = await room.connect("bob")  # the kicked nick is free at once
    assert await carol.received() == ["* You are now known as bob"]


async def test_operator_lines(room: Harness) -> None:
    """The operator speaks to everyone, or to one room's members."""
    alice, bob = await room.connect("alice"), await room.connect("bob")
    await room.say(bob, "/join dev")
    await room.say(bob, "/join lobby")
    await alice.received()
    await bob.received()
    assert room.chat.operator_says("all") == 2
    assert room.chat.operator_says("devs", "dev") == 1
    assert await alice.received() == ["🟢 Server: all"]
    assert await bob.received() == ["🟢 Server: all", "[dev] 🟢 Server: devs"]


class HeldStore(MemoryStore):
    """A memory store whose commits wait for ``release`` and can be told to fail."""

    def __init__(self) -> None:
        super().__init__(history_limit=1000)
        self.release = trio.Event()
        self.fail = False

    async def write(self, records: Sequence[Record]) -> None:
        await self.release.wait()
        if self.fail:
            raise StoreError("disk full")
        await super().write(records)


async def test_a_members_messages_are_pipelined_up_to_a_limit(nursery: trio.Nursery) -> None:
    """A reader goes on while its messages commit, up to MAX_UNCONFIRMED; then it
    waits; nothing is delivered before its commit."""
    store = HeldStore()
    log = MessageLog(store)
    await log.open()
    await nursery.start(log.run)
    with ExitStack() as stack:
        room = Harness(stack, log)
        alice, bob = await room.connect(), await room.connect()
        for n in range(MAX_UNCONFIRMED):
            with trio.fail_after(1):
                await receive_text(room.chat, alice.member, f"m{n}")
        blocked = trio.Event()

        async def one_more() -> None:
            await receive_text(room.chat, alice.member, "one more")
            blocked.set()

        nursery.start_soon(one_more)
        await trio.testing.wait_all_tasks_blocked()
        assert not blocked.is_set()
        assert await bob.received() == []
        store.release.set()
        with trio.fail_after(5):
            await blocked.wait()
        await trio.testing.wait_all_tasks_blocked()
        expected = [f"Someone says: m{n}" for n in range(MAX_UNCONFIRMED)]
        assert await bob.received() == [*expected, "Someone says: one more"]


async def test_a_message_that_cannot_be_stored_is_refused_to_its_sender(
    nursery: trio.Nursery,
) -> None:
    """A failed commit: the sender gets store_failed, nobody gets the message."""
    store = HeldStore()
    store.fail = True
    store.release.set()
    log = MessageLog(store)
    await log.open()
    await nursery.start(log.run)
    with ExitStack() as stack:
        room = Harness(stack, log)
        alice, bob = await room.connect(json_mode=True), await room.connect()
        await alice.received()
        await room.say(alice, json.dumps({"type": "message", "text": "lost", "cid": 4}))
        assert [json.loads(line) for line in await alice.received()] == [
            {
                "type": "error",
                "cid": 4,
                "code": "store_failed",
                "text": "the message could not be stored; try again",
            }
        ]
        assert await bob.received() == []


async def test_a_resend_key_is_the_cid_as_sent_for_one_target(room: Harness) -> None:
    """A cid names one message to one place: the same cid again is a duplicate, but
    ``1`` and ``"1"``, or the same cid to another room, are new messages."""
    alice = await room.connect("alice", json_mode=True)
    await room.say(alice, json.dumps({"type": "join", "room": "dev"}))
    await alice.received()
    sent = [
        {"type": "message", "text": "a", "cid": 1},
        {"type": "message", "text": "a", "cid": 1},
        {"type": "message", "text": "b", "cid": "1"},
        {"type": "message", "text": "c", "cid": 1, "room": "lobby"},
    ]
    for command in sent:
        await room.say(alice, json.dumps(command))
    acks = [e for e in map(json.loads, await alice.received()) if e["type"] == "ack"]
    assert [(a["cid"], a["id"], a["room"], a.get("duplicate", False)) for a in acks] == [
        (1, 1, "dev", False),
        (1, 1, "dev", True),
        ("1", 2, "dev", False),
        (1, 3, "lobby", False),
    ]


def wire_lines(received: list[str]) -> list[str]:
    """Received events as the lines of a frame on the wire (an event may be several)."""
    return "\n".join(received).split("\n")


async def test_a_multi_line_json_message_is_one_message_attributed_on_every_line(
    room: Harness,
) -> None:
    """JSON text with \\r\\n, \\r or \\n is one message (one id, one stored record) with
    \\n line breaks; plain members read every line with its sender, their own with "You
    said", from another room with its [room] mark."""
    alice = await room.connect("alice", json_mode=True)
    bob = await room.connect("bob")
    carol = await room.connect("carol")
    await room.say(carol, "/join dev")
    for client in (alice, bob, carol):
        await client.received()
    text = "one\r\ntwo\rthree"
    await room.say(alice, json.dumps({"type": "message", "text": text, "cid": 1}))
    ack, message = (json.loads(line) for line in await alice.received())
    assert ack == {"type": "ack", "cid": 1, "command": "message", "id": 1, "room": "lobby"}
    assert message["id"] == 1
    assert message["text"] == "one\ntwo\nthree"
    assert wire_lines(await bob.received()) == [
        "alice says: one",
        "alice says: two",
        "alice says: three",
    ]
    assert wire_lines(await carol.received()) == [
        "[lobby] alice says: one",
        "[lobby] alice says: two",
        "[lobby] alice says: three",
    ]
    stored = await room.chat.log.store.recent("lobby", 10)
    assert [(r.id, r.text) for r in stored] == [(1, "one\ntwo\nthree")]


async def test_multi_line_actions_and_private_messages(room: Harness) -> None:
    """/me and private messages of several lines: every line attributed, for the sender
    (a plain member on another connection) and the recipient alike."""
    alice = await room.connect("alice", json_mode=True)
    bob = await room.connect("bob")
    await alice.received()
    await bob.received()
    await room.say(alice, json.dumps({"type": "me", "text": "waves\nsmiles"}))
    assert wire_lines(await bob.received()) == ["alice * waves", "alice * smiles"]
    await room.say(alice, json.dumps({"type": "private", "to": "bob", "text": "a\nb"}))
    assert wire_lines(await bob.received()) == [
        "[private] alice says: a",
        "[private] alice says: b",
    ]
    await alice.received()
    await room.say(bob, "/nick bob")  # plain members send one line per message
    await room.say(bob, "/msg alice x\n/msg alice y")
    assert wire_lines(await bob.received()) == [
        "* You are now known as bob",
        "[private] You said to alice: x",
        "[private] You said to alice: y",
    ]


async def test_a_message_over_the_line_cap_is_refused(nursery: trio.Nursery) -> None:
    """Over max_message_lines: bad_request naming the limit, nothing stored; a plain
    frame of several lines stays that many messages, whatever the cap."""
    log = await running_log(nursery)
    with ExitStack() as stack:
        harness = Harness(stack, log, max_message_lines=2)
        alice = await harness.connect("alice", json_mode=True)
        bob = await harness.connect()
        await alice.received()
        await harness.say(alice, json.dumps({"type": "message", "text": "1\n2\n3", "cid": 5}))
        assert [json.loads(line) for line in await alice.received()] == [
            {
                "type": "error",
                "cid": 5,
                "code": "bad_request",
                "text": "text has 3 lines; a message may have at most 2",
            }
        ]
        await harness.say(alice, json.dumps({"type": "message", "text": "1\n2", "cid": 6}))
        await harness.say(bob, "a\nb\nc")
        assert await bob.received() == [
            "alice says: 1\nalice says: 2",
            "You said: a",
            "You said: b",
            "You said: c",
        ]
        stored = await log.store.recent("lobby", 10)
        assert [r.text for r in stored] == ["1\n2", "a", "b", "c"]


def test_the_server_gives_its_chat_the_line_cap() -> None:
    """ServerConfig.max_message_lines (default 20; --max-message-lines, which refuses 0)
    is the cap the server's chat applies."""
    assert ChatServer(ServerConfig(db=":memory:")).chat.max_message_lines == 20
    assert ChatServer(ServerConfig(db=":memory:", max_message_lines=3)).chat.max_message_lines == 3
    with pytest.raises(SystemExit):
        parse_args(["--max-message-lines", "0"], environ={})
