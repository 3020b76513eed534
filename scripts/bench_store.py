"""How many messages per second the history store takes, with and without grouping.

CLIENTS concurrent senders each store MESSAGES messages one after the other (each waits
for its message to be committed, as a connection's reader does), on the real SQLite
store. Measured twice in the same run: through the real message log
(trio_chat.server.history.MessageLog), which groups the writes that arrive during a
commit into the next one (the server's behaviour), and with every sender writing to the
store directly, one commit per message. Prints both rates and their ratio.

    .venv/bin/python scripts/bench_store.py [--clients 100] [--messages 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import trio

from trio_chat.server.history import MessageLog
from trio_chat.server.store import Record, SQLiteStore


def make_record(number: int, n: int) -> Callable[[int], Record]:
    """Message ``n`` of sender ``number``, for the id it is given."""
    text = f"message {n} from sender {number}"
    return lambda message_id: Record(
        message_id, "2026-01-01T00:00:00.000Z", "lobby", f"s{number}", None, text
    )


async def measure_grouped(path: Path, clients: int, messages: int) -> tuple[float, int]:
    """Through the message log: messages stored per second, and the commits it took."""
    store = SQLiteStore(path, history_limit=10_000)
    log = MessageLog(store)
    await log.open()
    delivered = 0

    async def sender(number: int) -> None:
        nonlocal delivered
        for n in range(messages):
            done = trio.Event()

            def deliver(record: Record, done: trio.Event = done) -> None:
                done.set()

            log.submit(make_record(number, n), deliver)
            await done.wait()
            delivered += 1

    async with trio.open_nursery() as nursery:
        await nursery.start(log.run)
        started = time.perf_counter()
        async with trio.open_nursery() as senders:
            for number in range(clients):
                senders.start_soon(sender, number)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    await store.aclose()
    assert delivered == clients * messages
    return delivered / elapsed, log.commits


async def measure_single(path: Path, clients: int, messages: int) -> tuple[float, int]:
    """Every sender writing its messages to the store itself: one commit per message."""
    store = SQLiteStore(path, history_limit=10_000)
    next_id = await store.open() + 1
    commits = 0

    async def sender(number: int) -> None:
        nonlocal next_id, commits
        for n in range(messages):
            record = make_record(number, n)(next_id)
            next_id += 1
            await store.write([record])
            commits += 1

    started = time.perf_counter()
    async with trio.open_nursery() as senders:
        for number in range(clients):
            senders.start_soon(sender, number)
    elapsed = time.perf_counter() - started
    await store.aclose()
    assert commits == clients * messages
    return commits / elapsed, commits


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        grouped, grouped_commits = await measure_grouped(
            Path(folder) / "grouped.db", args.clients, args.messages
        )
        single, single_commits = await measure_single(
            Path(folder) / "single.db", args.clients, args.messages
        )
    total = args.clients * args.messages
    print(
        f"{total} messages from {args.clients} concurrent senders, SQLite WAL, synchronous=NORMAL"
    )
    print(f"grouped commits:  {grouped:10.0f} messages/s in {grouped_commits} commits")
    print(f"one per message:  {single:10.0f} messages/s in {single_commits} commits")
    print(f"ratio grouped / one per message: {grouped / single:.1f}x")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100, help="concurrent senders")
    parser.add_argument("--messages", type=int, default=50, help="messages per sender")
    return parser.parse_args()


if __name__ == "__main__":
    trio.run(main, parse_args())
