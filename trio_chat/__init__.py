"""trio_chat: a real-time WebSocket chat server and client on Trio.

Where things are:

* a line enters in :mod:`trio_chat.connection` (one reader task per client),
* becomes an event in :mod:`trio_chat.chat` using the sans-I/O rules of
  :mod:`trio_chat.protocol`,
* and fans out through :mod:`trio_chat.bus` to each client's writer task.

:mod:`trio_chat.server` accepts connections and shuts down cleanly;
:mod:`trio_chat.client` is the interactive client.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
