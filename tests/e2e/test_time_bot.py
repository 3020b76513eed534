"""The example bot, ``docs/examples/time_bot.py``, run as a user would run it.

The bot runs as a subprocess against an in-process server (127.0.0.1, port 0); the user
asking ``!time`` is a :func:`trio_chat.connect` client in the test. Every wait is for an
event under a time limit; the answer is matched exactly, its time by pattern and range.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import trio

import trio_chat
from trio_chat.server.server import ChatServer

from support import EVENT_TIMEOUT, ROOT, child_env

BOT = ROOT / "docs" / "examples" / "time_bot.py"
ANSWER = re.compile(r"alice: it is (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC")


async def next_message(chat: trio_chat.Connection) -> trio_chat.client.api.Event:
    """The next ``message`` event (presence skipped)."""
    async for event in chat:
        if event["type"] == "message":
            return event
        assert event["type"] == "presence", event
    raise AssertionError("the connection closed before a message")


async def ask_time(chat: trio_chat.Connection, room: str) -> None:
    """Say ``!time`` in ``room``; check the bot's answer comes there, with the time now."""
    before = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    await chat.say("!time", room=room)
    asked = await next_message(chat)
    assert (asked["from"], asked["room"], asked["text"]) == ("alice", room, "!time")
    answer = await next_message(chat)
    after = datetime.now(UTC).replace(tzinfo=None)
    assert (answer["from"], answer["room"]) == ("timebot", room)
    match = ANSWER.fullmatch(answer["text"])
    assert match, answer["text"]
    assert before <= datetime.fromisoformat(match[1]) <= after


async def test_the_time_bot_answers_in_each_of_its_rooms(
    chat_server: ChatServer, tmp_path: Path
) -> None:
    """!time in lobby or dev gets ``alice: it is YYYY-MM-DD HH:MM:SS UTC`` there; a server
    shutdown ends the bot with status 0, saying why."""
    url = f"ws://127.0.0.1:{chat_server.port}"
    stdout_path, stderr_path = tmp_path / "stdout", tmp_path / "stderr"
    async with trio_chat.connect(url, nick="alice", rooms=["dev"]) as alice:
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            bot = await trio.lowlevel.open_process(
                [sys.executable, str(BOT), url, "--room", "dev"],
                stdout=stdout,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                env=child_env(),
                cwd=ROOT,
            )
        try:
            with trio.fail_after(EVENT_TIMEOUT):
                async for event in alice:  # the bot is in dev: it hears what is said there
                    if (event["type"], event.get("nick"), event.get("room")) == (
                        "presence",
                        "timebot",
                        "dev",
                    ):
                        break
                await ask_time(alice, "dev")
                await alice.say("what time is it?", room="lobby")
                unanswered = await next_message(alice)
                assert unanswered["text"] == "what time is it?"
                # Had the bot answered that, its answer would come before this !time.
                await ask_time(alice, "lobby")
                chat_server.shutdown()
                assert await bot.wait() == 0
        finally:
            if bot.returncode is None:
                bot.kill()
                with trio.CancelScope(shield=True):
                    await bot.wait()
    assert stderr_path.read_text() == ""
    assert stdout_path.read_text().splitlines() == [
        "timebot is in lobby, dev",
        "stopped: connection closed: 1001 server shutting down",
    ]
