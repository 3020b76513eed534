"""Password hashing for accounts: argon2id through argon2-cffi, off the event loop.

argon2-cffi's :class:`argon2.PasswordHasher` with its defaults (argon2id, the parameters
RFC 9106 recommends, which the library raises as hardware grows) does the hashing; no
crypto is written here. One hash costs about 64 MiB and tens of milliseconds of CPU, so
every hash and every verification runs in a worker thread under a
:class:`trio.CapacityLimiter` (``--hash-concurrency``): a burst of logins queues for the
limiter while the event loop goes on serving the chat, and the memory they take at once
stays bounded.

A stored hash made with older parameters is replaced on the next successful login
(:meth:`Passwords.verify` returns the new hash to store).
"""

from __future__ import annotations

from dataclasses import dataclass

import argon2
import trio

__all__ = ["DEFAULT_HASH_CONCURRENCY", "Passwords", "Verdict"]

#: Hashes computed at once. Each takes ~64 MiB and one core for tens of milliseconds:
#: two keep logins flowing on a small machine without starving the chat of CPU.
DEFAULT_HASH_CONCURRENCY = 2


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :meth:`Passwords.verify` found: whether the password matched, and, when it
    did and the stored hash was made with other parameters, the hash to store instead."""

    matched: bool
    rehashed: str | None = None


class Passwords:
    """Hashes and verifies passwords in worker threads, at most ``concurrency`` at once.

    ``hasher`` is the argon2-cffi hasher; its defaults unless given (tests give cheaper
    parameters, or a hasher that waits, to watch the limiter work).
    """

    def __init__(
        self,
        concurrency: int = DEFAULT_HASH_CONCURRENCY,
        hasher: argon2.PasswordHasher | None = None,
    ) -> None:
        self.hasher = hasher if hasher is not None else argon2.PasswordHasher()
        self.limiter = trio.CapacityLimiter(concurrency)
        # A hash of no one's password, verified when a login names no account, so that
        # an unknown name takes as long to refuse as a wrong password. Made on first use.
        self._decoy: str | None = None

    async def hash(self, password: str) -> str:
        """The argon2id hash string of ``password``, computed in a worker thread.

        Cancelled while waiting for the limiter, nothing was computed; cancelled while
        the thread runs, the thread finishes (its result is dropped)."""
        return await trio.to_thread.run_sync(self.hasher.hash, password, limiter=self.limiter)

    async def verify(self, stored_hash: str | None, password: str) -> Verdict:
        """Whether ``password`` matches ``stored_hash``, in a worker thread; None (no such
        account) verifies against a decoy hash, so it costs the same and never matches.

        A stored hash that is not a valid argon2 hash never matches (it is not an error
        the caller could act on). Cancellation behaves as for :meth:`hash`."""
        if stored_hash is None:
            if self._decoy is None:
                self._decoy = await self.hash("")
            await trio.to_thread.run_sync(self._check, self._decoy, password, limiter=self.limiter)
            return Verdict(False)
        return await trio.to_thread.run_sync(
            self._check, stored_hash, password, limiter=self.limiter
        )

    def _check(self, stored_hash: str, password: str) -> Verdict:
        """In the worker thread: verify, and rehash at once when the parameters changed
        (one trip to a thread, and the limiter, for both)."""
        try:
            self.hasher.verify(stored_hash, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return Verdict(False)
        if self.hasher.check_needs_rehash(stored_hash):
            return Verdict(True, self.hasher.hash(password))
        return Verdict(True)
