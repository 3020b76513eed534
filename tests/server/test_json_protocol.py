"""The ``trio-chat.v1`` JSON subprotocol end to end, event by event, against docs/protocol.md.

The server is a subprocess (``python -m trio_chat.server``); clients are the independent
``websockets`` library's sync client offering ``trio-chat.v1``. Every frame is split on
``\\n`` and every line parsed as one JSON document (the server batches); events are
compared as whole dicts, with ``ts`` checked for its format. Nothing is awaited by time: to
show that an event did *not* arrive, a later event is made to happen and must be the very
next one received.
"""

from __future__ import annotations

import json
import re

import pytest
from websockets.sync.client import connect

import trio_chat
from trio_chat.core.commands import HELP

from support import (
    EVENT_TIMEOUT,
    PROTOCOL,
    Event,
    JsonClient,
    LineReader,
    ServerProcess,
    ack,
    error,
    open_json,
    open_jsons,
    open_plain,
    presence,
    stamped,
    wait_connected,
    with_cid,
)

WELCOME = {
    "type": "welcome",
    "protocol": PROTOCOL,
    "server": f"trio_chat/{trio_chat.__version__}",
    "nick": None,
    "room": "lobby",
    "rooms": ["lobby"],
}
NAME_RULE = "use 1-32 letters, digits, '_', '-' or '.'"

# --- helpers -------------------------------------------------------------------------------


def take_nicks(clients: list[JsonClient], *nicks: str) -> None:
    """Give ``clients[i]`` the nick ``nicks[i]`` in turn (all in the lobby only); every
    other client gets the join."""
    for i, nick in enumerate(nicks):
        assert clients[i].call({"type": "nick", "nick": nick}) == ack("nick", nick=nick)
        for other in clients[:i] + clients[i + 1 :]:
            assert stamped(other.event()) == presence("join", nick, room="lobby")


def next_ack_follows(client: JsonClient, cid: str) -> None:
    """Prove nothing else is pending for ``client``: a ``rooms`` command's ack is next."""
    answer = client.call({"type": "rooms", "cid": cid})
    assert answer["type"] == "ack", answer
    assert answer["cid"] == cid


# --- the handshake -------------------------------------------------------------------------


def test_welcome_is_the_first_event(server_process: type[ServerProcess]) -> None:
    """Offering trio-chat.v1 selects it; the first event is the welcome, exactly."""
    server = server_process()
    with connect(server.url, open_timeout=EVENT_TIMEOUT, proxy=None, subprotocols=[PROTOCOL]) as ws:
        assert ws.subprotocol == PROTOCOL
        wait_connected(server, ws, json_mode=True)
        client = JsonClient(ws)
        assert client.event() == WELCOME
        next_ack_follows(client, "after-welcome")


@pytest.mark.parametrize("offered", [None, ["other.v9"]], ids=["no-subprotocol", "other-only"])
def test_client_not_offering_it_stays_plain(
    server_process: type[ServerProcess], offered: list[str] | None
) -> None:
    """A client that does not offer trio-chat.v1 is in plain mode: no welcome, plain lines."""
    server = server_process()
    with connect(
        server.url,
        open_timeout=EVENT_TIMEOUT,
        proxy=None,
        subprotocols=offered,  # type: ignore[arg-type]
    ) as ws:
        assert ws.subprotocol is None
        wait_connected(server, ws, json_mode=False)
        ws.send("hi")
        assert LineReader(ws).line() == "You said: hi"  # the very first line: no welcome


# --- every command, with and without a cid ---------------------------------------------------


@pytest.mark.parametrize("cid", [None, "c-1", 42], ids=["no-cid", "string-cid", "number-cid"])
def test_every_command_is_answered_once(
    server_process: type[ServerProcess], cid: str | int | None
) -> None:
    """Each command type gets exactly one ack (echoing cid) with its documented result."""
    server = server_process()
    with open_jsons(server, 2) as (alice, bob):

        def call(command: Event) -> Event:
            return alice.call(with_cid(command, cid))

        def message_cid(n: int) -> str | int | None:
            """A message's cid names that message: a reused one would be a resend."""
            if cid is None:
                return None
            return f"{cid}-{n}" if isinstance(cid, str) else cid + n

        def send_message(command: Event, n: int) -> Event:
            return alice.call(with_cid(command, message_cid(n)))

        assert call({"type": "nick", "nick": "alice"}) == ack("nick", cid, nick="alice")
        assert stamped(bob.event()) == presence("join", "alice", room="lobby")
        take_nicks([bob, alice], "bob")

        assert call({"type": "join", "room": "dev"}) == ack(
            "join", cid, room="dev", topic=None, members=["alice"], anonymous=0
        )

        answer = send_message({"type": "message", "text": "hello dev"}, 1)
        first_id = answer["id"]
        assert isinstance(first_id, int)
        assert answer == ack("message", message_cid(1), id=first_id, room="dev")
        said = {"type": "message", "id": first_id, "room": "dev", "from": "alice"}
        assert stamped(alice.event()) == {**said, "text": "hello dev"}

        answer = send_message({"type": "me", "text": "waves"}, 2)
        action_id = answer["id"]
        assert isinstance(action_id, int)
        assert action_id > first_id
        assert answer == ack("me", message_cid(2), id=action_id, room="dev")
        assert stamped(alice.event()) == {**said, "id": action_id, "text": "waves", "action": True}

        answer = send_message({"type": "message", "text": "to the lobby", "room": "lobby"}, 3)
        lobby_id = answer["id"]
        assert isinstance(lobby_id, int)
        assert lobby_id > action_id
        assert answer == ack("message", message_cid(3), id=lobby_id, room="lobby")
        in_lobby = {**said, "id": lobby_id, "room": "lobby", "text": "to the lobby"}
        assert stamped(alice.event()) == in_lobby
        assert stamped(bob.event()) == in_lobby

        answer = send_message({"type": "private", "to": "bob", "text": "psst"}, 4)
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
        assert stamped(alice.event()) == whisper
        assert stamped(bob.event()) == whisper

        # Setting a topic: one ack to the setter, and the topic event to the room (the
        # setter included). The document fixes no order between the two.
        alice.send(with_cid({"type": "topic", "text": "release day"}, cid))
        got = [alice.event(), alice.event()]
        topic_set = {"type": "topic", "room": "dev", "topic": "release day", "by": "alice"}
        assert sorted(got, key=json.dumps) == sorted(
            [ack("topic", cid, room="dev", topic="release day"), topic_set], key=json.dumps
        )
        assert call({"type": "topic"}) == ack("topic", cid, room="dev", topic="release day")
        alice.send(with_cid({"type": "topic", "text": ""}, cid))
        got = [alice.event(), alice.event()]
        assert sorted(got, key=json.dumps) == sorted(
            [ack("topic", cid, room="dev", topic=None), {**topic_set, "topic": None}],
            key=json.dumps,
        )

        assert call({"type": "rooms"}) == ack(
            "rooms",
            cid,
            rooms=[
                {"name": "dev", "members": 1, "topic": None},
                {"name": "lobby", "members": 2, "topic": None},
            ],
        )
        assert call({"type": "who"}) == ack("who", cid, room="dev", members=["alice"], anonymous=0)
        assert call({"type": "who", "room": "lobby"}) == ack(
            "who", cid, room="lobby", members=["alice", "bob"], anonymous=0
        )
        assert call({"type": "leave"}) == ack("leave", cid, room="dev", current="lobby")
        assert call({"type": "help"}) == ack(
            "help", cid, commands=[{"usage": u, "description": d} for u, d in HELP]
        )
        # bob got nothing from alice's commands in dev.
        next_ack_follows(bob, "bob-check")

        assert call({"type": "quit", "reason": "bye"}) == ack("quit", cid)
        assert alice.expect_close().code == 1000
        assert stamped(bob.event()) == presence("quit", "alice", reason="bye")


# --- events --------------------------------------------------------------------------------------


def test_private_event_reaches_sender_and_recipient_only(
    server_process: type[ServerProcess],
) -> None:
    """A private message is acked, then seen by its sender and its recipient alone."""
    server = server_process()
    with open_jsons(server, 3) as (alice, bob, carol):
        take_nicks([alice, bob, carol], "alice", "bob", "carol")
        answer = alice.call({"type": "private", "to": "BOB", "text": "psst", "cid": "p"})
        assert answer == ack("private", "p", id=answer["id"], to="bob")
        whisper = {"type": "private", "id": answer["id"], "from": "alice", "to": "bob"}
        assert stamped(alice.event()) == {**whisper, "text": "psst"}
        assert stamped(bob.event()) == {**whisper, "text": "psst"}
        next_ack_follows(carol, "carol-check")


def test_presence_events(server_process: type[ServerProcess]) -> None:
    """join, leave, nick, quit and kick arrive as presence events, one per change."""
    server = server_process()
    with open_jsons(server, 4) as (alice, bob, carol, dave):
        take_nicks([alice, bob, carol, dave], "alice", "bob", "carol", "dave")
        assert alice.call({"type": "join", "room": "dev"})["type"] == "ack"
        for client in (bob, carol, dave):
            assert client.call({"type": "join", "room": "dev"})["type"] == "ack"
        assert stamped(alice.event()) == presence("join", "bob", room="dev")
        assert stamped(alice.event()) == presence("join", "carol", room="dev")
        assert stamped(bob.event()) == presence("join", "carol", room="dev")
        for client in (alice, bob, carol):
            assert stamped(client.event()) == presence("join", "dave", room="dev")

        assert bob.call({"type": "leave", "room": "dev"}) == ack(
            "leave", room="dev", current="lobby"
        )
        for client in (alice, carol, dave):
            assert stamped(client.event()) == presence("leave", "bob", room="dev")
        assert bob.call({"type": "join", "room": "dev"})["type"] == "ack"
        for client in (alice, carol, dave):
            assert stamped(client.event()) == presence("join", "bob", room="dev")

        assert bob.call({"type": "nick", "nick": "robert"}) == ack("nick", nick="robert")
        for client in (alice, carol, dave):
            assert stamped(client.event()) == presence("nick", "bob", new_nick="robert")

        assert bob.call({"type": "quit", "reason": "gone", "cid": 1}) == ack("quit", 1)
        assert bob.expect_close().code == 1000
        for client in (alice, carol, dave):
            assert stamped(client.event()) == presence("quit", "robert", reason="gone")

        carol.ws.close()
        for client in (alice, dave):
            assert stamped(client.event()) == presence("quit", "carol", reason=None)

        server.send_console("/kick dave spamming")
        close = dave.expect_close()
        assert (close.code, close.reason) == (1008, "spamming")
        assert stamped(alice.event()) == presence("kick", "dave", reason="spamming")
        # One event per change, though alice shared two rooms with each of them.
        next_ack_follows(alice, "after-presence")


def test_anonymous_members_are_from_null_and_silent(server_process: type[ServerProcess]) -> None:
    """An anonymous member's message has from null; its coming and going send nothing."""
    server = server_process()
    with open_json(server) as alice:
        with open_json(server) as anonymous:
            port = int(anonymous.ws.local_address[1])
            answer = anonymous.call({"type": "message", "text": "who am I"})
            said = {"type": "message", "id": answer["id"], "room": "lobby", "from": None}
            assert stamped(anonymous.event()) == {**said, "text": "who am I"}
            assert stamped(alice.event()) == {**said, "text": "who am I"}
        server.wait_for(re.compile(rf"Client #\d+ \(127\.0\.0\.1:{port}\) disconnected: "))
        assert alice.call({"type": "who", "cid": "w"}) == ack(
            "who", "w", room="lobby", members=[], anonymous=1
        )


def test_operator_notices(server_process: type[ServerProcess]) -> None:
    """Console lines are notice events from the server; /say adds the room."""
    server = server_process()
    with open_jsons(server, 2) as (lobby_only, dev_member):
        assert dev_member.call({"type": "join", "room": "dev"})["type"] == "ack"
        server.send_console("maintenance at noon")
        notice = {"type": "notice", "from": "server", "text": "maintenance at noon"}
        assert lobby_only.event() == notice
        assert dev_member.event() == notice
        server.send_console("/say dev hello devs")
        assert dev_member.event() == {
            "type": "notice",
            "from": "server",
            "text": "hello devs",
            "room": "dev",
        }
        server.send_console("/say lobby hello lobby")
        lobby_notice = {"type": "notice", "from": "server", "text": "hello lobby", "room": "lobby"}
        assert lobby_only.event() == lobby_notice  # and not the one for dev
        assert dev_member.event() == lobby_notice


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
    "text-with-newline": (
        '{"type": "message", "text": "a\\nb", "cid": 3}',
        error("bad_request", "text must be a single line; send one message per line", 3),
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
def test_error_answers(server_process: type[ServerProcess], frame: str, expected: Event) -> None:
    """A wrong command gets exactly one error, echoing its cid; the connection stays open."""
    server = server_process()
    with open_json(server) as client:
        client.ws.send(frame)
        assert client.event() == expected
        next_ack_follows(client, "after-error")


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
def test_valid_cid_is_echoed(server_process: type[ServerProcess], cid: str | int) -> None:
    """Any string or integer of at most 64 characters is echoed in the ack."""
    server = server_process()
    with open_json(server) as client:
        assert client.call({"type": "who", "cid": cid}) == ack(
            "who", cid, room="lobby", members=[], anonymous=1
        )


@pytest.mark.parametrize("cid", CIDS_REFUSED.values(), ids=CIDS_REFUSED.keys())
def test_invalid_cid_is_a_bad_request(server_process: type[ServerProcess], cid: object) -> None:
    """A boolean or fractional cid, or one over 64 characters, is a bad_request (not echoed)."""
    server = server_process()
    with open_json(server) as client:
        assert client.call({"type": "who", "cid": cid}) == error(
            "bad_request", "'cid' must be a string or an integer of at most 64 characters"
        )
        next_ack_follows(client, "after-error")


def test_errors_that_depend_on_others(server_process: type[ServerProcess]) -> None:
    """nick_taken ignores case, no_such_nick names the nick, a topic needs membership."""
    server = server_process()
    with open_jsons(server, 2) as (alice, bob):
        take_nicks([alice, bob], "alice", "bob")
        assert bob.call({"type": "join", "room": "dev"})["type"] == "ack"
        assert bob.call({"type": "nick", "nick": "ALICE", "cid": 1}) == error(
            "nick_taken", "nick ALICE is taken", 1
        )
        assert alice.call({"type": "private", "to": "zed", "text": "psst", "cid": 2}) == error(
            "no_such_nick", "nobody is called zed", 2
        )
        assert alice.call({"type": "topic", "room": "dev", "text": "mine", "cid": 3}) == error(
            "not_in_room", "you are not in dev", 3
        )
        assert alice.call({"type": "topic", "room": "dev", "cid": 4}) == ack(
            "topic", 4, room="dev", topic=None
        )
        assert alice.call({"type": "topic", "room": "nosuch", "cid": 5}) == error(
            "no_such_room", "there is no room nosuch", 5
        )
        next_ack_follows(bob, "bob-check")


def test_binary_frame_is_an_error_and_the_connection_stays(
    server_process: type[ServerProcess],
) -> None:
    """A binary frame gets a binary_frame error event; the connection stays open."""
    server = server_process()
    with open_json(server) as client:
        client.ws.send(b'{"type": "rooms"}')
        assert client.event() == {
            "type": "error",
            "code": "binary_frame",
            "text": "binary messages are not supported; send text",
        }
        next_ack_follows(client, "after-binary")


# --- batching and mixed modes ---------------------------------------------------------------------


def test_batched_frames_are_ndjson(server_process: type[ServerProcess]) -> None:
    """Events batched into one frame are one JSON document per line."""
    server = server_process()
    with open_json(server) as watcher, open_plain(server) as plain:
        # Three plain lines in one frame are published together, so they queue up for
        # the JSON client at once.
        plain.ws.send("one\ntwo\nthree")
        texts = []
        for _ in range(3):
            event = stamped(watcher.event())
            assert event == {
                "type": "message",
                "id": event["id"],
                "room": "lobby",
                "from": None,
                "text": event["text"],
            }
            texts.append(event["text"])
        assert texts == ["one", "two", "three"]
        answer = watcher.call({"type": "message", "text": "four", "cid": "b"})
        assert answer == ack("message", "b", id=answer["id"], room="lobby")
        assert watcher.event()["id"] == answer["id"]
        for frame in watcher.frames:
            for line in frame.split("\n"):
                assert isinstance(json.loads(line), dict), line
        assert any("\n" in frame for frame in watcher.frames), (
            f"no frame carried several events, batching was not exercised: {watcher.frames}"
        )


def test_plain_and_json_clients_see_each_other(server_process: type[ServerProcess]) -> None:
    """Plain and JSON clients chat together, each receiving its own format."""
    server = server_process()
    with open_json(server) as jay, open_plain(server) as plain:
        answer = jay.call({"type": "message", "text": "anyone?"})
        assert jay.event()["id"] == answer["id"]
        assert plain.line() == "Someone says: anyone?"

        plain.ws.send("/nick plainy")
        assert plain.line() == "* You are now known as plainy"
        assert stamped(jay.event()) == presence("join", "plainy", room="lobby")
        assert jay.call({"type": "nick", "nick": "jay"}) == ack("nick", nick="jay")
        assert plain.line() == "* jay joined lobby"

        plain.ws.send("hi from plain")
        assert plain.line() == "You said: hi from plain"
        event = stamped(jay.event())
        assert event == {
            "type": "message",
            "id": event["id"],
            "room": "lobby",
            "from": "plainy",
            "text": "hi from plain",
        }
        assert event["id"] > answer["id"]

        answer = jay.call({"type": "message", "text": "hi from json"})
        assert jay.event()["id"] == answer["id"]
        assert plain.line() == "jay says: hi from json"
        assert jay.call({"type": "me", "text": "waves"})["command"] == "me"
        assert jay.event()["action"] is True
        assert plain.line() == "* jay waves"

        jay.send({"type": "topic", "text": "release day"})
        assert {jay.event()["type"], jay.event()["type"]} == {"ack", "topic"}
        assert plain.line() == "* jay set the topic of lobby: release day"
        jay.send({"type": "topic", "text": ""})
        assert {jay.event()["type"], jay.event()["type"]} == {"ack", "topic"}
        assert plain.line() == "* jay cleared the topic of lobby"

        assert jay.call({"type": "private", "to": "plainy", "text": "psst"})["type"] == "ack"
        assert jay.event()["type"] == "private"
        assert plain.line() == "[private] jay says: psst"
        plain.ws.send("/msg jay back")
        assert plain.line() == "[private] You said to jay: back"
        event = stamped(jay.event())
        assert event == {
            "type": "private",
            "id": event["id"],
            "from": "plainy",
            "to": "jay",
            "text": "back",
        }

        server.send_console("to all")
        assert plain.line() == "🟢 Server: to all"
        assert jay.event() == {"type": "notice", "from": "server", "text": "to all"}


def test_multiline_quit_reason_keeps_one_line_per_event(
    server_process: type[ServerProcess],
) -> None:
    """A quit reason with a newline is refused with bad_request; nobody is told anything."""
    server = server_process()
    with open_json(server) as alice, open_plain(server) as plain:
        take_nicks([alice], "alice")
        assert plain.line() == "* alice joined lobby"
        plain.ws.send("/nick watcher")
        assert plain.line() == "* You are now known as watcher"
        assert stamped(alice.event()) == presence("join", "watcher", room="lobby")
        answer = alice.call({"type": "quit", "reason": "see\nyou", "cid": "q"})
        server.send_console("after the quit")
        assert answer["type"] == "error"
        assert answer["code"] == "bad_request"
        assert plain.line() == "🟢 Server: after the quit"
