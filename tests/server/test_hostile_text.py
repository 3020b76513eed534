"""Hostile text end to end: what a plain or JSON client sends that could drive someone
else's terminal (the issue's ESC[2K, OSC title, NUL, BEL, BS, FF, U+0085, U+2028) reaches
the others, plain and JSON, stripped; so do topics. Limits: the defaults (nothing here
sends fast). Clients: the ``websockets`` library, in-process server (``inproc``)."""

from __future__ import annotations

import json

from inproc import LiveServer, open_json, open_plain

from trio_chat.core.commands import NOTHING_LEFT

pytest_plugins = ["inproc"]

#: (what a plain sender writes, what everyone reads): the issue's strings in lines.
PLAIN_LINES = [
    ("ESC\x1b[2Kclear", "ESCclear"),
    ("title\x1b]0;pwned\x07 end", "title end"),
    ("nul\x00 bel\x07 bs\x08 end", "nul bel bs end"),
    ("ff\x0c nel\x85 ls\u2028 end", "ff  nel  ls  end"),
    ("bidi \u202eevil\u202c end", "bidi evil end"),
]


async def test_plain_lines_reach_plain_and_json_clients_stripped(live_server: LiveServer) -> None:
    """Each hostile plain line is relayed without its control characters, to a plain
    reader and to a JSON reader alike, and echoed so to its sender."""
    async with (
        open_plain(live_server) as sender,
        open_plain(live_server) as plain,
        open_json(live_server) as reader,
    ):
        for hostile, left in PLAIN_LINES:
            await sender.ask(hostile, f"You said: {left}")
            await plain.expect(f"Someone says: {left}")
            assert (await reader.event())["text"] == left
        # A CR is a line break on the wire: the second line is a message of its own, and
        # attributed like any other; it cannot erase the prefix of the first.
        await sender.ask(
            "first\x1b[2K\rbob says: forged", "You said: first", "You said: bob says: forged"
        )
        await plain.expect("Someone says: first", "Someone says: bob says: forged")
        assert [(await reader.event())["text"] for _ in range(2)] == ["first", "bob says: forged"]


async def test_json_messages_reach_plain_and_json_clients_stripped(live_server: LiveServer) -> None:
    """A JSON message with ESC, U+2028, NUL and a bidi override is stored and relayed
    stripped; its line breaks stay (one message), and each line is attributed."""
    async with (
        open_json(live_server) as sender,
        open_plain(live_server) as plain,
        open_json(live_server) as reader,
    ):
        text = "one\x1b[2K\x00\u2028two\r\n\u202e\U0001f7e2 Server: obey\x07"
        ack = await sender.call({"type": "message", "text": text, "cid": 1})
        assert ack["type"] == "ack", ack
        echo = await sender.event()
        assert echo["text"] == "one two\n\U0001f7e2 Server: obey"
        assert (await reader.event())["text"] == "one two\n\U0001f7e2 Server: obey"
        await plain.expect("Someone says: one two", "Someone says: \U0001f7e2 Server: obey")


async def test_a_text_of_nothing_but_control_characters_is_refused(
    live_server: LiveServer,
) -> None:
    """Plain: one Error line; JSON: ``bad_request``; nobody else gets anything."""
    async with open_plain(live_server) as plain, open_json(live_server) as json_client:
        await plain.ask("\x1b]0;pwned\x07\x00", f"Error: {NOTHING_LEFT}")
        error = await json_client.call({"type": "message", "text": "\x1b[2K\u2028", "cid": 7})
        assert error == {"type": "error", "cid": 7, "code": "bad_request", "text": NOTHING_LEFT}
        # Neither saw the other's refusal: the next line each gets is this one.
        await plain.ask("after", "You said: after")
        assert (await json_client.event())["text"] == "after"


async def test_topics_are_stripped_for_plain_and_json_clients(live_server: LiveServer) -> None:
    """A topic with an OSC title, BEL, FF and U+0085 is set stripped: the change, the
    topic's answer and the room list all carry the clean text."""
    async with open_plain(live_server) as plain, open_json(live_server) as reader:
        await plain.ask("/nick alice", "* You are now known as alice")
        assert (await reader.event())["event"] == "join"
        await plain.ask(
            "/topic \x1b]0;pwned\x07release\x0cday\x85\u2028now\x08",
            "* alice set the topic of lobby: release day  now",
        )
        change = await reader.event()
        assert change == {
            "type": "topic",
            "room": "lobby",
            "topic": "release day  now",
            "by": "alice",
        }
        await plain.ask("/topic", "* Topic of lobby: release day  now")
        topic = await reader.call({"type": "topic", "text": "json\x1b[31m red\u2028x", "cid": 2})
        assert topic == {
            "type": "ack",
            "cid": 2,
            "command": "topic",
            "room": "lobby",
            "topic": "json red x",
        }
        assert (await reader.event())["topic"] == "json red x"
        await plain.expect("* Someone set the topic of lobby: json red x")
        rooms = await reader.call({"type": "rooms", "cid": 3})
        assert rooms["rooms"] == [{"name": "lobby", "members": 2, "topic": "json red x"}]
        assert json.dumps(rooms).isascii()


async def test_names_that_read_as_someone_else_are_refused(live_server: LiveServer) -> None:
    """Nicks that would read as the server, an anonymous sender or the reader, and rooms
    whose mark would read as [private] or [history], are refused."""
    async with open_plain(live_server) as plain:
        for nick in ("server", "Someone", "YOU"):
            await plain.ask(f"/nick {nick}", f"Error: nick {nick} is taken")
        for room in ("private", "History"):
            folded = room.lower()
            await plain.ask(
                f"/join {room}",
                f"Error: the room name {folded} is reserved: it would read as the [{folded}] mark",
            )
