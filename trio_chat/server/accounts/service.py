"""The accounts of ``--accounts``: adding, removing and changing them, and logging in.

:class:`Accounts` is the one place that knows how an account is kept (a row of the
store, its password an argon2id hash: :mod:`.passwords`) and how a login is decided (the
throttle first, :mod:`.throttle`; then the password). The login of a connection, the
admin channel (:mod:`trio_chat.server.control`) and the ``user`` command line all go
through it.

An account's principal is ``account:ID`` with the store's id, never reused: an account
removed and added again under the same name is another principal, and reads nothing
the old one was sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime

import trio

from trio_chat.core import render
from trio_chat.core.commands import CommandError, valid_name
from trio_chat.core.events import timestamp
from trio_chat.core.identity import Principal
from trio_chat.core.text import RESERVED_NICKS
from trio_chat.server.store import AccountNameTaken, AccountRow, Store, StoreError

from .passwords import Passwords
from .throttle import LoginThrottle

__all__ = [
    "INVALID_PASSWORD",
    "LOGIN_FAILED",
    "LOGIN_LOCKED",
    "MAX_PASSWORD_LENGTH",
    "AccountExists",
    "AccountInfo",
    "Accounts",
    "LoginRefused",
    "check_password",
]

logger = logging.getLogger("trio_chat.server.accounts")

#: The error code of a refused login: an unknown name and a wrong password alike.
LOGIN_FAILED = "login_failed"
#: The error code of a login refused because its (name, address) pair is locked out.
LOGIN_LOCKED = "login_locked"
#: The error code of a password an account cannot have.
INVALID_PASSWORD = "invalid_password"
#: Longest password accepted, in characters: a pass phrase fits easily, and argon2 is
#: never handed a megabyte to hash.
MAX_PASSWORD_LENGTH = 1024


class AccountExists(CommandError):
    """An account has that name already (in any case)."""

    def __init__(self, name: str) -> None:
        super().__init__("account_exists", render.account_exists(name))
        self.name = name


class LoginRefused(CommandError):
    """A login that did not succeed; ``text`` is the same for an unknown name and a wrong
    password (code ``login_failed``); a locked-out pair gets ``login_locked``, with the
    seconds its lockout has left (``retry_after``)."""

    def __init__(self, text: str, code: str = LOGIN_FAILED, retry_after: float = 0.0) -> None:
        super().__init__(code, text)
        self.retry_after = retry_after


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """An account as the operator sees it: never its password hash. ``admin`` is true
    when the account is marked in the store or named by ``--admin``."""

    name: str
    admin: bool
    created: str


def check_password(password: str) -> str:
    """``password`` when an account may have it; else raise ``invalid_password``."""
    if not password:
        raise CommandError(INVALID_PASSWORD, render.EMPTY_PASSWORD)
    if len(password) > MAX_PASSWORD_LENGTH:
        raise CommandError(INVALID_PASSWORD, render.password_too_long(MAX_PASSWORD_LENGTH))
    return password


def _check_name(name: str) -> str:
    """``name`` when an account may be called so: a valid nickname, not a reserved one."""
    valid_name(name, "account name")
    if name.casefold() in RESERVED_NICKS:
        raise CommandError("nick_taken", render.nick_taken(name))
    return name


def _utc_now() -> datetime:
    return datetime.now(UTC)


class Accounts:
    """The accounts kept in ``store``, their passwords hashed by ``passwords``, logins
    slowed down by ``throttle``.

    ``admins`` (names in any case, from ``--admin``) are admins whatever the store says, for
    as long as the server runs with the flag: removing the flag takes the role away.
    ``on_remove`` is called with the principal of each account removed (the server
    closes its connections). Call :meth:`load` once the store is open, before
    :meth:`registered` is used.
    """

    def __init__(
        self,
        store: Store,
        passwords: Passwords,
        throttle: LoginThrottle,
        *,
        admins: Collection[str] = (),
        clock: Callable[[], datetime] = _utc_now,
        on_remove: Callable[[Principal], object] | None = None,
    ) -> None:
        self.store = store
        self.passwords = passwords
        self.throttle = throttle
        self.admins = frozenset(name.casefold() for name in admins)
        self._clock = clock
        self._on_remove = on_remove
        #: folded name -> principal id, kept current by add and remove.
        self._registered: dict[str, str] = {}

    async def load(self) -> None:
        """Read which names have accounts (for :meth:`registered`); log each ``--admin``
        name that has none yet (it becomes an admin once it is added)."""
        rows = await self.store.list_accounts()
        self._registered.clear()
        self._registered.update((row.name.casefold(), self._principal(row).id) for row in rows)
        for name in sorted(self.admins - self._registered.keys()):
            logger.warning("--admin %s: there is no such account (yet)", name)

    def registered(self) -> dict[str, str]:
        """Every account's folded name -> its principal id. The live mapping, kept
        current as accounts are added and removed (the chat's reserved names read it);
        do not change it."""
        return self._registered

    async def add(self, name: str, password: str, *, admin: bool = False) -> Principal:
        """Add an account (its password hashed in a worker thread) and return its
        principal. Raises ``invalid_name`` or ``invalid_password`` (CommandError) and
        :class:`AccountExists`. Cancelled, nothing is added."""
        _check_name(name)
        check_password(password)
        if await self.store.get_account(name) is not None:  # before paying for a hash
            raise AccountExists(name)
        password_hash = await self.passwords.hash(password)
        created = timestamp(self._clock())
        try:
            account_id = await self.store.add_account(name, password_hash, admin, created)
        except AccountNameTaken:
            raise AccountExists(name) from None
        principal = self._principal(AccountRow(account_id, name, password_hash, admin, created))
        self._registered[name.casefold()] = principal.id
        logger.info("account %s added%s", name, " (admin)" if admin else "")
        return principal

    async def remove(self, name: str) -> bool:
        """Remove the account called ``name`` (in any case); False when there is none.
        Its id is never given again; ``on_remove`` is told (its connections closed)."""
        row = await self.store.get_account(name)
        if row is None or not await self.store.remove_account(name):
            return False
        self._registered.pop(name.casefold(), None)
        logger.info("account %s removed", row.name)
        if self._on_remove is not None:
            self._on_remove(self._principal(row))
        return True

    async def set_password(self, name: str, password: str) -> bool:
        """Give the account ``name`` a new password; False when there is no such account.
        Raises ``invalid_password`` (CommandError)."""
        check_password(password)
        if await self.store.get_account(name) is None:
            return False
        changed = await self.store.set_account(
            name, password_hash=await self.passwords.hash(password)
        )
        if changed:
            logger.info("password of account %s changed", name)
        return changed

    async def set_admin(self, name: str, admin: bool) -> bool:
        """Mark the account ``name`` as an admin or not, in the store; False when there is
        no such account."""
        return await self.store.set_account(name, admin=admin)

    async def get(self, name: str) -> Principal | None:
        """The principal of the account called ``name`` (in any case), if there is one."""
        row = await self.store.get_account(name)
        return None if row is None else self._principal(row)

    async def list(self) -> list[AccountInfo]:
        """Every account, in the order they were added."""
        return [
            AccountInfo(row.name, self._is_admin(row), row.created)
            for row in await self.store.list_accounts()
        ]

    async def authenticate(self, name: str, password: str, address: str) -> Principal:
        """The principal of account ``name`` when ``password`` is its password.

        The throttle decides first: a locked-out (name, address) pair is refused without
        a hash (:class:`LoginRefused` ``login_locked``); any other attempt waits the
        throttle's delay, then the password is verified in a worker thread. An unknown
        name and a wrong password are refused alike (``login_failed``, the same text, the
        same cost: a decoy hash is verified). A password stored with older parameters is
        stored anew. Each failure is logged, one line, without the password.

        Cancelled (its connection went), the attempt counts for nothing; a verification
        already in its thread finishes first."""
        attempt = self.throttle.begin(name, address)
        if attempt.locked_for is not None:
            await trio.sleep(attempt.delay)
            raise LoginRefused(
                render.login_locked_out(attempt.locked_for), LOGIN_LOCKED, attempt.locked_for
            )
        try:
            await trio.sleep(attempt.delay)
            row = await self._find(name)
            verdict = await self.passwords.verify(
                None if row is None else row.password_hash, password
            )
        except BaseException:
            self.throttle.abandoned(attempt)
            raise
        if row is None or not verdict.matched:
            self.throttle.failed(attempt)
            raise LoginRefused(render.LOGIN_REFUSED)
        self.throttle.succeeded(attempt)
        if verdict.rehashed is not None:
            await self._store_rehash(row.name, verdict.rehashed)
        return self._principal(row)

    async def _find(self, name: str) -> AccountRow | None:
        """The account a login names; None, without asking the store, for a name no
        account can have."""
        try:
            valid_name(name, "account name")
        except CommandError:
            return None
        return await self.store.get_account(name)

    async def _store_rehash(self, name: str, password_hash: str) -> None:
        """Store the hash made with today's parameters. A failure does not fail the login
        (the old hash still works): it is logged, and tried again at the next one."""
        try:
            await self.store.set_account(name, password_hash=password_hash)
        except StoreError as exc:
            logger.warning("could not store the new password hash of %s: %s", name, exc)
        else:
            logger.info("password hash of account %s renewed (new parameters)", name)

    def _is_admin(self, row: AccountRow) -> bool:
        return row.admin or row.name.casefold() in self.admins

    def _principal(self, row: AccountRow) -> Principal:
        return Principal.account(row.id, row.name, admin=self._is_admin(row))
