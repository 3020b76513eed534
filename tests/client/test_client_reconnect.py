"""The client coming back after a lost connection: backoff, resume, resends, queued lines.

The session logic (:class:`JsonSession`, :class:`Backoff`, :func:`should_reconnect`) is
pure and tested directly. The rest runs the client in a pseudo-terminal against real
server subprocesses that are stopped (SIGTERM), killed (SIGKILL) and restarted on the
same port and database, with the ``websockets`` sync client on the other side. The
client's backoff is shortened with ``--reconnect-delay`` so no test sits
through long waits; every wait is for output or an event under a time limit.
"""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from pty_support import EXIT_WITHIN, FINISH, Client, Peer, local_time, shown

from trio_chat.client.cli import parse_args
from trio_chat.client.connection import QUEUED, Backoff
from trio_chat.client.session import JsonSession
from trio_chat.client.view import Style
from trio_chat.core.close import should_reconnect

from support import EVENT_TIMEOUT, ServerProcess

pytest_plugins = ["pty_support"]

#: A short backoff (50 ms doubling up to 200 ms), so that reconnecting takes no time.
FAST = ("--reconnect-delay", "0.05,0.2")
#: The line before each wait, whatever the delay.
RECONNECTING = re.compile(r"reconnecting in \d+\.\d s…")
RECONNECTED = shown("\N{WHITE HEAVY CHECK MARK} Reconnected to server!")
OFF = Style(colour=False)


def port_of(server: ServerProcess) -> int:
    return server.port


def expect_reconnecting(client: Client) -> None:
    """Wait for a ``reconnecting in X s…`` line."""
    client.child.expect(RECONNECTING)


@contextmanager
def stopped(client: Client) -> Iterator[None]:
    """The client process stopped (SIGSTOP) for the block: it cannot reconnect meanwhile."""
    os.kill(client.child.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(client.child.pid, signal.SIGCONT)


def next_event(peer: Peer) -> dict[str, Any]:
    """The next event ``peer`` gets that is not presence (others come and go here)."""
    while True:
        event = peer.next_event()
        if event["type"] != "presence":
            return event


def next_message(peer: Peer) -> dict[str, Any]:
    """The next ``message`` event ``peer`` gets, skipping presence."""
    event = next_event(peer)
    assert event["type"] == "message", event
    return event


def say(peer: Peer, text: str) -> dict[str, Any]:
    """Say ``text`` as ``peer``; the message event it comes back as (after its ack)."""
    cid = peer.send("message", text=text)
    reply = next_event(peer)
    assert (reply["type"], reply["cid"]) == ("ack", cid), reply
    event = next_message(peer)
    assert event["text"] == text, event
    return event


# --- the pure parts ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "again"),
    [
        (None, None, True),
        (1006, None, True),
        (1001, "server shutting down", True),
        (1011, "internal error", True),
        (1012, None, True),
        (1013, None, True),
        (1008, "slow consumer", True),
        (1008, "spam", False),
        (1000, "bye", False),
        (1002, None, False),
        (1003, None, False),
        (1007, None, False),
        (1009, None, False),
        (1010, None, False),
    ],
)
def test_which_closes_are_worth_reconnecting(code: int | None, reason: str | None, again: bool):
    """Lost, 1001, 1011-1013 and 1008 slow consumer reconnect; kicks, 1000, errors do not."""
    assert should_reconnect(code, reason) is again


def test_backoff_doubles_to_its_cap_with_jitter_and_resets() -> None:
    """Delays double from 0.5 s to 10 s, each drawn from half to all of it; reset restarts."""
    draws: list[tuple[float, float]] = []

    def low(a: float, b: float) -> float:
        draws.append((a, b))
        return a

    backoff = Backoff(uniform=low)
    delays = [backoff.next_delay() for _ in range(8)]
    assert draws == [(n / 2, n) for n in (0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0)]
    assert delays == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next_delay() == 0.25
    assert Backoff(0.05, 0.2, uniform=low).next_delay() == 0.05
    assert Backoff(uniform=lambda a, b: b).next_delay() == 0.5


@pytest.mark.parametrize(
    ("argv", "initial", "cap"),
    [
        ((), 0.5, 10.0),
        (("--reconnect-delay", "0.05,0.2"), 0.05, 0.2),
        (("--reconnect-delay", "2"), 2.0, 10.0),
        (("--reconnect-delay", "30"), 30.0, 30.0),
    ],
)
def test_reconnect_delay_option_sets_the_backoff(
    argv: tuple[str, ...], initial: float, cap: float
) -> None:
    """--reconnect-delay INITIAL[,MAX] is the backoff; without it, 0.5 s up to 10 s."""
    backoff = parse_args(argv).reconnect_delay
    assert (backoff.initial, backoff.cap) == (initial, cap)


@pytest.mark.parametrize("value", ["nonsense", "0", "-1", "1,2,3", "4000", "1,"])
def test_a_bad_reconnect_delay_is_one_line(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A --reconnect-delay that is not one or two positive numbers is refused, saying why."""
    with pytest.raises(SystemExit) as exited:
        parse_args(["--reconnect-delay", value])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        "trio-chat: error: argument --reconnect-delay: expected "
        f"INITIAL[,MAX] seconds, each above 0 and at most 3600, not {value!r}; see --help\n"
    )


def welcome(nick: str | None, rooms: list[str]) -> str:
    return json.dumps({"type": "welcome", "nick": nick, "room": rooms[-1], "rooms": rooms})


def ack(cid: str, **fields: object) -> str:
    return json.dumps({"type": "ack", "cid": cid, **fields})


def message(ident: int, text: str, room: str = "lobby", **fields: object) -> str:
    event = {"type": "message", "id": ident, "room": room, "from": "bob", "text": text}
    return json.dumps(event | {"ts": "2026-11-26T05:46:09.123Z"} | fields)


def started_session(prefix: str = "t") -> JsonSession:
    """A session as ``sam`` in lobby then dev (current), ready."""
    session = JsonSession(OFF, "sam", room="dev", cid_prefix=prefix)
    session.receive(welcome(None, ["lobby"]))
    session.receive(ack(f"{prefix}-1", command="nick", nick="sam"))
    join = ack(f"{prefix}-2", command="join", room="dev", topic=None, members=[], anonymous=0)
    session.receive(join)
    assert session.ready
    return session


def test_unanswered_messages_are_resent_with_their_cid_after_a_reconnect() -> None:
    """After a reconnect the unanswered messages go again, same cid, in order; answered don't."""
    session = started_session()
    (first,) = session.typed("one").send
    (second,) = session.typed("/msg bob two").send
    (third,) = session.typed("/me three").send
    session.typed("/who")
    session.receive(ack("t-4", command="private", id=11, to="bob"))
    session.reconnecting()
    assert not session.ready
    assert session.resume_resource("/chat?x=1&nick=old") == (
        "/chat?x=1&nick=sam&room=lobby&room=dev"
    )
    output = session.receive(welcome("sam", ["lobby", "dev"]))
    assert session.ready
    resent = [json.loads(line) for line in output.send]
    assert resent == [
        {"type": "message", "text": "one", "room": "dev", "cid": "t-3"},
        {"type": "me", "text": "three", "room": "dev", "cid": "t-5"},
    ]
    assert [json.loads(line)["cid"] for line in (first, second, third)] == ["t-3", "t-4", "t-5"]
    duplicate = session.receive(ack("t-3", command="message", id=10, room="dev", duplicate=True))
    assert duplicate.show == []
    session.receive(ack("t-5", command="me", id=12, room="dev"))
    session.reconnecting()
    assert session.receive(welcome("sam", ["lobby", "dev"])).send == []


def test_cids_differ_between_sessions() -> None:
    """Two sessions (two runs of the client) never use the same cid for a message."""
    cids = []
    for _ in range(2):
        session = JsonSession(OFF, "sam")
        session.receive(welcome(None, ["lobby"]))
        cids.append(json.loads(session.typed("hi").send[0])["cid"])
    assert cids[0] != cids[1]


def test_resume_goes_after_the_last_id_and_drops_what_was_seen() -> None:
    """since= is the highest id seen; a replayed message seen already is not shown again."""
    session = started_session()
    assert session.receive(message(7, "first")).show == ["05:46 [lobby] bob: first"]
    assert session.receive(message(9, "in dev", room="dev")).show == ["05:46 [dev] bob: in dev"]
    session.reconnecting()
    assert session.resume_resource("/") == "/?nick=sam&room=lobby&room=dev&since=9"
    session.receive(welcome("sam", ["lobby", "dev"]))
    assert session.receive(message(7, "first", history=True)).show == []
    assert session.receive(message(10, "missed", history=True)).show == [
        "[history] 05:46 [lobby] bob: missed"
    ]
    # History on joining a room goes back before the ids seen elsewhere: it is shown.
    join = ack("t-3", command="join", room="new", topic=None, members=[], anonymous=0)
    session.typed("/join new")
    session.receive(join)
    assert session.receive(message(4, "old", room="new", history=True)).show == [
        "[history] 05:46 [new] bob: old"
    ]


def test_a_nick_still_taken_on_resume_falls_back_to_the_next() -> None:
    """A welcome without our nick (still taken) makes the session take NAME-2, and say so."""
    session = started_session()
    session.typed("unanswered")
    session.reconnecting()
    output = session.receive(welcome(None, ["lobby", "dev"]))
    (request,) = [json.loads(line) for line in output.send]
    assert (request["type"], request["nick"]) == ("nick", "sam-2")
    assert not session.ready
    output = session.receive(ack(request["cid"], command="nick", nick="sam-2"))
    assert output.show == ["* You are now known as sam-2 (sam is taken)"]
    assert [json.loads(line)["text"] for line in output.send] == ["unanswered"]
    assert session.ready
    session.reconnecting()
    assert session.resume_resource("/").startswith("/?nick=sam-2&")


# --- the client in a terminal, across server restarts -------------------------------------------


def test_server_restart_resumes_shows_missed_and_sends_queued_line(
    server_process: type[ServerProcess],
    start_client: Callable[..., Client],
    peers: Callable[..., Peer],
    tmp_path: Path,
) -> None:
    """Across a restart the client shows what it missed once, marked, then sends the queued line."""
    db = str(tmp_path / "h.db")
    first = server_process(db=db)
    bob = peers(first.url, nick="bob")
    client = start_client(first.url, "--name", "alice", *FAST)
    client.wait_until_ready("alice")
    before = say(bob, "before")
    client.expect(shown(f"{local_time(before['ts'])} [lobby] bob: before"))
    first.proc.send_signal(signal.SIGTERM)
    client.expect(shown("Server closed the connection: 1001 server shutting down"))
    expect_reconnecting(client)
    assert first.wait() == 0
    client.child.send("typed while down\r")
    client.expect(shown(QUEUED))
    with stopped(client):  # it cannot come back before these are said
        second = server_process(db=db, port=port_of(first))
        # Another nick: this peer's cids (1, 2...) are bob's old ones, which the server
        # would take for resends.
        carol = peers(second.url, nick="carol")
        missed = [say(carol, f"missed {n}") for n in (1, 2)]
    client.expect(RECONNECTED)
    for event in missed:
        client.expect(shown(f"[history] {local_time(event['ts'])} [lobby] carol: {event['text']}"))
    typed = next_message(carol)
    assert (typed["from"], typed["text"]) == ("alice", "typed while down")
    client.expect(shown(f"{local_time(typed['ts'])} [lobby] alice: typed while down"))
    live = say(carol, "live again")
    client.expect(shown(f"{local_time(live['ts'])} [lobby] carol: live again"))
    for line in ("bob: before", "carol: missed 1", "carol: missed 2", "carol: live again"):
        assert client.output.count(f"{line}\r\n") == 1, line
    assert client.output.count("alice: typed while down\r\n") == 1
    assert "Traceback" not in client.output


def test_every_acknowledged_message_is_shown_once_after_kill_9(
    server_process: type[ServerProcess],
    start_client: Callable[..., Client],
    peers: Callable[..., Peer],
    tmp_path: Path,
) -> None:
    """Killed mid-stream and restarted, the server still gets every acked message shown once."""
    db = str(tmp_path / "h.db")
    first = server_process(db=db)
    client = start_client(first.url, "--name", "alice", *FAST)
    client.wait_until_ready("alice")
    bob = peers(first.url, nick="bob")
    texts = [f"n{n:05d} " + "x" * 4000 for n in range(1, 100_000)]
    acked: list[str] = []
    behind = threading.Event()

    def send_numbered() -> None:
        for text in texts:
            try:
                say(bob, text)
            except Exception:  # the server is gone: stop there
                return
            acked.append(text)
            if len(acked) == 150:  # fewer than the queue depth (256): not a slow consumer
                behind.set()

    sender = threading.Thread(target=send_numbered)
    sender.start()
    try:
        client.expect(f"bob: {texts[9]}\r\n")
        # From here nobody reads the client's terminal: it falls behind, and part of the
        # stream is still in the server's queue when the server dies.
        assert behind.wait(EVENT_TIMEOUT)
        first.proc.send_signal(signal.SIGKILL)
    finally:
        sender.join()
    assert first.wait() == -signal.SIGKILL
    client.expect(shown("Connection lost: 1006 (abnormal closure)"))
    second = server_process(db=db, port=port_of(first))
    client.expect(RECONNECTED)
    say(peers(second.url, nick="carol"), "after restart")
    client.expect("carol: after restart\r\n")
    positions = [client.output.find(f"bob: {text}\r\n") for text in acked]
    assert all(position >= 0 for position in positions)
    assert positions == sorted(positions)
    assert all(client.output.count(f"bob: {text}\r\n") == 1 for text in acked)


def test_slow_consumer_comes_back_and_misses_nothing(
    server_process: type[ServerProcess],
    start_client: Callable[..., Client],
    peers: Callable[..., Peer],
) -> None:
    """Dropped as a slow consumer (its terminal stopped reading), it comes back with everything."""
    server = server_process("--queue-depth", "4")
    client = start_client(server.url, "--name", "alice", *FAST)
    client.wait_until_ready("alice")
    bob = peers(server.url, nick="bob")
    texts = [f"burst {n:03d} " + "x" * 2000 for n in range(300)]
    # Nobody reads the client's terminal now: its output blocks, then its socket fills.
    for text in texts:
        say(bob, text)
    server.wait_for("closing it as a slow consumer")
    for text in texts:
        client.expect(f"bob: {text}\r\n")
    assert all(client.output.count(f"bob: {text}\r\n") == 1 for text in texts)
    assert RECONNECTED in client.output


def test_kick_ends_the_client_without_reconnecting(
    server_process: type[ServerProcess], start_client: Callable[..., Client]
) -> None:
    """Kicked, the client prints the reason and exits 1; it does not come back."""
    server = server_process()
    client = start_client(server.url, "--name", "alice", *FAST)
    client.wait_until_ready("alice")
    server.send_console("/kick alice spam")
    client.expect(shown("Server closed the connection: 1008 spam") + FINISH)
    assert client.wait_for_exit() == 1
    assert "reconnecting" not in client.output


def test_exit_while_waiting_to_reconnect_is_immediate(
    server_process: type[ServerProcess], start_client: Callable[..., Client]
) -> None:
    """exit typed while the server is down ends the client at once with status 0."""
    server = server_process()
    client = start_client(server.url, "--name", "alice", "--reconnect-delay", "30")
    client.wait_until_ready("alice")
    server.proc.send_signal(signal.SIGTERM)
    client.expect(shown("Server closed the connection: 1001 server shutting down"))
    expect_reconnecting(client)
    pressed = time.monotonic()
    client.child.send("exit\r")
    client.expect(shown("Exiting chat...") + FINISH, timeout=EXIT_WITHIN)
    assert client.wait_for_exit(timeout=pressed + EXIT_WITHIN - time.monotonic()) == 0


def test_plain_mode_reconnects_and_sends_the_queued_line(
    server_process: type[ServerProcess], start_client: Callable[..., Client]
) -> None:
    """With --plain the client comes back too, and sends the line typed while down."""
    first = server_process()
    client = start_client(first.url, "--plain", *FAST)
    client.wait_until_ready()
    first.proc.send_signal(signal.SIGTERM)
    client.expect(shown("Server closed the connection: 1001 server shutting down"))
    expect_reconnecting(client)
    assert first.wait() == 0
    client.child.send("typed while down\r")
    client.expect(shown(QUEUED))
    server_process(port=port_of(first))
    client.expect(RECONNECTED)
    client.expect(shown("You said: typed while down"))
    assert client.output.count("You said: typed while down") == 1


def test_a_server_that_stops_answering_pings_is_left_and_the_session_resumed(
    server_process: type[ServerProcess],
    start_client: Callable[..., Client],
    peers: Callable[..., Peer],
) -> None:
    """The server freezes (SIGSTOP: its sockets stay open, nothing answers): the client's
    ping goes unanswered, it says the connection is lost, and once the server runs again
    it is back as the same participant (its nick held for it, not ``alice-2``)."""
    server = server_process()
    client = start_client(
        server.url, "--name", "alice", *FAST, "--ping-interval", "0.2", "--ping-timeout", "0.2"
    )
    client.wait_until_ready("alice")
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        client.expect(shown("Connection lost: no answer to a ping within 0.2 s"))
        expect_reconnecting(client)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    client.expect(RECONNECTED)
    bob = peers(server.url, nick="bob")
    event = say(bob, "welcome back")
    client.expect(shown(f"{local_time(event['ts'])} [lobby] bob: welcome back"))
    assert "alice-2" not in client.output
    assert "Traceback" not in client.output
