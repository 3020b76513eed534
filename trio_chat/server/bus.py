"""The broadcast bus: where a published event fans out to its subscribers.

Each subscriber owns a bounded in-memory channel, drained by exactly one task (its
connection's writer). Publishing is synchronous and never awaits a socket, so one slow
or stuck client delays nobody else. A subscriber whose channel is full is *overflowed*:
it is taken off the bus at once and its owner closes it (1008 ``slow consumer``); the
event is never skipped silently.

A burst is not a slow consumer. A group commit publishes every message it stored in one
synchronous pass, before any writer has had a turn: 200 members each sending 5 lines put
1,000 events in every member's channel at once. So the channel's ``depth`` is judged by
progress: past it, a subscriber is overflowed only when its writer is *stalled* (it has
been waiting for its socket to take a frame for :data:`STALL_GRACE` seconds or more: the
client is not reading); a subscriber whose socket keeps up may hold up to
:data:`BURST_FACTOR` times ``depth``, the bound on memory whatever the progress. Queued
events are shared with every other subscriber, so a deep channel costs a pointer per
event.

The channel is a specialised memory channel rather than ``trio.open_memory_channel``:
the writer always takes everything queued at once (that is the batching), so the queue
is a plain list swapped out whole, and a publish wakes the writer at most once per
batch instead of handing over every event; it also costs about 2.4 KB less per
connection than a trio memory channel pair (measured with tracemalloc).

Besides events, a queue may carry an :class:`Instruction` for its owner, in line with
them (a replay of stored messages, say): :meth:`Subscription.next_batch` stops there and
hands it over. What an instruction means is its owner's business, not the bus's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import trio

from trio_chat.core.events import Event
from trio_chat.core.wire import Viewer

__all__ = ["BURST_FACTOR", "STALL_GRACE", "Bus", "Instruction", "Subscription"]

#: How many times its depth a subscriber whose socket keeps up may have queued: room for
#: a burst that arrived before its writer's turn (200 members x 5 lines, with the default
#: depth of 256, is within it), and still a bound whatever the judgement of progress.
BURST_FACTOR = 16
#: Seconds a writer may wait for its socket to take a frame and still count as keeping up:
#: a frame of a burst takes a moment on a slow link; a client that does not read stalls
#: for good.
STALL_GRACE = 1.0


class Instruction:
    """Something queued for a subscription's owner, in line with its events, that is not
    an event: the owner carries it out before it takes the events queued after it."""

    __slots__ = ()


class Subscription:
    """One subscriber's bounded channel of events, rendered for its ``viewer``.

    The bus (and anyone answering this subscriber alone) calls :meth:`offer`; the single
    owning task calls :meth:`next_batch`. ``on_overflow`` runs once, synchronously, inside
    :meth:`offer` when the channel is full; it must not block. The channel is full at
    ``depth`` events while the owner is stalled (:attr:`stalled_since`, set by the owner
    while it waits for its socket, at least :data:`STALL_GRACE` seconds ago), and at
    :data:`BURST_FACTOR` times ``depth`` whatever its progress.
    """

    __slots__ = (
        "_closed",
        "_depth",
        "_on_overflow",
        "_queue",
        "_waiter",
        "overflowed",
        "stalled_since",
        "viewer",
    )

    def __init__(self, viewer: Viewer, depth: int, on_overflow: Callable[[], None]) -> None:
        if depth < 1:
            raise ValueError("a subscription needs room for at least one event")
        self.viewer = viewer
        self.overflowed = False
        self._on_overflow = on_overflow
        self._depth = depth
        self._queue: list[Event | Instruction] = []
        # The owning task while it waits for the first event of a batch.
        self._waiter: trio.lowlevel.Task | None = None
        self._closed = False
        #: When the owner began waiting for its socket to take a frame (trio time); None
        #: while it is not waiting. The owner sets and clears it.
        self.stalled_since: float | None = None

    @property
    def key(self) -> int:
        return self.viewer.key

    @property
    def queued(self) -> int:
        """Events (and instructions) waiting for the owner."""
        return len(self._queue)

    def _full(self) -> bool:
        """Past ``depth``: whether the owner falls behind (see the class docstring)."""
        queued = len(self._queue)
        if queued >= self._depth * BURST_FACTOR:
            return True
        stalled_since = self.stalled_since
        return stalled_since is not None and trio.current_time() - stalled_since >= STALL_GRACE

    def offer(self, event: Event | Instruction) -> bool:
        """Queue ``event`` (or an instruction) without waiting. Returns False if it did
        not fit (or the subscription is already overflowed or closed)."""
        if self.overflowed or self._closed:
            return False
        queue = self._queue
        if len(queue) >= self._depth and self._full():
            self.overflowed = True
            self._on_overflow()
            return False
        queue.append(event)
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)
        return True

    async def next_batch(
        self, max_chars: int, skip: Callable[[Event], bool] | None = None
    ) -> tuple[list[str], Instruction | None]:
        """Wait for at least one line (or an instruction), then take every event already
        queued, up to about ``max_chars`` characters, rendered for this subscriber in
        its viewer's wire format.

        Returns the lines and, when the batch stopped at one, the :class:`Instruction`
        that the caller must carry out before asking for the next batch. Events that
        render to nothing for this viewer are left out, and so are those for which
        ``skip`` (when given) returns True.

        One checkpoint per call. Cancel-safe: events leave the channel only after the
        wait, all at once. Raises ``trio.EndOfChannel`` once :meth:`close` was called and
        the channel is empty.
        """
        while True:
            if self._queue:
                await trio.lowlevel.checkpoint()
            elif self._closed:
                await trio.lowlevel.checkpoint()
                raise trio.EndOfChannel
            else:
                self._waiter = trio.lowlevel.current_task()
                await trio.lowlevel.wait_task_rescheduled(self._abort_wait)
                if not self._queue:  # woken by close()
                    continue
            events, self._queue = self._queue, []
            # Made after the wait, not before: an idle subscriber's waiting frame would
            # keep an empty list and a bound method (120 bytes per connection) for
            # nothing. Every pass starts empty: one that gathers lines returns them.
            lines: list[str] = []
            size = 0
            viewer = self.viewer
            render = viewer.wire.render
            for index, event in enumerate(events):
                if isinstance(event, Instruction):
                    self._queue[:0] = events[index + 1 :]
                    return lines, event
                if skip is not None and skip(event):
                    continue
                line = render(event, viewer)
                if line is None:
                    continue
                lines.append(line)
                size += len(line) + 1
                if size >= max_chars:
                    self._queue[:0] = events[index + 1 :]
                    return lines, None
            if lines:
                return lines, None

    def _abort_wait(self, raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        # Forget the waiter now, in the same step as the cancellation: an offer() made
        # before the cancelled task runs again must not reschedule it a second time.
        self._waiter = None
        return trio.lowlevel.Abort.SUCCEEDED

    def close(self) -> None:
        """Refuse further events; the owner still drains what is queued."""
        self._closed = True
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            trio.lowlevel.reschedule(waiter)


class Bus:
    """The live subscriptions, and the one loop that fans an event out to them."""

    def __init__(self) -> None:
        self._subscriptions: dict[int, Subscription] = {}

    def __len__(self) -> int:
        return len(self._subscriptions)

    def add(self, viewer: Viewer, depth: int, on_overflow: Callable[[], None]) -> Subscription:
        """Register a new subscription for ``viewer``; :meth:`remove` it when done."""
        subscription = Subscription(viewer, depth, on_overflow)
        self._subscriptions[viewer.key] = subscription
        return subscription

    def remove(self, subscription: Subscription) -> None:
        """Take ``subscription`` off the bus (if still on it) and close it. Idempotent."""
        if self._subscriptions.get(subscription.key) is subscription:
            del self._subscriptions[subscription.key]
        subscription.close()

    @contextmanager
    def subscribe(
        self, viewer: Viewer, depth: int, on_overflow: Callable[[], None]
    ) -> Iterator[Subscription]:
        """:meth:`add` for the duration of a ``with`` block, then :meth:`remove`."""
        subscription = self.add(viewer, depth, on_overflow)
        try:
            yield subscription
        finally:
            self.remove(subscription)

    def instruct(self, key: int, instruction: Instruction) -> bool:
        """Queue ``instruction`` for subscriber ``key``'s owner, in line with its events.
        False when there is no such subscriber or its queue is full (it overflowed, and
        is removed, as in :meth:`publish`)."""
        subscription = self._subscriptions.get(key)
        if subscription is None:
            return False
        if subscription.offer(instruction):
            return True
        del self._subscriptions[key]
        return False

    def publish(self, event: Event, keys: Iterable[int] | None = None) -> int:
        """Offer ``event`` to the subscribers ``keys`` (default: all), without awaiting.

        Returns how many received it. Subscribers that overflowed (or were closed) are
        removed here, so each owner is told exactly once and the bus stops paying for it.
        """
        subscriptions = self._subscriptions
        targets: Iterable[Subscription | None]
        # One dict lookup per recipient and no intermediate list: this is the loop
        # every message pays once per member of its room.
        targets = subscriptions.values() if keys is None else map(subscriptions.get, keys)
        refused: list[int] = []
        delivered = 0
        for subscription in targets:
            if subscription is None:  # a member whose connection is just leaving
                continue
            if subscription.offer(event):
                delivered += 1
            else:
                refused.append(subscription.key)
        for key in refused:
            del subscriptions[key]
        return delivered
