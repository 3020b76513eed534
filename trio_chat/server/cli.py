"""The server's command line: ``python -m trio_chat.server`` and ``trio-chat-server``.

Everything that belongs to a process rather than to a server lives here: argparse and
the environment, the open-file limit, garbage-collector tuning, logging, and mapping
start-up failures to one line and exit status 2. :func:`trio_chat.server.serve` is the
server itself.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import resource
import sys
from collections.abc import Callable, Sequence

import trio

from trio_chat.core.arrival import DEFAULT_HOST, DEFAULT_PORT

from .config import ServerConfig
from .server import serve
from .store import StoreError, default_db_path

__all__ = ["main", "parse_args"]

#: Garbage-collector thresholds. A full collection scans every tracked object: at
#: 5,000 connections one took about 300 ms, and with the default third threshold (10)
#: thirteen of them ran while the connections arrived. A third threshold of 100 makes
#: full collections a tenth as frequent (cycles are still collected); what exists at
#: start-up is also frozen out of the scans (gc.freeze) since it lives for good.
GC_THRESHOLDS = (700, 10, 100)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be 0 or more")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


#: The limit flags: (ServerConfig field, value parser, metavar, help). Each becomes
#: ``--field-name`` with the field's default, so a flag and its setting cannot drift apart.
LIMIT_FLAGS: tuple[tuple[str, Callable[[str], object], str, str], ...] = (
    (
        "max_message_size",
        _positive_int,
        "BYTES",
        "largest message a client may send, in UTF-8 bytes; a bigger one closes it with 1009",
    ),
    (
        "queue_depth",
        _positive_int,
        "EVENTS",
        "events queued per client before it is closed with 1008 'slow consumer'",
    ),
    (
        "send_timeout",
        _seconds,
        "SECONDS",
        "time one frame may take to send before the client is dropped as a slow consumer",
    ),
    (
        "handshake_timeout",
        _seconds,
        "SECONDS",
        "time a new connection has to complete the WebSocket handshake",
    ),
    (
        "max_connections",
        _positive_int,
        "N",
        "connections open at once; further handshakes get HTTP 503 'server full'",
    ),
    (
        "presence_limit",
        _non_negative_int,
        "MEMBERS",
        "rooms with more members than this get no join/leave/nick/quit notices",
    ),
    (
        "history_limit",
        _positive_int,
        "MESSAGES",
        "messages kept per room (and for private messages); the oldest go first",
    ),
    (
        "history_on_join",
        _non_negative_int,
        "MESSAGES",
        "stored messages a client is sent when it joins a room (0: none)",
    ),
    (
        "shutdown_grace",
        _seconds,
        "SECONDS",
        "time given to closing every connection with 1001 at shutdown",
    ),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The server's command line; environment variables supply the host and port defaults."""
    defaults = ServerConfig()
    parser = argparse.ArgumentParser(
        prog="python -m trio_chat.server",
        description="Run the trio_chat WebSocket chat server. Lines typed on its "
        "standard input are broadcast to every client; /quit, Ctrl-C or SIGTERM "
        "stop it cleanly.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("TRIO_CHAT_HOST", DEFAULT_HOST),
        help="interface to listen on (env TRIO_CHAT_HOST)",
    )
    parser.add_argument(
        "--port",
        type=_port,
        default=argparse.SUPPRESS,  # absent unless given: then TRIO_CHAT_PORT decides
        help=f"TCP port; 0 picks a free one (env TRIO_CHAT_PORT; default: {DEFAULT_PORT})",
    )
    for field, parse, metavar, help_text in LIMIT_FLAGS:
        parser.add_argument(
            "--" + field.replace("_", "-"),
            type=parse,
            default=getattr(defaults, field),
            metavar=metavar,
            help=help_text,
        )
    parser.add_argument(
        "--db",
        default=str(default_db_path()),
        metavar="PATH",
        help="SQLite file that stores every message; ':memory:' keeps them in memory only",
    )
    parser.add_argument(
        "--no-console",
        action="store_true",
        help="do not read operator lines from standard input",
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default="INFO",
        help="logging threshold",
    )
    args = parser.parse_args(argv)
    if not hasattr(args, "port"):
        try:
            args.port = _port(os.environ.get("TRIO_CHAT_PORT", str(DEFAULT_PORT)))
        except argparse.ArgumentTypeError as exc:
            parser.error(f"TRIO_CHAT_PORT: {exc}")
    return args


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The :class:`ServerConfig` the parsed command line describes."""
    limits = {field: getattr(args, field) for field, *_ in LIMIT_FLAGS}
    return ServerConfig(host=args.host, port=args.port, db=args.db, **limits)


def raise_open_file_limit() -> str:
    """Raise the soft limit on open files to the hard limit: every connection is a file
    descriptor, and the usual soft limit (1024) would cap the server there. Returns
    the line to log once the server is listening."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= hard:
        return f"open-file limit: {soft}"
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        return f"could not raise the open-file limit from {soft}: {exc}"
    return f"raised the open-file limit from {soft} to {hard}"


def first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception in ``group``, however deeply nurseries nested it."""
    error: BaseException = group
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m trio_chat.server`` and ``trio-chat-server``.

    Exits 0 after a clean shutdown, 2 when the server cannot start (bad flag, port
    in use, unusable history database), each with one clear line and no traceback.
    """
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    config = config_from_args(args)
    file_limit = raise_open_file_limit()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    console_fd = None if args.no_console else sys.stdin.fileno() if sys.stdin else None
    try:
        trio.run(lambda: serve(config, console_fd=console_fd, file_limit=file_limit))
    except* StoreError as group:
        print(first_error(group), file=sys.stderr)
        sys.exit(2)
    except* OSError as group:
        exc = first_error(group)
        assert isinstance(exc, OSError)
        print(
            f"Could not listen on {config.host}:{config.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        sys.exit(2)
