"""The programmatic client, ``trio_chat.connect``, against an in-process server.

The server runs in the test's nursery on 127.0.0.1, port 0 (``conftest``); the other
side of the chat is a bare trio-websocket connection speaking JSON by hand (``Peer``),
so the client is not checked against itself. Every wait is bounded.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, serve_websocket

import trio_chat
from trio_chat import ChatClosed, ChatError, CommandFailed, connect
from trio_chat.core.commands import Who
from trio_chat.core.events import Welcome
from trio_chat.server.server import ChatServer

from support import A_SECRET, EVENT_TIMEOUT, LIFTED_LIMITS, PROTOCOL, open_client, stamped

Event = dict[str, Any]


def url_of(server: ChatServer) -> str:
    return f"ws://127.0.0.1:{server.port}"


class Peer:
    """The other side of the chat: JSON over a bare trio-websocket connection."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._lines: list[str] = []
        self._cids = 0

    async def event(self) -> Event:
        with trio.fail_after(EVENT_TIMEOUT):
            while not self._lines:
                message = await self.ws.get_message()
                assert isinstance(message, str)
                self._lines.extend(message.split("\n"))
        event = json.loads(self._lines.pop(0))
        assert isinstance(event, dict)
        return event

    async def command(self, kind: str, **fields: object) -> Event:
        """Send a command; its ack (the events before it are dropped)."""
        self._cids += 1
        await self.ws.send_message(json.dumps({"type": kind, **fields, "cid": self._cids}))
        while (answer := await self.event()).get("cid") != self._cids:
            pass
        assert answer["type"] == "ack", answer
        return answer


@asynccontextmanager
async def peer(server: ChatServer, nick: str, room: str | None = None) -> AsyncIterator[Peer]:
    async with open_client(url_of(server), subprotocols=[PROTOCOL]) as ws:
        other = Peer(ws)
        assert (await other.event())["type"] == "welcome"
        await other.command("nick", nick=nick)
        if room is not None:
            await other.command("join", room=room)
        yield other


async def next_of(chat: trio_chat.Connection, kind: str) -> Event:
    """The next event of type ``kind`` the connection yields (presence skipped)."""
    with trio.fail_after(EVENT_TIMEOUT):
        async for event in chat:
            if event["type"] == kind:
                return event
            assert event["type"] == "presence", event
    raise AssertionError(f"the connection closed before a {kind} event")


async def test_connect_takes_the_nick_and_joins_the_rooms(chat_server: ChatServer) -> None:
    """nick= and rooms= are taken in order: the last room is current; welcome is kept."""
    async with connect(url_of(chat_server), nick="bot", rooms=["dev", "ops"]) as chat:
        assert chat.nick == "bot"
        assert chat.rooms == ["lobby", "dev", "ops"]
        assert chat.room == "ops"
        assert chat.welcome == {
            "type": "welcome",
            "protocol": PROTOCOL,
            "server": f"trio_chat/{trio_chat.__version__}",
            "nick": None,
            "room": "lobby",
            "rooms": ["lobby"],
            "session": A_SECRET,
            "limits": LIFTED_LIMITS,  # the fixture's server: rate limits lifted
        }
        left = await chat.leave("ops")
        assert (left["room"], left["current"]) == ("ops", "dev")
        assert chat.rooms == ["lobby", "dev"]


async def test_say_returns_its_ack_and_the_message_comes_back_as_an_event(
    chat_server: ChatServer,
) -> None:
    """say() awaits the ack (id, room); the message itself is then an event; others see it."""
    async with (
        peer(chat_server, "bob") as bob,
        connect(url_of(chat_server), nick="bot") as chat,
    ):
        ack = await chat.say("hello")
        assert {key: ack[key] for key in ("type", "command", "room")} == {
            "type": "ack",
            "command": "message",
            "room": "lobby",
        }
        echo = await next_of(chat, "message")
        assert stamped(echo) == {
            "type": "message",
            "id": ack["id"],
            "room": "lobby",
            "from": "bot",
            "text": "hello",
        }
        while (seen := await bob.event())["type"] == "presence":
            pass
        assert stamped(seen) == stamped(echo)


async def test_events_from_others_are_iterated_and_send_takes_any_command(
    chat_server: ChatServer,
) -> None:
    """Another member's message, private message and topic arrive in order; send(Who())
    returns the who ack."""
    async with connect(url_of(chat_server), nick="bot") as chat, peer(chat_server, "bob") as bob:
        await bob.command("message", text="hi bot")
        await bob.command("private", to="bot", text="psst")
        message = await next_of(chat, "message")
        assert (message["from"], message["text"]) == ("bob", "hi bot")
        private = await next_of(chat, "private")
        assert (private["from"], private["to"], private["text"]) == ("bob", "bot", "psst")
        who = await chat.send(Who())
        assert (who["command"], sorted(who["members"])) == ("who", ["bob", "bot"])


async def test_an_error_answer_raises_command_failed(chat_server: ChatServer) -> None:
    """A refused command raises CommandFailed with the error's code and text; the
    connection goes on."""
    async with peer(chat_server, "bob"), connect(url_of(chat_server)) as chat:
        with pytest.raises(CommandFailed) as failed:
            await chat.set_nick("BOB")
        assert (failed.value.code, failed.value.text) == ("nick_taken", "nick BOB is taken")
        assert str(failed.value) == "nick_taken: nick BOB is taken"
        assert failed.value.event["type"] == "error"
        assert chat.nick is None
        assert (await chat.set_nick("bot"))["nick"] == "bot"


async def test_a_taken_nick_at_connect_raises_command_failed(chat_server: ChatServer) -> None:
    """connect(nick=...) with a nick someone has raises CommandFailed (no NAME-2)."""
    async with peer(chat_server, "bob"):
        with pytest.raises(CommandFailed, match="nick_taken"):
            async with connect(url_of(chat_server), nick="bob"):
                pytest.fail("connected with a taken nick")


async def test_a_server_shutdown_ends_the_iteration_and_later_commands_raise(
    start_server: Callable[..., Awaitable[ChatServer]],
) -> None:
    """Closed by the server (1001), iteration ends; closed says how; commands raise
    ChatClosed. The socket is closed (no ResourceWarning, which would fail the test)."""
    server = await start_server()
    async with connect(url_of(server), nick="bot") as chat:
        server.shutdown()
        with trio.fail_after(EVENT_TIMEOUT):
            events = [event async for event in chat]
        assert events == []
        assert isinstance(chat.closed, ChatClosed)
        assert (chat.closed.code, chat.closed.reason) == (1001, "server shutting down")
        with pytest.raises(ChatClosed, match="connection closed: 1001 server shutting down"):
            await chat.say("anyone?")


async def test_an_exception_in_the_block_comes_out_as_it_is(chat_server: ChatServer) -> None:
    """The block's own exception is not wrapped in a group, and the connection closes."""
    with pytest.raises(KeyError, match="mine"):
        async with connect(url_of(chat_server), nick="bot"):
            raise KeyError("mine")
    async with connect(url_of(chat_server), nick="bot") as chat:  # the nick is free again
        assert chat.nick == "bot"


async def test_unread_events_beyond_the_limit_fail_the_connection(
    chat_server: ChatServer,
) -> None:
    """More unread events than max_queued_events: the ones kept are yielded, then a
    ChatError says why, rather than a hang."""
    async with (
        connect(url_of(chat_server), nick="bot", max_queued_events=2) as chat,
        peer(chat_server, "bob") as bob,
    ):
        for n in range(4):
            await bob.command("message", text=f"m{n}")
        texts: list[str] = []

        async def read_all() -> None:
            async for event in chat:
                texts.append(event.get("text", event["type"]))

        with trio.fail_after(EVENT_TIMEOUT), pytest.raises(ChatError, match="more than 2 events"):
            await read_all()
        assert texts == ["presence", "m0"]


async def test_no_server_is_a_chat_error() -> None:
    """Nothing listening: ChatError, one line saying so."""
    with trio.socket.socket() as sock:
        await sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    with pytest.raises(ChatError) as failed:
        async with connect(url):
            pytest.fail("connected to nothing")
    assert str(failed.value) == (
        f"Could not connect to {url}: connection refused. Is the server running?"
    )


async def test_a_refused_handshake_is_a_chat_error(
    start_server: Callable[..., Awaitable[ChatServer]],
) -> None:
    """A 503 (server full) is a ChatError naming the status and the server's reason."""
    server = await start_server(max_connections=1)
    async with open_client(url_of(server)):
        with pytest.raises(ChatError) as failed:
            async with connect(url_of(server)):
                pytest.fail("connected to a full server")
    assert str(failed.value) == (
        f"Could not connect to {url_of(server)}: the server refused with HTTP 503 (server full)"
    )


async def test_a_server_without_the_protocol_is_a_chat_error(nursery: trio.Nursery) -> None:
    """A plain WebSocket server (no trio-chat.v1) is refused by the client, saying so."""

    async def accept(request: Any) -> None:
        ws = await request.accept()
        with trio.move_on_after(EVENT_TIMEOUT), contextlib.suppress(ConnectionClosed):
            await ws.get_message()  # until the client closes

    server = await nursery.start(serve_websocket, accept, "127.0.0.1", 0, None)
    url = f"ws://127.0.0.1:{server.port}"
    with pytest.raises(ChatError, match=f"^{url} does not speak trio-chat.v1$"):
        async with connect(url):
            pytest.fail("connected without the protocol")
    nursery.cancel_scope.cancel()


async def test_lines_that_are_not_events_are_skipped(nursery: trio.Nursery) -> None:
    """A server line that is not a JSON object, even one nested deeper than the decoder
    recurses, is skipped: the welcome after it is read, and the connection is made."""

    async def accept(request: Any) -> None:
        ws = await request.accept(subprotocol=PROTOCOL)
        welcome = Welcome("sam", "lobby", ["lobby"], session="s3cret").json
        await ws.send_message("\n".join(["not json", "[1, 2]", "[" * 5000, welcome]))
        with trio.move_on_after(EVENT_TIMEOUT), contextlib.suppress(ConnectionClosed):
            await ws.get_message()  # until the client closes

    server = await nursery.start(serve_websocket, accept, "127.0.0.1", 0, None)
    async with connect(f"ws://127.0.0.1:{server.port}") as chat:
        assert (chat.nick, chat.rooms) == ("sam", ["lobby"])
    nursery.cancel_scope.cancel()


async def test_me_topic_history_and_quit(chat_server: ChatServer) -> None:
    """The other typed commands send what they say: an action, a topic, a history page,
    and quit, after which the server closes with 1000 and the iteration ends."""
    async with connect(url_of(chat_server), nick="bot") as chat:
        said = await chat.me("waves")
        action = await next_of(chat, "message")
        assert (action["id"], action["text"], action["action"]) == (said["id"], "waves", True)
        topic = await chat.topic("release day")
        assert (topic["command"], topic["room"], topic["topic"]) == (
            "topic",
            "lobby",
            "release day",
        )
        assert (await next_of(chat, "topic"))["topic"] == "release day"
        page = await chat.history(limit=5)
        assert [message["id"] for message in page["messages"]] == [said["id"]]
        assert (await chat.quit("done"))["command"] == "quit"
        with trio.fail_after(EVENT_TIMEOUT):
            assert [event async for event in chat] == []
        assert isinstance(chat.closed, ChatClosed)
        assert chat.closed.code == 1000
