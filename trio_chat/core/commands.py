"""Parsing what a client sends into commands: plain ``/command`` lines and JSON objects.

Sans-I/O: pure functions from text to :class:`Command` values, raising
:class:`CommandError` (with the machine-readable ``code`` of ``docs/protocol.md``) for
anything wrong. The interactive client uses the same parser to turn what the user types
into JSON, so both ends agree on every command's syntax.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from .bans import BanTarget, is_duration, parse_duration, parse_target
from .text import NAME_PATTERN, clean_line, clean_text, name_problem, room_problem

__all__ = [
    "BEFORE_LOGIN",
    "HELP",
    "MAX_MESSAGE_LINES",
    "MAX_PASSWORD_LENGTH",
    "MAX_TOKEN_LENGTH",
    "NAME_PATTERN",
    "NOTHING_LEFT",
    "PROTOCOL",
    "Announce",
    "Ban",
    "Command",
    "CommandError",
    "Help",
    "History",
    "Join",
    "Kick",
    "Leave",
    "ListBans",
    "ListRooms",
    "Login",
    "Mute",
    "Nick",
    "Private",
    "Quit",
    "Refresh",
    "Register",
    "Resume",
    "Say",
    "Topic",
    "Unban",
    "Unmute",
    "Who",
    "command_to_json",
    "message_text",
    "parse_json",
    "parse_plain",
    "valid_name",
    "valid_room",
    "valid_secret",
]

#: The JSON subprotocol's name, as offered in ``Sec-WebSocket-Protocol``.
PROTOCOL = "trio-chat.v1"

#: A session secret as the server makes them (``secrets.token_urlsafe``), with room to
#: spare: URL-safe base64, at most 128 characters.
SECRET_PATTERN = re.compile(r"[A-Za-z0-9_\-]{1,128}")
#: A ``cid`` is echoed back verbatim; a cap keeps a client from making acks large.
MAX_CID_LENGTH = 64
#: Lines one JSON message may carry by default (the server's ``--max-message-lines``):
#: a paste of a few lines is one message; a wall of text is refused.
MAX_MESSAGE_LINES = 20
#: The longest password accepted, in characters: a password is hashed (argon2id) in a
#: worker thread, and nobody's password is a megabyte long.
MAX_PASSWORD_LENGTH = 1024
#: The longest token accepted, in characters: a JWT with a few claims is a few hundred.
MAX_TOKEN_LENGTH = 8192


class CommandError(Exception):
    """A command that cannot be carried out; ``code`` is the protocol's error code."""

    def __init__(self, code: str, text: str, cid: str | int | None = None) -> None:
        super().__init__(text)
        self.code = code
        self.text = text
        self.cid = cid


@dataclass(frozen=True, slots=True)
class Say:
    """A chat line (``action`` for ``/me``) to ``room``, or to the current room."""

    text: str
    room: str | None = None
    action: bool = False


@dataclass(frozen=True, slots=True)
class Private:
    to: str
    text: str


@dataclass(frozen=True, slots=True)
class Nick:
    nick: str


@dataclass(frozen=True, slots=True)
class Join:
    room: str


@dataclass(frozen=True, slots=True)
class Leave:
    room: str | None = None


@dataclass(frozen=True, slots=True)
class ListRooms:
    pass


@dataclass(frozen=True, slots=True)
class Who:
    room: str | None = None


@dataclass(frozen=True, slots=True)
class Topic:
    """Show (``text`` None) or set (``""`` clears) a room's topic."""

    room: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class Help:
    pass


@dataclass(frozen=True, slots=True)
class History:
    """Page back through a room's stored messages, or (``private``) through one's own
    private messages (JSON only)."""

    room: str | None = None
    before: int | None = None
    limit: int = 50
    private: bool = False


@dataclass(frozen=True, slots=True)
class Resume:
    """Replay every message after ``since`` in one's rooms (JSON only); with
    ``session`` (a ``welcome.session`` secret), come back as that session first: its
    principal, its nick, its private messages. The secret is not shown in the repr."""

    since: int
    session: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Quit:
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Login:
    """Log in as account ``name`` with ``password``, or with a signed ``token`` (JWT).

    The secrets are left out of the ``repr``, so that no log line or traceback that
    shows a command can show them."""

    name: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Register:
    """Create account ``name`` with ``password`` and log in as it (``--open-registration``)."""

    name: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Refresh:
    """A new ``token`` (same subject) for a connection that logged in with one."""

    token: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Kick:
    """Close ``nick``'s connections, for ``reason`` (admins only)."""

    nick: str
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Ban:
    """Ban ``target`` for ``seconds`` (None: for good), for ``reason`` (admins only)."""

    target: BanTarget
    seconds: int | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Announce:
    """Speak as the server to the members of ``room`` (admins only)."""

    room: str
    text: str


@dataclass(frozen=True, slots=True)
class Unban:
    """Lift the ban on ``target`` (admins only)."""

    target: BanTarget


@dataclass(frozen=True, slots=True)
class ListBans:
    """List the bans in force (admins only)."""


@dataclass(frozen=True, slots=True)
class Mute:
    """Mute ``nick`` in ``room`` (None: the current room) for ``seconds`` (None: until
    unmuted); admins only."""

    nick: str
    room: str | None = None
    seconds: int | None = None


@dataclass(frozen=True, slots=True)
class Unmute:
    """Lift the mute of ``nick`` in ``room`` (None: the current room); admins only."""

    nick: str
    room: str | None = None


Command = (
    Say
    | Private
    | Nick
    | Join
    | Leave
    | ListRooms
    | Who
    | Topic
    | Help
    | Quit
    | History
    | Resume
    | Login
    | Register
    | Refresh
    | Kick
    | Announce
    | Ban
    | Unban
    | ListBans
    | Mute
    | Unmute
)
#: The commands a connection may send before it has logged in (when the server
#: requires a login): anything else is refused with ``login_required``.
BEFORE_LOGIN = (Login, Register, Help, Quit)
#: The most messages one ``history`` command returns.
MAX_HISTORY_PAGE = 500
#: Message ids are SQLite integers: nothing above this can name a message.
MAX_ID = 2**63 - 1

#: Every command: (usage, one-line description), in the order /help lists them.
HELP: tuple[tuple[str, str], ...] = (
    ("/nick NAME", "set your nickname (letters, digits, _ - ., up to 32)"),
    ("/join ROOM", "join a room (or switch to it) and talk there"),
    ("/leave [ROOM]", "leave a room (default: the current one)"),
    ("/rooms", "list the rooms and how many are in each"),
    ("/who [ROOM]", "list who is in a room (default: the current one)"),
    ("/msg NICK TEXT", "send a private message"),
    ("/me ACTION", "describe what you are doing"),
    ("/topic [TEXT]", "show or set the current room's topic"),
    ("/help", "list the commands"),
    ("/quit [REASON]", "leave the chat"),
    ("/login NAME PASSWORD", "log in to your account (on servers with accounts)"),
    ("/register NAME PASSWORD", "create an account and log in (where registration is open)"),
    ("/refresh TOKEN", "hand in a new login token before the current one expires"),
    ("/kick NICK [REASON]", "close NICK's connections (admins only)"),
    ("/say ROOM TEXT", "speak as the server in ROOM (admins only)"),
    ("/ban WHO [TIME] [WHY]", "ban a nick, address, network or principal (admins only)"),
    ("/unban WHO", "lift a ban (admins only)"),
    ("/bans", "list the bans (admins only)"),
    ("/mute NICK [TIME]", "keep NICK from speaking in the current room (admins only)"),
    ("/unmute NICK", "let NICK speak in the current room again (admins only)"),
)


def valid_name(name: str, what: str) -> str:
    """``name`` if it is a valid nickname (or account name: ``what`` says which); else
    raise ``invalid_name``. The rule is :mod:`.text`'s."""
    problem = name_problem(name, what)
    if problem is not None:
        raise CommandError("invalid_name", problem)
    return name


def valid_room(name: str) -> str:
    """``name`` in lower case if it is a valid room name (the rule of names, and not one
    of :data:`.text.RESERVED_ROOMS`); else raise ``invalid_name``."""
    problem = room_problem(name)
    if problem is not None:
        raise CommandError("invalid_name", problem)
    return name.lower()


def valid_secret(secret: str) -> str:
    """``secret`` if it may be a session secret; else raise ``bad_request``, in words
    that never repeat it."""
    if not SECRET_PATTERN.fullmatch(secret):
        raise CommandError("bad_request", "session must be the secret a welcome gave")
    return secret


def _room(name: str) -> str:
    return valid_room(name)


#: The refusal of a text that held only what :mod:`.text` strips.
NOTHING_LEFT = "the text holds nothing but control or invisible characters"


def _cleaned(original: str, cleaned: str) -> str:
    """``cleaned``, unless cleaning took everything ``original`` held: ``bad_request``
    then, so that nobody is acknowledged a message that shows nothing."""
    if not cleaned.strip() and original.strip():
        raise CommandError("bad_request", NOTHING_LEFT)
    return cleaned


def _secret(value: str, what: str, limit: int) -> str:
    """``value`` if it is a usable password or token: not empty, one line, at most
    ``limit`` characters. The refusal never repeats the value."""
    if not value:
        raise CommandError("bad_request", f"the {what} is empty")
    if len(value) > limit:
        raise CommandError("bad_request", f"the {what} is longer than {limit} characters")
    if "\n" in value or "\r" in value or "\x00" in value:
        raise CommandError("bad_request", f"the {what} must be one line")
    return value


def _credentials(kind: str, rest: str) -> tuple[str, str]:
    """The ``NAME PASSWORD`` of a plain ``/login`` or ``/register`` line: the password
    is the rest of the line after the name (spaces inside it kept)."""
    parts = rest.split(None, 1)
    if len(parts) != 2:
        raise _usage(kind)
    return valid_name(parts[0], "account name"), _secret(parts[1], "password", MAX_PASSWORD_LENGTH)


def _usage(command: str) -> CommandError:
    usage = next(usage for usage, _ in HELP if usage.split()[0] == command)
    return CommandError("bad_request", f"usage: {usage}")


#: Plain commands whose line carries a secret: parsed as typed, never cleaned.
SECRET_COMMANDS = frozenset({"/login", "/register", "/refresh"})


def parse_plain(line: str) -> Command:
    """The command a plain-mode line stands for. A line not starting with ``/`` is a chat
    line; ``//text`` is the chat line ``/text``. The line is cleaned first
    (:func:`.text.clean_line`), so what is parsed is what others would read; but for the
    commands that carry a secret (``/login``, ``/register``, ``/refresh``), which nobody
    else reads: a password is taken as typed."""
    if line.partition(" ")[0].lower() not in SECRET_COMMANDS:
        line = _cleaned(line, clean_line(line))
    if not line.startswith("/"):
        return Say(line)
    if line.startswith("//"):
        return Say(line[1:])
    name, _, rest = line.partition(" ")
    name = name.lower()
    rest = rest.strip()
    args = rest.split()
    match name:
        case "/nick" if len(args) == 1:
            return Nick(valid_name(args[0], "nickname"))
        case "/join" if len(args) == 1:
            return Join(_room(args[0]))
        case "/leave" if len(args) <= 1:
            return Leave(_room(args[0]) if args else None)
        case "/rooms" if not args:
            return ListRooms()
        case "/who" if len(args) <= 1:
            return Who(_room(args[0]) if args else None)
        case "/msg" if len(args) >= 2:
            nick, text = rest.split(None, 1)
            return Private(valid_name(nick, "nickname"), text)
        case "/me" if rest:
            return Say(rest, action=True)
        case "/topic":
            return Topic(text=rest or None)
        case "/help" if not args:
            return Help()
        case "/quit":
            return Quit(rest or None)
        case "/login":
            return Login(*_credentials(name, rest))
        case "/register":
            return Register(*_credentials(name, rest))
        case "/refresh" if len(args) == 1:
            return Refresh(_secret(args[0], "token", MAX_TOKEN_LENGTH))
        case "/kick" if args:
            reason = rest.split(None, 1)[1] if len(args) > 1 else None
            return Kick(valid_name(args[0], "nickname"), reason)
        case "/say" if len(args) >= 2:
            room, text = rest.split(None, 1)
            return Announce(_room(room), text)
        case "/ban" if args:
            target = _target(args[0])
            words = rest.split(None, 1)[1] if len(args) > 1 else ""
            seconds = None
            if len(args) > 1 and is_duration(args[1]):
                seconds = parse_duration(args[1])
                words = rest.split(None, 2)[2] if len(args) > 2 else ""
            return Ban(target, seconds, _ban_reason(words))
        case "/unban" if len(args) == 1:
            return Unban(_target(args[0]))
        case "/bans" if not args:
            return ListBans()
        case "/mute" if 1 <= len(args) <= 2:
            nick = valid_name(args[0], "nickname")
            return Mute(nick, None, _duration(args[1]) if len(args) == 2 else None)
        case "/unmute" if len(args) == 1:
            return Unmute(valid_name(args[0], "nickname"))
        case (
            "/nick"
            | "/join"
            | "/leave"
            | "/rooms"
            | "/who"
            | "/msg"
            | "/me"
            | "/help"
            | "/refresh"
            | "/kick"
            | "/say"
            | "/ban"
            | "/unban"
            | "/bans"
            | "/mute"
            | "/unmute"
        ):
            raise _usage(name)
    raise CommandError("unknown_command", f"unknown command {name}; /help lists the commands")


#: The longest ban reason, in characters: it is shown in the kick and the close reason.
MAX_BAN_REASON = 200


def _ban_reason(reason: str | None) -> str | None:
    """A ban's reason (one line, cleaned), refused past :data:`MAX_BAN_REASON`."""
    if not reason:
        return None
    reason = _one_line(reason)
    if len(reason) > MAX_BAN_REASON:
        raise CommandError(
            "bad_request", f"a ban's reason may have at most {MAX_BAN_REASON} characters"
        )
    return reason or None


def _target(text: str) -> BanTarget:
    """The ban target ``text`` names; ``bad_request`` saying why when it names none."""
    try:
        return parse_target(text)
    except ValueError as error:
        raise CommandError("bad_request", str(error)) from None


def _duration(text: str) -> int:
    """Seconds in the duration ``text``; ``bad_request`` saying why when it is none."""
    try:
        return parse_duration(text)
    except ValueError as error:
        raise CommandError("bad_request", str(error)) from None


def _json_duration(data: dict[str, Any]) -> int | None:
    """A JSON command's optional ``duration``: seconds (a whole number) or text (``10m``)."""
    value = data.get("duration")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise CommandError("bad_request", "'duration' must be seconds or text such as '10m'")
    return _duration(str(value))


def _field(data: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = data.get(key)
    if value is None:
        if required:
            raise CommandError("bad_request", f"{data['type']!r} needs a string {key!r}")
        return None
    if not isinstance(value, str):
        raise CommandError("bad_request", f"{key!r} must be a string")
    return value


def _whole_number(data: dict[str, Any], key: str, default: int | None) -> int | None:
    value = data.get(key, default)
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ID
    ):
        raise CommandError("bad_request", f"{key!r} must be a whole number up to {MAX_ID}")
    return value


def _one_line(text: str) -> str:
    """``text`` cleaned (:func:`.text.clean_line`), refused if it holds a line break: a
    topic or a reason is one line."""
    if "\n" in text or "\r" in text:
        raise CommandError("bad_request", "text must be a single line; send one message per line")
    return _cleaned(text, clean_line(text))


def message_text(text: str, max_lines: int) -> str:
    """The text of a JSON message, which may span lines: its line breaks (``\\r\\n``,
    ``\\r`` or ``\\n``) made ``\\n`` and each line cleaned (:func:`.text.clean_text`);
    refused with ``bad_request`` past ``max_lines`` lines, or when cleaning left nothing.
    However many lines it has, it stays one message: one id, one history entry."""
    cleaned = clean_text(text)
    lines = cleaned.count("\n") + 1
    if lines > max_lines:
        raise CommandError(
            "bad_request", f"text has {lines} lines; a message may have at most {max_lines}"
        )
    return _cleaned(text, cleaned)


def _parse_object(data: dict[str, Any], max_lines: int) -> Command:
    kind = data.get("type")
    if not isinstance(kind, str):
        raise CommandError("bad_request", "a command needs a string 'type'")
    room = _field(data, "room", required=False)
    room = _room(room) if room is not None else None
    match kind:
        case "message" | "me":
            text = message_text(_field(data, "text") or "", max_lines)
            return Say(text, room, action=kind == "me")
        case "private":
            to = valid_name(_field(data, "to") or "", "nickname")
            return Private(to, message_text(_field(data, "text") or "", max_lines))
        case "nick":
            return Nick(valid_name(_field(data, "nick") or "", "nickname"))
        case "join":
            return Join(_room(_field(data, "room") or ""))
        case "leave":
            return Leave(room)
        case "rooms":
            return ListRooms()
        case "who":
            return Who(room)
        case "topic":
            topic = _field(data, "text", required=False)
            return Topic(room, _one_line(topic) if topic is not None else None)
        case "help":
            return Help()
        case "history":
            limit = _whole_number(data, "limit", 50) or 0
            if not 1 <= limit <= MAX_HISTORY_PAGE:
                raise CommandError("bad_request", f"'limit' must be 1 to {MAX_HISTORY_PAGE}")
            private = data.get("private")
            if private is None:  # absent or null, as every optional field
                private = False
            if not isinstance(private, bool):
                raise CommandError("bad_request", "'private' must be true or false")
            return History(room, _whole_number(data, "before", None), limit, private)
        case "resume":
            since = _whole_number(data, "since", None)
            if since is None:
                raise CommandError("bad_request", "'resume' needs a whole number 'since'")
            session = _field(data, "session", required=False)
            return Resume(since, valid_secret(session) if session is not None else None)
        case "quit":
            reason = _field(data, "reason", required=False)
            return Quit(_one_line(reason) if reason is not None else None)
        case "login":
            return _login(data)
        case "register":
            return Register(
                valid_name(_field(data, "name") or "", "account name"),
                _secret(_field(data, "password") or "", "password", MAX_PASSWORD_LENGTH),
            )
        case "refresh":
            return Refresh(_secret(_field(data, "token") or "", "token", MAX_TOKEN_LENGTH))
        case "kick":
            reason = _field(data, "reason", required=False)
            nick = valid_name(_field(data, "nick") or "", "nickname")
            return Kick(nick, _one_line(reason) if reason is not None else None)
        case "announce":
            if room is None:
                raise CommandError("bad_request", "'announce' needs a string 'room'")
            return Announce(room, message_text(_field(data, "text") or "", max_lines))
        case "ban":
            target = _target(_field(data, "target") or "")
            reason = _ban_reason(_field(data, "reason", required=False))
            return Ban(target, _json_duration(data), reason)
        case "unban":
            return Unban(_target(_field(data, "target") or ""))
        case "bans":
            return ListBans()
        case "mute":
            nick = valid_name(_field(data, "nick") or "", "nickname")
            return Mute(nick, room, _json_duration(data))
        case "unmute":
            return Unmute(valid_name(_field(data, "nick") or "", "nickname"), room)
    raise CommandError("unknown_command", f"unknown command type {kind!r}")


def _login(data: dict[str, Any]) -> Login:
    """A ``login`` object: ``name`` and ``password``, or ``token``, never both."""
    token = _field(data, "token", required=False)
    if token is not None:
        if "name" in data or "password" in data:
            raise CommandError(
                "bad_request", "'login' takes a 'token', or a 'name' and a 'password'"
            )
        return Login(token=_secret(token, "token", MAX_TOKEN_LENGTH))
    if "name" not in data and "password" not in data:
        raise CommandError("bad_request", "'login' needs a 'name' and a 'password', or a 'token'")
    name = valid_name(_field(data, "name") or "", "account name")
    return Login(name, _secret(_field(data, "password") or "", "password", MAX_PASSWORD_LENGTH))


def parse_json(
    frame: str, *, max_lines: int = MAX_MESSAGE_LINES
) -> tuple[Command, str | int | None]:
    """The command in one JSON document, and its ``cid``; errors carry the ``cid`` too.
    A message's text may have up to ``max_lines`` lines."""
    try:
        data = json.loads(frame)
    except (ValueError, RecursionError):  # JSON nested deeper than the decoder recurses
        data = None
    if not isinstance(data, dict):
        raise CommandError("bad_json", "expected one JSON object per message")
    cid = data.get("cid")
    if cid is not None and (
        isinstance(cid, bool) or not isinstance(cid, str | int) or len(str(cid)) > MAX_CID_LENGTH
    ):
        raise CommandError(
            "bad_request",
            f"'cid' must be a string or an integer of at most {MAX_CID_LENGTH} characters",
        )
    try:
        return _parse_object(data, max_lines), cid
    except CommandError as error:
        error.cid = cid
        raise


_JSON_TYPES = {
    Say: "message",
    Private: "private",
    Nick: "nick",
    Join: "join",
    Leave: "leave",
    ListRooms: "rooms",
    Who: "who",
    Topic: "topic",
    Help: "help",
    Quit: "quit",
    History: "history",
    Resume: "resume",
    Login: "login",
    Register: "register",
    Refresh: "refresh",
    Kick: "kick",
    Announce: "announce",
    Ban: "ban",
    Unban: "unban",
    ListBans: "bans",
    Mute: "mute",
    Unmute: "unmute",
}


def command_to_json(command: Command, cid: str | int | None = None) -> str:
    """The JSON form of ``command`` (what the client sends in ``trio-chat.v1`` mode)."""
    fields = {
        key: value
        for key, value in asdict(command).items()
        if value is not None and not (key == "private" and value is False)
    }
    if isinstance(command, Ban | Unban):
        fields["target"] = str(command.target)
    if isinstance(command, Ban | Mute) and command.seconds is not None:
        fields["duration"] = fields.pop("seconds")
    kind = _JSON_TYPES[type(command)]
    if isinstance(command, Say):
        del fields["action"]
        kind = "me" if command.action else "message"
    message: dict[str, Any] = {"type": kind, **fields}
    if cid is not None:
        message["cid"] = cid
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))
