"""``python -m trio_chat.server``: see :mod:`trio_chat.server.cli`."""

from .cli import main

main()
