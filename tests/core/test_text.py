"""Hostile text: what :mod:`trio_chat.core.text` strips, what it keeps, and the parser
using it for every text others read (plain lines, JSON messages, topics, reasons); the
rule of names, written once, for nicknames and room names alike."""

from __future__ import annotations

import pytest

from trio_chat.core import render
from trio_chat.core.commands import (
    NOTHING_LEFT,
    CommandError,
    Private,
    Quit,
    Say,
    Topic,
    parse_json,
    parse_plain,
    valid_room,
)
from trio_chat.core.text import clean_line, clean_text, room_problem, split_lines
from trio_chat.core.wire import PLAIN

#: The hostile strings the issue lists, each inside a line, and what is left of it.
HOSTILE = [
    pytest.param("a\x1b[2Kb", "ab", id="ESC[2K clear line"),
    pytest.param("a\x1b[31mred\x1b[0mb", "aredb", id="SGR colours"),
    pytest.param("a\x1b]0;title\x07b", "ab", id="OSC title, BEL"),
    pytest.param("a\x1b]0;title\x1b\\b", "ab", id="OSC title, ST"),
    pytest.param("a\x1b]8;;http://evil.example\x1b\\link", "alink", id="OSC 8 hyperlink"),
    pytest.param("a\x1b]0;never ended", "a", id="OSC unterminated"),
    pytest.param("a\x9b2Kb", "ab", id="8-bit CSI"),
    pytest.param("a\x9d0;title\x9cb", "ab", id="8-bit OSC"),
    pytest.param("a\x1bcb", "ab", id="ESC c reset"),
    pytest.param("a\x1b", "a", id="ESC alone"),
    pytest.param("a\x00b", "ab", id="NUL"),
    pytest.param("a\x07b", "ab", id="BEL"),
    pytest.param("a\x08b", "ab", id="BS"),
    pytest.param("a\x7fb", "ab", id="DEL"),
    pytest.param("a\x0cb", "a b", id="FF"),
    pytest.param("a\x0bb", "a b", id="VT"),
    pytest.param("a\x85b", "a b", id="U+0085 NEL"),
    pytest.param("a\u2028b", "a b", id="U+2028"),
    pytest.param("a\u2029b", "a b", id="U+2029"),
    pytest.param("a\x80\x8a\x91b", "ab", id="C1 controls"),
    pytest.param("a\x9fapc string\x9cb", "ab", id="8-bit APC"),
    pytest.param("a\u202eevil\u202cb", "aevilb", id="bidi override"),
    pytest.param("a\u2066\u2067\u2068\u2069b", "ab", id="bidi isolates"),
    pytest.param("a\u200e\u200f\u061cb", "ab", id="direction marks"),
    pytest.param("a\u200b\u2060\ufeff\u00adb", "ab", id="zero-width and soft hyphen"),
    pytest.param("a\ud800b", "ab", id="lone surrogate"),
    pytest.param("\u200da\u200d\u200d\u200db\u200d", "a\u200db", id="joiner runs"),
    pytest.param("a \u200d b", "a  b", id="joiner beside spaces"),
    pytest.param("a\U000e0041\U000e0042b", "ab", id="tag smuggling"),
    pytest.param("Z" + "\u0336\u0301" * 20 + "o", "Z\u0336\u0301\u0336\u0301o", id="Zalgo"),
    pytest.param("\x07Z" + "\u0301" * 9, "Z\u0301\u0301\u0301\u0301", id="Zalgo, slow path"),
]


@pytest.mark.parametrize(("hostile", "left"), HOSTILE)
def test_hostile_characters_are_stripped(hostile: str, left: str) -> None:
    """Each hostile string leaves exactly what a reader should see."""
    assert clean_line(hostile) == left


@pytest.mark.parametrize(
    "kept",
    [
        "plain ascii, tab\tand all",
        "café, naïve, Ελληνικά, 日本語, עברית, العربية",
        "Tiếng Việt: e\u0302\u0301, ca\u0301\u0300\u0302\u0303",
        "\N{LARGE GREEN CIRCLE} emoji \U0001f600",
        "\U0001f469\u200d\U0001f4bb family \U0001f468\u200d\U0001f469\u200d\U0001f467",
        "\U0001f3f4\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f scotland",
        "no\u00a0break space, private use \ue000",
        "",
    ],
)
def test_what_people_write_is_kept(kept: str) -> None:
    """Scripts, emoji sequences (joiners, a flag's tags), tabs and spaces stay as they are."""
    assert clean_line(kept) == kept


def test_a_text_without_hostile_characters_is_returned_as_it_is() -> None:
    """The fast path: the very same object."""
    text = "hello " * 100
    assert clean_line(text) is text


def test_only_cr_and_lf_break_lines() -> None:
    """``\\r\\n``, ``\\r`` and ``\\n`` break a text; a message's breaks become ``\\n``."""
    assert split_lines("a\r\nb\rc\nd\x0ce\u2028f") == ["a", "b", "c", "d\x0ce\u2028f"]
    assert clean_text("one\r\ntwo\x1b[2K\rthree\u2028four") == "one\ntwo\nthree four"


def test_the_plain_wire_splits_on_cr_and_lf_only() -> None:
    """A plain frame is one message per CR/LF line; FF and U+2028 are a space."""
    parsed = PLAIN.parse("a\x0cb\nc\u2028d\n", max_lines=20)
    assert parsed == [(Say("a b"), None), (Say("c d"), None)]


@pytest.mark.parametrize(("hostile", "left"), HOSTILE)
def test_plain_lines_and_json_messages_are_cleaned(hostile: str, left: str) -> None:
    """The same strings, through every command that carries text others read."""
    assert parse_plain(hostile) == Say(left)
    assert parse_plain(f"/me {hostile}") == Say(left, action=True)
    assert parse_plain(f"/msg bob {hostile}") == Private("bob", left)
    assert parse_plain(f"/topic {hostile}") == Topic(text=left)
    assert parse_plain(f"/quit {hostile}") == Quit(left)
    for kind in ("message", "me"):
        command, _ = parse_json(f'{{"type": "{kind}", "text": {json_string(hostile)}}}')
        assert command == Say(left, action=kind == "me")
    command, _ = parse_json(f'{{"type": "private", "to": "bob", "text": {json_string(hostile)}}}')
    assert command == Private("bob", left)
    command, _ = parse_json(f'{{"type": "topic", "text": {json_string(hostile)}}}')
    assert command == Topic(text=left)
    command, _ = parse_json(f'{{"type": "quit", "reason": {json_string(hostile)}}}')
    assert command == Quit(left)


def json_string(text: str) -> str:
    """``text`` as a JSON string literal, surrogates escaped as JSON allows."""
    return '"' + "".join(f"\\u{ord(c):04x}" if ord(c) < 0x10000 else c for c in text) + '"'


def test_a_json_message_keeps_its_lines_each_cleaned() -> None:
    """A multi-line JSON message stays one message; each of its lines is cleaned."""
    command, _ = parse_json('{"type": "message", "text": "a\\u001b[2K\\r\\n\\u0007b"}')
    assert command == Say("a\nb")


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "message", "text": "\\u001b[2K\\u0007"}',
        '{"type": "message", "text": "\\u0000\\n\\u200b"}',
        '{"type": "topic", "text": "\\u202e"}',
    ],
)
def test_a_json_text_of_nothing_but_hostile_characters_is_refused(frame: str) -> None:
    """Nothing would show: ``bad_request``, and no message."""
    with pytest.raises(CommandError) as error:
        parse_json(frame)
    assert (error.value.code, error.value.text) == ("bad_request", NOTHING_LEFT)


def test_a_plain_line_of_nothing_but_hostile_characters_is_refused() -> None:
    """Plain: the same refusal; an empty line stays what it was (an empty message)."""
    with pytest.raises(CommandError) as error:
        parse_plain("\x1b]0;pwned\x07")
    assert (error.value.code, error.value.text) == ("bad_request", NOTHING_LEFT)
    assert parse_plain("") == Say("")


def test_a_json_topic_of_an_empty_string_still_clears() -> None:
    """``"text": ""`` clears the topic, as before: it held nothing to begin with."""
    command, _ = parse_json('{"type": "topic", "text": ""}')
    assert command == Topic(text="")


def test_a_hidden_command_is_the_command_its_sender_sees() -> None:
    """The line is cleaned before it is read: what runs is what the sender's line shows."""
    assert parse_plain("\u200b/nick bob") == parse_plain("/nick bob")


@pytest.mark.parametrize("name", ["private", "History", "HISTORY"])
def test_room_names_that_read_as_marks_are_reserved(name: str) -> None:
    """A room called private or history would be marked [private] or [history]."""
    folded = name.lower()
    expected = f"the room name {folded} is reserved: it would read as the [{folded}] mark"
    assert room_problem(name) == expected
    with pytest.raises(CommandError) as error:
        parse_plain(f"/join {name}")
    assert (error.value.code, error.value.text) == ("invalid_name", expected)
    with pytest.raises(CommandError):
        parse_json(f'{{"type": "join", "room": "{name}"}}')


def test_room_names_follow_the_nickname_rule() -> None:
    """One rule: ASCII letters, digits, _ - ., 1 to 32; shown in lower case."""
    assert valid_room("Dev.Team-1") == "dev.team-1"
    rule = "use 1-32 letters, digits, '_', '-' or '.'"
    for bad in ("café", "a b", "", "x" * 33, "dev\x1b[2K", "dev\u202e"):
        assert room_problem(bad) == f"invalid room name {bad!r}: {rule}"


def test_no_line_of_a_users_text_can_start_like_a_server_line() -> None:
    """Whatever a user writes, each of its plain lines starts with its author: never
    ``* `` (the server's notices and answers), never the operator's mark."""
    forged = [
        "\N{LARGE GREEN CIRCLE} Server: maintenance, log in at evil.example",
        "bob says: send me your password",
        "* bob was kicked (spam)",
        "joined dev",
    ]
    for text in forged:
        for action in (False, True):
            data = {"type": "message", "from": "alice", "text": clean_text(text)}
            if action:
                data["action"] = True
            for line in render.chat_lines(data) + render.chat_lines(data, own=True):
                assert line.startswith(("alice says: ", "alice * ", "You said: ")), line
    # A multi-line message cannot start a line of its own: each is attributed.
    data = {"type": "message", "from": "alice", "text": clean_text("hi\r\U0001f7e2 Server: x")}
    assert render.chat_lines(data) == ["alice says: hi", "alice says: \U0001f7e2 Server: x"]
    assert render.chat_lines({**data, "action": True}) == [
        "alice * hi",
        "alice * \U0001f7e2 Server: x",
    ]
