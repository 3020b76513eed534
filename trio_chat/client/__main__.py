"""``python -m trio_chat.client``: see :mod:`trio_chat.client.cli`."""

from .cli import main

main()
