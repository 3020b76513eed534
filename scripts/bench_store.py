"""How many messages per second the history store takes, with and without grouping.

Runs the real message log (trio_chat.server.history.MessageLog) over the real SQLite store, with
CLIENTS concurrent senders each storing MESSAGES messages one after the other (each
waits for its message to be committed, as a connection's reader does). Measured twice in
the same run: writes grouped into shared commits (the server's behaviour), and one
commit per message. Prints both rates and their ratio.

    .venv/bin/python scripts/bench_store.py [--clients 100] [--messages 50]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import trio

from trio_chat.server.history import MessageLog
from trio_chat.server.store import Record, SQLiteStore


async def measure(
    path: Path, clients: int, messages: int, *, group_commits: bool
) -> tuple[float, int]:
    """Messages stored per second, and the number of commits it took."""
    store = SQLiteStore(path, history_limit=10_000)
    log = MessageLog(store, group_commits=group_commits)
    await log.open()
    delivered = 0

    def deliver(record: Record) -> None:
        nonlocal delivered
        delivered += 1

    async def sender(number: int) -> None:
        for n in range(messages):
            text = f"message {n} from sender {number}"
            await log.append(
                lambda message_id, text=text: Record(
                    message_id, "2026-01-01T00:00:00.000Z", "lobby", f"s{number}", None, text
                ),
                deliver,
            )

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


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as folder:
        grouped, grouped_commits = await measure(
            Path(folder) / "grouped.db", args.clients, args.messages, group_commits=True
        )
        single, single_commits = await measure(
            Path(folder) / "single.db", args.clients, args.messages, group_commits=False
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
