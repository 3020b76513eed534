"""Sessions: the secret in the welcome, resuming with it (URL ``session=`` and the
``resume`` command), nick holds and their expiry, takeover of a half-open connection,
``invalid_session``.

The rules are checked on :class:`Chat` directly with a fake clock (holds expire on the
chat's clock, lazily: no test waits for time to pass); what goes over the wire (the
welcome, the close of a connection taken over, the URL, resends, the log) against an
in-process server with the ``websockets`` client.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trio
import trio.testing
from chat_harness import receive_text
from inproc import LiveServer, connect_to, lose_connection, open_json, open_plain
from websockets.exceptions import InvalidStatus

from trio_chat.core.arrival import Arrival
from trio_chat.core.close import close_for
from trio_chat.core.events import Notice
from trio_chat.core.identity import Principal
from trio_chat.core.wire import JSON, PLAIN
from trio_chat.server.bus import Subscription
from trio_chat.server.chat import Chat, Member
from trio_chat.server.history import MessageLog
from trio_chat.server.replay import Replayer
from trio_chat.server.sessions import digest_of
from trio_chat.server.store import MemoryStore

from support import A_SECRET, PROTOCOL, ack, error, presence, stamped, welcome

pytest_plugins = ["inproc"]

END = "(end)"
HOLD = 120.0
START = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class Clock:
    """The chat's clock, moved by hand."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class Client:
    """One member, what it was sent (replays carried out as its writer would), and what
    was asked of its connection."""

    member: Member
    subscription: Subscription
    log: MessageLog
    closes: list[tuple[int, str, bool]] = field(default_factory=list)

    async def received(self) -> list[Any]:
        """Every event queued for this member so far: JSON decoded, plain as lines."""
        self.subscription.offer(Notice(END))
        replayer = Replayer(self.log, self.subscription.viewer, 1 << 20)
        lines: list[str] = []

        async def send(frame: list[str]) -> bool:
            lines.extend(frame)
            return True

        while True:
            batch, instruction = await self.subscription.next_batch(1 << 20)
            lines.extend(batch)
            if instruction is not None:
                await replayer.carry_out(instruction, send)
            if lines and (lines[-1] == f"🟢 Server: {END}" or lines[-1].endswith(f'"{END}"}}')):
                return [json.loads(line) if line.startswith("{") else line for line in lines[:-1]]


class Harness:
    """A chat with a fake clock, its log in memory and running, and its members."""

    def __init__(self, stack: ExitStack, log: MessageLog, **settings: Any) -> None:
        self.clock = Clock()
        self.chat = Chat(
            log, history_on_join=0, clock=self.clock, **{"nick_hold": HOLD, **settings}
        )
        self._stack = stack
        self._keys = iter(range(1, 1000))

    async def connect(
        self,
        nick: str | None = None,
        *,
        session: str | None = None,
        since: int | None = None,
        principal: Principal | None = None,
        plain: bool = False,
    ) -> tuple[Client, dict[str, Any] | None]:
        """A member arriving with ``nick`` (``session``: resuming that secret); the
        member and its welcome (None for plain members)."""
        closes: list[tuple[int, str, bool]] = []

        def overflow() -> None:
            raise AssertionError("no queue may overflow here")

        member, subscription = self.chat.arrive(
            next(self._keys),
            wire=PLAIN if plain else JSON,
            disconnect=lambda departure: closes.append(close_for(departure)),
            queue_depth=1000,
            on_overflow=overflow,
            arrival=Arrival(nick=nick, since=since, session=session),
            principal=principal,
        )
        self._stack.callback(self.chat.leave, member, subscription)
        client = Client(member, subscription, self.chat.log, closes)
        if plain:
            return client, None
        first, *rest = await client.received()
        assert first["type"] == "welcome", first
        # Whatever followed the welcome is put back for the test to read.
        for event in rest:
            subscription.offer(_Raw(event))
        return client, first

    async def say(self, client: Client, command: dict[str, Any]) -> None:
        await receive_text(self.chat, client.member, json.dumps(command))
        await trio.testing.wait_all_tasks_blocked()

    def lose(self, client: Client) -> None:
        """The client's connection is lost (its session may resume)."""
        self.chat.leave(client.member, client.subscription)


class _Raw(Notice):
    """An event already read once, offered again as it was."""

    def __init__(self, event: Any) -> None:
        super().__init__("")
        self.json_line = event if isinstance(event, str) else json.dumps(event)


@pytest.fixture
async def chat(nursery: trio.Nursery) -> AsyncIterator[Harness]:
    log = MessageLog(MemoryStore(100))
    await log.open()
    await nursery.start(log.run)
    with ExitStack() as stack:
        yield Harness(stack, log)


def nick_taken(nick: str) -> dict[str, Any]:
    return {"type": "error", "code": "nick_taken", "text": f"nick {nick} is taken"}


INVALID = {
    "type": "error",
    "code": "invalid_session",
    "text": "that session is unknown or has expired; it cannot be resumed",
}


# --- the chat's rules ------------------------------------------------------------------------


async def test_a_json_member_gets_a_secret_the_chat_keeps_only_the_digest_of(
    chat: Harness,
) -> None:
    """Each JSON member's welcome has its own 256-bit secret; the chat keeps its SHA-256
    digest, never the secret; a plain member gets no session."""
    one, first = await chat.connect("one")
    _two, second = await chat.connect("two")
    plain, _ = await chat.connect("three", plain=True)
    assert first is not None
    assert second is not None
    assert first["session"] == A_SECRET
    assert second["session"] == A_SECRET
    assert first["session"] != second["session"]
    session = one.member.session
    assert session is not None
    assert session.digest == digest_of(first["session"])
    assert first["session"] not in repr(vars(chat.chat.sessions))
    assert plain.member.session is None
    assert plain.member.known_principal is None
    assert len(chat.chat.sessions) == 2


async def test_a_lost_connection_holds_its_nick_until_the_hold_ends(chat: Harness) -> None:
    """After bob's connection is lost, nobody may take his nick for --nick-hold seconds;
    at the end of the hold (asked for lazily) it is free, and his secret opens nothing."""
    bob, welcome_event = await chat.connect("bob")
    assert welcome_event is not None
    other, _ = await chat.connect()
    await other.received()
    chat.lose(bob)
    await chat.say(other, {"type": "nick", "nick": "BOB"})
    assert await other.received() == [
        stamped_quit("bob"),
        nick_taken("BOB"),
    ]
    chat.clock.advance(HOLD - 0.001)
    await chat.say(other, {"type": "nick", "nick": "bob"})
    assert await other.received() == [nick_taken("bob")]
    chat.clock.advance(0.001)
    await chat.say(other, {"type": "nick", "nick": "bob"})
    assert await other.received() == [{"type": "ack", "command": "nick", "nick": "bob"}]
    assert chat.chat.sessions.find(welcome_event["session"]) is None
    assert chat.chat.sessions.held_count == 0


#: Every event's time: the fake clock's.
TS = "2026-01-02T03:04:05.000Z"


def stamped_quit(nick: str) -> dict[str, Any]:
    """The quit of ``nick`` whose connection was lost, as the chat words it."""
    return {**presence("quit", nick, reason=None), "ts": TS}


async def test_a_resume_within_the_hold_comes_back_as_itself(chat: Harness) -> None:
    """The secret brings back the principal, the nick (announced as a join) and the
    rooms; the welcome gives the same secret; the hold is over."""
    watcher, _ = await chat.connect("watcher")
    bob, first = await chat.connect("bob")
    assert first is not None
    await chat.say(bob, {"type": "join", "room": "dev"})
    principal = bob.member.known_principal
    chat.lose(bob)
    await watcher.received()
    chat.clock.advance(HOLD - 1)
    back, again = await chat.connect(session=first["session"])
    assert again == {**first, "rooms": ["lobby", "dev"], "room": "dev"}
    assert back.member.known_principal is principal
    assert back.member.nick == "bob"
    assert [event["event"] for event in await watcher.received()] == ["join"]
    assert chat.chat.sessions.held_count == 0
    chat.clock.advance(HOLD)  # the old hold's end changes nothing now
    other, _ = await chat.connect("bob")
    assert await other.received() == [nick_taken("bob")]


async def test_an_expired_or_unknown_secret_is_a_new_guest(chat: Harness) -> None:
    """invalid_session after the welcome, and the connection goes on as a new guest,
    with a session of its own; the URL's nick is taken if free."""
    bob, first = await chat.connect("bob")
    assert first is not None
    principal = bob.member.known_principal
    chat.lose(bob)
    chat.clock.advance(HOLD)
    late, welcome_event = await chat.connect("bob", session=first["session"])
    assert welcome_event is not None
    assert welcome_event["session"] != first["session"]
    assert welcome_event["nick"] == "bob"
    assert await late.received() == [INVALID]
    assert late.member.known_principal != principal
    _, unknown = await chat.connect(session="x" * 43)
    assert unknown is not None
    assert unknown["nick"] is None


async def test_private_messages_to_a_held_nick_wait_for_the_resume(chat: Harness) -> None:
    """A private message to a nick that is only held is stored for its session's
    principal (acked as usual) and replayed by the resume; to a free nick it is
    no_such_nick."""
    alice, _ = await chat.connect("alice")
    bob, first = await chat.connect("bob")
    assert first is not None
    await alice.received()
    chat.lose(bob)
    await chat.say(alice, {"type": "private", "to": "BOB", "text": "while away", "cid": 1})
    events = await alice.received()
    assert events[1] == {"type": "ack", "cid": 1, "command": "private", "id": 1, "to": "bob"}
    back, _ = await chat.connect(session=first["session"], since=0)
    replayed = await back.received()
    assert [event.get("text") for event in replayed] == [None, "while away"]
    assert replayed[1]["history"] is True
    await chat.say(alice, {"type": "private", "to": "carol", "text": "?", "cid": 2})
    assert await alice.received() == [
        {**presence("join", "bob", room="lobby"), "ts": TS},
        {"type": "error", "cid": 2, "code": "no_such_nick", "text": "nobody is called carol"},
    ]


async def test_a_quit_or_a_goodbye_ends_the_session(chat: Harness) -> None:
    """/quit, and a connection its client closed (1000/1001), end the session: the nick
    is free at once and the secret opens nothing; so does a kick."""
    bob, first = await chat.connect("bob")
    carol, second = await chat.connect("carol")
    dave, third = await chat.connect("dave")
    assert first
    assert second
    assert third
    await chat.say(bob, {"type": "quit"})
    chat.chat.leave(carol.member, carol.subscription, resumable=False)
    assert chat.chat.kick("dave", "spam")
    for secret in (first["session"], second["session"], third["session"]):
        assert chat.chat.sessions.find(secret) is None
    other, _ = await chat.connect("bob")
    await chat.say(other, {"type": "nick", "nick": "carol"})
    await chat.say(other, {"type": "nick", "nick": "dave"})
    assert [event["nick"] for event in await other.received() if "nick" in event] == [
        "carol",
        "dave",
    ]
    assert dave.closes == [(1008, "spam", False)]


async def test_no_hold_when_the_hold_is_zero(nursery: trio.Nursery) -> None:
    log = MessageLog(MemoryStore(100))
    await log.open()
    await nursery.start(log.run)
    with ExitStack() as stack:
        chat = Harness(stack, log, nick_hold=0)
        bob, first = await chat.connect("bob")
        assert first is not None
        chat.lose(bob)
        assert chat.chat.sessions.find(first["session"]) is None
        other, _ = await chat.connect("bob")
        assert other.member.nick == "bob"


async def test_holds_are_bounded_and_the_oldest_ends_early(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """At most max_held sessions are held: the next one ends the oldest hold (logged);
    expired holds are swept as new ones start."""
    log = MessageLog(MemoryStore(100))
    await log.open()
    await nursery.start(log.run)
    with ExitStack() as stack:
        chat = Harness(stack, log, max_held=2)
        clients = [await chat.connect(nick) for nick in ("a", "b", "c")]
        for client, _ in clients:
            chat.lose(client)
            chat.clock.advance(1)
        secrets = [welcome_event["session"] for _, welcome_event in clients if welcome_event]
        assert chat.chat.sessions.held_count == 2
        assert chat.chat.sessions.find(secrets[0]) is None
        assert chat.chat.sessions.find(secrets[1]) is not None
        assert "2 sessions held: the oldest hold (of a) ends early" in caplog.messages
        assert secrets[0] not in caplog.text
        chat.clock.advance(HOLD)
        d, _ = await chat.connect("d")
        chat.lose(d)
        assert chat.chat.sessions.held_count == 1
        assert len(chat.chat.sessions) == 1


async def test_a_resume_takes_over_a_connection_still_using_the_session(chat: Harness) -> None:
    """A second connection with the secret while the first is still open (half-open):
    the first is closed with 1008 'session resumed by another connection', the second
    keeps the nick; the others see no quit and no join."""
    watcher, _ = await chat.connect("watcher")
    bob, first = await chat.connect("bob")
    assert first is not None
    await watcher.received()
    fresh, again = await chat.connect("bob", session=first["session"])
    assert again is not None
    assert again["nick"] == "bob"
    assert bob.closes == [(1008, "session resumed by another connection", False)]
    assert bob.member.departed
    assert fresh.member.session is not None
    assert fresh.member.session.member is fresh.member
    assert await watcher.received() == []
    chat.chat.leave(bob.member, bob.subscription)  # the old connection ends: no hold
    assert chat.chat.sessions.held_count == 0
    assert chat.chat.sessions.find(first["session"]) is fresh.member.session


async def test_the_resume_command_brings_a_session_back(chat: Harness) -> None:
    """A connection that came back as a new guest resumes with the command: it becomes
    the session's principal under its nick, and its own new session ends."""
    watcher, _ = await chat.connect("watcher")
    bob, first = await chat.connect("bob")
    assert first is not None
    principal = bob.member.known_principal
    chat.lose(bob)
    await watcher.received()
    back, own = await chat.connect()
    assert own is not None
    await chat.say(back, {"type": "resume", "since": 0, "session": first["session"], "cid": 1})
    assert back.member.nick == "bob"
    assert back.member.known_principal is principal
    assert [event["type"] for event in await back.received()] == ["ack"]
    assert [(e["event"], e["nick"]) for e in await watcher.received()] == [("join", "bob")]
    assert chat.chat.sessions.find(own["session"]) is None
    await chat.say(back, {"type": "resume", "since": 0, "session": "y" * 43, "cid": 2})
    assert await back.received() == [{**INVALID, "cid": 2}]


async def test_an_accounts_device_session_resumes_only_as_that_account(chat: Harness) -> None:
    """An account's device session resumes with its secret (no login again); a connection
    admitted as another principal is refused it (invalid_session) and stays itself."""
    alice = Principal.account(1, "alice")
    device, first = await chat.connect(principal=alice)
    assert first is not None
    assert first["nick"] == "alice"
    chat.lose(device)
    mallory = Principal.account(2, "mallory")
    other, refused = await chat.connect(principal=mallory, session=first["session"])
    assert refused is not None
    assert refused["nick"] == "mallory"
    assert await other.received() == [INVALID]
    back, again = await chat.connect(session=first["session"])
    assert again is not None
    assert again["nick"] == "alice"
    assert back.member.known_principal is alice


async def test_a_plain_members_nick_is_free_when_it_leaves(chat: Harness) -> None:
    bob, _ = await chat.connect("bob", plain=True)
    chat.lose(bob)
    other, _ = await chat.connect("bob")
    assert other.member.nick == "bob"


# --- over the wire ---------------------------------------------------------------------------


async def test_takeover_over_the_wire(live_server: LiveServer) -> None:
    """The half-open connection gets close 1008 with the reason; the new one is alice."""
    async with open_json(live_server, "/?nick=alice", nick="alice") as first:
        query = f"/?nick=alice&session={first.session}"
        async with open_json(live_server, query, nick="alice", session=first.session) as second:
            close = await first.expect_close()
            assert (close.code, close.reason) == (1008, "session resumed by another connection")
            assert await second.call({"type": "who", "cid": 1}) == ack(
                "who", 1, room="lobby", members=["alice"], anonymous=0
            )


async def test_a_resend_after_a_resume_is_a_duplicate(live_server: LiveServer) -> None:
    """The resend key is the principal's: after a resume the same cid is acked with the
    first id and not delivered again."""
    async with open_json(live_server) as watcher:
        async with open_json(live_server, "/?nick=alice", nick="alice") as alice:
            await watcher.event()  # alice joined
            answer = await alice.call({"type": "message", "text": "once", "cid": "k"})
            first = answer["id"]
            await watcher.event()
            await lose_connection(alice)
            secret = alice.session
        assert stamped(await watcher.event()) == presence("quit", "alice", reason=None)
        query = f"/?session={secret}"
        async with open_json(live_server, query, nick="alice", session=secret) as alice:
            assert stamped(await watcher.event()) == presence("join", "alice", room="lobby")
            # Nothing was said after her connection ended.
            assert await alice.event() == ack("resume", since=first, recovered=True)
            assert await alice.call({"type": "message", "text": "once", "cid": "k"}) == ack(
                "message", "k", id=first, room="lobby", duplicate=True
            )
            assert (await watcher.events_until_ack("end"))[0] == []


async def test_an_invalid_session_over_the_wire(live_server: LiveServer) -> None:
    """A well-formed secret that opens nothing: welcome (a new session), then the error;
    a malformed one is refused at the handshake (400), without repeating it."""
    async with open_json(live_server, "/?session=" + "z" * 43) as client:
        assert client.session != "z" * 43
        assert await client.event() == error(
            "invalid_session", "that session is unknown or has expired; it cannot be resumed"
        )
    for value in ("not%20a%20secret", "", "a" * 129):
        with pytest.raises(InvalidStatus) as info:
            async with connect_to(f"{live_server.url}/?session={value}", [PROTOCOL]):
                pass
        assert info.value.response.status_code == 400
        assert (
            bytes(info.value.response.body or b"") == b"session must be the secret a welcome gave\n"
        )
    async with open_json(live_server) as client:
        answer = await client.call({"type": "resume", "since": 0, "session": "bad one", "cid": 1})
        assert answer == error("bad_request", "session must be the secret a welcome gave", 1)


async def test_secrets_never_reach_the_log(live_server: LiveServer, caplog: Any) -> None:
    """Neither a session secret given nor one presented (valid or not) is logged."""
    presented = "q" * 43
    async with open_json(live_server, "/?nick=alice", nick="alice") as alice:
        secret = alice.session
        await lose_connection(alice)
    async with open_json(live_server, f"/?session={secret}", nick="alice", session=secret):
        pass
    async with open_json(live_server, f"/?session={presented}"):
        pass
    assert secret is not None
    logged = "\n".join(live_server.log.messages)
    assert "connected" in logged
    assert secret not in logged
    assert presented not in logged


async def test_a_plain_client_gets_no_session(live_server: LiveServer) -> None:
    async with open_plain(live_server, "/?nick=bob") as bob:
        await bob.ask("/who", "* In lobby: bob")
    assert live_server.server.chat.sessions.held_count == 0
    assert len(live_server.server.chat.sessions) == 0


def test_welcome_helper_matches_only_secrets() -> None:
    """The tests' stand-in for 'any secret' is not equal to just anything."""
    assert welcome()["session"] == "A" * 43
    assert welcome()["session"] != "A" * 42
    assert welcome()["session"] != "not a secret, though long enough to be one!!"


async def test_a_resume_without_since_replays_what_was_said_after_it_left(
    chat: Harness,
) -> None:
    """A client that names no ``since`` (it saw no message) is replayed, on resuming, what
    was said after its connection ended: in its rooms and to it, not before."""
    alice, _ = await chat.connect("alice")
    bob, first = await chat.connect("bob")
    assert first is not None
    await chat.say(alice, {"type": "message", "text": "before"})
    chat.lose(bob)
    await chat.say(alice, {"type": "message", "text": "after"})
    await chat.say(alice, {"type": "private", "to": "bob", "text": "psst"})
    back, _ = await chat.connect(session=first["session"])
    replayed = await back.received()
    assert replayed[0] == {"type": "ack", "command": "resume", "since": 1, "recovered": True}
    assert [(event["type"], event["text"]) for event in replayed[1:]] == [
        ("message", "after"),
        ("private", "psst"),
    ]
