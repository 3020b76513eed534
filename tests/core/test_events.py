"""How each event reads on the wire, for plain and JSON viewers."""

from __future__ import annotations

import json

import trio_chat
from trio_chat.core.events import (
    Ack,
    ErrorEvent,
    Message,
    Notice,
    Presence,
    PrivateMessage,
    TopicChanged,
    Welcome,
    help_ack,
    timestamp,
)
from trio_chat.server.store import Record

from support import FakeViewer

TS = "2026-11-26T05:46:09.123Z"
ALICE, BOB = 1, 2


def message(room: str = "lobby", nick: str | None = "alice", *, action: bool = False) -> Message:
    return Message(Record(7, TS, room, nick, None, "hi", action), ALICE)


def test_plain_messages_read_as_the_tutorial_with_nicknames() -> None:
    """Sender: 'You said'; others: 'NICK says', or 'Someone says' when anonymous."""
    assert message().render(FakeViewer(ALICE)) == "You said: hi"
    assert message().render(FakeViewer(BOB)) == "alice says: hi"
    assert message(nick=None).render(FakeViewer(BOB)) == "Someone says: hi"


def test_plain_lines_from_another_room_name_it() -> None:
    """A line from a room that is not the viewer's current one is prefixed with it."""
    assert message("dev").render(FakeViewer(BOB, current_room="dev")) == "alice says: hi"
    assert message("dev").render(FakeViewer(BOB)) == "[dev] alice says: hi"
    assert message("dev").render(FakeViewer(ALICE)) == "[dev] You said: hi"


def test_actions() -> None:
    """/me reads the same for everyone, in plain; JSON marks it as an action."""
    assert message(action=True).render(FakeViewer(ALICE)) == "* alice hi"
    assert message(action=True).render(FakeViewer(BOB)) == "* alice hi"
    assert json.loads(message(action=True).render(FakeViewer(BOB, json=True)))["action"] is True


def test_json_message_is_the_same_for_everyone() -> None:
    """JSON viewers get one document with id, room, from, text and ts."""
    line = message().render(FakeViewer(ALICE, json=True))
    assert line == message().render(FakeViewer(BOB, json=True))
    assert json.loads(line) == {
        "type": "message",
        "id": 7,
        "room": "lobby",
        "from": "alice",
        "text": "hi",
        "ts": TS,
    }


def test_private_messages() -> None:
    """Sender and recipient each read a private message their own way."""
    event = PrivateMessage(Record(8, TS, None, "alice", "bob", "psst"), ALICE)
    assert event.render(FakeViewer(ALICE)) == "[private] You said to bob: psst"
    assert event.render(FakeViewer(BOB)) == "[private] alice says: psst"
    assert json.loads(event.render(FakeViewer(BOB, json=True))) == {
        "type": "private",
        "id": 8,
        "from": "alice",
        "to": "bob",
        "text": "psst",
        "ts": TS,
    }


def test_presence_in_both_modes() -> None:
    """Join, leave, nick, quit and kick notices, plain and JSON."""
    plain, json_viewer = FakeViewer(BOB), FakeViewer(BOB, json=True)
    cases = [
        (Presence("join", "al", TS, room="lobby"), "* al joined lobby", {"room": "lobby"}),
        (Presence("leave", "al", TS, room="dev"), "[dev] * al left dev", {"room": "dev"}),
        (
            Presence("nick", "al", TS, new_nick="ali"),
            "* al is now known as ali",
            {"new_nick": "ali"},
        ),
        (Presence("quit", "al", TS, reason="bye"), "* al quit (bye)", {"reason": "bye"}),
        (Presence("quit", "al", TS), "* al quit", {"reason": None}),
        (Presence("kick", "al", TS, reason="spam"), "* al was kicked (spam)", {"reason": "spam"}),
    ]
    for event, line, fields in cases:
        assert event.render(plain) == line
        kind = json.loads(event.render(json_viewer))
        assert kind == {
            "type": "presence",
            "event": kind["event"],
            "nick": "al",
            "ts": TS,
            **fields,
        }


def test_topic_notice_welcome_ack_error() -> None:
    """The remaining events, plain and JSON."""
    plain, json_viewer = FakeViewer(BOB), FakeViewer(BOB, json=True)
    topic = TopicChanged("dev", "release", "alice")
    in_dev = FakeViewer(BOB, current_room="dev")
    assert topic.render(in_dev) == "* alice set the topic of dev: release"
    assert topic.render(plain) == "[dev] * alice set the topic of dev: release"
    assert TopicChanged("dev", None, "alice").render(in_dev) == "* alice cleared the topic of dev"
    assert json.loads(topic.render(json_viewer)) == {
        "type": "topic",
        "room": "dev",
        "topic": "release",
        "by": "alice",
    }
    assert Notice("noon").render(plain) == "🟢 Server: noon"
    assert Notice("noon", "dev").render(plain) == "[dev] 🟢 Server: noon"
    assert json.loads(Notice("noon", "dev").render(json_viewer)) == {
        "type": "notice",
        "from": "server",
        "text": "noon",
        "room": "dev",
    }
    assert Welcome(None, "lobby", ["lobby"]).render(plain) is None
    assert json.loads(Welcome(None, "lobby", ["lobby"]).render(json_viewer)) == {
        "type": "welcome",
        "protocol": "trio-chat.v1",
        "server": f"trio_chat/{trio_chat.__version__}",
        "nick": None,
        "room": "lobby",
        "rooms": ["lobby"],
    }
    ack = Ack("nick", "c1", "* You are now known as al", nick="al")
    assert ack.render(plain) == "* You are now known as al"
    assert json.loads(ack.render(json_viewer)) == {
        "type": "ack",
        "cid": "c1",
        "command": "nick",
        "nick": "al",
    }
    assert Ack("message", None, id=3, room="lobby").render(plain) is None
    error = ErrorEvent("nick_taken", "nick al is taken", 5)
    assert error.render(plain) == "Error: nick al is taken"
    assert json.loads(error.render(json_viewer)) == {
        "type": "error",
        "cid": 5,
        "code": "nick_taken",
        "text": "nick al is taken",
    }


def test_help_lists_every_command_in_both_modes() -> None:
    """/help: aligned '* ' lines in plain, a list of usages in JSON."""
    plain_lines = help_ack(None).render(FakeViewer(BOB)).split("\n")
    assert (
        plain_lines[0] == "* /nick NAME      set your nickname (letters, digits, _ - ., up to 32)"
    )
    assert plain_lines[-1] == "* /quit [REASON]  leave the chat"
    commands = json.loads(help_ack(1).render(FakeViewer(BOB, json=True)))["commands"]
    assert len(commands) == len(plain_lines) == 10
    assert commands[0] == {
        "usage": "/nick NAME",
        "description": "set your nickname (letters, digits, _ - ., up to 32)",
    }


def test_timestamps_are_utc_with_milliseconds() -> None:
    """ts is ISO 8601 in UTC with milliseconds and a Z, whatever the input's zone."""
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 11, 26, 7, 46, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert timestamp(moment) == "2026-11-26T05:46:09.123Z"
