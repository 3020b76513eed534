"""The chat client.

* :mod:`~trio_chat.client.session`: the ``trio-chat.v1`` conversation without I/O;
* :mod:`~trio_chat.client.connection`: the connections, one after another, with
  reconnects, over trio-websocket;
* :mod:`~trio_chat.client.view` and :mod:`~trio_chat.client.terminal`: what the user sees;
* :mod:`~trio_chat.client.cli`: the command line.
"""
