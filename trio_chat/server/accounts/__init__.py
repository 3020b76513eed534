"""Accounts (``--accounts``): registered names with argon2id passwords.

* :mod:`.passwords`: hashing and verifying, in worker threads under a limiter;
* :mod:`.throttle`: failed logins slowed per (name, address) pair and per address;
* :mod:`.service`: :class:`Accounts`, which adds, removes and changes accounts and
  decides logins, over the store's account rows.
"""

from .passwords import Passwords, Verdict
from .service import (
    AccountExists,
    AccountInfo,
    Accounts,
    LoginRefused,
)
from .throttle import Attempt, LoginThrottle

__all__ = [
    "AccountExists",
    "AccountInfo",
    "Accounts",
    "Attempt",
    "LoginRefused",
    "LoginThrottle",
    "Passwords",
    "Verdict",
]
