"""How each event reads on the wire, in the plain and JSON formats (and any other)."""

from __future__ import annotations

import json

import trio_chat
from trio_chat.core.events import (
    Ack,
    ErrorEvent,
    Event,
    HistoryLine,
    Message,
    Notice,
    Presence,
    PrivateMessage,
    TopicChanged,
    Welcome,
    help_ack,
    timestamp,
)
from trio_chat.core.record import Record
from trio_chat.core.wire import JSON, PLAIN, Parsed, Viewer, WireFormat, negotiate

from support import FakeViewer

TS = "2026-11-26T05:46:09.123Z"
ALICE, BOB = 1, 2


def message(room: str = "lobby", nick: str | None = "alice", *, action: bool = False) -> Message:
    return Message(Record(7, TS, room, nick, None, "hi", action), ALICE)


def test_plain_messages_read_as_the_tutorial_with_nicknames() -> None:
    """Sender: 'You said'; others: 'NICK says', or 'Someone says' when anonymous."""
    assert FakeViewer(ALICE).render(message()) == "You said: hi"
    assert FakeViewer(BOB).render(message()) == "alice says: hi"
    assert FakeViewer(BOB).render(message(nick=None)) == "Someone says: hi"


def test_plain_lines_from_another_room_name_it() -> None:
    """A line from a room that is not the viewer's current one is prefixed with it."""
    assert FakeViewer(BOB, current_room="dev").render(message("dev")) == "alice says: hi"
    assert FakeViewer(BOB).render(message("dev")) == "[dev] alice says: hi"
    assert FakeViewer(ALICE).render(message("dev")) == "[dev] You said: hi"


def test_actions() -> None:
    """/me reads the same for everyone, in plain; JSON marks it as an action."""
    assert FakeViewer(ALICE).render(message(action=True)) == "alice * hi"
    assert FakeViewer(BOB).render(message(action=True)) == "alice * hi"
    assert json.loads(FakeViewer(BOB, json=True).render(message(action=True)))["action"] is True


def test_json_message_is_the_same_for_everyone() -> None:
    """JSON viewers get one document with id, room, from, text and ts."""
    line = FakeViewer(ALICE, json=True).render(message())
    assert line == FakeViewer(BOB, json=True).render(message())
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
    assert FakeViewer(ALICE).render(event) == "[private] You said to bob: psst"
    assert FakeViewer(BOB).render(event) == "[private] alice says: psst"
    assert json.loads(FakeViewer(BOB, json=True).render(event)) == {
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
        assert plain.render(event) == line
        kind = json.loads(json_viewer.render(event))
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
    assert in_dev.render(topic) == "* alice set the topic of dev: release"
    assert plain.render(topic) == "[dev] * alice set the topic of dev: release"
    assert in_dev.render(TopicChanged("dev", None, "alice")) == "* alice cleared the topic of dev"
    assert json.loads(json_viewer.render(topic)) == {
        "type": "topic",
        "room": "dev",
        "topic": "release",
        "by": "alice",
    }
    assert plain.render(Notice("noon")) == "🟢 Server: noon"
    assert plain.render(Notice("noon", "dev")) == "[dev] 🟢 Server: noon"
    assert json.loads(json_viewer.render(Notice("noon", "dev"))) == {
        "type": "notice",
        "from": "server",
        "text": "noon",
        "room": "dev",
    }
    assert plain.render(Welcome(None, "lobby", ["lobby"])) is None
    assert json.loads(json_viewer.render(Welcome(None, "lobby", ["lobby"]))) == {
        "type": "welcome",
        "protocol": "trio-chat.v1",
        "server": f"trio_chat/{trio_chat.__version__}",
        "nick": None,
        "room": "lobby",
        "rooms": ["lobby"],
    }
    ack = Ack("nick", "c1", nick="al")
    assert plain.render(ack) == "* You are now known as al"
    assert json.loads(json_viewer.render(ack)) == {
        "type": "ack",
        "cid": "c1",
        "command": "nick",
        "nick": "al",
    }
    assert plain.render(Ack("message", None, id=3, room="lobby")) is None
    error = ErrorEvent("nick_taken", "nick al is taken", 5)
    assert plain.render(error) == "Error: nick al is taken"
    assert json.loads(json_viewer.render(error)) == {
        "type": "error",
        "cid": 5,
        "code": "nick_taken",
        "text": "nick al is taken",
    }


def test_help_lists_every_command_in_both_modes() -> None:
    """/help: aligned '* ' lines in plain, a list of usages in JSON."""
    plain_lines = FakeViewer(BOB).render(help_ack(None)).split("\n")
    assert plain_lines[0] == (
        "* /nick NAME               set your nickname (letters, digits, _ - ., up to 32)"
    )
    assert plain_lines[9] == "* /quit [REASON]           leave the chat"
    assert plain_lines[14] == "* /say ROOM TEXT           speak as the server in ROOM (admins only)"
    assert plain_lines[-1] == (
        "* /unmute NICK             let NICK speak in the current room again (admins only)"
    )
    commands = json.loads(FakeViewer(BOB, json=True).render(help_ack(1)))["commands"]
    assert len(commands) == len(plain_lines) == 20
    assert commands[0] == {
        "usage": "/nick NAME",
        "description": "set your nickname (letters, digits, _ - ., up to 32)",
    }


def test_timestamps_are_utc_with_milliseconds() -> None:
    """ts is ISO 8601 in UTC with milliseconds and a Z, whatever the input's zone."""
    from datetime import datetime, timedelta, timezone

    moment = datetime(2026, 11, 26, 7, 46, 9, 123456, tzinfo=timezone(timedelta(hours=2)))
    assert timestamp(moment) == "2026-11-26T05:46:09.123Z"


def test_a_multi_line_message_reads_attributed_on_every_plain_line() -> None:
    """Every line of a message with \\n gets the sender's prefix, and its room's mark when
    read from another room; JSON keeps one event with the \\n in its text."""
    event = Message(Record(9, TS, "dev", "alice", None, "one\ntwo"), ALICE)
    assert FakeViewer(ALICE, current_room="dev").render(event) == "You said: one\nYou said: two"
    assert FakeViewer(BOB, current_room="dev").render(event) == "alice says: one\nalice says: two"
    assert FakeViewer(BOB).render(event) == "[dev] alice says: one\n[dev] alice says: two"
    assert json.loads(FakeViewer(BOB, json=True).render(event))["text"] == "one\ntwo"
    replayed = HistoryLine(Record(9, TS, "dev", "alice", None, "one\ntwo"))
    assert FakeViewer(ALICE).render(replayed) == (
        "[dev] [history] alice says: one\n[dev] [history] alice says: two"
    )
    private = HistoryLine(Record(10, TS, None, "alice", "bob", "a\nb"))
    assert FakeViewer(BOB).render(private) == (
        "[history] [private] alice to bob: a\n[history] [private] alice to bob: b"
    )


def test_the_format_is_chosen_from_the_subprotocols() -> None:
    """trio-chat.v1 offered: JSON (and that subprotocol accepted); otherwise plain."""
    assert negotiate(["chat", "trio-chat.v1"]) is JSON
    assert JSON.subprotocol == "trio-chat.v1"
    assert negotiate([]) is PLAIN
    assert PLAIN.subprotocol is None


def test_a_third_format_is_one_object() -> None:
    """A format written here renders every kind of event from its data alone."""

    class Kinds:
        name = "kinds"
        subprotocol = "kinds.v0"

        def parse(self, frame: str, *, max_lines: int) -> list[Parsed]:
            return []

        def render(self, event: Event, viewer: Viewer) -> str:
            return str(event.data()["type"])

    kinds: WireFormat = Kinds()
    seen = [
        kinds.render(event, FakeViewer(BOB))
        for event in (
            message(),
            PrivateMessage(Record(8, TS, None, "alice", "bob", "psst"), ALICE),
            HistoryLine(Record(7, TS, "lobby", "alice", None, "hi")),
            Presence("join", "al", TS, room="lobby"),
            TopicChanged("dev", None, "al"),
            Notice("noon"),
            Welcome(None, "lobby", ["lobby"]),
            Ack("nick", None, nick="al"),
            ErrorEvent("x", "y"),
        )
    ]
    assert seen == [
        "message",
        "private",
        "message",
        "presence",
        "topic",
        "notice",
        "welcome",
        "ack",
        "error",
    ]


def test_a_viewer_in_no_room_still_reads_what_was_not_said_in_a_room() -> None:
    """A member that just quit is in no room: its /quit ack, errors and notices to
    everyone render without asking for its current room."""

    class Departed:
        key = BOB
        wire = PLAIN

        @property
        def current_room(self) -> str:
            raise IndexError("in no room")

    viewer = Departed()
    assert PLAIN.render(Ack("quit", None), viewer) is None
    assert PLAIN.render(ErrorEvent("x", "no"), viewer) == "Error: no"
    assert PLAIN.render(Notice("bye all"), viewer) == "🟢 Server: bye all"
