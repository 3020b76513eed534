"""THE plain-text wording of the chat: every phrase a person reads, written once.

Pure functions over an event's data (the JSON-shaped fields of :mod:`.events`, the very
dictionaries a ``trio-chat.v1`` client decodes), so the server's plain mode and the
terminal client word an event the same way: the server renders its own events with
them, the client renders the JSON events it receives with them.

Strings from outside (message text, nicknames, room names, topics, reasons) enter a line
only through :class:`Hooks`: the server sends them as they came (:data:`AS_SENT`), the
terminal client makes them safe to print and colours nicknames. Where a line goes
(``[room] `` before a line from another room, a time, dimming) is the caller's layout;
what it says is here.

A message's ``text`` may hold several lines (``\\n``): each line is worded on its own,
with its sender, so no line ever stands unattributed.

The refusals of the chat's rules (``you are not in dev``...) are here too: they are the
``text`` of error events, which JSON clients get as well. (What the command parser
refuses is worded by :mod:`.commands`, next to the syntax it checks.)
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .commands import HELP, Command, Topic

__all__ = [
    "ACCOUNT_REMOVED",
    "AS_SENT",
    "BAD_AUTHORIZATION",
    "EMPTY_PASSWORD",
    "HISTORY_MARK",
    "HISTORY_UNAVAILABLE",
    "INSECURE_AUTH",
    "INVALID_SESSION",
    "LOGIN_REFUSED",
    "MODERATION_NOT_STORED",
    "NICK_REQUIRED",
    "NOT_ADMIN",
    "NOT_STORED",
    "NOT_TOKEN",
    "NO_ACCOUNTS",
    "NO_TOKENS",
    "ONE_CREDENTIAL",
    "PRIVATE_MARK",
    "REGISTRATION_CLOSED",
    "SOMEONE",
    "TOKEN_BAD_ALGORITHM",
    "TOKEN_BAD_SIGNATURE",
    "TOKEN_EXPIRED",
    "TOKEN_MALFORMED",
    "TOKEN_NOT_YET_VALID",
    "TOKEN_NO_NICK",
    "TOPIC_NOT_STORED",
    "Hooks",
    "account_exists",
    "ack_lines",
    "action_line",
    "already_logged_in",
    "ban_kick",
    "ban_line",
    "banned",
    "bans_lines",
    "chat_lines",
    "connecting_too_fast",
    "describe_missed",
    "describe_roster",
    "error_line",
    "help_lines",
    "in_room",
    "invalid_token",
    "kicked_by",
    "logged_in",
    "login_locked_out",
    "login_prompt",
    "login_required",
    "muted",
    "nick_taken",
    "no_such_account",
    "no_such_nick",
    "no_such_room",
    "not_banned",
    "not_in_room",
    "not_muted",
    "notice",
    "now_known_as",
    "only_room",
    "origin_refused",
    "password_too_long",
    "presence",
    "rate_limited",
    "room_full",
    "room_not_allowed",
    "rooms_line",
    "roster_line",
    "says",
    "text_lines",
    "token_bad_claim",
    "token_missing_claim",
    "token_refresh",
    "token_subject_changed",
    "too_many_connections",
    "too_many_lines",
    "too_many_rooms",
    "topic_changed",
    "until",
    "who",
]

#: How an anonymous sender is named.
SOMEONE = "Someone"
#: The mark before a message replayed from the store (``"history": true``).
HISTORY_MARK = "[history]"
#: The mark of a private message.
PRIVATE_MARK = "[private]"
#: How the operator speaks.
SERVER_SAYS = "\N{LARGE GREEN CIRCLE} Server:"


@dataclass(frozen=True, slots=True)
class Hooks:
    """How a string from outside becomes part of a line: ``text`` for any text (message
    lines, room names, topics, reasons, usages), ``nick`` for a nickname (never None:
    an anonymous sender is :data:`SOMEONE`, which is not from outside)."""

    text: Callable[[Any], str] = str
    nick: Callable[[Any], str] = str


#: The server's plain mode: strings go out exactly as they came in.
AS_SENT = Hooks()


def who(nick: Any, hooks: Hooks = AS_SENT) -> str:
    """A sender's name: the nickname through ``hooks``, or :data:`SOMEONE`."""
    return SOMEONE if nick is None else hooks.nick(nick)


def text_lines(text: Any, hooks: Hooks = AS_SENT) -> list[str]:
    """The lines of a message's text, each through ``hooks`` (split first: a hook that
    escapes control characters would hide the line breaks)."""
    return [hooks.text(line) for line in str(text).split("\n")]


def in_room(room: str, line: str) -> str:
    """``line`` marked with the room it belongs to."""
    return f"[{room}] {line}"


def action_line(sender: str, line: str) -> str:
    """One line of a ``/me`` action. It starts with its author, as every line of what a
    user wrote does: a line starting ``* `` is the server's (``* alice joined dev``),
    and an action must not read as one."""
    return f"{sender} * {line}"


def says(sender: str, line: str) -> str:
    """One line of what ``sender`` said."""
    return f"{sender} says: {line}"


def chat_lines(data: Mapping[str, Any], hooks: Hooks = AS_SENT, *, own: bool = False) -> list[str]:
    """The plain lines of a room or private message, live or replayed (``"history"``):
    one per line of its text, each with its sender. ``own``: as its sender reads it."""
    sender = who(data["from"], hooks)
    lines = text_lines(data["text"], hooks)
    history = data.get("history") is True
    if data["type"] == "private":
        to = who(data["to"], hooks)
        if history:
            lines = [f"{PRIVATE_MARK} {sender} to {to}: {line}" for line in lines]
        elif own:
            lines = [f"{PRIVATE_MARK} You said to {to}: {line}" for line in lines]
        else:
            lines = [f"{PRIVATE_MARK} {says(sender, line)}" for line in lines]
    elif data.get("action"):
        lines = [action_line(sender, line) for line in lines]
    elif own and not history:
        lines = [f"You said: {line}" for line in lines]
    else:
        lines = [says(sender, line) for line in lines]
    if history:
        return [f"{HISTORY_MARK} {line}" for line in lines]
    return lines


def presence(data: Mapping[str, Any], hooks: Hooks = AS_SENT) -> str:
    """Someone joined or left a room, changed nick, quit, or was kicked."""
    nick = hooks.nick(data["nick"])
    reason = data.get("reason")
    because = f" ({hooks.text(reason)})" if reason else ""
    match data["event"]:
        case "join":
            return f"* {nick} joined {hooks.text(data['room'])}"
        case "leave":
            return f"* {nick} left {hooks.text(data['room'])}"
        case "nick":
            return f"* {nick} is now known as {hooks.nick(data['new_nick'])}"
        case "quit":
            return f"* {nick} quit{because}"
        case "kick":
            return f"* {nick} was kicked{because}"
    return f"(unknown presence event: {hooks.text(data['event'])})"


def topic_changed(data: Mapping[str, Any], hooks: Hooks = AS_SENT) -> str:
    """A room's topic was set or cleared."""
    by, room = who(data["by"], hooks), hooks.text(data["room"])
    if data["topic"]:
        return f"* {by} set the topic of {room}: {hooks.text(data['topic'])}"
    return f"* {by} cleared the topic of {room}"


def notice(data: Mapping[str, Any], hooks: Hooks = AS_SENT) -> str:
    """The operator speaking (where to, the caller marks)."""
    return f"{SERVER_SAYS} {hooks.text(data['text'])}"


def logged_in(nick: str, *, admin: bool = False) -> str:
    """The answer to a login: who the connection now is."""
    return f"* You are logged in as {nick}" + (" (admin)" if admin else "")


def token_refresh(data: Mapping[str, Any], hooks: Hooks = AS_SENT) -> str:
    """The server asks for a new login token before the current one expires."""
    seconds = int(data["seconds"])
    return f"* Your login token expires in {seconds} s; send a new one with /refresh TOKEN"


def error_line(text: str) -> str:
    """A command that failed."""
    return f"Error: {text}"


def describe_roster(nicks: Collection[str], anonymous: int) -> str:
    """``alice, bob and 2 without a nickname``; ``nobody`` for an empty room."""
    parts = list(nicks)
    if anonymous:
        parts.append(f"{anonymous} without a nickname")
    if not parts:
        return "nobody"
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + f" and {parts[-1]}"


def describe_missed(since: int, oldest: int) -> str:
    """A resume after ``since`` could not recover everything: some messages are no
    longer kept, and nothing is missing from ``oldest`` on."""
    return (
        f"* Some messages since {since} are no longer kept and were missed; replaying from {oldest}"
    )


def roster_line(room: str, nicks: Collection[str], anonymous: int) -> str:
    """Who is in ``room``: ``In lobby: alice and bob``."""
    return f"In {room}: {describe_roster(nicks, anonymous)}"


def rooms_line(rooms: Iterable[tuple[str, int]]) -> str:
    """Every room with its member count: ``Rooms: dev (1), lobby (2)``."""
    return "Rooms: " + ", ".join(f"{name} ({count})" for name, count in rooms)


def help_lines(commands: Iterable[tuple[str, str]] = HELP) -> list[str]:
    """The answer to ``/help``: one aligned ``* usage  description`` line per command."""
    commands = list(commands)
    width = max((len(usage) for usage, _ in commands), default=0)
    return [f"* {usage:<{width}}  {text}" for usage, text in commands]


def now_known_as(nick: str) -> str:
    """The answer to a nickname change."""
    return f"* You are now known as {nick}"


def ack_lines(
    data: Mapping[str, Any],
    hooks: Hooks = AS_SENT,
    *,
    request: Command | None = None,
    rooms: Collection[str] = (),
) -> list[str]:
    """The answer to one command, possibly no line at all (a sent message, a quit, a
    topic set: their own effect is the answer). ``request`` is the command answered,
    when known; ``rooms`` the rooms its sender was in before (joining one of those
    again is a switch)."""
    text = hooks.text
    match data["command"]:
        case "message" | "me" | "private" | "quit":
            return []
        case "nick":
            return [now_known_as(hooks.nick(data["nick"]))]
        case "join":
            room = data["room"]
            verb = "are now talking in" if room in rooms else "joined"
            count = len(data["members"]) + int(data["anonymous"])
            line = f"* You {verb} {text(room)} ({count} here)"
            if data.get("topic"):
                line += f". Topic: {text(data['topic'])}"
            return [line]
        case "leave":
            return [f"* You left {text(data['room'])}; now talking in {text(data['current'])}"]
        case "rooms":
            listing = [(text(room["name"]), int(room["members"])) for room in data["rooms"]]
            return ["* " + rooms_line(listing)]
        case "who":
            nicks = [hooks.nick(nick) for nick in data["members"]]
            return ["* " + roster_line(text(data["room"]), nicks, int(data["anonymous"]))]
        case "topic":
            if isinstance(request, Topic) and request.text is not None:
                return []  # a topic set: the topic event every member gets shows it
            room = text(data["room"])
            if data.get("topic"):
                return [f"* Topic of {room}: {text(data['topic'])}"]
            return [f"* {room} has no topic"]
        case "resume":
            # Honoured whoever asked (the URL's since= is answered without a cid): when
            # the server no longer keeps everything after `since`, the reader must know.
            if data.get("recovered") is False:
                return [describe_missed(int(data["since"]), int(data["oldest"]))]
            return []
        case "help":
            return help_lines((text(c["usage"]), text(c["description"])) for c in data["commands"])
        case "login":
            return [logged_in(hooks.nick(data["nick"]), admin=data.get("admin") is True)]
        case "register":
            return [f"* Registered {hooks.nick(data['nick'])}; you are logged in"]
        case "refresh":
            return ["* Your login token was renewed"]
        case "kick":
            return [f"* You kicked {hooks.nick(data['nick'])}"]
        case "announce":
            return [f"* Said in {text(data['room'])} ({int(data['reached'])} reached)"]
        case "ban":
            return [ban_line(data["ban"], int(data.get("closed", 0)), hooks)]
        case "unban":
            return [f"* Lifted the ban on {text(data['target'])}"]
        case "bans":
            return bans_lines(data["bans"], hooks)
        case "mute":
            who_ = hooks.nick(data["nick"])
            return [f"* Muted {who_} in {text(data['room'])} {until(data.get('expires'))}"]
        case "unmute":
            return [f"* {hooks.nick(data['nick'])} may speak in {text(data['room'])} again"]
    return [f"* Done: {text(data['command'])}"]


# --- refusals: the ``text`` of the chat's error events (JSON clients get it too) ------------

#: ``nick_required``: a private message from someone without a nickname.
NICK_REQUIRED = "set a nickname with /nick before /msg"
#: ``store_failed`` for a message: it was not stored, and not delivered.
NOT_STORED = "the message could not be stored; try again"
#: ``store_failed`` for a read of history (a replay, a ``history`` page).
HISTORY_UNAVAILABLE = "history is unavailable right now"
#: ``invalid_session``: a session secret that opens nothing (unknown, or its hold is over).
INVALID_SESSION = "that session is unknown or has expired; it cannot be resumed"
#: ``no_accounts``: a login or a registration on a server without accounts.
NO_ACCOUNTS = "this server has no accounts; just chat"
#: ``no_tokens``: a token on a server that was given no key to check tokens with.
NO_TOKENS = "this server does not take login tokens"
#: ``registration_closed``: ``/register`` without ``--open-registration``.
REGISTRATION_CLOSED = "registration is closed on this server; ask its operator for an account"
#: ``insecure_auth``: a password over plain ``ws://`` from another machine.
INSECURE_AUTH = (
    "passwords are refused over an unencrypted connection from another machine: "
    "connect with wss://, or the operator may allow it with --allow-insecure-auth"
)
#: ``not_admin``: a moderation command from a connection that is not an admin's.
NOT_ADMIN = "only an admin may do that"
#: ``not_token``: a ``refresh`` from a connection that did not log in with a token.
NOT_TOKEN = "this connection did not log in with a token; there is nothing to refresh"
#: HTTP 400 for an ``Authorization`` header that cannot be read.
BAD_AUTHORIZATION = "the Authorization header must be Basic (name:password) or Bearer (a token)"
#: HTTP 400 for a request that carries more than one credential.
ONE_CREDENTIAL = "give one credential: an Authorization header or a token= query, not both"


# --- admission: HTTP answers to a handshake refused for its address or its page ---------


def too_many_connections(limit: int) -> str:
    """HTTP 429: the address holds ``--max-connections-per-ip`` connections already."""
    return (
        f"too many connections from your address (at most {limit} at once); "
        "close one, or try again later"
    )


def connecting_too_fast(limit: int, seconds: int) -> str:
    """HTTP 429: the address opened ``--connect-rate-per-ip`` connections within the last
    minute; the next may come in ``seconds``."""
    return (
        f"too many new connections from your address (at most {limit} a minute); "
        f"try again in {seconds} s"
    )


def origin_refused(origin: str | None) -> str:
    """HTTP 403: a browser page from ``origin`` (normalised; None when the header is not
    an origin) may not open a WebSocket here."""
    page = f"pages from {origin}" if origin is not None else "a page with that Origin"
    return (
        f"{page} may not open a WebSocket on this server; "
        "its operator may allow them with --allow-origin"
    )


def not_in_room(room: str, *, to_say: bool = False) -> str:
    """``not_in_room``: a command about a room its sender is not in (``to_say``: a
    message, which names the way in)."""
    return f"you are not in {room}; /join it first" if to_say else f"you are not in {room}"


def no_such_nick(nick: str) -> str:
    """``no_such_nick``: nobody is called ``nick``."""
    return f"nobody is called {nick}"


def nick_taken(nick: str) -> str:
    """``nick_taken``: someone else has ``nick`` (in any case), or it is reserved."""
    return f"nick {nick} is taken"


def only_room(room: str) -> str:
    """``only_room``: leaving the one room its sender is in."""
    return f"{room} is your only room; /join another first"


def login_required(*, accounts: bool, registration: bool) -> str:
    """``login_required``: anything but a login before logging in, on a server with
    ``accounts`` (else it takes tokens only) and open ``registration``."""
    if not accounts:
        return "log in first with your login token (a login command with a token)"
    if registration:
        return "log in first: /login NAME PASSWORD, or /register NAME PASSWORD"
    return "log in first: /login NAME PASSWORD"


def login_prompt(data: Mapping[str, Any]) -> str:
    """The line a plain client reads on connecting to a server that needs a login: the
    ``login_required`` wording, as a sentence."""
    text = str(data["text"])
    return f"* {text[:1].upper()}{text[1:]}"


def kicked_by(nick: str) -> str:
    """The reason of a kick by an admin who gave none."""
    return f"kicked by {nick}"


def already_logged_in(nick: str) -> str:
    """``already_logged_in``: a second login on one connection."""
    return f"you are already logged in as {nick}"


def token_subject_changed() -> str:
    """``invalid_token`` for a refresh: the new token names somebody else."""
    return "the new token is for another subject; log in again instead"


#: Why a token is refused (the end of :func:`invalid_token`).
TOKEN_EXPIRED = "it has expired"
TOKEN_BAD_SIGNATURE = "its signature does not match this server's key"
TOKEN_MALFORMED = "it is not a signed JWT"
TOKEN_NOT_YET_VALID = "it is not valid yet"
TOKEN_BAD_ALGORITHM = "it is not signed with an algorithm this server accepts"
TOKEN_NO_NICK = "it has no 'nick' claim, and its 'sub' is not a valid nickname"


def token_missing_claim(claim: str) -> str:
    """Why a token is refused: a required claim is missing."""
    return f"it has no {claim!r} claim"


def token_bad_claim(claim: str, rule: str) -> str:
    """Why a token is refused: ``claim`` breaks ``rule`` (``must be a list of rooms``)."""
    return f"its {claim!r} claim {rule}"


def invalid_token(why: str) -> str:
    """``invalid_token``: a token that cannot be used, and ``why`` (never the token)."""
    return f"invalid login token: {why}"


def no_such_room(room: str) -> str:
    """``no_such_room``: no room of that name."""
    return f"there is no room {room}"


def room_not_allowed(room: str) -> str:
    """``room_not_allowed``: a room its sender's login does not let it into."""
    return f"you may not join {room}"


# --- accounts -----------------------------------------------------------------------------

#: ``login_failed``: the one answer to an unknown name and to a wrong password alike, so
#: that it tells nobody which names have accounts.
LOGIN_REFUSED = "wrong name or password"
#: The kick reason of the connections of an account the operator removed.
ACCOUNT_REMOVED = "account removed"
#: ``invalid_password``: an account's password may not be empty.
EMPTY_PASSWORD = "the password is empty"


def login_locked_out(seconds: float) -> str:
    """``login_locked``: too many failed logins of this name from this address; the
    lockout ends in ``seconds`` (said in whole minutes, rounded up)."""
    minutes = max(1, -(-int(seconds) // 60))
    unit = "minute" if minutes == 1 else "minutes"
    return f"too many failed logins from your address; try again in {minutes} {unit}"


def account_exists(name: str) -> str:
    """``account_exists``: an account has ``name`` already (in any case)."""
    return f"there is already an account called {name}"


def password_too_long(limit: int) -> str:
    """``invalid_password``: a password over ``limit`` characters."""
    return f"the password is too long (at most {limit} characters)"


# --- moderation ---------------------------------------------------------------------------


def until(expires: str | None) -> str:
    """How long a ban or mute lasts, from its ISO 8601 UTC ``expires``: ``until
    2026-12-02 21:00 UTC``, or ``for good``."""
    if expires is None:
        return "for good"
    return f"until {expires[:10]} {expires[11:16]} UTC"


def banned(reason: str | None, expires: str | None) -> str:
    """``banned``: the error (and close reason) of a banned nick, principal or address."""
    because = f" ({reason})" if reason else ""
    return f"you are banned{because} {until(expires)}"


def ban_kick(reason: str | None) -> str:
    """The kick reason (and close reason) of a connection closed by a new ban."""
    return f"banned: {reason}" if reason else "banned"


def muted(room: str, expires: str | None) -> str:
    """``muted``: a message to a room its sender is muted in."""
    return f"you are muted in {room} {until(expires)}"


#: ``store_failed`` for a topic: it was not kept, and not changed.
TOPIC_NOT_STORED = "the topic could not be stored; try again"
#: ``store_failed`` for a ban or mute: it was not kept, and not made.
MODERATION_NOT_STORED = "the change could not be stored; nothing was changed"


def ban_line(ban: Mapping[str, Any], closed: int = 0, hooks: Hooks = AS_SENT) -> str:
    """The answer to a ban: whom, how long, why, and the connections it closed."""
    reason = f" ({hooks.text(ban['reason'])})" if ban.get("reason") else ""
    line = f"* Banned {hooks.text(ban['target'])}{reason} {until(ban.get('expires'))}"
    if closed:
        line += f"; closed {closed} connection{'s' if closed != 1 else ''}"
    return line


def bans_lines(bans: Iterable[Mapping[str, Any]], hooks: Hooks = AS_SENT) -> list[str]:
    """The answer to ``/bans``: one line per ban, or one saying there is none."""
    lines = []
    for ban in bans:
        reason = f" ({hooks.text(ban['reason'])})" if ban.get("reason") else ""
        by = hooks.text(ban["by"])
        lines.append(f"* {hooks.text(ban['target'])}{reason} {until(ban.get('expires'))}, by {by}")
    return lines or ["* Nobody is banned"]


def no_such_account(name: str) -> str:
    """``no_such_account``: an ``account:NAME`` target without an account."""
    return f"there is no account called {name}"


def not_muted(nick: str, room: str) -> str:
    """``not_muted``: an unmute of a nick that is not muted there."""
    return f"{nick} is not muted in {room}"


def not_banned(target: str) -> str:
    """``not_banned``: an unban of a target that is not banned."""
    return f"{target} is not banned"


# --- flood limits --------------------------------------------------------------------------


def rate_limited(rate: float, backlog: int) -> str:
    """``rate_limited``: more than ``backlog`` messages waited for the rate limit (``rate``
    a second); the connection is closed next."""
    return (
        f"too many messages: at most {rate:g} a second, and {backlog} waiting;"
        " closing the connection"
    )


def too_many_lines(lines: int, limit: int) -> str:
    """``too_many_lines``: a plain frame of ``lines`` lines, over ``limit``."""
    return f"one frame may carry at most {limit} lines, not {lines}; none of it was sent"


def too_many_rooms(limit: int) -> str:
    """``too_many_rooms``: a new room, when ``limit`` rooms exist already."""
    return f"the server has {limit} rooms already; join one of them"


def room_full(room: str, limit: int) -> str:
    """``room_full``: ``room`` holds its ``limit`` members already."""
    return f"{room} is full ({limit} members)"
