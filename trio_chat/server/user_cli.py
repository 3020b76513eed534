"""``trio-chat-server user add|remove|list|passwd`` and ``trio-chat-server ban|unban|bans``:
the operator's account and ban commands.

While a server runs, its SQLite database is locked (it is opened exclusively), so the
command asks that server over its admin channel (:mod:`trio_chat.server.control`);
when none runs it opens the database itself. The lock tells which: the database is
tried first, and a lock sends the request to the control socket of a server run with
that ``--db``. With ``--control-socket`` (or ``--db :memory:``, which only a running
server has) the request goes to that socket alone.

A password is read from ``--password-file`` (its first line; ``-`` for standard input)
or asked for twice without echo. It travels over the socket to the server, which only
its own user may connect to, and is never printed or logged.

A ban (``ban TARGET [--duration D] [--reason TEXT]``) made through a running server
closes the connections it applies to at once; made on the database, it holds from the
next start. Every failure is one line on stderr and exit status 2; no traceback.
"""

from __future__ import annotations

import getpass
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import trio

from trio_chat.arguments import USAGE_ERROR, ArgumentParser
from trio_chat.core import render
from trio_chat.core.commands import CommandError, valid_name

from .accounts import Accounts, LoginThrottle, Passwords
from .accounts.service import check_password
from .chat import Chat
from .config import MEMORY, ServerConfig
from .control import (
    ControlError,
    ControlOps,
    control_request,
    control_socket_for,
    default_control_socket,
    is_absent,
)
from .history import MessageLog
from .store import StoreError, StoreLocked, describe_db, open_store

__all__ = [
    "BAN_COMMANDS",
    "UserCommandError",
    "build_ban_parser",
    "build_user_parser",
    "run_ban_command",
    "run_user_command",
]

#: The ban commands: ``trio-chat-server ban|unban|bans ...``.
BAN_COMMANDS = ("ban", "unban", "bans")
#: Each ban command's control op, and the chat command whose answer words its report.
BAN_OPS = {"ban": "ban.add", "unban": "ban.remove", "bans": "ban.list"}
BAN_ANSWERS = {"ban.add": "ban", "ban.remove": "unban", "ban.list": "bans"}

#: The exit status of a command that failed (as for a usage error).
FAILED = USAGE_ERROR
#: The exit status after Ctrl-C (128 + SIGINT, as the shell reports it).
INTERRUPTED = 130
#: Longest password file read: a password is one line, and this is no place for a dump.
MAX_PASSWORD_FILE = 64 * 1024


class UserCommandError(Exception):
    """The command cannot be carried out; the message says why, in one line."""


def _where() -> ArgumentParser:
    """The options saying which server or database: ``--db`` and ``--control-socket``."""
    where = ArgumentParser(add_help=False)
    where.add_argument(
        "--db",
        metavar="PATH",
        help="the server's database (default: the server's default, "
        "$XDG_DATA_HOME/trio_chat/history.db)",
    )
    where.add_argument(
        "--control-socket",
        metavar="PATH",
        help="ask the server on this control socket, and only it (default: the one of "
        "the server run with --db, when the database is in use)",
    )
    return where


def build_ban_parser(prog: str, command: str) -> ArgumentParser:
    """The parser of ``PROG ban|unban|bans ...`` (``command`` says which)."""
    descriptions = {
        "ban": "Ban a nick, an address or network (CIDR), principal:ID or account:NAME: "
        "through the running server's control socket (which closes the connections the "
        "ban applies to) when one runs, else in its database.",
        "unban": "Lift a ban.",
        "bans": "List the bans in force.",
    }
    parser = ArgumentParser(
        prog=f"{prog} {command}", description=descriptions[command], parents=[_where()]
    )
    if command in ("ban", "unban"):
        parser.add_argument(
            "target",
            metavar="TARGET",
            help="NICK, ADDRESS[/PREFIX], principal:ID or account:NAME (nick:NAME for a "
            "nick that looks like an address)",
        )
    if command == "ban":
        parser.add_argument(
            "--duration",
            metavar="DURATION",
            help="how long: 30s, 10m, 2h, 7d, 1w (default: for good)",
        )
        parser.add_argument("--reason", metavar="TEXT", help="why (shown to the banned)")
    return parser


def run_ban_command(
    command: str,
    argv: Sequence[str],
    *,
    prog: str,
    environ: Mapping[str, str],
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``PROG COMMAND ARGV`` for a ban command; its exit status: 0, or 2 with one
    line on ``err`` (a usage error exits 2 from argparse)."""
    args = build_ban_parser(prog, command).parse_args(argv)
    request: dict[str, Any] = {"op": BAN_OPS[command]}
    if command in ("ban", "unban"):
        request["target"] = args.target
    if command == "ban":
        if args.duration is not None:
            request["duration"] = args.duration
        if args.reason is not None:
            request["reason"] = args.reason
    return _answer(f"{prog} {command}", lambda: request, args, environ=environ, out=out, err=err)


def build_user_parser(prog: str) -> ArgumentParser:
    """The parser of ``PROG user ...``: one sub-command per operation, each taking
    ``--db`` and ``--control-socket`` as the server does."""
    where = _where()
    secret = ArgumentParser(add_help=False)
    secret.add_argument(
        "--password-file",
        metavar="FILE",
        help="read the password from the first line of FILE ('-': standard input) "
        "instead of asking for it twice",
    )
    parser = ArgumentParser(
        prog=f"{prog} user",
        description="Manage the accounts of --accounts: through the running server's "
        "control socket when one runs, else in its database directly.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add = commands.add_parser(
        "add", parents=[where, secret], help="add an account (asks for its password)"
    )
    add.add_argument("name", metavar="NAME")
    add.add_argument("--admin", action="store_true", help="the account is an admin")
    remove = commands.add_parser(
        "remove", parents=[where], help="remove an account and close its connections"
    )
    remove.add_argument("name", metavar="NAME")
    commands.add_parser("list", parents=[where], help="list the accounts")
    passwd = commands.add_parser(
        "passwd", parents=[where, secret], help="give an account a new password"
    )
    passwd.add_argument("name", metavar="NAME")
    return parser


@dataclass(frozen=True, slots=True)
class _Terminal:
    """Where the command reads a password and writes its answer."""

    ask: Callable[[str], str]
    stdin: TextIO
    out: TextIO


def run_user_command(
    argv: Sequence[str],
    *,
    prog: str,
    environ: Mapping[str, str],
    ask: Callable[[str], str] = getpass.getpass,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run ``PROG user ARGV``; its exit status: 0, or 2 with one line on ``err`` (a usage
    error exits 2 from argparse). ``ask`` reads a password without echo."""
    args = build_user_parser(prog).parse_args(argv)
    terminal = _Terminal(ask, stdin or sys.stdin, out or sys.stdout)
    label = f"{prog} user {args.command}"
    return _answer(label, lambda: _request(args, terminal), args, environ=environ, out=out, err=err)


def _answer(
    label: str,
    make_request: Callable[[], dict[str, Any]],
    args: Any,
    *,
    environ: Mapping[str, str],
    out: TextIO | None,
    err: TextIO | None,
) -> int:
    """Make the request (which may ask for a password), carry it out through the
    running server or on the database (``args.db``, ``args.control_socket``), and print
    its answer on ``out``; the exit status: 0, or 2 with one line on ``err`` starting
    with ``label`` (:data:`INTERRUPTED` after Ctrl-C, with a blank line)."""
    try:
        request = make_request()
        answer = trio.run(_carry_out, request, args.db, args.control_socket, dict(environ))
    except UserCommandError as exc:
        print(f"{label}: {exc}", file=err or sys.stderr)
        return FAILED
    except KeyboardInterrupt:
        print(file=err or sys.stderr)
        return INTERRUPTED
    for line in _report(request, answer):
        print(line, file=out or sys.stdout)
    return 0


def _request(args: Any, terminal: _Terminal) -> dict[str, Any]:
    """The control request the command stands for (the password read, when it needs
    one, before anything is opened)."""
    match args.command:
        case "list":
            return {"op": "user.list"}
        case "remove":
            return {"op": "user.remove", "name": args.name}
    name = args.name
    if args.command == "add":
        try:
            valid_name(name, "account name")
        except CommandError as error:
            raise UserCommandError(error.text) from None
    password = _password(args.password_file, name, terminal)
    if args.command == "add":
        return {"op": "user.add", "name": name, "password": password, "admin": args.admin}
    return {"op": "user.passwd", "name": name, "password": password}


def _password(password_file: str | None, name: str, terminal: _Terminal) -> str:
    """The password from ``password_file``'s first line, or asked for twice."""
    if password_file is not None:
        password = _read_password_file(password_file, terminal.stdin)
    else:
        try:
            password = terminal.ask(f"Password for {name}: ")
            again = terminal.ask("Again: ")
        except EOFError:
            raise UserCommandError("no password given") from None
        if password != again:
            raise UserCommandError("the two passwords differ; nothing was changed")
    try:
        return check_password(password)
    except CommandError as error:
        raise UserCommandError(error.text) from None


def _read_password_file(path: str, stdin: TextIO) -> str:
    """The first line of the file at ``path`` (``-``: ``stdin``), without its newline."""
    if path == "-":
        text = stdin.readline(MAX_PASSWORD_FILE)
        where = "standard input"
    else:
        where = f"the password file {path}"
        try:
            with open(path, encoding="utf-8") as file:
                text = file.readline(MAX_PASSWORD_FILE)
        except OSError as exc:
            raise UserCommandError(f"cannot read {where}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise UserCommandError(f"{where} is not UTF-8 text") from None
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise UserCommandError(f"{where} holds no password (its first line is empty)")
    return password


async def _carry_out(
    request: dict[str, Any], db: str | None, control_socket: str | None, environ: dict[str, str]
) -> dict[str, Any]:
    """Carry out ``request`` where it must be: the control socket named, or the database
    (when no server holds it), or the control socket of the server that does. The
    answer, with ``via_server`` saying which; a refusal raises :class:`UserCommandError`."""
    if control_socket is not None or db == MEMORY:
        socket = control_socket_for(db, control_socket, environ)
        if socket is None:
            raise UserCommandError(
                "a database in memory is only in its server: give that server's "
                "--control-socket PATH"
            )
        return await _ask_server(socket, request, None)
    # No waiting for the lock: a running server holds it for good, and nothing else
    # takes it but for a moment.
    store = open_store(db, ServerConfig().history_limit, lock_timeout=0)
    try:
        await store.open()
    except StoreLocked:
        socket = default_control_socket(db, environ)
        assert socket is not None
        return await _ask_server(socket, request, describe_db(db))
    except StoreError as exc:
        raise UserCommandError(str(exc)) from None
    try:
        accounts = Accounts(store, Passwords(), LoginThrottle(clock=time.monotonic))
        # The same ops the server runs, on the database: a chat nobody is in, so that a
        # ban is checked and kept as the server would, and disconnects nobody.
        chat = Chat(MessageLog(store))
        chat.find_account = accounts.get
        await chat.load_moderation()
        answer = await ControlOps(accounts, chat).run(request)
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()
    return _checked(answer, via_server=False)


async def _ask_server(socket: Path, request: dict[str, Any], in_use: str | None) -> dict[str, Any]:
    """Send ``request`` to the server on ``socket``; its answer. ``in_use``: the database
    found locked, that led here (for the message when nothing answers)."""
    try:
        answer = await control_request(socket, request)
    except ControlError as exc:
        raise UserCommandError(str(exc)) from None
    except OSError as exc:
        if not is_absent(exc):
            raise UserCommandError(
                f"cannot reach the server on {socket}: {exc.strerror or exc}"
            ) from None
        if in_use is None:
            raise UserCommandError(f"no server answers on the control socket {socket}") from None
        raise UserCommandError(
            f"the database {in_use} is in use by a running server, but nothing answers on "
            f"its control socket {socket} (was it started with --control-socket PATH? "
            "give it here too)"
        ) from None
    return _checked(answer, via_server=True)


def _checked(answer: dict[str, Any], *, via_server: bool) -> dict[str, Any]:
    if answer.get("ok") is not True:
        raise UserCommandError(str(answer.get("error", "the request failed")))
    return {**answer, "via_server": via_server}


def _report(request: dict[str, Any], answer: dict[str, Any]) -> list[str]:
    """What the command prints once it has succeeded."""
    through = " (through the running server)" if answer["via_server"] else ""
    match request["op"]:
        case "ban.add" | "ban.remove" | "ban.list":
            # Worded as the console's answer to the same command, less its "* ".
            lines = render.ack_lines({**answer, "command": BAN_ANSWERS[request["op"]]})
            lines = [line.removeprefix("* ") for line in lines]
            if request["op"] != "ban.list":
                lines[0] += through
            return lines
        case "user.add":
            role = " as an admin" if answer.get("admin") else ""
            return [f"added the account {answer['name']}{role}{through}"]
        case "user.remove":
            closed = int(answer.get("closed", 0))
            line = f"removed the account {answer['name']}{through}"
            if closed:
                line += f"; closed its {closed} connection{'s' if closed != 1 else ''}"
            return [line]
        case "user.passwd":
            return [f"changed the password of {answer['name']}{through}"]
    users = answer.get("users", [])
    if not users:
        return [f"no accounts{through}"]
    width = max(len("name"), *(len(str(user["name"])) for user in users))
    lines = [f"{'name':<{width}}  admin  created"]
    for user in users:
        admin = "yes" if user["admin"] else "no"
        lines.append(f"{user['name']:<{width}}  {admin:<5}  {user['created']}")
    return lines
