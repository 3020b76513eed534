"""The ``trio-chat.v1`` JSON subprotocol end to end, event by event, against docs/protocol.md.

The server runs in the test's nursery on a real socket (``inproc``); clients are the
independent ``websockets`` library's Trio client offering ``trio-chat.v1``, and the operator
console is answered in-process. Every frame is split on ``\\n`` and every line parsed as one
JSON document (the server batches); events are compared as whole dicts, with ``ts`` checked
for its format. Nothing is awaited by time: to show that an event did *not* arrive, a later
event is made to happen and must be the very next one received.
"""

from __future__ import annotations

import json
import re

import pytest
from inproc import (
    JsonClient,
    LineReader,
    LiveServer,
    connect_to,
    open_json,
    open_jsons,
    open_plain,
    wait_connected,
)

import trio_chat
from trio_chat.core.commands import HELP

from support import (
    A_SECRET,
    LIFTED_LIMITS,
    PROTOCOL,
    Event,
    ack,
    error,
    presence,
    stamped,
    with_cid,
)

pytest_plugins = ["inproc"]

WELCOME = {
    "type": "welcome",
    "protocol": PROTOCOL,
    "server": f"trio_chat/{trio_chat.__version__}",
    "nick": None,
    "room": "lobby",
    "rooms": ["lobby"],
    "session": A_SECRET,  # 43 URL-safe characters: 256 random bits
    "limits": LIFTED_LIMITS,  # the fixture's server: rate limits lifted
}
NAME_RULE = "use 1-32 letters, digits, '_', '-' or '.'"

# --- helpers -------------------------------------------------------------------------------


async def take_nicks(clients: list[JsonClient], *nicks: str) -> None:
    """Give ``clients[i]`` the nick ``nicks[i]`` in turn (all in the lobby only); every
    other client gets the join."""
    for i, nick in enumerate(nicks):
        assert await clients[i].call({"type": "nick", "nick": nick}) == ack("nick", nick=nick)
        for other in clients[:i] + clients[i + 1 :]:
            assert stamped(await other.event()) == presence("join", nick, room="lobby")


async def next_ack_follows(client: JsonClient, cid: str) -> None:
    """Prove nothing else is pending for ``client``: a ``rooms`` command's ack is next."""
    answer = await client.call({"type": "rooms", "cid": cid})
    assert answer["type"] == "ack", answer
    assert answer["cid"] == cid


# --- the handshake -------------------------------------------------------------------------


async def test_welcome_is_the_first_event(live_server: LiveServer) -> None:
    """Offering trio-chat.v1 selects it; the first event is the welcome, exactly."""
    async with connect_to(live_server.url, [PROTOCOL]) as ws:
        assert ws.subprotocol == PROTOCOL
        await wait_connected(live_server, ws, json_mode=True)
        client = JsonClient(ws)
        assert await client.event() == WELCOME
        await next_ack_follows(client, "after-welcome")


@pytest.mark.parametrize("offered", [None, ["other.v9"]], ids=["no-subprotocol", "other-only"])
async def test_client_not_offering_it_stays_plain(
    live_server: LiveServer, offered: list[str] | None
) -> None:
    """A client that does not offer trio-chat.v1 is in plain mode: no welcome, plain lines."""
    async with connect_to(live_server.url, offered) as ws:
        assert ws.subprotocol is None
        await wait_connected(live_server, ws, json_mode=False)
        await ws.send("hi")
        assert await LineReader(ws).line() == "You said: hi"  # the very first line: no welcome


# --- every command, with and without a cid ---------------------------------------------------


@pytest.mark.parametrize("cid", [None, "c-1", 42], ids=["no-cid", "string-cid", "number-cid"])
async def test_every_command_is_answered_once(
    live_server: LiveServer, cid: str | int | None
) -> None:
    """Each command type gets exactly one ack (echoing cid) with its documented result."""
    async with open_jsons(live_server, 2) as (alice, bob):

        async def call(command: Event) -> Event:
            return await alice.call(with_cid(command, cid))

        def message_cid(n: int) -> str | int | None:
            """A message's cid names that message: a reused one would be a resend."""
            if cid is None:
                return None
            return f"{cid}-{n}" if isinstance(cid, str) else cid + n

        async def send_message(command: Event, n: int) -> Event:
            return await alice.call(with_cid(command, message_cid(n)))

        assert await call({"type": "nick", "nick": "alice"}) == ack("nick", cid, nick="alice")
        assert stamped(await bob.event()) == presence("join", "alice", room="lobby")
        await take_nicks([bob, alice], "bob")

        assert await call({"type": "join", "room": "dev"}) == ack(
            "join", cid, room="dev", topic=None, members=["alice"], anonymous=0
        )

        answer = await send_message({"type": "message", "text": "hello dev"}, 1)
        first_id = answer["id"]
        assert isinstance(first_id, int)
        assert answer == ack("message", message_cid(1), id=first_id, room="dev")
        said = {"type": "message", "id": first_id, "room": "dev", "from": "alice"}
        assert stamped(await alice.event()) == {**said, "text": "hello dev"}

        answer = await send_message({"type": "me", "text": "waves"}, 2)
        action_id = answer["id"]
        assert isinstance(action_id, int)
        assert action_id > first_id
        assert answer == ack("me", message_cid(2), id=action_id, room="dev")
        assert stamped(await alice.event()) == {
            **said,
            "id": action_id,
            "text": "waves",
            "action": True,
        }

        answer = await send_message({"type": "message", "text": "to the lobby", "room": "lobby"}, 3)
        lobby_id = answer["id"]
        assert isinstance(lobby_id, int)
        assert lobby_id > action_id
        assert answer == ack("message", message_cid(3), id=lobby_id, room="lobby")
        in_lobby = {**said, "id": lobby_id, "room": "lobby", "text": "to the lobby"}
        assert stamped(await alice.event()) == in_lobby
        assert stamped(await bob.event()) == in_lobby

        answer = await send_message({"type": "private", "to": "bob", "text": "psst"}, 4)
        private_id = answer["id"]
        assert isinstance(private_id, int)
        assert private_id > lobby_id
        assert answer == ack("private", message_cid(4), id=private_id, to="bob")
        whisper = {
            "type": "private",
            "id": private_id,
            "from": "alice",
            "to": "bob",
            "text": "psst",
        }
        assert stamped(await alice.event()) == whisper
        assert stamped(await bob.event()) == whisper

        # Setting a topic: one ack to the setter, and the topic event to the room (the
        # setter included). The document fixes no order between the two.
        await alice.send(with_cid({"type": "topic", "text": "release day"}, cid))
        got = [await alice.event(), await alice.event()]
        topic_set = {"type": "topic", "room": "dev", "topic": "release day", "by": "alice"}
        assert sorted(got, key=json.dumps) == sorted(
            [ack("topic", cid, room="dev", topic="release day"), topic_set], key=json.dumps
        )
        assert await call({"type": "topic"}) == ack("topic", cid, room="dev", topic="release day")
        await alice.send(with_cid({"type": "topic", "text": ""}, cid))
        got = [await alice.event(), await alice.event()]
        assert sorted(got, key=json.dumps) == sorted(
            [ack("topic", cid, room="dev", topic=None), {**topic_set, "topic": None}],
            key=json.dumps,
        )

        assert await call({"type": "rooms"}) == ack(
            "rooms",
            cid,
            rooms=[
                {"name": "dev", "members": 1, "topic": None},
                {"name": "lobby", "members": 2, "topic": None},
            ],
        )
        assert await call({"type": "who"}) == ack(
            "who", cid, room="dev", members=["alice"], anonymous=0
        )
        assert await call({"type": "who", "room": "lobby"}) == ack(
            "who", cid, room="lobby", members=["alice", "bob"], anonymous=0
        )
        assert await call({"type": "leave"}) == ack("leave", cid, room="dev", current="lobby")
        assert await call({"type": "help"}) == ack(
            "help", cid, commands=[{"usage": u, "description": d} for u, d in HELP]
        )
        # bob got nothing from alice's commands in dev.
        await next_ack_follows(bob, "bob-check")

        assert await call({"type": "quit", "reason": "bye"}) == ack("quit", cid)
        assert (await alice.expect_close()).code == 1000
        assert stamped(await bob.event()) == presence("quit", "alice", reason="bye")


# --- events --------------------------------------------------------------------------------------


async def test_private_event_reaches_sender_and_recipient_only(
    live_server: LiveServer,
) -> None:
    """A private message is acked, then seen by its sender and its recipient alone."""
    async with open_jsons(live_server, 3) as (alice, bob, carol):
        await take_nicks([alice, bob, carol], "alice", "bob", "carol")
        answer = await alice.call({"type": "private", "to": "BOB", "text": "psst", "cid": "p"})
        assert answer == ack("private", "p", id=answer["id"], to="bob")
        whisper = {"type": "private", "id": answer["id"], "from": "alice", "to": "bob"}
        assert stamped(await alice.event()) == {**whisper, "text": "psst"}
        assert stamped(await bob.event()) == {**whisper, "text": "psst"}
        await next_ack_follows(carol, "carol-check")


async def test_presence_events(live_server: LiveServer) -> None:
    """join, leave, nick, quit and kick arrive as presence events, one per change."""
    async with open_jsons(live_server, 4) as (alice, bob, carol, dave):
        await take_nicks([alice, bob, carol, dave], "alice", "bob", "carol", "dave")
        assert (await alice.call({"type": "join", "room": "dev"}))["type"] == "ack"
        for client in (bob, carol, dave):
            assert (await client.call({"type": "join", "room": "dev"}))["type"] == "ack"
        assert stamped(await alice.event()) == presence("join", "bob", room="dev")
        assert stamped(await alice.event()) == presence("join", "carol", room="dev")
        assert stamped(await bob.event()) == presence("join", "carol", room="dev")
        for client in (alice, bob, carol):
            assert stamped(await client.event()) == presence("join", "dave", room="dev")

        assert await bob.call({"type": "leave", "room": "dev"}) == ack(
            "leave", room="dev", current="lobby"
        )
        for client in (alice, carol, dave):
            assert stamped(await client.event()) == presence("leave", "bob", room="dev")
        assert (await bob.call({"type": "join", "room": "dev"}))["type"] == "ack"
        for client in (alice, carol, dave):
            assert stamped(await client.event()) == presence("join", "bob", room="dev")

        assert await bob.call({"type": "nick", "nick": "robert"}) == ack("nick", nick="robert")
        for client in (alice, carol, dave):
            assert stamped(await client.event()) == presence("nick", "bob", new_nick="robert")

        assert await bob.call({"type": "quit", "reason": "gone", "cid": 1}) == ack("quit", 1)
        assert (await bob.expect_close()).code == 1000
        for client in (alice, carol, dave):
            assert stamped(await client.event()) == presence("quit", "robert", reason="gone")

        await carol.ws.aclose()
        for client in (alice, dave):
            assert stamped(await client.event()) == presence("quit", "carol", reason=None)

        live_server.console("/kick dave spamming")
        close = await dave.expect_close()
        assert (close.code, close.reason) == (1008, "spamming")
        assert stamped(await alice.event()) == presence("kick", "dave", reason="spamming")
        # One event per change, though alice shared two rooms with each of them.
        await next_ack_follows(alice, "after-presence")


async def test_anonymous_members_are_from_null_and_silent(live_server: LiveServer) -> None:
    """An anonymous member's message has from null; its coming and going send nothing."""
    async with open_json(live_server) as alice:
        async with open_json(live_server) as anonymous:
            port = int(anonymous.ws.local_address[1])
            answer = await anonymous.call({"type": "message", "text": "who am I"})
            said = {"type": "message", "id": answer["id"], "room": "lobby", "from": None}
            assert stamped(await anonymous.event()) == {**said, "text": "who am I"}
            assert stamped(await alice.event()) == {**said, "text": "who am I"}
        await live_server.wait_for(
            re.compile(rf"Client #\d+ \(127\.0\.0\.1:{port}\) disconnected: ")
        )
        assert await alice.call({"type": "who", "cid": "w"}) == ack(
            "who", "w", room="lobby", members=[], anonymous=1
        )


async def test_operator_notices(live_server: LiveServer) -> None:
    """Console lines are notice events from the server; /say adds the room."""
    async with open_jsons(live_server, 2) as (lobby_only, dev_member):
        assert (await dev_member.call({"type": "join", "room": "dev"}))["type"] == "ack"
        live_server.console("maintenance at noon")
        notice = {"type": "notice", "from": "server", "text": "maintenance at noon"}
        assert await lobby_only.event() == notice
        assert await dev_member.event() == notice
        live_server.console("/say dev hello devs")
        assert await dev_member.event() == {
            "type": "notice",
            "from": "server",
            "text": "hello devs",
            "room": "dev",
        }
        live_server.console("/say lobby hello lobby")
        lobby_notice = {"type": "notice", "from": "server", "text": "hello lobby", "room": "lobby"}
        assert await lobby_only.event() == lobby_notice  # and not the one for dev
        assert await dev_member.event() == lobby_notice


# --- errors ------------------------------------------------------------------------------------

ERRORS = {
    "not-json": ("hello", error("bad_json", "expected one JSON object per message")),
    "json-array": (
        '[{"type": "rooms"}]',
        error("bad_json", "expected one JSON object per message"),
    ),
    "json-string": ('"rooms"', error("bad_json", "expected one JSON object per message")),
    "missing-type": ('{"cid": 1}', error("bad_request", "a command needs a string 'type'", 1)),
    "missing-text": (
        '{"type": "message", "cid": "m"}',
        error("bad_request", "'message' needs a string 'text'", "m"),
    ),
    "text-not-string": (
        '{"type": "message", "text": 5, "cid": 2}',
        error("bad_request", "'text' must be a string", 2),
    ),
    "topic-with-newline": (
        '{"type": "topic", "text": "a\\nb", "cid": 3}',
        error("bad_request", "text must be a single line; send one message per line", 3),
    ),
    "message-over-the-line-cap": (
        json.dumps({"type": "message", "text": "\n" * 20, "cid": 3}),
        error("bad_request", "text has 21 lines; a message may have at most 20", 3),
    ),
    "join-without-room": (
        '{"type": "join", "cid": 4}',
        error("bad_request", "'join' needs a string 'room'", 4),
    ),
    "unknown-type": (
        '{"type": "frobnicate", "cid": 5}',
        error("unknown_command", "unknown command type 'frobnicate'", 5),
    ),
    "invalid-nick": (
        '{"type": "nick", "nick": "bad name", "cid": 6}',
        error("invalid_name", f"invalid nickname 'bad name': {NAME_RULE}", 6),
    ),
    "long-room": (
        json.dumps({"type": "join", "room": "r" * 33, "cid": 7}),
        error("invalid_name", f"invalid room name '{'r' * 33}': {NAME_RULE}", 7),
    ),
    "reserved-nick": (
        '{"type": "nick", "nick": "Server", "cid": 8}',
        error("nick_taken", "nick Server is taken", 8),
    ),
    "anonymous-private": (
        '{"type": "private", "to": "bob", "text": "psst", "cid": 9}',
        error("nick_required", "set a nickname with /nick before /msg", 9),
    ),
    "who-missing-room": (
        '{"type": "who", "room": "nosuch", "cid": 10}',
        error("no_such_room", "there is no room nosuch", 10),
    ),
    "message-to-other-room": (
        '{"type": "message", "text": "hi", "room": "dev", "cid": 11}',
        error("not_in_room", "you are not in dev; /join it first", 11),
    ),
    "leave-other-room": (
        '{"type": "leave", "room": "dev", "cid": 12}',
        error("not_in_room", "you are not in dev", 12),
    ),
    "leave-only-room": (
        '{"type": "leave", "cid": 13}',
        error("only_room", "lobby is your only room; /join another first", 13),
    ),
}


@pytest.mark.parametrize(("frame", "expected"), ERRORS.values(), ids=ERRORS.keys())
async def test_error_answers(live_server: LiveServer, frame: str, expected: Event) -> None:
    """A wrong command gets exactly one error, echoing its cid; the connection stays open."""
    async with open_json(live_server) as client:
        await client.ws.send(frame)
        assert await client.event() == expected
        await next_ack_follows(client, "after-error")


CIDS_ACCEPTED = {
    "zero": 0,
    "negative": -7,
    "empty-string": "",
    "64-chars": "c" * 64,
    "64-digits": int("9" * 64),
}
CIDS_REFUSED = {
    "true": True,
    "false": False,
    "float": 1.5,
    "65-chars": "c" * 65,
    "65-digits": int("9" * 65),
}


@pytest.mark.parametrize("cid", CIDS_ACCEPTED.values(), ids=CIDS_ACCEPTED.keys())
async def test_valid_cid_is_echoed(live_server: LiveServer, cid: str | int) -> None:
    """Any string or integer of at most 64 characters is echoed in the ack."""
    async with open_json(live_server) as client:
        assert await client.call({"type": "who", "cid": cid}) == ack(
            "who", cid, room="lobby", members=[], anonymous=1
        )


@pytest.mark.parametrize("cid", CIDS_REFUSED.values(), ids=CIDS_REFUSED.keys())
async def test_invalid_cid_is_a_bad_request(live_server: LiveServer, cid: object) -> None:
    """A boolean or fractional cid, or one over 64 characters, is a bad_request (not echoed)."""
    async with open_json(live_server) as client:
        assert await client.call({"type": "who", "cid": cid}) == error(
            "bad_request", "'cid' must be a string or an integer of at most 64 characters"
        )
        await next_ack_follows(client, "after-error")


async def test_errors_that_depend_on_others(live_server: LiveServer) -> None:
    """nick_taken ignores case, no_such_nick names the nick, a topic needs membership."""
    async with open_jsons(live_server, 2) as (alice, bob):
        await take_nicks([alice, bob], "alice", "bob")
        assert (await bob.call({"type": "join", "room": "dev"}))["type"] == "ack"
        assert await bob.call({"type": "nick", "nick": "ALICE", "cid": 1}) == error(
            "nick_taken", "nick ALICE is taken", 1
        )
        assert await alice.call(
            {"type": "private", "to": "zed", "text": "psst", "cid": 2}
        ) == error("no_such_nick", "nobody is called zed", 2)
        assert await alice.call(
            {"type": "topic", "room": "dev", "text": "mine", "cid": 3}
        ) == error("not_in_room", "you are not in dev", 3)
        assert await alice.call({"type": "topic", "room": "dev", "cid": 4}) == ack(
            "topic", 4, room="dev", topic=None
        )
        assert await alice.call({"type": "topic", "room": "nosuch", "cid": 5}) == error(
            "no_such_room", "there is no room nosuch", 5
        )
        await next_ack_follows(bob, "bob-check")


async def test_binary_frame_is_an_error_and_the_connection_stays(
    live_server: LiveServer,
) -> None:
    """A binary frame gets a binary_frame error event; the connection stays open."""
    async with open_json(live_server) as client:
        await client.ws.send(b'{"type": "rooms"}')
        assert await client.event() == {
            "type": "error",
            "code": "binary_frame",
            "text": "binary messages are not supported; send text",
        }
        await next_ack_follows(client, "after-binary")


# --- batching and mixed modes ---------------------------------------------------------------------


async def test_batched_frames_are_ndjson(live_server: LiveServer) -> None:
    """Events batched into one frame are one JSON document per line."""
    async with open_json(live_server) as watcher, open_plain(live_server) as plain:
        # Three plain lines in one frame are published together, so they queue up for
        # the JSON client at once.
        await plain.ws.send("one\ntwo\nthree")
        texts = []
        for _ in range(3):
            event = stamped(await watcher.event())
            assert event == {
                "type": "message",
                "id": event["id"],
                "room": "lobby",
                "from": None,
                "text": event["text"],
            }
            texts.append(event["text"])
        assert texts == ["one", "two", "three"]
        answer = await watcher.call({"type": "message", "text": "four", "cid": "b"})
        assert answer == ack("message", "b", id=answer["id"], room="lobby")
        assert (await watcher.event())["id"] == answer["id"]
        for frame in watcher.frames:
            for line in frame.split("\n"):
                assert isinstance(json.loads(line), dict), line
        assert any("\n" in frame for frame in watcher.frames), (
            f"no frame carried several events, batching was not exercised: {watcher.frames}"
        )


async def test_plain_and_json_clients_see_each_other(live_server: LiveServer) -> None:
    """Plain and JSON clients chat together, each receiving its own format."""
    async with open_json(live_server) as jay, open_plain(live_server) as plain:
        answer = await jay.call({"type": "message", "text": "anyone?"})
        assert (await jay.event())["id"] == answer["id"]
        assert await plain.line() == "Someone says: anyone?"

        await plain.ws.send("/nick plainy")
        assert await plain.line() == "* You are now known as plainy"
        assert stamped(await jay.event()) == presence("join", "plainy", room="lobby")
        assert await jay.call({"type": "nick", "nick": "jay"}) == ack("nick", nick="jay")
        assert await plain.line() == "* jay joined lobby"

        await plain.ws.send("hi from plain")
        assert await plain.line() == "You said: hi from plain"
        event = stamped(await jay.event())
        assert event == {
            "type": "message",
            "id": event["id"],
            "room": "lobby",
            "from": "plainy",
            "text": "hi from plain",
        }
        assert event["id"] > answer["id"]

        answer = await jay.call({"type": "message", "text": "hi from json"})
        assert (await jay.event())["id"] == answer["id"]
        assert await plain.line() == "jay says: hi from json"
        assert (await jay.call({"type": "me", "text": "waves"}))["command"] == "me"
        assert (await jay.event())["action"] is True
        assert await plain.line() == "jay * waves"

        await jay.send({"type": "topic", "text": "release day"})
        assert {(await jay.event())["type"], (await jay.event())["type"]} == {"ack", "topic"}
        assert await plain.line() == "* jay set the topic of lobby: release day"
        await jay.send({"type": "topic", "text": ""})
        assert {(await jay.event())["type"], (await jay.event())["type"]} == {"ack", "topic"}
        assert await plain.line() == "* jay cleared the topic of lobby"

        whispered = await jay.call({"type": "private", "to": "plainy", "text": "psst"})
        assert whispered["type"] == "ack"
        assert (await jay.event())["type"] == "private"
        assert await plain.line() == "[private] jay says: psst"
        await plain.ws.send("/msg jay back")
        assert await plain.line() == "[private] You said to jay: back"
        event = stamped(await jay.event())
        assert event == {
            "type": "private",
            "id": event["id"],
            "from": "plainy",
            "to": "jay",
            "text": "back",
        }

        live_server.console("to all")
        assert await plain.line() == "🟢 Server: to all"
        assert await jay.event() == {"type": "notice", "from": "server", "text": "to all"}


async def test_multiline_quit_reason_keeps_one_line_per_event(
    live_server: LiveServer,
) -> None:
    """A quit reason with a newline is refused with bad_request; nobody is told anything."""
    async with open_json(live_server) as alice, open_plain(live_server) as plain:
        await take_nicks([alice], "alice")
        assert await plain.line() == "* alice joined lobby"
        await plain.ws.send("/nick watcher")
        assert await plain.line() == "* You are now known as watcher"
        assert stamped(await alice.event()) == presence("join", "watcher", room="lobby")
        answer = await alice.call({"type": "quit", "reason": "see\nyou", "cid": "q"})
        live_server.console("after the quit")
        assert answer["type"] == "error"
        assert answer["code"] == "bad_request"
        assert await plain.line() == "🟢 Server: after the quit"
