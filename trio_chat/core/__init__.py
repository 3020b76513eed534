"""The sans-I/O core shared by the server and the client: no trio, no sockets, no storage.

* :mod:`~trio_chat.core.commands`: what a client may send, parsed from plain lines and JSON;
* :mod:`~trio_chat.core.events`: what the server sends, typed, with its JSON form;
* :mod:`~trio_chat.core.render`: the plain-text wording of every event, written once;
* :mod:`~trio_chat.core.text`: hostile text stripped, and the rule of names;
* :mod:`~trio_chat.core.bans`: ban targets and durations, as operators write them;
* :mod:`~trio_chat.core.wire`: the wire formats (plain, JSON): frames in, text out;
* :mod:`~trio_chat.core.record`: a stored message;
* :mod:`~trio_chat.core.arrival`: the ``?nick=&room=&since=`` query of a connection's URL;
* :mod:`~trio_chat.core.close`: close codes, reasons, and which are worth reconnecting after.

Nothing here may import trio, sqlite3 or socket: ``tests/core`` checks it in a fresh
interpreter.
"""
