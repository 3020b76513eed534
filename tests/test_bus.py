"""The broadcast bus: fan-out order, the overflow rule and batching, without sockets."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_chat.bus import Bus, Subscription
from trio_chat.chat import Chat
from trio_chat.protocol import ChatLine, OperatorLine


def never_overflows() -> None:
    raise AssertionError("this subscription must not overflow")


async def test_every_subscriber_gets_every_event_in_publish_order() -> None:
    """Each subscriber receives all events, in the order they were published."""
    bus = Bus()
    with (
        bus.subscribe(1, 10, never_overflows) as first,
        bus.subscribe(2, 10, never_overflows) as second,
    ):
        for text in ("a", "b", "c"):
            assert bus.publish(ChatLine.from_text(1, text)) == 2
        assert await first.next_batch(1000) == ["You said: a", "You said: b", "You said: c"]
        assert await second.next_batch(1000) == [
            "Someone says: a",
            "Someone says: b",
            "Someone says: c",
        ]


async def test_a_full_subscriber_is_overflowed_once_and_leaves_the_bus() -> None:
    """A full queue marks the subscriber overflowed, tells its owner once, and drops it
    from the bus; the other subscribers still get everything."""
    bus = Bus()
    overflows: list[int] = []
    with (
        bus.subscribe(1, 2, lambda: overflows.append(1)) as slow,
        bus.subscribe(2, 10, never_overflows) as fast,
    ):
        delivered = [bus.publish(OperatorLine.from_text(str(n))) for n in range(4)]
        assert delivered == [2, 2, 1, 1]
        assert overflows == [1]
        assert slow.overflowed
        assert len(bus) == 1
        assert await fast.next_batch(1000) == [f"🟢 Server: {n}" for n in range(4)]
        # What was queued before the overflow is still there for the owner to drain.
        assert await slow.next_batch(1000) == ["🟢 Server: 0", "🟢 Server: 1"]


async def test_publish_never_waits_for_a_subscriber() -> None:
    """Publishing to a full subscriber returns at once (no checkpoint, no blocking)."""
    bus = Bus()
    with bus.subscribe(1, 1, lambda: None), trio.testing.assert_no_checkpoints():
        for n in range(100):
            bus.publish(OperatorLine.from_text(str(n)))


async def test_next_batch_takes_everything_queued_up_to_the_size_cap() -> None:
    """Queued events come out as one batch; the batch stops growing at the size cap."""
    subscription = Subscription(1, 100, never_overflows)
    for text in ("one", "two", "three", "four"):
        subscription.offer(OperatorLine(text))
    # "one" (3) + "two" (3+1) = 7 >= 6: the batch closes after the second line.
    assert await subscription.next_batch(6) == ["one", "two"]
    assert await subscription.next_batch(1000) == ["three", "four"]


async def test_next_batch_waits_for_the_first_event() -> None:
    """An empty subscription blocks until something is offered."""
    subscription = Subscription(1, 10, never_overflows)
    async with trio.open_nursery() as nursery:
        received: list[list[str]] = []

        async def receive() -> None:
            received.append(await subscription.next_batch(1000))

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []
        subscription.offer(OperatorLine("late"))
    assert received == [["late"]]


async def test_cancelled_next_batch_loses_nothing(autojump_clock: trio.abc.Clock) -> None:
    """Cancelling a waiting next_batch leaves later events for the next call."""
    subscription = Subscription(1, 10, never_overflows)
    with trio.move_on_after(1):
        await subscription.next_batch(1000)
    subscription.offer(OperatorLine("kept"))
    assert await subscription.next_batch(1000) == ["kept"]


async def test_a_closed_subscription_ends_after_its_queue_is_drained() -> None:
    """After close(), queued events still come out, then EndOfChannel; offers are refused."""
    subscription = Subscription(1, 10, never_overflows)
    subscription.offer(OperatorLine("last"))
    subscription.close()
    assert not subscription.offer(OperatorLine("too late"))
    assert await subscription.next_batch(1000) == ["last"]
    with pytest.raises(trio.EndOfChannel):
        await subscription.next_batch(1000)


async def test_leaving_the_subscribe_block_removes_the_subscriber() -> None:
    """A subscription is on the bus only inside its ``with`` block."""
    bus = Bus()
    with bus.subscribe(1, 10, never_overflows):
        assert len(bus) == 1
    assert len(bus) == 0
    assert bus.publish(OperatorLine("nobody")) == 0


def test_zero_depth_is_refused() -> None:
    """A queue needs room for one event: depth 0 is a configuration error."""
    with pytest.raises(ValueError, match="at least one event"):
        Subscription(1, 0, never_overflows)


async def test_chat_splits_a_multi_line_frame_into_chat_lines() -> None:
    """A frame of several lines becomes that many chat lines, so that every line on the
    wire stays one attributed event."""
    chat = Chat()
    with chat.bus.subscribe(2, 10, never_overflows) as other:
        chat.receive_text(1, "first\r\nsecond\nthird")
        assert await other.next_batch(1000) == [
            "Someone says: first",
            "Someone says: second",
            "Someone says: third",
        ]
