"""Who may log in: accounts (``--accounts``), registered names with argon2id passwords,
and login tokens.

* :mod:`.passwords`: hashing and verifying, in worker threads under a limiter;
* :mod:`.throttle`: failed logins slowed per (name, address) pair and per address;
* :mod:`.service`: :class:`Accounts`, which adds, removes and changes accounts and
  decides logins, over the store's account rows;
* :mod:`.tokens`: login tokens another application signs (``--jwt-key``,
  ``--jwt-secret-file``), verified into token principals.
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
