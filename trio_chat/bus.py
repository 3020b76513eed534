"""The broadcast bus: where a published event fans out to every subscriber.

Each subscriber owns a bounded memory channel, drained by exactly one task (the
connection's writer). Publishing is synchronous and only ever calls
``send_nowait``: it never awaits a socket, so one slow or stuck client delays
nobody else. A subscriber whose channel is full is *overflowed*: it is taken off
the bus at once and its owner closes it (1008 ``slow consumer``); the event is
never skipped silently.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import trio

from .protocol import Event

__all__ = ["Bus", "Subscription"]


class Subscription:
    """One subscriber's bounded queue of events.

    The bus (and anyone sending to this subscriber alone) calls :meth:`offer`; the
    single owning task calls :meth:`next_batch`. ``on_overflow`` runs once, synchronously,
    inside :meth:`offer` when the queue is full; it must not block.
    """

    def __init__(self, key: int, depth: int, on_overflow: Callable[[], None]) -> None:
        if depth < 1:
            raise ValueError("a subscription needs room for at least one event")
        self.key = key
        self.overflowed = False
        self._on_overflow = on_overflow
        self._send, self._receive = trio.open_memory_channel[Event](depth)

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

    async def next_batch(self, max_chars: int) -> list[str]:
        """Wait for at least one event, then take every event already queued, up to
        about ``max_chars`` characters, rendered for this subscriber.

        Cancel-safe: an event is removed from the queue only when it is returned.
        Raises ``trio.EndOfChannel`` once :meth:`close` was called and the queue is empty.
        """
        first = await self._receive.receive()
        lines = [first.render(self.key)]
        size = len(lines[0])
        while size < max_chars:
            try:
                event = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            line = event.render(self.key)
            lines.append(line)
            size += len(line) + 1
        return lines

    def close(self) -> None:
        """Refuse further events; the owner still drains what is queued."""
        self._send.close()


class Bus:
    """The set of live subscriptions, and the one loop that fans an event out to them."""

    def __init__(self) -> None:
        self._subscriptions: dict[int, Subscription] = {}

    def __len__(self) -> int:
        return len(self._subscriptions)

    @contextmanager
    def subscribe(
        self, key: int, depth: int, on_overflow: Callable[[], None]
    ) -> Iterator[Subscription]:
        """Register a subscription for the duration of the ``with`` block.

        The subscription leaves the bus (and its channel is closed) when the block
        exits, however it exits, or earlier if it overflows.
        """
        subscription = Subscription(key, depth, on_overflow)
        self._subscriptions[key] = subscription
        try:
            yield subscription
        finally:
            self._subscriptions.pop(key, None)
            subscription.close()

    def publish(self, event: Event) -> int:
        """Offer ``event`` to every subscriber, without awaiting anything.

        Returns how many subscribers received it. Overflowed subscribers are removed
        here, so each one's owner is told exactly once and the bus stops paying for it.
        """
        overflowed: list[int] = []
        delivered = 0
        for key, subscription in self._subscriptions.items():
            if subscription.offer(event):
                delivered += 1
            else:
                overflowed.append(key)
        for key in overflowed:
            del self._subscriptions[key]
        return delivered
