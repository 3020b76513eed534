"""A bot that answers ``!time`` with the current UTC time, in any room it is in.

    python docs/examples/time_bot.py [URL] [--name NICK] [--room ROOM]...

It takes the nick (``timebot`` by default), joins the rooms (it is in ``lobby`` too),
and answers each ``!time`` said in one of its rooms, in that room::

    alice: it is 2026-11-26 05:46:09 UTC

Stored messages replayed on joining (``"history": true``) are not answered: they were
asked long ago. The bot runs until the server closes the connection (it then prints how
and exits 0), or until Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
from datetime import UTC, datetime

import trio

import trio_chat

COMMAND = "!time"


def answer(asker: str | None, now: datetime) -> str:
    """The answer to ``!time`` asked by ``asker`` (None when anonymous)."""
    return f"{asker or 'Someone'}: it is {now:%Y-%m-%d %H:%M:%S} UTC"


async def run_bot(url: str, nick: str, rooms: list[str]) -> None:
    """Connect, answer every live ``!time`` until the connection ends, say how it ended."""
    async with trio_chat.connect(url, nick=nick, rooms=rooms) as chat:
        print(f"{chat.nick} is in {', '.join(chat.rooms)}", flush=True)
        async for event in chat:
            if (
                event["type"] == "message"
                and not event.get("history")
                and event.get("from") != chat.nick
                and event.get("text", "").strip() == COMMAND
            ):
                await chat.say(answer(event.get("from"), datetime.now(UTC)), room=event["room"])
        print(f"stopped: {chat.closed}", flush=True)


async def main(args: argparse.Namespace) -> None:
    """The bot, and a watcher that stops it cleanly on SIGINT or SIGTERM."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def stop_on_signal() -> None:
                async for _ in signals:
                    nursery.cancel_scope.cancel()  # leaving the block closes with 1000

            nursery.start_soon(stop_on_signal)
            await run_bot(args.url, args.name, args.room)
            nursery.cancel_scope.cancel()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", nargs="?", default="ws://localhost:8765")
    parser.add_argument("--name", default="timebot", help="the bot's nick (default: timebot)")
    parser.add_argument("--room", action="append", default=[], help="a room to join (repeat)")
    return parser.parse_args()


if __name__ == "__main__":
    try:
        trio.run(main, parse_args())
    except trio_chat.ChatError as error:  # no server, nick taken...: one line
        raise SystemExit(f"time_bot: {error}") from None
