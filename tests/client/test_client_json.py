"""The client in ``trio-chat.v1`` (JSON) mode: rendering, start-up, commands, safety, colour.

The renderer (:mod:`trio_chat.client.view`) and the session logic (:class:`JsonSession`) are
pure, so they are tested directly, event by event, with colour off and on. The rest runs
the client in a pseudo-terminal against a server subprocess, with the ``websockets``
sync client on the other side of the chat (machinery from ``pty_support``). Waits are
for events under a time limit; expected strings are exact.
"""

from __future__ import annotations

import getpass
import json
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, timedelta, timezone
from typing import Any

import pytest
from pty_support import FINISH, PROTOCOL, START_PLAIN, Client, Peer, local_time, shown
from websockets.sync.server import ServerConnection, serve

from trio_chat.client.session import JsonSession, login_nick, nick_candidate
from trio_chat.client.view import Style, clock, colour_wanted, nick_colour, render_event
from trio_chat.core.commands import HELP, Topic

from ready_process import ReadyProcess
from support import EVENT_TIMEOUT, ROOT, ServerProcess, child_env

pytest_plugins = ["pty_support"]

TS = "2026-11-26T05:46:09.123Z"
DIM = "\x1b[2m"
RESET = "\x1b[0m"
#: Any SGR sequence (colour, bold, dim...): ESC [ digits/semicolons m.
SGR = re.compile(r"\x1b\[[0-9;]*m")
OFF = Style(colour=False)
ON = Style(colour=True)


def dim(text: str) -> str:
    return f"{DIM}{text}{RESET}"


def render(event: dict[str, Any], style: Style = OFF, **context: Any) -> list[str]:
    """``event`` rendered with times in UTC."""
    return render_event(event, style, tz=UTC, **context)


def help_block() -> list[str]:
    """The ``/help`` lines as the client shows them without colour."""
    width = max(len(usage) for usage, _ in HELP)
    return [f"* {usage:<{width}}  {description}" for usage, description in HELP]


# --- the renderer, event by event -----------------------------------------------------------

MESSAGE = {"type": "message", "id": 7, "room": "dev", "from": "alice", "text": "hi", "ts": TS}

RENDERED = [
    pytest.param(MESSAGE, "05:46 [dev] alice: hi", id="message"),
    pytest.param({**MESSAGE, "action": True}, "05:46 [dev] alice * hi", id="action"),
    pytest.param({**MESSAGE, "from": None}, "05:46 [dev] Someone: hi", id="anonymous"),
    pytest.param(
        {"type": "private", "id": 8, "from": "bob", "to": "alice", "text": "psst", "ts": TS},
        "05:46 [private] bob → alice: psst",
        id="private",
    ),
    pytest.param(
        {"type": "presence", "event": "join", "room": "dev", "nick": "bob", "ts": TS},
        "* bob joined dev",
        id="presence-join",
    ),
    pytest.param(
        {"type": "presence", "event": "leave", "room": "dev", "nick": "bob", "ts": TS},
        "* bob left dev",
        id="presence-leave",
    ),
    pytest.param(
        {"type": "presence", "event": "nick", "nick": "alice", "new_nick": "al", "ts": TS},
        "* alice is now known as al",
        id="presence-nick",
    ),
    pytest.param(
        {"type": "presence", "event": "quit", "nick": "alice", "reason": "bye", "ts": TS},
        "* alice quit (bye)",
        id="presence-quit",
    ),
    pytest.param(
        {"type": "presence", "event": "quit", "nick": "alice", "reason": None, "ts": TS},
        "* alice quit",
        id="presence-quit-no-reason",
    ),
    pytest.param(
        {"type": "presence", "event": "kick", "nick": "alice", "reason": "spam", "ts": TS},
        "* alice was kicked (spam)",
        id="presence-kick",
    ),
    pytest.param(
        {"type": "topic", "room": "dev", "topic": "release day", "by": "alice"},
        "* alice set the topic of dev: release day",
        id="topic-set",
    ),
    pytest.param(
        {"type": "topic", "room": "dev", "topic": None, "by": "alice"},
        "* alice cleared the topic of dev",
        id="topic-cleared",
    ),
    pytest.param(
        {"type": "ack", "cid": 1, "command": "nick", "nick": "al"},
        "* You are now known as al",
        id="ack-nick",
    ),
    pytest.param(
        {
            "type": "ack",
            "command": "join",
            "room": "dev",
            "topic": "release day",
            "members": ["alice", "bob"],
            "anonymous": 1,
        },
        "* You joined dev (3 here). Topic: release day",
        id="ack-join",
    ),
    pytest.param(
        {"type": "ack", "command": "leave", "room": "dev", "current": "lobby"},
        "* You left dev; now talking in lobby",
        id="ack-leave",
    ),
    pytest.param(
        {
            "type": "ack",
            "command": "rooms",
            "rooms": [
                {"name": "dev", "members": 1, "topic": None},
                {"name": "lobby", "members": 2, "topic": "hi"},
            ],
        },
        "* Rooms: dev (1), lobby (2)",
        id="ack-rooms",
    ),
    pytest.param(
        {"type": "ack", "command": "who", "room": "dev", "members": ["a", "b"], "anonymous": 2},
        "* In dev: a, b and 2 without a nickname",
        id="ack-who",
    ),
    pytest.param(
        {"type": "ack", "command": "who", "room": "dev", "members": [], "anonymous": 0},
        "* In dev: nobody",
        id="ack-who-empty",
    ),
    pytest.param(
        {"type": "ack", "command": "topic", "room": "dev", "topic": "release day"},
        "* Topic of dev: release day",
        id="ack-topic",
    ),
    pytest.param(
        {"type": "ack", "command": "topic", "room": "dev", "topic": None},
        "* dev has no topic",
        id="ack-no-topic",
    ),
    pytest.param({"type": "mystery", "x": 1}, "(unknown event: mystery)", id="unknown-type"),
    pytest.param(
        {"type": "message", "text": "no room"}, "(unreadable event from server)", id="bad"
    ),
    pytest.param(["not", "an", "object"], "(unreadable event from server)", id="not-object"),
]


@pytest.mark.parametrize(("event", "line"), RENDERED)
def test_rendering_without_colour(event: Any, line: str) -> None:
    """Each event type renders as its line, with no escape codes when colour is off."""
    assert render(event) == [line]


def test_rendering_with_colour() -> None:
    """With colour on: dimmed times and notices, coloured nicks, marked privates, red errors."""
    alice, bob = (
        f"\x1b[{nick_colour('alice')}malice{RESET}",
        f"\x1b[{nick_colour('bob')}mbob{RESET}",
    )
    assert render(MESSAGE, ON) == [f"{dim('05:46')} [dev] {alice}: hi"]
    assert render({**MESSAGE, "action": True}, ON) == [f"{dim('05:46')} [dev] {alice} * hi"]
    assert render({**MESSAGE, "from": None}, ON) == [f"{dim('05:46')} [dev] Someone: hi"]
    private = {"type": "private", "id": 8, "from": "bob", "to": "alice", "text": "psst", "ts": TS}
    assert render(private, ON) == [
        f"{dim('05:46')} \x1b[1;35m[private]{RESET} {bob} → {alice}: psst"
    ]
    for param in RENDERED:
        event, line = param.values
        if isinstance(event, dict) and event["type"] in ("presence", "topic", "ack", "mystery"):
            assert render(event, ON) == [dim(line)], param.id
    assert render(["bad"], ON) == [dim("(unreadable event from server)")]
    error = {"type": "error", "cid": 2, "code": "nick_taken", "text": "nick bob is taken"}
    assert render(error, ON) == ["\x1b[31mError: nick bob is taken\x1b[0m"]


def test_notices_errors_and_silent_events() -> None:
    """Notices and errors are shown; welcome and acks of message, me, private, quit are not."""
    assert render({"type": "notice", "from": "server", "text": "noon"}) == [
        "\N{LARGE GREEN CIRCLE} Server: noon"
    ]
    assert render({"type": "notice", "from": "server", "text": "noon", "room": "dev"}) == [
        "[dev] \N{LARGE GREEN CIRCLE} Server: noon"
    ]
    assert render({"type": "notice", "from": "server", "text": "noon"}, ON) == [
        "\N{LARGE GREEN CIRCLE} Server: noon"
    ]
    error = {"type": "error", "cid": 2, "code": "nick_taken", "text": "nick bob is taken"}
    assert render(error) == ["Error: nick bob is taken"]
    welcome = {"type": "welcome", "protocol": PROTOCOL, "nick": None, "room": "lobby"}
    assert render(welcome) == []
    for command in ("message", "me", "private", "quit"):
        assert render({"type": "ack", "cid": 3, "command": command, "id": 9}) == [], command


def test_acks_that_depend_on_the_request() -> None:
    """A topic-set ack shows nothing, a re-join is a switch, a help ack lists the commands."""
    ack = {"type": "ack", "command": "topic", "room": "dev", "topic": "new"}
    assert render(ack, request=Topic(text="new")) == []
    assert render(ack, request=Topic()) == ["* Topic of dev: new"]
    join = {"type": "ack", "command": "join", "room": "dev", "topic": None}
    join |= {"members": ["al"], "anonymous": 0}
    assert render(join, rooms={"lobby", "dev"}) == ["* You are now talking in dev (1 here)"]
    commands = [{"usage": usage, "description": text} for usage, text in HELP]
    assert render({"type": "ack", "command": "help", "commands": commands}) == help_block()


def test_text_from_others_is_made_safe_in_every_field() -> None:
    """Control characters in any field are shown escaped, with colour on or off."""
    evil = "x\x1b[2J\x1b]0;pwned\x07\n\x9b"
    safe = "x\\x1b[2J\\x1b]0;pwned\\x07\\n\\x9b"
    events = [
        {**MESSAGE, "text": evil, "from": evil, "room": evil},
        {"type": "private", "from": evil, "to": evil, "text": evil, "ts": TS},
        {"type": "presence", "event": "quit", "nick": evil, "reason": evil, "ts": TS},
        {"type": "topic", "room": evil, "topic": evil, "by": evil},
        {"type": "notice", "from": "server", "text": evil, "room": evil},
        {"type": "error", "code": "x", "text": evil},
        {"type": "ack", "command": "who", "room": evil, "members": [evil], "anonymous": 0},
        {"type": evil},
    ]
    for style in (OFF, ON):
        for event in events:
            lines = render(event, style)
            # A message's text splits at its line breaks, each line with its sender.
            assert len(lines) == (2 if event["type"] in ("message", "private") else 1), event
            for line in lines:
                assert safe in line, (event, line)
                assert not set(SGR.sub("", line)) & {"\x1b", "\x07", "\n", "\x9b"}, (event, line)


def test_every_line_of_a_message_shows_its_sender() -> None:
    """A message of several lines is that many lines, each with time, room and sender;
    for actions, private and replayed messages too."""
    text = "first\n\x1b[2Jsecond\nthird"
    assert render({**MESSAGE, "text": text}) == [
        "05:46 [dev] alice: first",
        "05:46 [dev] alice: \\x1b[2Jsecond",
        "05:46 [dev] alice: third",
    ]
    assert render({**MESSAGE, "text": "a\nb", "action": True}) == [
        "05:46 [dev] alice * a",
        "05:46 [dev] alice * b",
    ]
    private = {"type": "private", "id": 8, "from": "bob", "to": "alice", "text": "a\nb", "ts": TS}
    assert render(private) == ["05:46 [private] bob → alice: a", "05:46 [private] bob → alice: b"]
    assert render({**MESSAGE, "text": "a\nb", "history": True}) == [
        "[history] 05:46 [dev] alice: a",
        "[history] 05:46 [dev] alice: b",
    ]


def test_times_are_shown_in_the_given_zone() -> None:
    """``ts`` (UTC) is shown as HH:MM in the viewer's zone; a bad time as ``--:--``."""
    assert clock(TS, UTC) == "05:46"
    assert clock(TS, timezone(timedelta(hours=5, minutes=30))) == "11:16"
    assert clock("2026-11-26T23:59:59.999Z", timezone(timedelta(hours=-8))) == "15:59"
    assert clock("yesterday", UTC) == "--:--"
    assert clock(None, UTC) == "--:--"
    assert clock("0001-01-01T00:00:00Z", timezone(timedelta(hours=-1))) == "--:--"


def test_nick_colours_are_stable() -> None:
    """A nick's colour is the same on every run (not hash()), ignores case, and varies."""
    assert nick_colour("alice") == "96"
    assert nick_colour("bob") == "32"
    assert nick_colour("ALICE") == nick_colour("alice")
    assert len({nick_colour(f"user{n}") for n in range(40)}) > 4
    # Checked in a fresh interpreter with another hash seed, too.
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "from trio_chat.client.view import nick_colour; print(nick_colour('bob'))",
        ],
        capture_output=True,
        text=True,
        env={**child_env(), "PYTHONHASHSEED": "12345"},
        cwd=ROOT,
        timeout=EVENT_TIMEOUT,
        check=True,
    )
    assert result.stdout == "32\n"


def test_colour_only_on_a_terminal_without_no_color() -> None:
    """Colour needs a terminal, and ``NO_COLOR`` set to anything but "" turns it off."""
    assert colour_wanted(True, {}) is True
    assert colour_wanted(True, {"NO_COLOR": ""}) is True
    assert colour_wanted(True, {"NO_COLOR": "1"}) is False
    assert colour_wanted(False, {}) is False


# --- the session: start-up and typed lines, without I/O -------------------------------------

WELCOME = json.dumps({"type": "welcome", "nick": None, "room": "lobby", "rooms": ["lobby"]})


def sent(lines: list[str]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines]


def test_login_name_reduced_to_a_nickname() -> None:
    """The default nick is the login name without the characters nicks cannot have."""
    assert login_nick("jdoe") == "jdoe"
    assert login_nick("Jean Dupont!") == "JeanDupont"
    assert login_nick("DOMAIN\\jdoe") == "DOMAINjdoe"
    assert login_nick("été") == "t"
    assert login_nick("ééé") == "guest"
    assert login_nick("") == "guest"
    assert login_nick("x" * 40) == "x" * 32
    assert nick_candidate("sam", 1) == "sam"
    assert nick_candidate("sam", 2) == "sam-2"
    assert nick_candidate("x" * 32, 12) == "x" * 29 + "-12"


def test_session_start_up_retries_a_taken_nick_then_joins() -> None:
    """Start-up: nick, NAME-2 when taken, then the room; ready after; every command has a cid."""
    session = JsonSession(OFF, "sam", room="dev", cid_prefix="t")
    assert sent(session.receive(WELCOME).send) == [{"type": "nick", "nick": "sam", "cid": "t-1"}]
    taken = {"type": "error", "cid": "t-1", "code": "nick_taken", "text": "nick sam is taken"}
    output = session.receive(json.dumps(taken))
    assert output.show == []
    assert sent(output.send) == [{"type": "nick", "nick": "sam-2", "cid": "t-2"}]
    assert not session.ready
    output = session.receive(
        json.dumps({"type": "ack", "cid": "t-2", "command": "nick", "nick": "sam-2"})
    )
    assert output.show == ["* You are now known as sam-2 (sam is taken)"]
    assert sent(output.send) == [{"type": "join", "room": "dev", "cid": "t-3"}]
    assert not session.ready
    join = {"type": "ack", "cid": "t-3", "command": "join", "room": "dev", "topic": None}
    join |= {"members": ["sam-2"], "anonymous": 0}
    assert session.receive(json.dumps(join)).show == ["* You joined dev (1 here)"]
    assert session.ready
    assert sent(session.typed("hello").send) == [{"type": "message", "text": "hello", "cid": "t-4"}]


def test_session_gives_up_on_nicks_after_twenty_tries() -> None:
    """After 20 taken nicks the session shows the error and is ready, without a nick."""
    session = JsonSession(OFF, "sam", cid_prefix="t")
    request = sent(session.receive(WELCOME).send)[0]
    for attempt in range(1, 21):
        assert request["nick"] == nick_candidate("sam", attempt)
        error = {"type": "error", "cid": request["cid"], "code": "nick_taken"}
        output = session.receive(json.dumps(error | {"text": f"nick {request['nick']} is taken"}))
        if attempt < 20:
            (request,) = sent(output.send)
            assert output.show == []
    assert output.send == []
    assert output.show == ["Error: nick sam-20 is taken"]
    assert session.ready


def test_session_answers_help_and_wrong_commands_itself() -> None:
    """/help and malformed commands are answered locally; //x sends /x; the rest goes as JSON."""
    session = JsonSession(OFF, "sam", cid_prefix="t")
    session.receive(WELCOME)
    assert session.typed("/help").show == help_block()
    assert session.typed("/help").send == []
    wrong = session.typed("/nick")
    assert (wrong.show, wrong.send) == (["Error: usage: /nick NAME"], [])
    unknown = session.typed("/dance")
    assert unknown.show == ["Error: unknown command /dance; /help lists the commands"]
    assert sent(session.typed("//x").send) == [{"type": "message", "text": "/x", "cid": "t-2"}]
    assert sent(session.typed("/msg bob hi there").send) == [
        {"type": "private", "to": "bob", "text": "hi there", "cid": "t-3"}
    ]
    assert sent(session.typed("/me waves").send) == [{"type": "me", "text": "waves", "cid": "t-4"}]


def test_session_carries_on_after_garbage() -> None:
    """A line that is not JSON is one ``(unreadable event from server)`` line, no crash."""
    session = JsonSession(OFF, "sam", tz=UTC)
    assert session.receive("{not json").show == ["(unreadable event from server)"]
    assert session.receive("[1, 2]").show == ["(unreadable event from server)"]
    assert session.receive("[" * 5000).show == ["(unreadable event from server)"]
    assert session.receive(json.dumps(MESSAGE)).show == ["05:46 [dev] alice: hi"]


# --- the client in a terminal ----------------------------------------------------------------


def test_default_nick_is_the_login_name(
    server: ServerProcess, start_client: Callable[..., Client]
) -> None:
    """Without --name the nickname is the login name, reduced to the allowed characters."""
    expected = re.sub(r"[^A-Za-z0-9_.\-]", "", getpass.getuser())[:32] or "guest"
    client = start_client(server.url)
    client.wait_until_ready(expected)


def test_taken_name_gets_a_suffix(
    server: ServerProcess, start_client: Callable[..., Client]
) -> None:
    """A second client asking for the same --name gets NAME-2, and says so."""
    start_client(server.url, "--name", "sam").wait_until_ready("sam")
    second = start_client(server.url, "--name", "sam")
    second.wait_until_ready("sam-2 (sam is taken)")


def test_join_sends_later_lines_to_the_room(
    server: ServerProcess, chatting: Client, peers: Callable[..., Peer]
) -> None:
    """A typed /join shows its ack, and a line typed afterwards goes to that room only."""
    in_dev = peers(server.url, room="dev")
    in_lobby = peers(server.url)
    chatting.child.send("/join dev\r")
    chatting.expect(shown("* You joined dev (2 here)"))
    arrival = in_dev.next_event()
    assert (arrival["type"], arrival["event"], arrival["room"]) == ("presence", "join", "dev")
    chatting.child.send("in dev\r")
    event = in_dev.next_event()
    assert (event["type"], event["room"], event["from"], event["text"]) == (
        "message",
        "dev",
        "alice",
        "in dev",
    )
    chatting.expect(shown(f"{local_time(event['ts'])} [dev] alice: in dev"))
    in_lobby.say("later")  # its own ack and message are the next things it gets


def test_private_message_reaches_only_its_recipient(
    server: ServerProcess, chatting: Client, peers: Callable[..., Peer]
) -> None:
    """A typed /msg bob reaches bob as a private event, and no one else."""
    bob = peers(server.url, nick="bob")
    carol = peers(server.url)
    chatting.child.send("/msg bob hi\r")
    event = bob.next_event()
    assert (event["type"], event["from"], event["to"], event["text"]) == (
        "private",
        "alice",
        "bob",
        "hi",
    )
    chatting.expect(shown(f"{local_time(event['ts'])} [private] alice → bob: hi"))
    carol.say("later")  # its own ack and message are the next things it gets


def test_escape_sequences_from_others_never_reach_the_terminal(
    server: ServerProcess, start_client: Callable[..., Client], peers: Callable[..., Peer]
) -> None:
    """Escape sequences in another user's message never reach the terminal (colour on):
    the server strips them (what the client escapes is tested on its view above)."""
    client = start_client(server.url, "--name", "alice", env={"NO_COLOR": None})
    client.expect(shown(f"{DIM}* You are now known as alice{RESET}"))
    peer = peers(server.url)
    peer.command("message", text="evil \x1b[2J\x1b]0;pwned\x07 end")
    event = peer.next_event()
    assert event["text"] == "evil  end"
    client.expect(shown(f"{dim(local_time(event['ts']))} [lobby] Someone: evil  end"))
    assert "\x1b[2J" not in client.output
    assert "\x1b]" not in client.output
    assert "\x07" not in client.output


def test_help_and_wrong_commands_are_answered_locally(
    server: ServerProcess, chatting: Client, peers: Callable[..., Peer]
) -> None:
    """/help and a bad command are answered with the server stopped, and nothing is sent."""
    bob = peers(server.url)
    # Stopped, the server can answer nothing: what shows meanwhile is the client's doing.
    server.proc.send_signal(signal.SIGSTOP)
    try:
        chatting.child.send("/help\r")
        chatting.expect("".join(shown(line) for line in help_block()))
        chatting.child.send("/nick\r")
        chatting.expect(shown("Error: usage: /nick NAME"))
    finally:
        server.proc.send_signal(signal.SIGCONT)
    chatting.child.send("after\r")
    event = bob.next_event()
    assert (event["type"], event["from"], event["text"]) == ("message", "alice", "after")
    chatting.expect(shown(f"{local_time(event['ts'])} [lobby] alice: after"))
    # An answer to anything sent before "after" would have been shown before it.
    assert chatting.output.count(help_block()[0]) == 1
    assert chatting.output.count("Error:") == 1


@pytest.mark.parametrize(
    ("no_color", "coloured"),
    [pytest.param(None, True, id="unset"), pytest.param("1", False, id="NO_COLOR=1")],
)
def test_nicknames_are_coloured_unless_no_color(
    server: ServerProcess,
    start_client: Callable[..., Client],
    peers: Callable[..., Peer],
    no_color: str | None,
    coloured: bool,
) -> None:
    """On a terminal nicknames are coloured; with NO_COLOR=1 there is no SGR escape at all."""
    client = start_client(server.url, "--name", "alice", env={"NO_COLOR": no_color})
    client.expect("* You are now known as alice")
    event = peers(server.url, nick="bob").say("hi")
    time = local_time(event["ts"])
    if coloured:
        client.expect(shown(f"{dim(time)} [lobby] \x1b[32mbob{RESET}: hi"))
    else:
        client.expect(shown(f"{time} [lobby] bob: hi"))
    client.child.send("exit\r")
    assert client.wait_for_exit() == 0
    assert bool(SGR.search(client.output)) is coloured


def test_room_option_joins_on_arrival(
    server: ServerProcess, start_client: Callable[..., Client], peers: Callable[..., Peer]
) -> None:
    """--room ROOM joins it after the nickname, and typed lines go there."""
    in_dev = peers(server.url, room="dev")
    client = start_client(server.url, "--name", "alice", "--room", "Dev")
    client.wait_until_ready("alice")
    client.expect(shown("* You joined dev (2 here)"))
    assert [(e["event"], e["room"]) for e in (in_dev.next_event(), in_dev.next_event())] == [
        ("join", "lobby"),
        ("join", "dev"),
    ]
    client.child.send("hi\r")
    event = in_dev.next_event()
    assert (event["room"], event["from"], event["text"]) == ("dev", "alice", "hi")
    client.expect(shown(f"{local_time(event['ts'])} [dev] alice: hi"))


def test_quit_command_leaves_with_status_0(
    server: ServerProcess, chatting: Client, peers: Callable[..., Peer]
) -> None:
    """/quit REASON tells the others and ends the client with status 0."""
    bob = peers(server.url)
    chatting.child.send("/quit gone fishing\r")
    event = bob.next_event()
    assert (event["type"], event["event"], event["reason"]) == ("presence", "quit", "gone fishing")
    chatting.expect(shown("Server closed the connection: 1000 bye") + FINISH)
    assert chatting.wait_for_exit() == 0


def test_invalid_name_option_is_refused(start_client: Callable[..., Client]) -> None:
    """A --name that is not a valid nickname is a usage error (status 2), before connecting."""
    client = start_client("ws://127.0.0.1:1", "--name", "no spaces")
    assert client.wait_for_exit() == 2
    assert "error: invalid nickname 'no spaces': use 1-32 letters" in client.output
    assert "Connecting" not in client.output


# --- other servers ----------------------------------------------------------------------------


@pytest.fixture
def tutorial_server() -> Iterator[ReadyProcess]:
    """``scripts/peer_server.py`` (the tutorial's asyncio server) in a subprocess."""
    peer = ReadyProcess(
        [sys.executable, "scripts/peer_server.py", "--host", "127.0.0.1", "--port", "0"],
        env=child_env(),
        cwd=ROOT,
        start_timeout=EVENT_TIMEOUT,
    )
    try:
        yield peer
    finally:
        peer.stop()


def test_falls_back_to_plain_mode_on_the_tutorial_server(
    tutorial_server: ReadyProcess, start_client: Callable[..., Client]
) -> None:
    """A server that does not select trio-chat.v1 gets plain text: ``You said: hi``."""
    client = start_client(tutorial_server.url)
    client.wait_until_ready()
    client.child.send("hi\r")
    client.expect(shown("You said: hi"))
    client.child.send("exit\r")
    client.expect(shown("Exiting chat...") + FINISH)
    assert client.wait_for_exit() == 0
    assert client.output.count(START_PLAIN) == 1


@contextmanager
def scripted_server(*lines: str) -> Iterator[str]:
    """A ``trio-chat.v1`` server (websockets' sync server, in a thread) that welcomes the
    client, grants the nick it asks for, then sends ``lines`` in one frame; its URL."""

    def handler(ws: ServerConnection) -> None:
        ws.send(json.dumps({"type": "welcome", "nick": None, "room": "lobby", "rooms": ["lobby"]}))
        request = json.loads(ws.recv(timeout=EVENT_TIMEOUT))
        ack = {"type": "ack", "cid": request["cid"], "command": "nick", "nick": request["nick"]}
        ws.send(json.dumps(ack))
        ws.send("\n".join(lines))
        for _ in ws:  # until the client closes
            pass

    with serve(handler, "127.0.0.1", 0, subprotocols=[PROTOCOL]) as ws_server:
        thread = threading.Thread(target=ws_server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"ws://127.0.0.1:{ws_server.socket.getsockname()[1]}"
        finally:
            ws_server.shutdown()
            thread.join(EVENT_TIMEOUT)


def test_unreadable_and_unknown_events_do_not_stop_the_chat(
    start_client: Callable[..., Client],
) -> None:
    """Malformed JSON and unknown event types are one line each, and the chat goes on."""
    message = {"type": "message", "id": 1, "room": "lobby", "from": "bob", "text": "still here"}
    with scripted_server(
        "this is not json", json.dumps({"type": "mystery"}), json.dumps(message | {"ts": TS})
    ) as url:
        client = start_client(url, "--name", "alice")
        client.wait_until_ready("alice")
        client.expect(
            shown("(unreadable event from server)")
            + shown("(unknown event: mystery)")
            + shown("11:16 [lobby] bob: still here")
        )
        client.child.send("exit\r")
        assert client.wait_for_exit() == 0
    assert "Traceback" not in client.output
