"""Messages of several lines, end to end over a live in-process server: sent by a JSON
client, read by plain and JSON clients, replayed from history, capped."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio_websocket import WebSocketConnection

from trio_chat.core.commands import PROTOCOL
from trio_chat.server.server import ChatServer

from support import EVENT_TIMEOUT, open_client, say

StartServer = Callable[..., Awaitable[ChatServer]]


async def lines(ws: WebSocketConnection, count: int) -> list[str]:
    """The next ``count`` lines, however the server batched them into frames."""
    received: list[str] = []
    with trio.fail_after(EVENT_TIMEOUT):
        while len(received) < count:
            frame = await ws.get_message()
            assert isinstance(frame, str)
            received.extend(frame.split("\n"))
    assert len(received) == count, received
    return received


async def events(ws: WebSocketConnection, count: int) -> list[dict[str, Any]]:
    """The next ``count`` JSON events, their ``ts`` dropped."""
    decoded = [json.loads(line) for line in await lines(ws, count)]
    for event in decoded:
        event.pop("ts", None)
    return decoded


async def test_a_json_message_of_several_lines_reaches_plain_and_json_clients(
    start_server: StartServer,
) -> None:
    """One message, one id, one history entry; every plain line attributed, live and
    replayed; a JSON reader gets one event with the line breaks as \\n."""
    server = await start_server(history_on_join=10)
    url = server.urls[0]
    async with open_client(url) as bob:
        await bob.send_message("/nick bob")
        assert await lines(bob, 1) == ["* You are now known as bob"]
        await say(bob, "hi")
        async with open_client(url, subprotocols=[PROTOCOL]) as alice:
            welcome, replayed = await events(alice, 2)
            assert (welcome["type"], replayed["text"], replayed["history"]) == (
                "welcome",
                "hi",
                True,
            )
            await alice.send_message(json.dumps({"type": "nick", "nick": "alice", "cid": 1}))
            assert (await events(alice, 1))[0]["command"] == "nick"
            assert await lines(bob, 1) == ["* alice joined lobby"]
            text = "one\r\ntwo\rthree"
            await alice.send_message(json.dumps({"type": "message", "text": text, "cid": 2}))
            ack, message = await events(alice, 2)
            assert ack == {"type": "ack", "cid": 2, "command": "message", "id": 2, "room": "lobby"}
            assert message == {
                "type": "message",
                "id": 2,
                "room": "lobby",
                "from": "alice",
                "text": "one\ntwo\nthree",
            }
            assert await lines(bob, 3) == [
                "alice says: one",
                "alice says: two",
                "alice says: three",
            ]
            async with open_client(url) as carol:
                assert await lines(carol, 4) == [
                    "[history] bob says: hi",
                    "[history] alice says: one",
                    "[history] alice says: two",
                    "[history] alice says: three",
                ]


async def test_over_the_line_cap_is_refused_and_a_plain_frame_stays_several_messages(
    start_server: StartServer,
) -> None:
    """Past --max-message-lines: one bad_request naming the limit, nothing stored; a
    plain frame of several lines is that many messages."""
    server = await start_server(max_message_lines=2)
    url = server.urls[0]
    async with open_client(url, subprotocols=[PROTOCOL]) as alice:
        assert [e["type"] for e in await events(alice, 1)] == ["welcome"]
        await alice.send_message(json.dumps({"type": "message", "text": "a\nb\nc", "cid": 1}))
        assert await events(alice, 1) == [
            {
                "type": "error",
                "cid": 1,
                "code": "bad_request",
                "text": "text has 3 lines; a message may have at most 2",
            }
        ]
        async with open_client(url) as bob:
            await bob.send_message("x\ny")
            assert await lines(bob, 2) == ["You said: x", "You said: y"]
            assert [(e["id"], e["text"]) for e in await events(alice, 2)] == [(1, "x"), (2, "y")]
