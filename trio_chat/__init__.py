"""trio_chat: a real-time WebSocket chat server and client on Trio.

The library API (see ``docs/api.md``):

* :func:`connect` — ``async with trio_chat.connect(url, nick=..., rooms=...) as chat:``,
  a programmatic client speaking ``trio-chat.v1``: typed commands that return their
  ``ack`` (:class:`CommandFailed` on an ``error``), and ``async for event in chat``;
* :func:`serve` — run a server until it shuts down or is cancelled, from a
  :class:`ServerConfig` and/or keyword settings (signals and console only when asked);
* :data:`__version__` — the installed version, from the package metadata.

Where things are: :mod:`trio_chat.core` is the sans-I/O core (commands, events, close
codes, the arrival query); :mod:`trio_chat.server` accepts connections, runs the chat,
stores messages and shuts down cleanly; :mod:`trio_chat.client` is the interactive
terminal client and the programmatic one.

The names above are imported when first used, so that importing the sans-I/O core
(``import trio_chat.core``) loads neither Trio nor sockets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = [
    "ChatClosed",
    "ChatError",
    "CommandFailed",
    "Connection",
    "ServerConfig",
    "__version__",
    "connect",
    "serve",
]

if TYPE_CHECKING:
    from .client.api import ChatClosed, ChatError, CommandFailed, Connection, connect
    from .server.config import ServerConfig
    from .server.server import serve

    __version__: str

#: Where each lazily imported name lives.
_LAZY = {
    "ChatClosed": "trio_chat.client.api",
    "ChatError": "trio_chat.client.api",
    "CommandFailed": "trio_chat.client.api",
    "Connection": "trio_chat.client.api",
    "connect": "trio_chat.client.api",
    "ServerConfig": "trio_chat.server.config",
    "serve": "trio_chat.server.server",
}


def __getattr__(name: str) -> object:
    """Import a name of the library API on first use (PEP 562), and keep it."""
    if name == "__version__":
        from ._version import version

        value: object = version()
    elif name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
