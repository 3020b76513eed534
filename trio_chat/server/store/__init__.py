"""Where messages are stored: a small interface and its implementations.

:class:`Store` is all the rest of the server knows about storage, kept small enough
that a Redis-backed store can be added beside :class:`SQLiteStore` (the durable
default) and :class:`MemoryStore` (``--db :memory:``) without touching anything else.
The accounts of ``--accounts`` are kept by the same store, beside the messages.
Ids, grouping of writes into commits and delivery order are not the store's business:
:mod:`trio_chat.server.history` owns them.
"""

from .base import (
    AccountNameTaken,
    AccountRow,
    BanRow,
    MuteRow,
    Record,
    Store,
    StoreError,
    StoreLocked,
    TopicRow,
)
from .memory import MemoryStore
from .sqlite import SQLiteStore, default_db_path, describe_db, open_store

__all__ = [
    "AccountNameTaken",
    "AccountRow",
    "BanRow",
    "MemoryStore",
    "MuteRow",
    "Record",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreLocked",
    "TopicRow",
    "default_db_path",
    "describe_db",
    "open_store",
]
