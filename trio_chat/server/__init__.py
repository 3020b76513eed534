"""The chat server.

Where a message goes, in order:

* :mod:`~trio_chat.server.server`: ``ChatServer.handle_stream`` is where a connection is
  accepted (its HTTP request read through :mod:`~trio_chat.server.net`);
* :mod:`~trio_chat.server.connection`: its reader task is where a message enters, its
  writer task where events leave;
* :mod:`~trio_chat.server.chat`: what each command does to the chat's state;
* :mod:`~trio_chat.server.history`: where a message gets its id and is stored
  (:mod:`~trio_chat.server.store`), before anyone sees it;
* :mod:`~trio_chat.server.bus`: where it fans out, one bounded queue per subscriber.

:mod:`~trio_chat.server.console` is the operator's terminal and
:mod:`~trio_chat.server.cli` the command line.
"""

from .config import ServerConfig
from .server import ChatServer, serve

__all__ = ["ChatServer", "ServerConfig", "serve"]
