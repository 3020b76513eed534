"""The chat client.

* :mod:`~trio_chat.client.session`: the ``trio-chat.v1`` conversation without I/O;
* :mod:`~trio_chat.client.connection`: the terminal client's connections, one after
  another, with reconnects, over trio-websocket: a state machine of phases;
* :mod:`~trio_chat.client.api`: the programmatic client, ``trio_chat.connect``;
* :mod:`~trio_chat.client.view` and :mod:`~trio_chat.client.terminal`: what the user sees;
* :mod:`~trio_chat.client.cli`: the command line.
"""

__all__: list[str] = []
