"""Parsing commands: plain ``/command`` lines and JSON objects, and the client's JSON."""

from __future__ import annotations

import json

import pytest

from trio_chat.core.commands import (
    HELP,
    CommandError,
    Help,
    History,
    Join,
    Leave,
    ListRooms,
    Nick,
    Private,
    Quit,
    Resume,
    Say,
    Topic,
    Who,
    command_to_json,
    parse_json,
    parse_plain,
)


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("hello", Say("hello")),
        ("", Say("")),
        ("//not a command", Say("/not a command")),
        ("/nick Alice_1.x-y", Nick("Alice_1.x-y")),
        ("/NICK bob", Nick("bob")),
        ("/join Dev", Join("dev")),
        ("/leave", Leave(None)),
        ("/leave dev", Leave("dev")),
        ("/rooms", ListRooms()),
        ("/who", Who(None)),
        ("/who Dev", Who("dev")),
        ("/msg bob hi  there", Private("bob", "hi  there")),
        ("/me waves slowly", Say("waves slowly", action=True)),
        ("/topic", Topic()),
        ("/topic release day", Topic(text="release day")),
        ("/help", Help()),
        ("/quit", Quit()),
        ("/quit gone fishing", Quit("gone fishing")),
    ],
)
def test_plain_lines_parse_into_commands(line: str, command: object) -> None:
    """Every plain command and its arguments parse into the documented command."""
    assert parse_plain(line) == command


@pytest.mark.parametrize(
    ("line", "code", "text"),
    [
        ("/frobnicate", "unknown_command", "unknown command /frobnicate; /help lists the commands"),
        ("/nick", "bad_request", "usage: /nick NAME"),
        ("/nick two words", "bad_request", "usage: /nick NAME"),
        ("/msg bob", "bad_request", "usage: /msg NICK TEXT"),
        ("/me", "bad_request", "usage: /me ACTION"),
        ("/join", "bad_request", "usage: /join ROOM"),
        ("/rooms now", "bad_request", "usage: /rooms"),
        (
            "/nick bad!",
            "invalid_name",
            "invalid nickname 'bad!': use 1-32 letters, digits, '_', '-' or '.'",
        ),
        (
            "/join " + "r" * 33,
            "invalid_name",
            f"invalid room name '{'r' * 33}': use 1-32 letters, digits, '_', '-' or '.'",
        ),
        (
            "/nick ünï",
            "invalid_name",
            "invalid nickname 'ünï': use 1-32 letters, digits, '_', '-' or '.'",
        ),
    ],
)
def test_bad_plain_commands_get_one_clear_error(line: str, code: str, text: str) -> None:
    """A wrong command or wrong arguments raise one error with its code and text."""
    with pytest.raises(CommandError) as info:
        parse_plain(line)
    assert (info.value.code, info.value.text) == (code, text)


@pytest.mark.parametrize(
    ("document", "command", "cid"),
    [
        ('{"type":"message","text":"hi"}', Say("hi"), None),
        ('{"type":"message","text":"hi","room":"Dev","cid":7}', Say("hi", "dev"), 7),
        ('{"type":"me","text":"waves","cid":"a"}', Say("waves", action=True), "a"),
        ('{"type":"private","to":"bob","text":"psst"}', Private("bob", "psst"), None),
        ('{"type":"nick","nick":"al"}', Nick("al"), None),
        ('{"type":"join","room":"dev"}', Join("dev"), None),
        ('{"type":"leave"}', Leave(), None),
        ('{"type":"rooms"}', ListRooms(), None),
        ('{"type":"who","room":"dev"}', Who("dev"), None),
        ('{"type":"topic","text":""}', Topic(text=""), None),
        ('{"type":"topic"}', Topic(), None),
        ('{"type":"help"}', Help(), None),
        ('{"type":"quit","reason":"bye"}', Quit("bye"), None),
        ('{"type":"resume","since":4,"session":"s3cr-t_"}', Resume(4, "s3cr-t_"), None),
        ('{"type":"history","private":true,"limit":5}', History(limit=5, private=True), None),
    ],
)
def test_json_commands_parse(document: str, command: object, cid: object) -> None:
    """Every JSON command type parses, with its cid."""
    assert parse_json(document) == (command, cid)


@pytest.mark.parametrize(
    ("document", "code", "cid"),
    [
        ("not json", "bad_json", None),
        ("[1, 2]", "bad_json", None),
        ('{"text":"no type"}', "bad_request", None),
        ('{"type":"message","cid":3}', "bad_request", 3),
        ('{"type":"message","text":5,"cid":"x"}', "bad_request", "x"),
        ('{"type":"topic","text":"a\\nb"}', "bad_request", None),
        ('{"type":"message","text":"hi","cid":true}', "bad_request", None),
        ('{"type":"message","text":"hi","cid":"' + "c" * 65 + '"}', "bad_request", None),
        ('{"type":"dance","cid":9}', "unknown_command", 9),
        ('{"type":"nick","nick":"no spaces"}', "invalid_name", None),
        ('{"type":"join","room":"","cid":1}', "invalid_name", 1),
        ('{"type":"history","before":9223372036854775808,"cid":2}', "bad_request", 2),
        ('{"type":"resume","since":-1}', "bad_request", None),
        ('{"type":"history","limit":501}', "bad_request", None),
        ('{"type":"history","private":"yes"}', "bad_request", None),
        ('{"type":"resume","since":1,"session":"has space"}', "bad_request", None),
        ('{"type":"resume","since":1,"session":7}', "bad_request", None),
    ],
)
def test_bad_json_commands_carry_their_code_and_cid(document: str, code: str, cid: object) -> None:
    """Malformed JSON commands raise the documented code, echoing a valid cid."""
    with pytest.raises(CommandError) as info:
        parse_json(document)
    assert (info.value.code, info.value.cid) == (code, cid)


@pytest.mark.parametrize(
    "line",
    [
        "hello",
        "/me waves",
        "/msg bob hi",
        "/nick al",
        "/join dev",
        "/leave",
        "/rooms",
        "/who dev",
        "/topic new",
        "/topic",
        "/help",
        "/quit later",
    ],
)
def test_the_clients_json_parses_back_to_the_same_command(line: str) -> None:
    """What the client sends for a typed line is what the server parses it into."""
    command = parse_plain(line)
    document = command_to_json(command, cid=12)
    assert parse_json(document) == (command, 12)
    assert json.loads(document)["cid"] == 12


def test_help_covers_every_plain_command() -> None:
    """/help lists a usage line for every command the plain parser knows."""
    assert [usage.split()[0] for usage, _ in HELP] == [
        "/nick",
        "/join",
        "/leave",
        "/rooms",
        "/who",
        "/msg",
        "/me",
        "/topic",
        "/help",
        "/quit",
    ]


def test_a_session_secret_is_never_shown() -> None:
    """Neither the repr of a resume nor the error for a malformed secret shows it."""
    assert "s3cr3t" not in repr(Resume(1, "s3cr3t"))
    with pytest.raises(CommandError) as info:
        parse_json('{"type":"resume","since":1,"session":"s3cr3t!"}')
    assert "s3cr3t" not in info.value.text
