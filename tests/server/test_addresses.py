"""Per-address bookkeeping (:mod:`trio_chat.server.net.addresses`), pure and with a fake
clock: the keys (IPv6 per /64), the open-connection cap, the connect rate and its
``Retry-After``, the exempt blocks, and the caps on handshakes in progress."""

from __future__ import annotations

import ipaddress

import pytest

from trio_chat.server.net.addresses import (
    CONNECTIONS_RETRY_AFTER,
    MAX_TRACKED,
    AddressCounter,
    AddressLimits,
    ConnectRate,
    Crowded,
    HandshakeSlot,
    HandshakeSlots,
    Throttled,
    address_key,
)


class FakeClock:
    """Seconds that pass only when a test says so."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:a:b:c:d", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
    ],
)
def test_ipv4_is_counted_as_itself_and_ipv6_per_64(host: str, key: str) -> None:
    assert address_key(host) == key


def test_a_counter_caps_each_address_and_forgets_one_that_holds_nothing() -> None:
    counter = AddressCounter(2)
    assert [counter.take("a"), counter.take("a"), counter.take("a")] == [True, True, False]
    assert counter.take("b")
    assert (counter.held("a"), counter.held("b"), len(counter)) == (2, 1, 2)
    counter.give_back("b")
    counter.give_back("a")
    assert counter.take("a")
    assert (len(counter), counter.held("b")) == (1, 0)


def test_the_rate_allows_a_burst_of_a_minute_then_one_per_interval() -> None:
    """60 a minute: 60 at once, then the 61st waits 1 s; 30 s later 30 more are allowed."""
    clock = FakeClock()
    rate = ConnectRate(60, clock)
    assert [rate.take("a") for _ in range(60)] == [0.0] * 60
    assert rate.take("a") == pytest.approx(1.0)
    assert rate.take("b") == 0.0  # another address has its own allowance
    clock.now += 30
    assert [rate.take("a") for _ in range(30)] == [0.0] * 30
    assert rate.take("a") == pytest.approx(1.0)


def test_a_refused_connection_spends_nothing() -> None:
    """Hammering while refused does not push the wait further out."""
    clock = FakeClock()
    rate = ConnectRate(3, clock)
    for _ in range(3):
        assert rate.take("a") == 0.0
    assert [rate.take("a") for _ in range(5)] == [pytest.approx(20.0)] * 5
    clock.now += 20
    assert rate.take("a") == 0.0


def test_the_rate_forgets_an_address_whose_allowance_is_whole_again() -> None:
    """Memory: an address is tracked for at most a minute after its last connection."""
    clock = FakeClock()
    rate = ConnectRate(60, clock)
    for n in range(100):
        rate.take(f"10.0.0.{n}")
    assert len(rate) == 100
    clock.now += 1.5  # each took one interval: whole again after 1 s
    rate.take("10.0.1.1")
    assert len(rate) == 1


def test_the_rate_tracks_at_most_max_tracked_addresses() -> None:
    clock = FakeClock()
    rate = ConnectRate(1, clock)
    for n in range(MAX_TRACKED + 5):
        rate.take(str(n))
    assert len(rate) == MAX_TRACKED
    # The first ones were forgotten: their allowance starts whole.
    assert rate.take("0") == 0.0
    assert rate.take(str(MAX_TRACKED + 4)) > 0


def test_address_limits_cap_open_connections_per_address() -> None:
    limits = AddressLimits(max_connections=2, connect_rate=0, clock=FakeClock())
    first, second = limits.admit("2001:db8::1"), limits.admit("2001:db8::2")
    assert first == second == "2001:db8::/64"
    assert limits.admit("2001:db8::3") == Throttled("connections", 2, CONNECTIONS_RETRY_AFTER)
    assert limits.admit("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    limits.release(first)
    assert limits.admit("2001:db8::3") == "2001:db8::/64"


def test_address_limits_rate_says_the_whole_seconds_to_wait() -> None:
    clock = FakeClock()
    limits = AddressLimits(max_connections=0, connect_rate=7, clock=clock)
    assert [limits.admit("203.0.113.7") for _ in range(7)] == [None] * 7
    clock.now += 0.5
    # 60/7 = 8.57 s per connection, 0.5 s of it gone: 8.07 s, said as 9.
    assert limits.admit("203.0.113.7") == Throttled("rate", 7, 9)


def test_a_connection_refused_for_its_count_spends_no_rate() -> None:
    clock = FakeClock()
    limits = AddressLimits(max_connections=1, connect_rate=2, clock=clock)
    held = limits.admit("203.0.113.7")
    for _ in range(5):
        assert isinstance(limits.admit("203.0.113.7"), Throttled)
    limits.release(held)
    assert limits.admit("203.0.113.7") == "203.0.113.7"
    limits.release("203.0.113.7")
    assert limits.admit("203.0.113.7") == Throttled("rate", 2, 30)


def test_exempt_blocks_and_unknown_addresses_are_not_counted() -> None:
    exempt = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("2001:db8::/32"))
    limits = AddressLimits(max_connections=1, connect_rate=1, exempt=exempt, clock=FakeClock())
    for host in ("127.0.0.1", "127.9.9.9", "::ffff:127.0.0.1", "2001:db8:5::1", None):
        assert [limits.admit(host) for _ in range(3)] == [None] * 3
    assert limits.admit("192.0.2.1") == "192.0.2.1"
    assert limits.admit("192.0.2.1") == Throttled("connections", 1, CONNECTIONS_RETRY_AFTER)


def test_with_every_rule_off_nothing_is_counted() -> None:
    limits = AddressLimits(max_connections=0, connect_rate=0, clock=FakeClock())
    assert [limits.admit("192.0.2.1") for _ in range(1000)] == [None] * 1000
    limits.release(None)


def test_handshakes_in_progress_are_capped_in_all_and_per_peer() -> None:
    proxy = ipaddress.ip_network("10.0.0.1")
    slots = HandshakeSlots(total=4, per_peer=2, exempt=(proxy,))
    a1, a2 = slots.enter("192.0.2.1"), slots.enter("192.0.2.1")
    assert slots.enter("192.0.2.1") == Crowded("handshakes_per_ip", 2)
    via_proxy = [slots.enter("10.0.0.1"), slots.enter("10.0.0.1")]
    assert via_proxy == [HandshakeSlot(None), HandshakeSlot(None)]
    assert slots.in_progress == 4
    assert slots.enter("198.51.100.1") == Crowded("handshakes", 4)
    assert isinstance(a1, HandshakeSlot)
    slots.leave(a1)
    slots.leave(a1)  # idempotent
    assert slots.in_progress == 3
    assert slots.enter("192.0.2.1") == HandshakeSlot("192.0.2.1")
    assert isinstance(a2, HandshakeSlot)
    assert a2.key == "192.0.2.1"


def test_handshake_caps_of_zero_are_off() -> None:
    slots = HandshakeSlots(total=0, per_peer=0)
    entered = [slots.enter("192.0.2.1") for _ in range(1000)]
    assert all(isinstance(slot, HandshakeSlot) for slot in entered)
    assert slots.in_progress == 1000
