"""The admin channel: a Unix socket a running server answers operators' requests on.

The SQLite store is opened exclusively, so while a server runs nothing else may touch
its database: ``trio-chat-server user ...`` asks the server instead, over this socket.
One JSON object per line each way::

    {"op": "user.add", "name": "bob", "password": "...", "admin": false}
    {"ok": true, "name": "bob", "id": "account:3"}
    {"op": "user.remove", "name": "nobody"}
    {"ok": false, "error": "there is no account called nobody"}

Ops: ``user.add``, ``user.remove`` (whose account's connections the server then
closes: :func:`close_account`), ``user.list`` and ``user.passwd``; ``ban.add`` (which
closes the connections the ban applies to), ``ban.remove`` and ``ban.list``::

    {"op": "ban.add", "target": "203.0.113.0/24", "duration": "2h", "reason": "spam"}
    {"ok": true, "ban": {"target": "203.0.113.0/24", ...}, "closed": 3}

The workers of a scaled-out server will add theirs to :class:`ControlOps`.

Who may ask: whoever may connect to the socket. Its folder is made 0700 and the socket
0600 (bound under a temporary name, made private, then renamed into place), so that is
the server's own user. A socket file left by a server that was killed is replaced; one
another server still answers on is not. The socket is removed at a clean exit.

:func:`serve_control` runs in the :class:`~trio_chat.server.server.ChatServer`'s nursery;
each client is a task in the control server's own nursery. A line is at most
:data:`MAX_LINE` bytes; a bad request is answered (``ok: false``), never raised.
Passwords in requests are never logged.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import os
import socket
import stat
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import trio

from trio_chat.core import render
from trio_chat.core.close import Kicked
from trio_chat.core.commands import Ban, CommandError, ListBans, Unban, parse_json
from trio_chat.core.identity import Principal

from .accounts import Accounts
from .chat import Chat, Member
from .config import MEMORY
from .moderation import OPERATOR
from .store import StoreError, default_db_path

__all__ = [
    "MAX_CLIENTS",
    "MAX_LINE",
    "ControlError",
    "ControlOps",
    "ControlSocketError",
    "account_members",
    "close_account",
    "control_request",
    "control_socket_for",
    "default_control_socket",
    "is_absent",
    "no_such_account",
    "open_control_listener",
    "serve_control",
]

logger = logging.getLogger("trio_chat.server.control")

#: Longest request or answer line, in bytes: a request is a name and a password; a list
#: of ten thousand accounts is well under it.
MAX_LINE = 1024 * 1024
#: Operators served at once; one more is answered ``busy`` and closed. Only the server's
#: own user can connect, so this guards against a runaway script, not an attacker.
MAX_CLIENTS = 8
#: Seconds a control client may stay connected without a complete request.
IDLE_TIMEOUT = 60.0
#: Seconds a conversation ended early (a line too long) goes on being read and dropped,
#: so that the client gets the answer before the connection closes.
LINGER = 2.0
#: Longest path a Unix socket may have (``sun_path``, less its terminating NUL).
MAX_SOCKET_PATH = 107
#: The folder's and the socket's modes: the server's own user only.
FOLDER_MODE = 0o700
SOCKET_MODE = 0o600


class ControlSocketError(Exception):
    """The control socket cannot be made; the message says why, in one line."""


class ControlError(Exception):
    """A request over the control socket failed; the message says why, in one line."""


def default_control_socket(db: str | None, environ: Mapping[str, str] | None = None) -> Path | None:
    """Where the server for database ``db`` (None: the default file) listens by default:
    ``$XDG_RUNTIME_DIR/trio_chat/control-<12 hex>.sock``, the hex the start of the SHA-256
    of the database's absolute path, so each database has its own; in the data folder
    (beside the default database) without XDG_RUNTIME_DIR. None for ``:memory:``."""
    if db == MEMORY:
        return None
    environ = os.environ if environ is None else environ
    database = (default_db_path(environ) if db is None else Path(db)).resolve()
    digest = hashlib.sha256(os.fsencode(database)).hexdigest()[:12]
    runtime = environ.get("XDG_RUNTIME_DIR")
    folder = Path(runtime) / "trio_chat" if runtime else default_db_path(environ).parent
    return folder / f"control-{digest}.sock"


def control_socket_for(
    db: str | None, control_socket: str | None, environ: Mapping[str, str] | None = None
) -> Path | None:
    """The control socket of a server run with ``--db db`` and ``--control-socket``."""
    if control_socket is not None:
        return Path(control_socket)
    return default_control_socket(db, environ)


# --- the ops ---------------------------------------------------------------------------------


class ControlOps:
    """What the admin channel can do: each op takes the request's fields and returns the
    answer's (``ok`` is added), or raises :class:`CommandError` / :class:`StoreError`,
    whose text is the answer's ``error``. ``chat`` is the running server's, or one
    made over a database no server holds (its moderation loaded, nobody connected);
    None: only the ``user.*`` ops."""

    def __init__(self, accounts: Accounts, chat: Chat | None) -> None:
        self.accounts = accounts
        self.chat = chat

    async def run(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Answer one request: ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
        Never raises for a bad request or a store failure; a bug is logged with its
        traceback and answered as an internal error."""
        op = request.get("op")
        handlers: dict[str, Callable[[Mapping[str, Any]], Any]] = {
            "user.add": self.user_add,
            "user.remove": self.user_remove,
            "user.list": self.user_list,
            "user.passwd": self.user_passwd,
            "ban.add": self.ban_add,
            "ban.remove": self.ban_remove,
            "ban.list": self.ban_list,
        }
        handler = handlers.get(op) if isinstance(op, str) else None
        if handler is None:
            return _refusal(f"unknown op {op!r}; one of {', '.join(handlers)}")
        try:
            answer: dict[str, Any] = await handler(request)
        except (CommandError, StoreError, ControlError) as exc:
            return _refusal(str(exc))
        except Exception:
            logger.exception("control: %s failed", op)
            return _refusal(f"{op} failed: internal error (see the server's log)")
        return {"ok": True, **answer}

    async def user_add(self, request: Mapping[str, Any]) -> dict[str, Any]:
        name, password = _text(request, "name"), _text(request, "password")
        admin = request.get("admin", False)
        if not isinstance(admin, bool):
            raise ControlError("'admin' must be true or false")
        principal = await self.accounts.add(name, password, admin=admin)
        return {"name": principal.name, "id": principal.id, "admin": principal.admin}

    async def user_remove(self, request: Mapping[str, Any]) -> dict[str, Any]:
        name = _text(request, "name")
        principal = await self.accounts.get(name)
        # Counted before: the removal closes them (the server's hook on its accounts).
        closed = 0 if principal is None else len(account_members(self.chat, principal.id))
        if principal is None or not await self.accounts.remove(name):
            raise ControlError(no_such_account(name))
        return {"name": principal.name, "closed": closed}

    async def user_list(self, request: Mapping[str, Any]) -> dict[str, Any]:
        users = [
            {"name": info.name, "admin": info.admin, "created": info.created}
            for info in await self.accounts.list()
        ]
        return {"users": users}

    async def user_passwd(self, request: Mapping[str, Any]) -> dict[str, Any]:
        name, password = _text(request, "name"), _text(request, "password")
        if not await self.accounts.set_password(name, password):
            raise ControlError(no_such_account(name))
        return {"name": name}

    async def _moderate(self, kind: str, request: Mapping[str, Any]) -> dict[str, Any]:
        """Carry out the moderation command ``kind`` with the request's fields, read as
        the JSON command of that type would be (the same checks); the ack's fields."""
        if self.chat is None:
            raise ControlError("bans need the chat: no server and no database here")
        fields = {key: value for key, value in request.items() if key != "op"}
        command, _ = parse_json(json.dumps({**fields, "type": kind}))
        assert isinstance(command, Ban | Unban | ListBans)
        ack = await self.chat.moderate(command, None, by=OPERATOR, room=None)
        return {key: value for key, value in ack.data().items() if key not in ("type", "command")}

    async def ban_add(self, request: Mapping[str, Any]) -> dict[str, Any]:
        answer = await self._moderate("ban", request)
        if answer.get("closed"):
            logger.info(
                "closed %d connection(s) banned by %s", answer["closed"], answer["ban"]["target"]
            )
        return answer

    async def ban_remove(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return await self._moderate("unban", request)

    async def ban_list(self, request: Mapping[str, Any]) -> dict[str, Any]:
        return await self._moderate("bans", request)


def account_members(chat: Chat | None, principal_id: str) -> list[Member]:
    """The members of ``chat`` (None: no chat) acting as ``principal_id``."""
    if chat is None:
        return []
    return [
        member
        for member in chat.members.values()
        if member.known_principal is not None and member.known_principal.id == principal_id
    ]


def close_account(chat: Chat, principal: Principal) -> int:
    """Close every connection in ``chat`` acting as the removed account ``principal``
    (announced as a kick, once for all its devices) and end its sessions, held ones too,
    so that no secret resumes it; how many connections were closed."""
    members = account_members(chat, principal.id)
    nick = next((member.nick for member in members if member.nick), None)
    if nick is not None:
        chat.kick(nick, render.ACCOUNT_REMOVED)
    else:
        for member in members:
            member.disconnect(Kicked(render.ACCOUNT_REMOVED))
    chat.sessions.end_principal(principal.id)
    if members:
        logger.info(
            "closed %d connection(s) of the removed account %s", len(members), principal.name
        )
    return len(members)


def no_such_account(name: str) -> str:
    """The refusal of an op on a name without an account."""
    return render.no_such_account(name)


def _text(request: Mapping[str, Any], field: str) -> str:
    value = request.get(field)
    if not isinstance(value, str):
        raise ControlError(f"{field!r} must be a string")
    return value


def _refusal(error: str) -> dict[str, Any]:
    return {"ok": False, "error": error}


# --- the server side -------------------------------------------------------------------------


async def serve_control(
    path: Path,
    ops: ControlOps,
    *,
    own_folder: bool = False,
    task_status: trio.TaskStatus[Path] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on the Unix socket ``path`` and answer requests with ``ops`` until cancelled.

    Makes the socket (see :func:`open_control_listener`; ``own_folder``: the folder is
    the server's own, made 0700 even when it exists), then calls
    ``task_status.started(path)``. Each client is a task in this call's nursery; none
    outlives it. The socket file is removed on the way out, however it ends (unless
    another process has put its own there meanwhile). Raises :class:`ControlSocketError`
    when the socket cannot be made."""
    listener, identity = await open_control_listener(path, own_folder=own_folder)
    try:
        async with listener, trio.open_nursery() as clients:
            slots = trio.Semaphore(MAX_CLIENTS)
            await clients.start(
                partial(
                    trio.serve_listeners,
                    partial(_serve_client, ops, slots),
                    [listener],
                    handler_nursery=clients,
                )
            )
            logger.info("control socket: %s", path)
            task_status.started(path)
            await trio.sleep_forever()
    finally:
        _remove_socket(path, identity)


async def open_control_listener(
    path: Path, *, own_folder: bool = False
) -> tuple[trio.SocketListener, tuple[int, int]]:
    """A listener on the Unix socket ``path`` (its folder made 0700 when missing, and
    when it exists too if it is the server's ``own_folder``: not a folder the operator
    named, which may be shared; the socket 0600), and the socket file's (device, inode).
    A stale socket file (nobody answers on it: its server was killed) is replaced;
    anything else at ``path`` is refused with :class:`ControlSocketError`."""
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise ControlSocketError(
            f"cannot make the control socket {path}: the path is longer than "
            f"{MAX_SOCKET_PATH} bytes; give a shorter one with --control-socket PATH"
        )
    try:
        path.parent.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
        if own_folder:
            os.chmod(path.parent, FOLDER_MODE)
        await _clear_stale(path)
        # Bound under a temporary name and made private before it takes its name: no
        # moment where another user could connect.
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temporary.unlink(missing_ok=True)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            await sock.bind(os.fspath(temporary))
            os.chmod(temporary, SOCKET_MODE)
            sock.listen()
            os.replace(temporary, path)
            status = os.stat(path)
        except BaseException:
            sock.close()
            temporary.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise ControlSocketError(
            f"cannot make the control socket {path}: {exc.strerror or exc}"
        ) from None
    return trio.SocketListener(sock), (status.st_dev, status.st_ino)


async def _clear_stale(path: Path) -> None:
    """Remove ``path`` when it is a socket nobody answers on; refuse anything else."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ControlSocketError(
            f"cannot make the control socket {path}: something that is not a socket is "
            "there (left as it is)"
        )
    probe = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await probe.connect(os.fspath(path))
    except ConnectionRefusedError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # its server is gone
        logger.info("replaced the stale control socket %s", path)
        return
    except FileNotFoundError:
        return
    finally:
        probe.close()
    raise ControlSocketError(
        f"cannot make the control socket {path}: another server answers on it; give this "
        "one its own with --control-socket PATH"
    )


def _remove_socket(path: Path, identity: tuple[int, int]) -> None:
    """Remove the socket file at ``path`` if it is still the one this server made."""
    with contextlib.suppress(OSError):
        status = os.lstat(path)
        if (status.st_dev, status.st_ino) == identity:
            path.unlink()


async def _serve_client(ops: ControlOps, slots: trio.Semaphore, stream: trio.SocketStream) -> None:
    """Answer one control client's requests, a line each, until it closes; past
    :data:`MAX_CLIENTS` at once it is answered ``busy`` and closed. A line over
    :data:`MAX_LINE` bytes, or none within :data:`IDLE_TIMEOUT`, ends the conversation
    (answered first when possible). Owns ``stream``; cancelled, it closes it."""
    async with stream:
        try:
            slots.acquire_nowait()
        except trio.WouldBlock:
            await _answer(stream, _refusal("busy: too many control clients at once"))
            return
        try:
            buffer = bytearray()
            while True:
                line = await _read_line(stream, buffer)
                if line is None:
                    return
                if isinstance(line, dict):
                    await _answer(stream, line)
                    await _linger(stream)
                    return
                await _answer(stream, await _handle_line(ops, line))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away
        finally:
            slots.release()


async def _linger(stream: trio.SocketStream) -> None:
    """End a conversation the client has not finished: say so (EOF), then read and drop
    what it still sends for up to :data:`LINGER` seconds. Closing with its bytes unread
    would reset the connection, and the client might never read the answer."""
    await stream.send_eof()
    with trio.move_on_after(LINGER):
        while await stream.receive_some(64 * 1024):
            pass


async def _read_line(stream: trio.SocketStream, buffer: bytearray) -> bytes | dict[str, Any] | None:
    """The next line from ``stream`` (without its newline); None at its end (or when it
    stays idle too long); a refusal to answer when the line is too long."""
    while (end := buffer.find(b"\n")) < 0:
        if len(buffer) > MAX_LINE:
            return _refusal(f"request too long (over {MAX_LINE} bytes)")
        data = b""
        with trio.move_on_after(IDLE_TIMEOUT):
            data = await stream.receive_some(64 * 1024)
        if not data:
            return None
        buffer += data
    line = bytes(buffer[:end])
    del buffer[: end + 1]
    if len(line) > MAX_LINE:
        return _refusal(f"request too long (over {MAX_LINE} bytes)")
    return line


async def _handle_line(ops: ControlOps, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return _refusal("a request is one JSON object per line")
    if not isinstance(request, dict):
        return _refusal("a request is one JSON object per line")
    return await ops.run(request)


async def _answer(stream: trio.SocketStream, answer: dict[str, Any]) -> None:
    await stream.send_all(json.dumps(answer).encode() + b"\n")


# --- the client side -------------------------------------------------------------------------

#: Seconds a request may take end to end (adding an account hashes its password).
REQUEST_TIMEOUT = 30.0


async def control_request(path: Path, request: Mapping[str, Any]) -> dict[str, Any]:
    """Send ``request`` to the server on the control socket ``path``; its answer.

    Raises :class:`ConnectionRefusedError` / :class:`FileNotFoundError` when no server
    listens there, :class:`ControlError` when the conversation fails (no answer within
    :data:`REQUEST_TIMEOUT`, an answer that is not JSON)."""
    buffer = bytearray()
    with trio.move_on_after(REQUEST_TIMEOUT) as scope:
        stream = await trio.open_unix_socket(os.fspath(path))
        try:
            async with stream:
                await stream.send_all(json.dumps(request).encode() + b"\n")
                while b"\n" not in buffer:
                    data = await stream.receive_some(64 * 1024)
                    if not data:
                        break
                    buffer += data
                    if len(buffer) > MAX_LINE + 1:
                        raise ControlError(f"the server on {path} answered too much")
        except trio.BrokenResourceError:
            pass  # told below: no answer
        if b"\n" not in buffer:
            raise ControlError(f"the server on {path} closed the connection unanswered")
    if scope.cancelled_caught:
        raise ControlError(f"the server on {path} did not answer within {REQUEST_TIMEOUT:g} s")
    try:
        answer = json.loads(buffer[: buffer.index(b"\n")])
    except ValueError:
        raise ControlError(f"the server on {path} answered something that is not JSON") from None
    if not isinstance(answer, dict):
        raise ControlError(f"the server on {path} answered something that is not JSON")
    return answer


def is_absent(error: OSError) -> bool:
    """Whether ``error`` (from :func:`control_request`) means nobody listens there."""
    return error.errno in (errno.ENOENT, errno.ECONNREFUSED, errno.ENOTSOCK)
