"""The server's command line: ``python -m trio_chat.server`` and ``trio-chat-server``.

Everything that belongs to a process rather than to a server lives here: argparse (built
from :data:`~trio_chat.server.config.SETTINGS`) and the environment, the open-file limit,
garbage-collector tuning, logging, the ready file, and mapping start-up failures to one
line and exit status 2. :func:`trio_chat.server.serve` is the server itself.

The environment is read in one place, :func:`main`; :func:`parse_args` is given it.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import resource
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import trio

from trio_chat.arguments import ArgumentParser

from .accounts.tokens import TokenKeyError
from .config import SETTINGS, ServerConfig
from .control import ControlSocketError
from .net.tls import TLSSetupError
from .server import ChatServer, serve
from .store import StoreError
from .user_cli import BAN_COMMANDS, run_ban_command, run_user_command

__all__ = ["PROG", "ReadyFileError", "main", "parse_args", "startup_failure"]

logger = logging.getLogger("trio_chat.server")

#: The program's name in its usage and error lines (the installed command's name).
PROG = "trio-chat-server"

#: Garbage-collector thresholds. A full collection scans every tracked object: at
#: 5,000 connections one took about 300 ms, and with the default third threshold (10)
#: thirteen of them ran while the connections arrived. A third threshold of 100 makes
#: full collections a tenth as frequent (cycles are still collected); what exists at
#: start-up is also frozen out of the scans (gc.freeze) since it lives for good.
GC_THRESHOLDS = (700, 10, 100)

#: The exit status of a server that could not start (as for a usage error).
CANNOT_START = 2


class ReadyFileError(Exception):
    """The ready file could not be written; the message says why, in one line."""


def build_parser() -> ArgumentParser:
    """The server's argparse parser: one option per row of ``SETTINGS``. Options with an
    environment variable are absent from the result unless given (see :func:`parse_args`)."""
    parser = ArgumentParser(
        prog=PROG,
        description="Run the trio_chat WebSocket chat server. Lines typed on its "
        "standard input are broadcast to every client; /quit, Ctrl-C or SIGTERM "
        "stop it cleanly.",
    )
    for setting in SETTINGS:
        help_text = setting.plain_help.replace("%", "%%")
        if setting.env is not None:
            help_text += f" (env {setting.env}; default: {setting.describe_default()})"
        elif setting.parse is not None:
            help_text += f" (default: {setting.describe_default()})"
        if setting.parse is None:
            parser.add_argument(setting.flag, action="store_true", help=help_text)
            continue
        if setting.repeated:
            parser.add_argument(
                setting.flag,
                type=setting.parse,
                metavar=setting.metavar,
                action="append",
                dest=setting.field,
                default=[],
                help=help_text,
            )
            continue
        parser.add_argument(
            setting.flag,
            type=setting.parse,
            metavar=setting.metavar,
            # Absent unless given: then the environment, and only then the table, decides.
            default=argparse.SUPPRESS if setting.env is not None else setting.default,
            help=help_text,
        )
    return parser


def parse_args(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> argparse.Namespace:
    """The server's command line. A setting's flag wins over its environment variable
    (read from ``environ`` only: none when it is None), which wins over the default.

    A bad flag or variable value prints one line and exits 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    for setting in SETTINGS:
        if setting.repeated:  # every time it was given, in order
            setattr(args, setting.field, tuple(getattr(args, setting.field)))
    environ = {} if environ is None else environ
    for setting in SETTINGS:
        if setting.env is None or hasattr(args, setting.field):
            continue
        value = setting.default
        if setting.env in environ:
            assert setting.parse is not None
            try:
                value = setting.parse(environ[setting.env])
            except argparse.ArgumentTypeError as exc:
                parser.error(f"{setting.env}: {exc}")
        setattr(args, setting.field, value)
    return args


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    """The :class:`ServerConfig` the parsed command line describes."""
    return ServerConfig(
        **{setting.field: getattr(args, setting.field) for setting in SETTINGS if setting.server}
    )


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


def ready_content(server: ChatServer) -> str:
    """The ready file's JSON: this process, every listener's URL, and the port."""
    return json.dumps({"pid": os.getpid(), "urls": server.urls, "port": server.port}) + "\n"


def write_ready_file(path: Path, content: str) -> None:
    """Write ``content`` to ``path`` atomically: a reader sees the whole file or none
    (written beside it under a temporary name, then renamed over it)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(content, encoding="utf-8")
        temporary.replace(path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise ReadyFileError(f"cannot write the ready file {path}: {exc.strerror or exc}") from None


@dataclass
class Progress:
    """How far :func:`run_process_server` got: whether the server was listening."""

    listening: bool = False


async def run_process_server(
    config: ServerConfig,
    *,
    console_fd: int | None,
    file_limit: str,
    ready_file: Path | None,
    progress: Progress,
) -> None:
    """The command line's server: :func:`serve` with signals (and the console when
    ``console_fd`` is given), the open-file line logged and the ready file written once it
    listens (``progress.listening`` set then). Returns when the server has shut down;
    removes the ready file on the way out, however it ends."""
    written = False
    try:
        async with trio.open_nursery() as nursery:
            server: ChatServer = await nursery.start(
                partial(serve, config, console_fd=console_fd, handle_signals=True)
            )
            progress.listening = True
            logger.info("%s", file_limit)
            if ready_file is not None:
                written = True  # a half-written temporary is removed by the writer
                await trio.to_thread.run_sync(write_ready_file, ready_file, ready_content(server))
    finally:
        if written and ready_file is not None:
            with trio.CancelScope(shield=True):
                await trio.Path(ready_file).unlink(missing_ok=True)


def _leaves(error: BaseException) -> Iterator[BaseException]:
    """The exceptions in ``error``, however deeply nurseries grouped them."""
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


def startup_failure(error: BaseException, config: ServerConfig, *, listening: bool) -> str | None:
    """The one line that explains ``error`` when it means the server could not start or
    keep running for a reason the operator can fix (the history file, the ready file, the
    control socket, a JWT key file, the TLS certificate or key, or, before it was
    ``listening``, the port); None for anything else (a bug: its traceback must show)."""
    fixable: tuple[type[BaseException], ...] = (
        StoreError,
        ReadyFileError,
        ControlSocketError,
        TokenKeyError,
        TLSSetupError,
    )
    if not listening:
        fixable += (OSError,)
    leaves = list(_leaves(error))
    if not all(isinstance(leaf, fixable) for leaf in leaves):
        return None
    for leaf in leaves:
        fixable_here = StoreError | ReadyFileError | ControlSocketError | TokenKeyError
        if isinstance(leaf, fixable_here | TLSSetupError):
            return str(leaf)
    leaf = leaves[0]
    assert isinstance(leaf, OSError)
    return f"Could not listen on {config.host}:{config.port}: {leaf.strerror or leaf}"


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m trio_chat.server`` and ``trio-chat-server``.

    Exits 0 after a clean shutdown, 2 when the server cannot start (bad flag, port
    in use, unusable history database), each with one clear line and no traceback.
    ``trio-chat-server user ...`` manages accounts instead, and ``ban``, ``unban`` and
    ``bans`` the bans (:mod:`.user_cli`).
    """
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == ["user"]:
        sys.exit(run_user_command(arguments[1:], prog=PROG, environ=os.environ))
    if arguments[:1] and arguments[0] in BAN_COMMANDS:
        sys.exit(run_ban_command(arguments[0], arguments[1:], prog=PROG, environ=os.environ))
    # The one place the environment is read (TRIO_CHAT_HOST, TRIO_CHAT_PORT; for `user`,
    # where the database and the control socket are by default).
    args = parse_args(arguments, os.environ)
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    config = config_from_args(args)
    problem = config.login_problem()
    if problem is not None:
        build_parser().error(problem)
    file_limit = raise_open_file_limit()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    console_fd = None if args.no_console else sys.stdin.fileno() if sys.stdin else None
    ready_file = None if args.ready_file is None else Path(args.ready_file)
    # Errors are mapped to an exit status here, outside any except* clause: on Python
    # 3.11.0-3.11.3 an exception raised inside except* (SystemExit too) comes out
    # wrapped in an exception group, a traceback and exit status 1.
    failure: str | None = None
    progress = Progress()
    try:
        trio.run(
            partial(
                run_process_server,
                config,
                console_fd=console_fd,
                file_limit=file_limit,
                ready_file=ready_file,
                progress=progress,
            )
        )
    except (
        StoreError,
        ReadyFileError,
        ControlSocketError,
        TokenKeyError,
        TLSSetupError,
        OSError,
        BaseExceptionGroup,
    ) as error:
        failure = startup_failure(error, config, listening=progress.listening)
        if failure is None:
            raise
    if failure is not None:
        print(failure, file=sys.stderr)
        sys.exit(CANNOT_START)
