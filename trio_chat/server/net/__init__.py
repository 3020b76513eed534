"""The server's network layer: bytes on a stream in, WebSocket messages out.

* :mod:`~trio_chat.server.net.seam`: :class:`~trio_chat.server.net.seam.ChatSocket`,
  everything the rest of the server may use of a client's connection;
* :mod:`~trio_chat.server.net.stream`: the byte stream of one connection (any
  ``trio.abc.Stream``), with a write path that never waits;
* :mod:`~trio_chat.server.net.websocket`: the HTTP request (h11) and the WebSocket frames
  (wsproto) of a connection.
"""
