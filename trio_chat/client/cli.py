"""The client's command line: ``python -m trio_chat.client`` and ``trio-chat``."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Sequence

import trio

from trio_chat.arguments import ArgumentParser
from trio_chat.core.commands import PROTOCOL, CommandError, valid_name, valid_room

from .connection import (
    DEFAULT_URL,
    PING_INTERVAL,
    PING_TIMEOUT,
    RECONNECT_CAP,
    RECONNECT_INITIAL,
    Backoff,
    ChatClient,
    ClientError,
    client_ssl_context,
)
from .terminal import Screen

__all__ = ["ask_password", "main", "parse_args", "ping_seconds", "reconnect_delay"]

#: The longest delay ``--reconnect-delay`` accepts (seconds): beyond an hour a user is
#: better served by ``--no-reconnect``.
MAX_RECONNECT_DELAY = 3600.0


def ping_seconds(text: str) -> float:
    """``--ping-interval`` and ``--ping-timeout``: seconds, 0 (off) up to an hour."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_RECONNECT_DELAY:
        raise argparse.ArgumentTypeError(
            f"expected seconds from 0 to {MAX_RECONNECT_DELAY:g}, not {text!r}"
        )
    return value


def reconnect_delay(text: str) -> Backoff:
    """``--reconnect-delay INITIAL[,MAX]``: the first delay before reconnecting and the
    most it doubles up to, in seconds (MAX defaults to the larger of INITIAL and 10)."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not 1 <= len(values) <= 2 or not all(0 < value <= MAX_RECONNECT_DELAY for value in values):
        raise argparse.ArgumentTypeError(
            f"expected INITIAL[,MAX] seconds, each above 0 and at most "
            f"{MAX_RECONNECT_DELAY:g}, not {text!r}"
        )
    initial = values[0]
    return Backoff(initial, values[1] if len(values) == 2 else max(RECONNECT_CAP, initial))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The client's command line."""
    parser = ArgumentParser(
        prog="trio-chat",
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
        "--reconnect-delay",
        metavar="INITIAL[,MAX]",
        type=reconnect_delay,
        default=Backoff(),
        help=f"seconds to wait before the first reconnection attempt, doubling after each "
        f"up to MAX (default: {RECONNECT_INITIAL:g},{RECONNECT_CAP:g}); each wait is a "
        f"random 50-100%% of that",
    )
    parser.add_argument(
        "--ping-interval",
        metavar="SECONDS",
        type=ping_seconds,
        default=PING_INTERVAL,
        help=f"ping the server this often to notice a connection that died silently "
        f"(default: {PING_INTERVAL:g}); 0 for no pings",
    )
    parser.add_argument(
        "--ping-timeout",
        metavar="SECONDS",
        type=ping_seconds,
        default=PING_TIMEOUT,
        help=f"a ping the server has not answered after this long means the connection is "
        f"lost: reconnect (default: {PING_TIMEOUT:g}); 0 to wait however long",
    )
    parser.add_argument(
        "--cafile",
        metavar="FILE",
        help="for a wss:// URL: trust the CA certificates in FILE (PEM) instead of the "
        "system's (SSL_CERT_FILE works too)",
    )
    parser.add_argument(
        "--plain",
        action="store_true",
        help=f"plain text only: do not offer the {PROTOCOL} protocol",
    )
    credentials = parser.add_mutually_exclusive_group()
    credentials.add_argument(
        "--login",
        metavar="NAME",
        help="log in to the account NAME (on a server with --accounts); you are asked for "
        "its password, which is never shown",
    )
    credentials.add_argument(
        "--token-file",
        metavar="FILE",
        help="log in with the token in FILE (on a server with a JWT key); read again at "
        "each connection and whenever the server asks for a new token",
    )
    args = parser.parse_args(argv)
    try:
        if args.login is not None:
            args.login = valid_name(args.login, "account name")
        if args.name is not None:
            args.name = valid_name(args.name, "nickname")
        if args.room is not None:
            args.room = valid_room(args.room)
    except CommandError as error:
        parser.error(error.text)
    if args.cafile is not None and not args.url.startswith("wss://"):
        parser.error("--cafile is for a wss:// URL")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m trio_chat.client`` and ``trio-chat``.

    Exits 0 when the user leaves; 1 when the server cannot be reached at start-up, or
    closes the connection in a way not worth reconnecting after (or at all, with
    ``--no-reconnect``).
    """
    args = parse_args(argv)
    screen = Screen()
    ssl_context = None
    if args.url.startswith("wss://"):
        try:
            ssl_context = client_ssl_context(args.cafile)
        except ClientError as error:  # shown as a connection failure is: one line
            screen.status(str(error))
            sys.exit(1)
    login = None
    if args.login is not None:
        login = (args.login, ask_password(args.login))
    client = ChatClient(
        args.url,
        screen,
        sys.stdin.fileno() if sys.stdin else os.open(os.devnull, os.O_RDONLY),
        nick=args.name,
        room=args.room,
        plain=args.plain,
        reconnect=args.reconnect,
        backoff=args.reconnect_delay,
        login=login,
        token_file=args.token_file,
        ssl_context=ssl_context,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
    )
    del login
    sys.exit(trio.run(client.run))


def ask_password(name: str) -> str:
    """The password of account ``name``, asked on the terminal without echo (getpass):
    never shown, never in any history. Exits 1 when none comes (end of input, Ctrl-C)."""
    try:
        password = getpass.getpass(f"Password for {name}: ")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        sys.exit(1)
    if not password:
        print("trio-chat: no password given", file=sys.stderr)
        sys.exit(1)
    return password
