"""The broadcast bus: fan-out order, the overflow rule and batching, without sockets."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trio_chat.core.events import Event, Message, Notice, Welcome
from trio_chat.server.bus import BURST_FACTOR, STALL_GRACE, Bus, Instruction, Subscription
from trio_chat.server.store import Record

from support import FakeViewer


def line(sender: int, text: str, room: str = "lobby", message_id: int = 1) -> Message:
    """An anonymous chat line from connection ``sender``."""
    record = Record(message_id, "2026-01-01T00:00:00.000Z", room, None, None, text)
    return Message(record, sender)


async def lines_of(subscription: Subscription, max_chars: int) -> list[str]:
    """The next batch's lines (no replay request may interrupt it)."""
    lines, replay = await subscription.next_batch(max_chars)
    assert replay is None
    return lines


def never_overflows() -> None:
    raise AssertionError("this subscription must not overflow")


async def test_every_subscriber_gets_every_event_in_publish_order() -> None:
    """Each subscriber receives all events, in the order they were published."""
    bus = Bus()
    with (
        bus.subscribe(FakeViewer(1), 10, never_overflows) as first,
        bus.subscribe(FakeViewer(2), 10, never_overflows) as second,
    ):
        for text in ("a", "b", "c"):
            assert bus.publish(line(1, text)) == 2
        assert await lines_of(first, 1000) == ["You said: a", "You said: b", "You said: c"]
        assert await lines_of(second, 1000) == [
            "Someone says: a",
            "Someone says: b",
            "Someone says: c",
        ]


def stall(subscription: Subscription) -> None:
    """The owner has been waiting for its socket for the whole grace: it is behind."""
    subscription.stalled_since = trio.current_time() - STALL_GRACE


async def test_a_full_subscriber_is_overflowed_once_and_leaves_the_bus() -> None:
    """A full queue (its owner stalled) marks the subscriber overflowed, tells its owner
    once, and drops it from the bus; the other subscribers still get everything."""
    bus = Bus()
    overflows: list[int] = []
    with (
        bus.subscribe(FakeViewer(1), 2, lambda: overflows.append(1)) as slow,
        bus.subscribe(FakeViewer(2), 10, never_overflows) as fast,
    ):
        stall(slow)
        delivered = [bus.publish(Notice(str(n))) for n in range(4)]
        assert delivered == [2, 2, 1, 1]
        assert overflows == [1]
        assert slow.overflowed
        assert len(bus) == 1
        assert await lines_of(fast, 1000) == [f"🟢 Server: {n}" for n in range(4)]
        # What was queued before the overflow is still there for the owner to drain.
        assert await lines_of(slow, 1000) == ["🟢 Server: 0", "🟢 Server: 1"]


async def test_a_burst_past_the_depth_is_kept_while_the_owner_keeps_up() -> None:
    """An owner that is not waiting for its socket (its writer just has not had its turn)
    may have up to BURST_FACTOR times the depth queued: a burst is not a slow consumer.
    One more overflows it whatever its progress: memory stays bounded."""
    bus = Bus()
    overflows: list[int] = []
    with bus.subscribe(FakeViewer(1), 4, lambda: overflows.append(1)) as reader:
        burst = 4 * BURST_FACTOR
        assert [bus.publish(Notice(str(n))) for n in range(burst)] == [1] * burst
        assert overflows == []
        assert reader.queued == burst
        assert bus.publish(Notice("one too many")) == 0
        assert overflows == [1]
        assert await lines_of(reader, 100_000) == [f"🟢 Server: {n}" for n in range(burst)]


async def test_a_stalled_owner_overflows_at_the_depth_once_the_grace_is_over(
    mock_clock: trio.testing.MockClock,
) -> None:
    """An owner waiting for its socket keeps its events past the depth for STALL_GRACE
    seconds (a frame takes a moment on a slow link); stalled longer, the next event past
    the depth overflows it."""
    bus = Bus()
    overflows: list[int] = []
    with bus.subscribe(FakeViewer(1), 2, lambda: overflows.append(1)) as slow:
        slow.stalled_since = trio.current_time()
        assert [bus.publish(Notice(str(n))) for n in range(5)] == [1] * 5
        mock_clock.jump(STALL_GRACE / 2)
        assert bus.publish(Notice("still within the grace")) == 1
        mock_clock.jump(STALL_GRACE / 2)
        assert bus.publish(Notice("behind")) == 0
        assert overflows == [1]


async def test_publish_never_waits_for_a_subscriber() -> None:
    """Publishing to a full subscriber returns at once (no checkpoint, no blocking)."""
    bus = Bus()
    with bus.subscribe(FakeViewer(1), 1, lambda: None), trio.testing.assert_no_checkpoints():
        for n in range(100):
            bus.publish(Notice(str(n)))


async def test_next_batch_takes_everything_queued_up_to_the_size_cap() -> None:
    """Queued events come out as one batch; the batch stops growing at the size cap."""
    subscription = Subscription(FakeViewer(1), 100, never_overflows)
    for text in ("one", "two", "three", "four"):
        subscription.offer(line(1, text))
    # "You said: one" (13) + "You said: two" (13+1) = 27 >= 20: the batch closes there.
    assert await lines_of(subscription, 20) == ["You said: one", "You said: two"]
    assert await lines_of(subscription, 1000) == ["You said: three", "You said: four"]


async def test_next_batch_waits_for_the_first_event() -> None:
    """An empty subscription blocks until something is offered."""
    subscription = Subscription(FakeViewer(1), 10, never_overflows)
    async with trio.open_nursery() as nursery:
        received: list[list[str]] = []

        async def receive() -> None:
            received.append(await lines_of(subscription, 1000))

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        assert received == []
        subscription.offer(line(1, "late"))
    assert received == [["You said: late"]]


async def test_cancelled_next_batch_loses_nothing(autojump_clock: trio.abc.Clock) -> None:
    """Cancelling a waiting next_batch leaves later events for the next call."""
    subscription = Subscription(FakeViewer(1), 10, never_overflows)
    with trio.move_on_after(1):
        await lines_of(subscription, 1000)
    subscription.offer(line(1, "kept"))
    assert await lines_of(subscription, 1000) == ["You said: kept"]


async def test_a_closed_subscription_ends_after_its_queue_is_drained() -> None:
    """After close(), queued events still come out, then EndOfChannel; offers are refused."""
    subscription = Subscription(FakeViewer(1), 10, never_overflows)
    subscription.offer(line(1, "last"))
    subscription.close()
    assert not subscription.offer(line(1, "too late"))
    assert await lines_of(subscription, 1000) == ["You said: last"]
    with pytest.raises(trio.EndOfChannel):
        await lines_of(subscription, 1000)


async def test_leaving_the_subscribe_block_removes_the_subscriber() -> None:
    """A subscription is on the bus only inside its ``with`` block."""
    bus = Bus()
    with bus.subscribe(FakeViewer(1), 10, never_overflows):
        assert len(bus) == 1
    assert len(bus) == 0
    assert bus.publish(Notice("nobody")) == 0


def test_zero_depth_is_refused() -> None:
    """A queue needs room for one event: depth 0 is a configuration error."""
    with pytest.raises(ValueError, match="at least one event"):
        Subscription(FakeViewer(1), 0, never_overflows)


async def test_events_that_render_to_nothing_are_skipped() -> None:
    """A plain viewer gets nothing for a JSON-only event; next_batch waits past it."""
    subscription = Subscription(FakeViewer(1), 10, never_overflows)
    subscription.offer(Welcome(None, "lobby", ["lobby"]))
    subscription.offer(line(2, "after the welcome"))
    assert await lines_of(subscription, 1000) == ["Someone says: after the welcome"]


async def test_publish_to_some_keys_reaches_only_them() -> None:
    """Publishing with keys reaches those subscribers only; unknown keys are ignored."""
    bus = Bus()
    with (
        bus.subscribe(FakeViewer(1), 10, never_overflows) as first,
        bus.subscribe(FakeViewer(2), 10, never_overflows) as second,
    ):
        assert bus.publish(Notice("for two"), [2, 99]) == 1
        assert bus.publish(Notice("for all")) == 2
        assert await lines_of(first, 1000) == ["🟢 Server: for all"]
        assert await lines_of(second, 1000) == ["🟢 Server: for two", "🟢 Server: for all"]


async def test_an_instruction_ends_the_batch_before_it() -> None:
    """An instruction (a replay, say) stops the batch: the lines before it come with it,
    and what follows waits for the next call."""
    bus = Bus()
    with bus.subscribe(FakeViewer(1), 10, never_overflows) as subscription:
        instruction = Instruction()
        subscription.offer(line(2, "before"))
        assert bus.instruct(1, instruction)
        assert not bus.instruct(99, instruction)
        subscription.offer(line(2, "after"))
        assert await subscription.next_batch(1000) == (["Someone says: before"], instruction)
        assert await subscription.next_batch(1000) == (["Someone says: after"], None)


async def test_events_the_owner_skips_are_left_out() -> None:
    """next_batch leaves out the events its ``skip`` test picks; the others pass."""
    subscription = Subscription(FakeViewer(1), 10, never_overflows)
    for event in (
        line(2, "replayed", message_id=5),
        line(2, "other room", room="dev", message_id=4),
        line(2, "new", message_id=6),
    ):
        subscription.offer(event)

    def replayed(event: Event) -> bool:
        return event.log_position == ("lobby", 5)

    assert await subscription.next_batch(1000, replayed) == (
        ["[dev] Someone says: other room", "Someone says: new"],
        None,
    )


async def test_an_offer_right_after_a_cancelled_wait_is_kept() -> None:
    """An event offered after the waiting owner was cancelled, before it ran again, is
    neither lost nor a double wake-up: the next batch has it."""
    subscription = Subscription(FakeViewer(1), 10, never_overflows)
    async with trio.open_nursery() as nursery:
        cancelled = trio.CancelScope()

        async def wait() -> None:
            with cancelled:
                await subscription.next_batch(1000)

        nursery.start_soon(wait)
        await trio.testing.wait_all_tasks_blocked()
        cancelled.cancel()
        subscription.offer(line(2, "right after"))  # the waiter has not run yet
    assert await lines_of(subscription, 1000) == ["Someone says: right after"]
