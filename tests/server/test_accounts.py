"""Accounts: argon2id hashing off the event loop, rehash on login, the login throttle
(with a fake clock), one answer for unknown names and wrong passwords, ids never reused.

Hashers here use argon2-cffi with cheap parameters (a real hash, milliseconds instead of
tens of them) unless a test is about the parameters themselves.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import argon2
import pytest
import trio
import trio.testing
from inproc import LiveServer, open_plain

from trio_chat.core.commands import CommandError
from trio_chat.core.identity import Principal, PrincipalKind
from trio_chat.server.accounts import (
    AccountExists,
    AccountInfo,
    Accounts,
    LoginRefused,
    LoginThrottle,
    Passwords,
)
from trio_chat.server.accounts.passwords import Verdict
from trio_chat.server.accounts.throttle import MAX_DELAY, NAME_KEY_LENGTH
from trio_chat.server.store import MemoryStore

from support import EVENT_TIMEOUT

pytest_plugins = ["inproc"]

ADDRESS = "203.0.113.7"
OTHER_ADDRESS = "198.51.100.9"
ACCOUNTS_LOGGER = "trio_chat.server.accounts"


def cheap_hasher(time_cost: int = 1) -> argon2.PasswordHasher:
    """A real argon2id hasher with parameters cheap enough for tests."""
    return argon2.PasswordHasher(time_cost=time_cost, memory_cost=8, parallelism=1)


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_accounts(
    *,
    hasher: argon2.PasswordHasher | None = None,
    store: MemoryStore | None = None,
    clock: Callable[[], float] = trio.current_time,
    concurrency: int = 2,
    failures: int = 5,
    lockout: float = 900.0,
    admins: tuple[str, ...] = (),
) -> Accounts:
    return Accounts(
        store if store is not None else MemoryStore(10),
        Passwords(concurrency, hasher if hasher is not None else cheap_hasher()),
        LoginThrottle(failures=failures, lockout=lockout, clock=clock),
        admins=admins,
        clock=lambda: datetime(2026, 12, 1, 12, 0, tzinfo=UTC),
    )


# --- adding, removing, changing --------------------------------------------------------------


async def test_an_account_logs_in_with_its_password_in_any_case_of_its_name() -> None:
    """add() returns the account's principal; authenticate() gives the same one back for
    the right password, whatever the case of the name, with the name as added."""
    accounts = make_accounts()
    added = await accounts.add("Alice", "correct horse")
    assert added == Principal("account:1", PrincipalKind.ACCOUNT, "Alice", "Alice", False)
    assert await accounts.authenticate("alice", "correct horse", ADDRESS) == added
    assert await accounts.authenticate("ALICE", "correct horse", ADDRESS) == added


async def test_the_store_keeps_an_argon2id_hash_never_the_password() -> None:
    """The stored hash is argon2id with argon2-cffi's default parameters."""
    store = MemoryStore(10)
    accounts = make_accounts(hasher=argon2.PasswordHasher(), store=store)
    await accounts.add("alice", "correct horse")
    row = await store.get_account("alice")
    assert row is not None
    assert row.password_hash.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert "correct horse" not in row.password_hash


async def test_a_name_is_taken_in_any_case() -> None:
    """A second account with the same name in another case is AccountExists."""
    accounts = make_accounts()
    await accounts.add("alice", "one password")
    with pytest.raises(AccountExists) as info:
        await accounts.add("ALICE", "another one")
    assert (info.value.code, info.value.text) == (
        "account_exists",
        "there is already an account called ALICE",
    )


@pytest.mark.parametrize(
    ("name", "password", "code", "text"),
    [
        (
            "bad name",
            "pw",
            "invalid_name",
            "invalid account name 'bad name': use 1-32 letters, digits, '_', '-' or '.'",
        ),
        ("x" * 33, "pw", "invalid_name", None),
        ("Server", "pw", "nick_taken", "nick Server is taken"),
        ("bob", "", "invalid_password", "the password is empty"),
        (
            "bob",
            "p" * 1025,
            "invalid_password",
            "the password is too long (at most 1024 characters)",
        ),
    ],
)
async def test_add_refuses_names_and_passwords_an_account_cannot_have(
    name: str, password: str, code: str, text: str | None
) -> None:
    """Account names follow the nickname rule (and "Server" is the operator's); a
    password is not empty and not huge. Nothing is stored."""
    accounts = make_accounts()
    with pytest.raises(CommandError) as info:
        await accounts.add(name, password)
    assert info.value.code == code
    if text is not None:
        assert info.value.text == text
    assert await accounts.list() == []


async def test_removing_and_adding_again_makes_another_principal() -> None:
    """The same name added again gets a new id (a new principal, which owns nothing of
    the old one's), and the old password no longer works."""
    accounts = make_accounts()
    first = await accounts.add("bob", "first password")
    await accounts.add("carol", "carol's")
    assert await accounts.remove("BOB") is True
    assert await accounts.remove("bob") is False
    with pytest.raises(LoginRefused):
        await accounts.authenticate("bob", "first password", ADDRESS)
    second = await accounts.add("bob", "second password")
    assert (first.id, second.id) == ("account:1", "account:3")
    assert await accounts.authenticate("bob", "second password", ADDRESS) == second


async def test_the_removal_hook_is_told_each_removed_account() -> None:
    removed: list[Principal] = []
    accounts = Accounts(
        MemoryStore(10),
        Passwords(1, cheap_hasher()),
        LoginThrottle(clock=trio.current_time),
        admins=("bob",),
        on_remove=removed.append,
    )
    bob = await accounts.add("Bob", "pw")
    assert await accounts.remove("nobody") is False
    assert await accounts.remove("BOB") is True
    assert removed == [bob]
    assert bob.admin


async def test_set_password_replaces_the_old_one() -> None:
    """After set_password only the new password logs in; an unknown name is False."""
    accounts = make_accounts()
    await accounts.add("bob", "old password")
    assert await accounts.set_password("Bob", "new password") is True
    assert await accounts.set_password("nobody", "whatever") is False
    with pytest.raises(LoginRefused):
        await accounts.authenticate("bob", "old password", ADDRESS)
    assert (await accounts.authenticate("bob", "new password", ADDRESS)).name == "bob"
    with pytest.raises(CommandError) as info:
        await accounts.set_password("bob", "")
    assert info.value.code == "invalid_password"


async def test_admins_come_from_the_store_and_from_the_flag() -> None:
    """An account is an admin when added as one, marked later, or named by --admin
    (in any case); list() says so, and so does its principal."""
    accounts = make_accounts(admins=("Carol",))
    await accounts.add("alice", "pw-alice", admin=True)
    await accounts.add("bob", "pw-bob")
    await accounts.add("carol", "pw-carol")
    assert await accounts.set_admin("nobody", True) is False
    assert [info.admin for info in await accounts.list()] == [True, False, True]
    assert await accounts.set_admin("bob", True) is True
    assert (await accounts.authenticate("bob", "pw-bob", ADDRESS)).admin is True
    assert (await accounts.authenticate("carol", "pw-carol", ADDRESS)).admin is True
    assert await accounts.set_admin("alice", False) is True
    assert (await accounts.authenticate("alice", "pw-alice", ADDRESS)).admin is False


async def test_list_shows_names_roles_and_creation_times_in_order() -> None:
    accounts = make_accounts()
    await accounts.add("bob", "pw")
    await accounts.add("alice", "pw", admin=True)
    assert await accounts.list() == [
        AccountInfo("bob", False, "2026-12-01T12:00:00.000Z"),
        AccountInfo("alice", True, "2026-12-01T12:00:00.000Z"),
    ]


async def test_registered_names_are_kept_current() -> None:
    """registered() is the live folded name -> principal id mapping: load() fills it
    from the store; add and remove keep it current."""
    store = MemoryStore(10)
    await make_accounts(store=store).add("Alice", "pw")
    accounts = make_accounts(store=store)
    names = accounts.registered()
    assert names == {}
    await accounts.load()
    assert names == {"alice": "account:1"}
    await accounts.add("bob", "pw")
    await accounts.remove("alice")
    assert accounts.registered() is names
    assert names == {"bob": "account:2"}


async def test_an_admin_flag_without_an_account_is_logged_at_load(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, ACCOUNTS_LOGGER)
    await make_accounts(admins=("ghost",)).load()
    assert [r.getMessage() for r in caplog.records] == [
        "--admin ghost: there is no such account (yet)"
    ]


# --- refusals --------------------------------------------------------------------------------


class CountingHasher(argon2.PasswordHasher):
    """A cheap hasher that counts its verifications."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified = 0

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified += 1
        return super().verify(hash, password)


async def test_unknown_name_and_wrong_password_get_the_same_answer() -> None:
    """Both are LoginRefused with code login_failed and the same text, and both cost a
    verification (a decoy hash for the unknown name), so neither answer nor time tells
    which names exist."""
    hasher = CountingHasher()
    accounts = make_accounts(hasher=hasher)
    await accounts.add("alice", "right password")
    answers = []
    for name, password in [("alice", "wrong password"), ("nobody", "right password")]:
        with pytest.raises(LoginRefused) as info:
            await accounts.authenticate(name, password, ADDRESS)
        answers.append((info.value.code, info.value.text))
    assert answers == [("login_failed", "wrong name or password")] * 2
    assert hasher.verified == 2


async def test_a_name_no_account_can_have_is_refused_the_same_way() -> None:
    hasher = CountingHasher()
    accounts = make_accounts(hasher=hasher)
    with pytest.raises(LoginRefused) as info:
        await accounts.authenticate("no such\nname", "pw", ADDRESS)
    assert (info.value.code, info.value.text) == ("login_failed", "wrong name or password")
    assert hasher.verified == 1


async def test_each_failure_is_one_log_line_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, ACCOUNTS_LOGGER)
    accounts = make_accounts()
    await accounts.add("alice", "right password")
    caplog.clear()
    for name in ("alice", "nobody"):
        with pytest.raises(LoginRefused):
            await accounts.authenticate(name, "hunter2-secret", ADDRESS)
    assert [r.getMessage() for r in caplog.records] == [
        f"failed login for 'alice' from {ADDRESS} (1 in a row)",
        f"failed login for 'nobody' from {ADDRESS} (1 in a row)",
    ]
    assert "hunter2-secret" not in caplog.text


# --- hashing in worker threads, under the limiter --------------------------------------------


class GatedHasher(argon2.PasswordHasher):
    """A cheap hasher whose verifications wait, in their worker thread, until the test
    opens the gate; each tells the test (through the Trio run) that it has started."""

    def __init__(self, started: Callable[[], None]) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.gate = threading.Event()
        self._started = started

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        trio.from_thread.run_sync(self._started)
        # Bounded: a broken test fails instead of hanging a worker thread for good.
        if not self.gate.wait(EVENT_TIMEOUT):
            raise TimeoutError("the test never opened the gate")
        return super().verify(hash, password)


async def test_a_burst_of_logins_does_not_freeze_the_chat(live_server: LiveServer) -> None:
    """Five people log in at once: two verifications run in worker threads (the
    limiter's size), three wait for it, and meanwhile the chat goes on: one client's
    line reaches another. When the verifications finish, every login succeeds."""
    running = 0
    two_running = trio.Event()

    def started() -> None:
        nonlocal running
        running += 1
        if running == 2:
            two_running.set()

    hasher = GatedHasher(started)
    accounts = make_accounts(hasher=hasher, concurrency=2)
    names = [f"user{n}" for n in range(5)]
    for name in names:
        await accounts.add(name, f"pw-{name}")
    logged_in: list[str | None] = []

    async def log_in(name: str, address: str) -> None:
        logged_in.append((await accounts.authenticate(name, f"pw-{name}", address)).name)

    try:
        async with trio.open_nursery() as nursery:
            for n, name in enumerate(names):
                nursery.start_soon(log_in, name, f"192.0.2.{n}")
            with trio.fail_after(EVENT_TIMEOUT):
                await two_running.wait()
            async with open_plain(live_server) as alice, open_plain(live_server) as bob:
                await alice.send("still talking")
                await bob.expect("Someone says: still talking")
            statistics = accounts.passwords.limiter.statistics()
            assert (running, statistics.borrowed_tokens, statistics.tasks_waiting) == (2, 2, 3)
            assert logged_in == []
            hasher.gate.set()
    finally:
        hasher.gate.set()
    assert sorted(logged_in) == names  # type: ignore[type-var]
    assert running == 5


# --- rehash ----------------------------------------------------------------------------------


async def test_a_hash_with_old_parameters_is_renewed_at_login() -> None:
    """A password hashed with other parameters logs in, and its hash is stored anew
    with today's; a wrong password renews nothing."""
    store = MemoryStore(10)
    await make_accounts(hasher=cheap_hasher(time_cost=1), store=store).add("alice", "pw")
    old = await store.get_account("alice")
    assert old is not None
    today = cheap_hasher(time_cost=2)
    accounts = make_accounts(hasher=today, store=store)
    with pytest.raises(LoginRefused):
        await accounts.authenticate("alice", "wrong", ADDRESS)
    assert await store.get_account("alice") == old
    assert (await accounts.authenticate("alice", "pw", ADDRESS)).id == "account:1"
    renewed = await store.get_account("alice")
    assert renewed is not None
    assert renewed.password_hash != old.password_hash
    assert ",t=2," in renewed.password_hash
    assert not today.check_needs_rehash(renewed.password_hash)
    assert (await accounts.authenticate("alice", "pw", ADDRESS)).id == "account:1"


async def test_verify_says_when_a_hash_needs_renewing() -> None:
    old_hash = cheap_hasher(time_cost=1).hash("pw")
    passwords = Passwords(1, cheap_hasher(time_cost=2))
    assert await passwords.verify(old_hash, "wrong") == Verdict(False)
    verdict = await passwords.verify(old_hash, "pw")
    assert verdict.matched
    assert verdict.rehashed is not None
    assert await passwords.verify(verdict.rehashed, "pw") == Verdict(True)
    assert await passwords.verify("not a hash", "pw") == Verdict(False)
    assert await passwords.verify(None, "") == Verdict(False)


# --- the throttle, with a fake clock -----------------------------------------------------------


def fail(throttle: LoginThrottle, name: str = "alice", address: str = ADDRESS) -> float:
    """One failed attempt through the throttle; the delay it was given."""
    attempt = throttle.begin(name, address)
    assert attempt.locked_for is None
    throttle.failed(attempt)
    return attempt.delay


def test_the_delay_doubles_with_each_failure_of_a_pair() -> None:
    """No delay for a first attempt, then 0.5 s doubling per failure, up to the cap."""
    throttle = LoginThrottle(failures=100, lockout=900, clock=FakeClock())
    delays = [fail(throttle) for _ in range(8)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, MAX_DELAY, MAX_DELAY]


def test_a_pair_is_locked_out_after_its_failures_for_the_lockout() -> None:
    """After 5 failures the pair is refused for 900 s (the attempt is not counted); the
    same name from another address, and another name from the same address, still get
    through; once the lockout is over the pair counts afresh."""
    clock = FakeClock()
    throttle = LoginThrottle(failures=5, lockout=900, clock=clock)
    for _ in range(5):
        fail(throttle)
    refused = throttle.begin("ALICE", ADDRESS)
    assert refused.locked_for == 900
    clock.now += 899
    assert throttle.begin("alice", ADDRESS).locked_for == 1
    assert throttle.locked_for("alice", ADDRESS) == 1
    elsewhere = throttle.begin("alice", OTHER_ADDRESS)
    assert (elsewhere.locked_for, elsewhere.delay) == (None, 0.0)
    assert throttle.begin("bob", ADDRESS).locked_for is None
    clock.now += 1
    assert throttle.locked_for("alice", ADDRESS) is None
    # Afresh: five more failures before the next lockout (the address's own count,
    # over every name, still adds its half second).
    throttle.failed(throttle.begin("alice", ADDRESS))
    assert [fail(throttle) for _ in range(4)] == [0.5, 1.0, 2.0, 4.0]
    assert throttle.locked_for("alice", ADDRESS) == 900


def test_an_account_is_never_locked_for_everyone() -> None:
    """Failures from many addresses lock each of those pairs, never the name: its owner
    at another address logs in without a delay."""
    throttle = LoginThrottle(failures=2, lockout=900, clock=FakeClock())
    for n in range(20):
        for _ in range(2):
            fail(throttle, "alice", f"192.0.2.{n}")
        assert throttle.locked_for("alice", f"192.0.2.{n}") == 900
    owner = throttle.begin("alice", OTHER_ADDRESS)
    assert (owner.locked_for, owner.delay) == (None, 0.0)


def test_an_address_guessing_many_names_slows_down_without_a_lockout() -> None:
    """Failures at different names from one address add a delay every 5 of them, for
    any name it tries, but lock nothing."""
    throttle = LoginThrottle(failures=5, lockout=900, clock=FakeClock())
    delays = [fail(throttle, f"name{n}") for n in range(16)]
    assert delays == [0.0] * 5 + [0.5] * 5 + [1.0] * 5 + [2.0]
    someone = throttle.begin("someone", ADDRESS)
    assert (someone.locked_for, someone.delay) == (None, 2.0)
    assert throttle.begin("x", OTHER_ADDRESS).delay == 0.0


def test_a_success_clears_its_pair() -> None:
    throttle = LoginThrottle(failures=5, lockout=900, clock=FakeClock())
    for _ in range(4):
        fail(throttle)
    good = throttle.begin("alice", ADDRESS)
    assert good.delay == 8.0 / 2
    throttle.succeeded(good)
    assert throttle.begin("alice", ADDRESS).delay == 0.0


def test_attempts_under_way_count_until_they_end() -> None:
    """Attempts started at once cannot slip past the lockout together: the sixth is
    refused while five are being verified. One that is abandoned counts for nothing."""
    throttle = LoginThrottle(failures=5, lockout=900, clock=FakeClock())
    under_way = [throttle.begin("alice", ADDRESS) for _ in range(5)]
    assert [a.locked_for for a in under_way] == [None] * 5
    assert throttle.begin("alice", ADDRESS).locked_for == 900
    for attempt in under_way:
        throttle.abandoned(attempt)
    assert throttle.begin("alice", ADDRESS).delay == 0.0


def test_counts_are_forgotten_a_lockout_after_the_last_failure() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(failures=5, lockout=900, clock=clock)
    for _ in range(3):
        fail(throttle)
    clock.now += 899
    assert throttle.begin("alice", ADDRESS).delay == 2.0
    throttle.abandoned(throttle.begin("alice", ADDRESS))
    clock.now += 900
    assert throttle.begin("alice", ADDRESS).delay == 0.0


def test_the_throttle_remembers_a_bounded_number_of_pairs() -> None:
    """Past max_tracked pairs (and addresses) the oldest are forgotten."""
    throttle = LoginThrottle(failures=5, lockout=900, clock=FakeClock(), max_tracked=3)
    for n in range(10):
        fail(throttle, f"name{n}", f"192.0.2.{n}")
    assert throttle.tracked == 6
    assert throttle.begin("name9", "192.0.2.9").delay == 0.5
    assert throttle.begin("name0", "192.0.2.0").delay == 0.0


def test_a_huge_name_is_counted_under_its_first_characters() -> None:
    """What a client sends as a name may be long: the counts keep only its start (far
    longer than any account name), so they stay small."""
    throttle = LoginThrottle(failures=5, lockout=900, clock=FakeClock())
    start = "n" * NAME_KEY_LENGTH
    fail(throttle, start + "a" * 60_000)
    assert throttle.begin(start + "b" * 60_000, ADDRESS).delay == 0.5


def test_the_lockout_is_logged_once_per_refusal(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, ACCOUNTS_LOGGER)
    clock = FakeClock()
    throttle = LoginThrottle(failures=2, lockout=600, clock=clock)
    fail(throttle)
    fail(throttle)
    clock.now += 30
    throttle.begin("alice", ADDRESS)
    assert [r.getMessage() for r in caplog.records] == [
        f"failed login for 'alice' from {ADDRESS} (1 in a row)",
        f"failed login for 'alice' from {ADDRESS} (2 in a row): locked out for 600 s",
        f"login refused for 'alice' from {ADDRESS}: locked out for 570 s more",
    ]


async def test_logins_wait_the_delay_and_a_locked_pair_is_not_hashed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Through Accounts (Trio's clock, jumped): each wrong password waits longer before
    its answer; the sixth attempt is refused as locked out without a verification, even
    with the right password; from another address the right password works at once."""
    hasher = CountingHasher()
    accounts = make_accounts(hasher=hasher, failures=5, lockout=900)
    await accounts.add("alice", "right password")
    waited = []
    for _ in range(5):
        start = trio.current_time()
        with pytest.raises(LoginRefused):
            await accounts.authenticate("alice", "wrong", ADDRESS)
        waited.append(trio.current_time() - start)
    assert waited == [0.0, 0.5, 1.0, 2.0, 4.0]
    assert hasher.verified == 5
    with pytest.raises(LoginRefused) as info:
        await accounts.authenticate("alice", "right password", ADDRESS)
    assert (info.value.code, info.value.text) == (
        "login_locked",
        "too many failed logins from your address; try again in 15 minutes",
    )
    assert hasher.verified == 5
    start = trio.current_time()
    assert (await accounts.authenticate("alice", "right password", OTHER_ADDRESS)).name == "alice"
    assert trio.current_time() - start == 0.0
    await trio.sleep(900)
    assert (await accounts.authenticate("alice", "right password", ADDRESS)).name == "alice"


async def test_a_cancelled_login_counts_for_nothing(autojump_clock: trio.testing.MockClock) -> None:
    """A login cancelled while it waits its delay (the connection went) is not a failure."""
    accounts = make_accounts()
    await accounts.add("alice", "right password")
    with pytest.raises(LoginRefused):
        await accounts.authenticate("alice", "wrong", ADDRESS)
    with trio.move_on_after(0.1):
        await accounts.authenticate("alice", "right password", ADDRESS)
    start = trio.current_time()
    with pytest.raises(LoginRefused):
        await accounts.authenticate("alice", "wrong", ADDRESS)
    assert trio.current_time() - start == 0.5
