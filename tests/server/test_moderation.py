"""Bans, mutes and topics: the stores keep them (SQLite across a restart, memory alike),
and :class:`Moderation` checks them (nicks in any case, addresses in networks, IPv4 and
IPv6, expiry by a fake wall clock); ban targets and durations as operators write them.
No server, no limits concerned."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from trio_chat.core import render
from trio_chat.core.bans import BanKind, BanTarget, parse_duration, parse_target
from trio_chat.core.close import MAX_REASON_BYTES, fit_reason
from trio_chat.core.commands import Ban, CommandError, parse_plain
from trio_chat.core.render import MODERATION_NOT_STORED
from trio_chat.server.chat import Chat
from trio_chat.server.history import MessageLog
from trio_chat.server.moderation import Moderation
from trio_chat.server.store import (
    BanRow,
    MemoryStore,
    MuteRow,
    SQLiteStore,
    Store,
    StoreError,
    TopicRow,
)

CREATED = "2026-12-01T12:00:00.000Z"
START = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A wall clock that moves only when told."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(params=["sqlite", "memory"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Each store kind, opened empty."""
    opened: Store = (
        SQLiteStore(tmp_path / "history.db", 5) if request.param == "sqlite" else MemoryStore(5)
    )
    await opened.open()
    yield opened
    await opened.aclose()


async def test_the_stores_keep_bans_mutes_and_topics(store: Store) -> None:
    """Put, replace, list and remove, the same from both stores."""
    ban = BanRow("nick", "alice", "spam", CREATED, None, "operator")
    await store.put_ban(ban)
    await store.put_ban(BanRow("address", "203.0.113.0/24", None, CREATED, CREATED, "bob"))
    await store.put_ban(BanRow("nick", "alice", "flood", CREATED, None, "operator"))
    assert sorted(await store.list_bans(), key=lambda row: row.kind) == [
        BanRow("address", "203.0.113.0/24", None, CREATED, CREATED, "bob"),
        BanRow("nick", "alice", "flood", CREATED, None, "operator"),
    ]
    assert await store.remove_ban("nick", "alice") is True
    assert await store.remove_ban("nick", "alice") is False
    mute = MuteRow("dev", "carol", "account:3", CREATED, None, "operator")
    await store.put_mute(mute)
    assert await store.list_mutes() == [mute]
    assert await store.remove_mute("dev", "carol") is True
    assert await store.list_mutes() == []
    await store.put_topic("dev", TopicRow("dev", "release day", "alice", CREATED))
    await store.put_topic("ops", TopicRow("ops", "on call", None, CREATED))
    await store.put_topic("ops", None)
    assert await store.list_topics() == [TopicRow("dev", "release day", "alice", CREATED)]


async def test_sqlite_keeps_them_across_a_restart(tmp_path: Path) -> None:
    """A server restarted on the same file finds its bans, mutes and topics."""
    clock = FakeClock()
    first = SQLiteStore(tmp_path / "history.db", 5)
    await first.open()
    moderation = Moderation(first, clock=clock)
    await moderation.ban(BanTarget(BanKind.NICK, "mallory"), seconds=None, reason="spam", by="op")
    await moderation.ban(parse_target("198.51.100.0/24"), seconds=3600, reason=None, by="op")
    await moderation.mute("dev", "Eve", "guest:ab", seconds=None, by="op")
    await moderation.set_topic("dev", "release day", "alice")
    await first.aclose()

    second = SQLiteStore(tmp_path / "history.db", 5)
    await second.open()
    again = Moderation(second, clock=clock)
    await again.load()
    assert again.banned(nick="MALLORY") is not None
    assert again.banned(address="198.51.100.77") is not None
    assert again.muted("dev", "eve", None) is not None
    assert again.topics["dev"].topic == "release day"
    await second.aclose()


async def test_addresses_are_banned_by_network() -> None:
    """A single address, an IPv4 network, an IPv6 /48, and a mapped IPv4 address."""
    moderation = Moderation(MemoryStore(5), clock=FakeClock())
    await moderation.ban(parse_target("203.0.113.7"), seconds=None, reason=None, by="op")
    await moderation.ban(parse_target("10.0.0.0/8"), seconds=None, reason=None, by="op")
    await moderation.ban(parse_target("2001:db8:1::/48"), seconds=None, reason=None, by="op")
    assert moderation.banned(address="203.0.113.7") is not None
    assert moderation.banned(address="203.0.113.8") is None
    assert moderation.banned(address="10.200.3.4") is not None
    assert moderation.banned(address="::ffff:10.1.1.1") is not None
    assert moderation.banned(address="2001:db8:1:ffff::1") is not None
    assert moderation.banned(address="2001:db8:2::1") is None
    assert moderation.banned(address="not an address") is None
    assert await moderation.unban(parse_target("10.0.0.0/8")) is not None
    assert moderation.banned(address="10.200.3.4") is None


async def test_bans_and_mutes_expire_by_the_wall_clock() -> None:
    """A ban for 10m holds 599 s and is gone at 600 s; a mute likewise; for good stays."""
    clock = FakeClock()
    moderation = Moderation(MemoryStore(5), clock=clock)
    await moderation.ban(parse_target("alice"), seconds=600, reason=None, by="op")
    await moderation.ban(parse_target("principal:account:3"), seconds=None, reason=None, by="op")
    await moderation.mute("dev", "bob", None, seconds=60, by="op")
    clock.advance(59)
    assert moderation.muted("dev", "bob", None) is not None
    clock.advance(1)
    assert moderation.muted("dev", "bob", None) is None
    clock.advance(539)
    assert moderation.banned(nick="alice") is not None
    clock.advance(1)
    assert moderation.banned(nick="alice") is None
    assert [str(ban.target) for ban in moderation.bans()] == ["principal:account:3"]
    assert moderation.banned(principal="account:3") is not None


async def test_a_mute_follows_the_principal_to_a_new_nick() -> None:
    """Muted as bob (its principal p), it is still muted as robert; others are not."""
    moderation = Moderation(MemoryStore(5), clock=FakeClock())
    await moderation.mute("dev", "Bob", "guest:p", seconds=None, by="op")
    assert moderation.muted("dev", "robert", "guest:p") is not None
    assert moderation.muted("dev", "carol", "guest:q") is None
    assert moderation.muted("ops", "bob", "guest:p") is None
    assert await moderation.unmute("dev", "BOB") is True
    assert moderation.muted("dev", "bob", "guest:p") is None


@pytest.mark.parametrize(
    ("text", "kind", "value", "shown"),
    [
        ("Alice", BanKind.NICK, "alice", "alice"),
        ("nick:10.0.0.1", BanKind.NICK, "10.0.0.1", "nick:10.0.0.1"),
        ("203.0.113.7", BanKind.ADDRESS, "203.0.113.7/32", "203.0.113.7"),
        ("203.0.113.9/24", BanKind.ADDRESS, "203.0.113.0/24", "203.0.113.0/24"),
        ("ip:2001:DB8::/32", BanKind.ADDRESS, "2001:db8::/32", "2001:db8::/32"),
        ("principal:account:3", BanKind.PRINCIPAL, "account:3", "principal:account:3"),
        ("account:bob", BanKind.ACCOUNT, "bob", "account:bob"),
    ],
)
def test_targets_read_as_operators_write_them(
    text: str, kind: BanKind, value: str, shown: str
) -> None:
    target = parse_target(text)
    assert (target.kind, target.value, str(target)) == (kind, value, shown)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("bad name!", "cannot ban 'bad name!': give a nickname, an address or network"),
        ("ip:nowhere", "invalid address 'nowhere'"),
        ("principal:nobody", "invalid principal 'nobody'"),
    ],
)
def test_bad_targets_are_refused_in_one_line(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match="^" + reason.replace("(", r"\(")):
        parse_target(text)


def test_durations() -> None:
    assert [parse_duration(text) for text in ("30", "30s", "10m", "2H", "7d", "1w")] == [
        30,
        30,
        600,
        7200,
        604800,
        604800,
    ]
    for bad in ("0", "10y", "-5m", "forever", "99999999999"):
        with pytest.raises(ValueError, match=r"^invalid duration"):
            parse_duration(bad)


class FailingStore(MemoryStore):
    """A store whose moderation writes fail, as a full disk's would."""

    async def put_ban(self, ban: BanRow) -> None:
        raise StoreError("disk full")

    async def put_topic(self, room: str, topic: TopicRow | None) -> None:
        raise StoreError("disk full")


async def test_a_ban_or_topic_the_store_cannot_keep_changes_nothing() -> None:
    """``store_failed``, and no ban held (nor topic set)."""
    chat = Chat(MessageLog(FailingStore(5)))
    with pytest.raises(CommandError) as failure:
        await chat.moderate(Ban(parse_target("alice")), None, by="op", room=None)
    assert (failure.value.code, failure.value.text) == ("store_failed", MODERATION_NOT_STORED)
    assert chat.moderation.bans() == []
    assert chat.moderation.banned(nick="alice") is None


def test_a_ban_reason_is_one_line_of_at_most_200_characters() -> None:
    """Cleaned like any text; longer is refused; the close reason fits a close frame."""
    assert parse_plain("/ban bob 1h spam\x1b[31m!") == Ban(parse_target("bob"), 3600, "spam!")
    with pytest.raises(CommandError, match=r"at most 200 characters"):
        parse_plain("/ban bob " + "x" * 201)
    reason = render.ban_kick("é" * 200)
    assert len(fit_reason(reason).encode()) <= MAX_REASON_BYTES
    assert reason.startswith(fit_reason(reason))
