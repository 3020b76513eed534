"""trio_chat: a real-time WebSocket chat server and client on Trio.

Where things are:

* a connection is accepted in :mod:`trio_chat.server` (``ChatServer.handle_stream``),
  which reads its HTTP request and frames through :mod:`trio_chat.websocket`,
* a line enters in :mod:`trio_chat.connection` (one reader task per client),
* is parsed by :mod:`trio_chat.commands` and carried out by :mod:`trio_chat.chat`,
* is stored by :mod:`trio_chat.history` (ids, group commit) in :mod:`trio_chat.store`,
* and fans out through :mod:`trio_chat.bus` to each client's writer task, rendered by
  :mod:`trio_chat.events`, framed by :mod:`trio_chat.websocket` and written by
  :mod:`trio_chat.transport`.

:mod:`trio_chat.commands`, :mod:`trio_chat.events` and :mod:`trio_chat.protocol` are the
sans-I/O core. :mod:`trio_chat.server` accepts connections and shuts down cleanly;
:mod:`trio_chat.client` is the interactive client (:mod:`trio_chat.view` draws events).
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
