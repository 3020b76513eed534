"""The message log: ids, group commit, and delivery in id order.

Every room message and private message passes through :meth:`MessageLog.submit`: it
gets the next id at once, its write is grouped with every other write that arrived
during the previous commit, and it is delivered (published to the bus, ack first) only
after its commit, in id order, by the one committer task. So a message is stored
before anyone sees it or its ack, the store never caps throughput at one message per
commit, and every client sees ids in increasing order, which is what makes
``since=<id>`` resumes exact.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from .logfold import LogFold
from .store import Record, Store, StoreError

__all__ = ["MessageLog", "StoreFailed"]

logger = logging.getLogger(__name__)

#: Resend keys remembered in memory (besides the store's own index), so that a resend
#: racing the original's commit is caught too. Older keys are looked up in the store.
RECENT_DEDUPE_KEYS = 100_000


class StoreFailed(Exception):
    """The message could not be stored; it was not delivered."""


@dataclass(eq=False, slots=True)
class _Pending:
    record: Record
    deliver: Callable[[Record], None]
    fail: Callable[[StoreError], None] | None
    done: trio.Event = field(default_factory=trio.Event)
    error: StoreError | None = None


class MessageLog:
    """Assigns ids, commits writes in groups, and delivers them in id order.

    :meth:`run` is the committer task; it must be running for anything submitted to be
    stored and delivered. A commit that fails is logged in one ERROR line, folded by
    ``log_fold`` (the server's; a fold of its own when not given) with the failures like
    it: a full disk under a flood writes one line and a count, not one line per commit.
    """

    def __init__(self, store: Store, *, log_fold: LogFold | None = None) -> None:
        self.store = store
        self._log_fold = LogFold() if log_fold is None else log_fold
        self._next_id = 1
        self._pending: list[_Pending] = []
        self._wakeup = trio.Event()
        # Resend key -> the message that took it, committed or not.
        self._recent_dedupe: OrderedDict[str, _Pending] = OrderedDict()
        self.commits = 0

    @property
    def next_id(self) -> int:
        """The id the next submitted message will get: every message with a lower id
        has been submitted already (stored, being committed, or failed). A replay bound
        by it never includes a message submitted later."""
        return self._next_id

    async def open(self) -> None:
        """Open the store and continue numbering after its last id."""
        self._next_id = await self.store.open() + 1

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit and deliver pending messages until cancelled.

        A write that has started when this is cancelled still completes in its thread,
        but its messages are not delivered (their senders are being cancelled too).
        """
        task_status.started()
        while True:
            await self._wakeup.wait()
            self._wakeup = trio.Event()
            while self._pending:
                batch, self._pending = self._pending, []
                await self._commit(batch)

    async def _commit(self, batch: list[_Pending]) -> None:
        try:
            await self.store.write([item.record for item in batch])
        except StoreError as exc:
            self._log_fold.log(
                logger,
                logging.ERROR,
                f"could not store messages: {exc}",
                "could not store %d message(s): %s",
                len(batch),
                exc,
            )
            for item in batch:
                item.error = exc
                item.done.set()
                if item.record.dedupe is not None:
                    # Not stored, so a resend of it is a new message.
                    self._recent_dedupe.pop(item.record.dedupe, None)
                if item.fail is not None:
                    try:
                        item.fail(exc)
                    except Exception:
                        logger.exception(
                            "reporting the failure of message %d failed", item.record.id
                        )
            return
        self.commits += 1
        # Delivery happens here, in one synchronous pass, so ids reach every client
        # in increasing order.
        for item in batch:
            try:
                item.deliver(item.record)
            except Exception:
                # A bug while delivering one message must not stop the committer (and
                # with it every other sender): it is logged, and the rest go on.
                logger.exception("delivering message %d failed", item.record.id)
            item.done.set()

    def submit(
        self,
        make_record: Callable[[int], Record],
        deliver: Callable[[Record], None],
        fail: Callable[[StoreError], None] | None = None,
        dedupe: str | None = None,
    ) -> Record:
        """Queue a message for the next commit, without waiting; return its record.

        ``make_record`` builds the record for the id it is given (ids are taken in
        submission order and never reused). After the commit the committer calls
        ``deliver`` with the record, in id order; if the commit fails it calls ``fail``
        instead. Check :meth:`find_resend` first when the message has a resend key.
        """
        message_id = self._next_id
        self._next_id += 1
        item = _Pending(make_record(message_id), deliver, fail)
        if dedupe is not None:
            self._recent_dedupe[dedupe] = item
            if len(self._recent_dedupe) > RECENT_DEDUPE_KEYS:
                self._recent_dedupe.popitem(last=False)
        self._pending.append(item)
        self._wakeup.set()
        return item.record

    async def find_resend(self, dedupe: str) -> int | None:
        """The id of the stored message with this resend key, if any. A resend of a
        message still being committed waits for that commit (and counts as new if the
        commit failed)."""
        item = self._recent_dedupe.get(dedupe)
        if item is None:
            found = await self.store.find_dedupe(dedupe)
            # Looked up again: the same key may have been taken while the store looked.
            item = self._recent_dedupe.get(dedupe)
            if item is None:
                return found
        await item.done.wait()
        return item.record.id if item.error is None else None
