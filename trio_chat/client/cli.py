"""The client's command line: ``python -m trio_chat.client`` and ``trio-chat``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

import trio

from trio_chat.core.commands import PROTOCOL, CommandError, valid_name

from .connection import DEFAULT_URL, ChatClient
from .terminal import Screen

__all__ = ["main", "parse_args"]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The client's command line."""
    parser = argparse.ArgumentParser(
        prog="python -m trio_chat.client",
        description="Chat on a trio_chat server (nicknames, rooms, private messages; "
        "'/help' lists the commands) or on any server speaking plain text over WebSocket. "
        "Type a line and press Enter to send it; 'exit', Ctrl-D or Ctrl-C to leave.",
    )
    parser.add_argument(
        "url",
        nargs="?",
        default=DEFAULT_URL,
        help=f"the server's WebSocket URL (default: {DEFAULT_URL})",
    )
    parser.add_argument(
        "--name",
        metavar="NICK",
        help="your nickname (default: your login name); NICK-2, NICK-3... if it is taken",
    )
    parser.add_argument("--room", metavar="ROOM", help="a room to join on arrival")
    parser.add_argument(
        "--no-reconnect",
        dest="reconnect",
        action="store_false",
        help="exit (status 1) when the connection is lost, instead of reconnecting",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help=f"plain text only: do not offer the {PROTOCOL} protocol",
    )
    args = parser.parse_args(argv)
    try:
        if args.name is not None:
            args.name = valid_name(args.name, "nickname")
        if args.room is not None:
            args.room = valid_name(args.room, "room name").lower()
    except CommandError as error:
        parser.error(error.text)
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m trio_chat.client`` and ``trio-chat``.

    Exits 0 when the user leaves; 1 when the server cannot be reached at start-up, or
    closes the connection in a way not worth reconnecting after (or at all, with
    ``--no-reconnect``).
    """
    args = parse_args(argv)
    client = ChatClient(
        args.url,
        Screen(),
        sys.stdin.fileno() if sys.stdin else os.open(os.devnull, os.O_RDONLY),
        nick=args.name,
        room=args.room,
        plain=args.plain,
        reconnect=args.reconnect,
    )
    sys.exit(trio.run(client.run))
