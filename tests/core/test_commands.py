"""Parsing commands: plain ``/command`` lines and JSON objects, and the client's JSON."""

from __future__ import annotations

import json

import pytest

from trio_chat.core.commands import (
    HELP,
    Announce,
    CommandError,
    Help,
    History,
    Join,
    Kick,
    Leave,
    ListRooms,
    Login,
    Nick,
    Private,
    Quit,
    Refresh,
    Register,
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
        "/login alice pass word",
        "/register alice secret",
        "/refresh a.b.c",
        "/kick bob spamming again",
        "/say dev hello all",
        "/ban alice",
        "/ban 203.0.113.0/24 2h flooding the lobby",
        "/ban principal:account:3 spam",
        "/unban account:bob",
        "/bans",
        "/mute carol 10m",
        "/unmute carol",
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
        "/login",
        "/register",
        "/refresh",
        "/kick",
        "/say",
        "/ban",
        "/unban",
        "/bans",
        "/mute",
        "/unmute",
    ]


def test_a_session_secret_is_never_shown() -> None:
    """Neither the repr of a resume nor the error for a malformed secret shows it."""
    assert "s3cr3t" not in repr(Resume(1, "s3cr3t"))
    with pytest.raises(CommandError) as info:
        parse_json('{"type":"resume","since":1,"session":"s3cr3t!"}')
    assert "s3cr3t" not in info.value.text


@pytest.mark.parametrize(
    ("line", "command"),
    [
        ("/login alice s3cret", Login("alice", "s3cret")),
        ("/LOGIN alice  two words ", Login("alice", "two words")),
        ("/register bob hunter2", Register("bob", "hunter2")),
        ("/refresh eyJ.abc.def", Refresh("eyJ.abc.def")),
        ("/kick bob", Kick("bob")),
        ("/kick bob too loud", Kick("bob", "too loud")),
        ("/say Dev hello there", Announce("dev", "hello there")),
    ],
)
def test_login_and_admin_lines(line: str, command: object) -> None:
    """/login and /register take a name and the rest of the line as the password."""
    assert parse_plain(line) == command


@pytest.mark.parametrize(
    ("line", "text"),
    [
        ("/login", "usage: /login NAME PASSWORD"),
        ("/login alice", "usage: /login NAME PASSWORD"),
        ("/register alice", "usage: /register NAME PASSWORD"),
        (
            "/login al!ce pw",
            "invalid account name 'al!ce': use 1-32 letters, digits, '_', '-' or '.'",
        ),
        ("/refresh", "usage: /refresh TOKEN"),
        ("/refresh a b", "usage: /refresh TOKEN"),
        ("/kick", "usage: /kick NICK [REASON]"),
        ("/say dev", "usage: /say ROOM TEXT"),
        ("/login alice " + "x" * 1025, "the password is longer than 1024 characters"),
    ],
)
def test_bad_login_lines(line: str, text: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_plain(line)
    assert info.value.text == text


@pytest.mark.parametrize(
    ("document", "command"),
    [
        ('{"type": "login", "name": "alice", "password": "pw"}', Login("alice", "pw")),
        ('{"type": "login", "token": "a.b.c"}', Login(token="a.b.c")),
        ('{"type": "register", "name": "bob", "password": " pw "}', Register("bob", " pw ")),
        ('{"type": "refresh", "token": "a.b.c"}', Refresh("a.b.c")),
        ('{"type": "kick", "nick": "bob", "reason": "spam"}', Kick("bob", "spam")),
        ('{"type": "announce", "room": "Dev", "text": "hi"}', Announce("dev", "hi")),
    ],
)
def test_login_and_admin_json(document: str, command: object) -> None:
    assert parse_json(document) == (command, None)


@pytest.mark.parametrize(
    ("document", "text"),
    [
        ('{"type": "login"}', "'login' needs a 'name' and a 'password', or a 'token'"),
        ('{"type": "login", "name": "alice"}', "'login' needs a string 'password'"),
        (
            '{"type": "login", "token": "t", "name": "a"}',
            "'login' takes a 'token', or a 'name' and a 'password'",
        ),
        ('{"type": "login", "name": "a", "password": ""}', "the password is empty"),
        ('{"type": "login", "name": "a", "password": "x\\ny"}', "the password must be one line"),
        ('{"type": "refresh"}', "'refresh' needs a string 'token'"),
        ('{"type": "announce", "text": "hi"}', "'announce' needs a string 'room'"),
    ],
)
def test_bad_login_json(document: str, text: str) -> None:
    with pytest.raises(CommandError) as info:
        parse_json(document)
    assert (info.value.code, info.value.text) == ("bad_request", text)


def test_secrets_stay_out_of_a_commands_repr() -> None:
    """A command shown in a log line or a traceback never shows a password or a token."""
    for command in (
        Login("alice", "s3cret"),
        Login(token="tok.en"),
        Register("a", "s3cret"),
        Refresh("tok.en"),
    ):
        assert "s3cret" not in repr(command)
        assert "tok.en" not in repr(command)
