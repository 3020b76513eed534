"""The broadcast bus: where a published event fans out to its subscribers.

Each subscriber owns a bounded memory channel, drained by exactly one task (its
connection's writer). Publishing is synchronous and only ever calls ``send_nowait``: it
never awaits a socket, so one slow or stuck client delays nobody else. A subscriber whose
channel is full is *overflowed*: it is taken off the bus at once and its owner closes it
(1008 ``slow consumer``); the event is never skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import trio

from .events import Event, ReplayRequest, Viewer

__all__ = ["Bus", "Subscription"]


class Subscription:
    """One subscriber's bounded queue of events, rendered for its ``viewer``.

    The bus (and anyone answering this subscriber alone) calls :meth:`offer`; the single
    owning task calls :meth:`next_batch`. ``on_overflow`` runs once, synchronously, inside
    :meth:`offer` when the queue is full; it must not block.
    """

    def __init__(self, viewer: Viewer, depth: int, on_overflow: Callable[[], None]) -> None:
        if depth < 1:
            raise ValueError("a subscription needs room for at least one event")
        self.viewer = viewer
        self.overflowed = False
        #: room (None: private messages) -> the highest id already replayed to this
        #: subscriber; live copies at or below it are dropped, not sent twice.
        self.watermarks: dict[str | None, int] = {}
        self._on_overflow = on_overflow
        self._send, self._receive = trio.open_memory_channel[Event](depth)

    @property
    def key(self) -> int:
        return self.viewer.key

    def offer(self, event: Event) -> bool:
        """Queue ``event`` without waiting. Returns False if it did not fit (or the
        subscription is already overflowed or closed)."""
        if self.overflowed:
            return False
        try:
            self._send.send_nowait(event)
        except trio.WouldBlock:
            self.overflowed = True
            self._on_overflow()
            return False
        except trio.ClosedResourceError:
            return False
        return True

    async def next_batch(self, max_chars: int) -> tuple[list[str], ReplayRequest | None]:
        """Wait for at least one line (or a replay request), then take every event already
        queued, up to about ``max_chars`` characters, rendered for this subscriber.

        Returns the lines and, when the batch stopped at one, a :class:`ReplayRequest`
        that the caller must carry out before asking for the next batch. Events that
        render to nothing for this viewer are skipped, and so are stored messages at or
        below the :attr:`watermarks` of their room (a replay already delivered them).

        Cancel-safe: an event leaves the queue only when it is rendered into the returned
        batch. Raises ``trio.EndOfChannel`` once :meth:`close` was called and the queue
        is empty.
        """
        lines: list[str] = []
        size = 0
        watermarks = self.watermarks
        event = await self._receive.receive()
        while True:
            if isinstance(event, ReplayRequest):
                return lines, event
            position = event.log_position
            if not (watermarks and position and position[1] <= watermarks.get(position[0], 0)):
                line = event.render(self.viewer)
                if line is not None:
                    lines.append(line)
                    size += len(line) + 1
                    if size >= max_chars:
                        return lines, None
            try:
                event = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                if lines:
                    return lines, None
                event = await self._receive.receive()

    def close(self) -> None:
        """Refuse further events; the owner still drains what is queued."""
        self._send.close()


class Bus:
    """The live subscriptions, and the one loop that fans an event out to them."""

    def __init__(self) -> None:
        self._subscriptions: dict[int, Subscription] = {}

    def __len__(self) -> int:
        return len(self._subscriptions)

    @contextmanager
    def subscribe(
        self, viewer: Viewer, depth: int, on_overflow: Callable[[], None]
    ) -> Iterator[Subscription]:
        """Register a subscription for ``viewer`` for the duration of the ``with`` block.

        The subscription leaves the bus (and its channel is closed) when the block exits,
        however it exits, or earlier if it overflows or is closed.
        """
        subscription = Subscription(viewer, depth, on_overflow)
        self._subscriptions[viewer.key] = subscription
        try:
            yield subscription
        finally:
            self._subscriptions.pop(viewer.key, None)
            subscription.close()

    def publish(self, event: Event, keys: Iterable[int] | None = None) -> int:
        """Offer ``event`` to the subscribers ``keys`` (default: all), without awaiting.

        Returns how many received it. Subscribers that overflowed (or were closed) are
        removed here, so each owner is told exactly once and the bus stops paying for it.
        """
        subscriptions = self._subscriptions
        targets: Iterable[Subscription]
        if keys is None:
            targets = subscriptions.values()
        else:
            targets = [subscriptions[key] for key in keys if key in subscriptions]
        refused: list[int] = []
        delivered = 0
        for subscription in targets:
            if subscription.offer(event):
                delivered += 1
            else:
                refused.append(subscription.key)
        for key in refused:
            del subscriptions[key]
        return delivered
