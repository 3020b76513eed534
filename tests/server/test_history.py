"""The message log: group commit, delivery in id order after the commit, resends."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import trio
import trio.testing

from trio_chat.server.history import MessageLog, StoreFailed
from trio_chat.server.store import MemoryStore, Record, StoreError


class RecordingStore(MemoryStore):
    """A memory store that records each commit and can be told to fail or to hold."""

    def __init__(self) -> None:
        super().__init__(history_limit=1000)
        self.commits: list[list[int]] = []
        self.fail = False
        self.release: trio.Event | None = None

    async def write(self, records: Sequence[Record]) -> None:
        if self.release is not None:
            await self.release.wait()
        if self.fail:
            raise StoreError("disk full")
        self.commits.append([r.id for r in records])
        await super().write(records)


def make(dedupe: str | None = None) -> Callable[[int], Record]:
    """A record factory, as the chat hands one to the log."""
    return lambda message_id: Record(message_id, "ts", "lobby", "alice", None, "hi", False, dedupe)


async def start(nursery: trio.Nursery, store: RecordingStore) -> MessageLog:
    log = MessageLog(store)
    await log.open()
    await nursery.start(log.run)
    return log


async def append(
    log: MessageLog,
    make_record: Callable[[int], Record],
    deliver: Callable[[Record], None],
    dedupe: str | None = None,
) -> tuple[int, bool]:
    """Send one message through the log as the chat does (a resend check, then
    :meth:`MessageLog.submit`) and wait for its delivery: ``(id, duplicate)``. Raises
    :class:`StoreFailed` when its commit failed."""
    if dedupe is not None:
        found = await log.find_resend(dedupe)
        if found is not None:
            return found, True
    done = trio.Event()
    failures: list[StoreError] = []

    def delivered(record: Record) -> None:
        try:
            deliver(record)
        finally:
            done.set()

    def failed(error: StoreError) -> None:
        failures.append(error)
        done.set()

    record = log.submit(make_record, delivered, failed, dedupe)
    await done.wait()
    if failures:
        raise StoreFailed(str(failures[0]))
    return record.id, False


async def test_writes_during_a_commit_are_grouped_into_the_next(nursery: trio.Nursery) -> None:
    """Messages that arrive while a commit runs share the next commit; all are delivered
    in id order, each only after its commit."""
    store = RecordingStore()
    log = await start(nursery, store)
    delivered: list[int] = []
    store.release = trio.Event()  # hold the first commit open
    async with trio.open_nursery() as senders:
        for _ in range(5):
            senders.start_soon(append, log, make(), lambda r: delivered.append(r.id))
        await trio.testing.wait_all_tasks_blocked()
        assert delivered == []  # nothing is delivered before it is stored
        store.release.set()
    assert store.commits == [[1, 2, 3, 4, 5]]
    assert delivered == [1, 2, 3, 4, 5]
    store.release = trio.Event()
    async with trio.open_nursery() as senders:
        senders.start_soon(append, log, make(), lambda r: delivered.append(r.id))
        await trio.testing.wait_all_tasks_blocked()  # the commit of 6 is now running
        for _ in range(3):
            senders.start_soon(append, log, make(), lambda r: delivered.append(r.id))
        await trio.testing.wait_all_tasks_blocked()
        store.release.set()
    assert store.commits[1:] == [[6], [7, 8, 9]]
    assert delivered == list(range(1, 10))


async def test_a_resend_gets_the_first_id_and_is_not_delivered_again(nursery: trio.Nursery) -> None:
    """The same resend key returns the earlier id, with duplicate=True, even while the
    original is still being committed, and after a restart (from the store)."""
    store = RecordingStore()
    log = await start(nursery, store)
    delivered: list[int] = []
    store.release = trio.Event()
    results: list[tuple[int, bool]] = []

    async def send() -> None:
        results.append(
            await append(log, make("alice\nc1"), lambda r: delivered.append(r.id), "alice\nc1")
        )

    async with trio.open_nursery() as senders:
        senders.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        senders.start_soon(send)
        await trio.testing.wait_all_tasks_blocked()
        store.release.set()
    assert sorted(results) == [(1, False), (1, True)]
    assert delivered == [1]
    restarted = await start(nursery, store)
    assert await append(restarted, make("alice\nc1"), delivered.append, "alice\nc1") == (1, True)
    assert await append(restarted, make("alice\nc2"), lambda r: None, "alice\nc2") == (2, False)


async def test_a_failed_write_is_reported_and_not_delivered(nursery: trio.Nursery) -> None:
    """When the store fails, the sender hears so, nothing is delivered, the id is not
    reused, and a resend of the failed message is stored as new."""
    store = RecordingStore()
    log = await start(nursery, store)
    store.fail = True
    delivered: list[int] = []
    with pytest.raises(StoreFailed, match="disk full"):
        await append(log, make("alice\nc1"), lambda r: delivered.append(r.id), "alice\nc1")
    store.fail = False
    resent = await append(log, make("alice\nc1"), lambda r: delivered.append(r.id), "alice\nc1")
    assert resent == (2, False)
    assert delivered == [2]


async def test_a_cancelled_sender_still_gets_its_message_delivered(nursery: trio.Nursery) -> None:
    """Once handed to the log, a message is stored and delivered even if its sender's
    task is cancelled while it waits."""
    store = RecordingStore()
    log = await start(nursery, store)
    delivered: list[int] = []
    store.release = trio.Event()
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as senders:
            senders.start_soon(append, log, make(), lambda r: delivered.append(r.id))
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
    store.release.set()
    await trio.testing.wait_all_tasks_blocked()
    assert delivered == [1]


async def test_a_failing_delivery_is_logged_and_the_others_go_on(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """An exception while delivering one message is logged; the committer carries on."""
    store = RecordingStore()
    log = await start(nursery, store)
    delivered: list[int] = []

    def explode(record: Record) -> None:
        raise RuntimeError("bug in delivery")

    await append(log, make(), explode)
    assert await append(log, make(), lambda r: delivered.append(r.id)) == (2, False)
    assert delivered == [2]
    assert "delivering message 1 failed" in caplog.text
    assert "RuntimeError: bug in delivery" in caplog.text


async def test_next_id_is_the_id_the_next_message_gets(nursery: trio.Nursery) -> None:
    """next_id continues after the store's last id and moves on with every submit, before
    the commit: a replay bounded by it never includes a message submitted later."""
    store = RecordingStore()
    await store.write([make()(7)])
    log = await start(nursery, store)
    assert log.next_id == 8
    store.release = trio.Event()
    assert log.submit(make(), lambda r: None).id == 8
    assert log.next_id == 9
    store.release.set()
