"""The operator console: lines typed at the server's terminal.

A plain line goes to every client as ``🟢 Server: <text>``; ``/who``, ``/rooms``,
``/kick`` and ``/say`` inspect and steer the chat; ``/ban``, ``/unban``, ``/bans``,
``/mute`` and ``/unmute`` moderate it (kept in the store, so they wait for it:
:func:`answer_console_line`); ``/quit`` shuts the server down. The
answers that say what clients are also told (rosters, room lists, errors) use the
clients' wording, :mod:`trio_chat.core.render`; the rest is the operator's own. At
end of file (a service manager, ``< /dev/null``) the console stops quietly and the server
keeps serving; no task is left polling stdin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from trio_chat.core import render
from trio_chat.core.commands import (
    Ban,
    CommandError,
    ListBans,
    Mute,
    Unban,
    Unmute,
    parse_plain,
    valid_name,
    valid_room,
)
from trio_chat.core.render import error_line, rooms_line, roster_line
from trio_chat.core.text import clean_line
from trio_chat.lines import read_lines

from .chat import Chat
from .moderation import OPERATOR

__all__ = ["CONSOLE_HELP", "answer_console_line", "handle_console_line", "run_console"]

logger = logging.getLogger(__name__)

CONSOLE_HELP = (
    "Type a line to broadcast it to every client. Commands: /who [ROOM], /rooms, "
    "/kick NICK [REASON], /say ROOM TEXT, /ban TARGET [DURATION] [REASON], /unban TARGET, "
    "/bans, /mute ROOM NICK [DURATION], /unmute ROOM NICK, /quit, /help."
)
#: The console's moderation commands: they wait for the store.
MODERATION_COMMANDS = frozenset({"/ban", "/unban", "/bans", "/mute", "/unmute"})
#: The close reason a kicked client gets when the operator gives none.
DEFAULT_KICK_REASON = "kicked by the operator"


def handle_console_line(line: str, chat: Chat, shutdown: Callable[[], None]) -> str | None:
    """Act on one console line; return what the console should print, if anything. The
    line is cleaned as a client's is (:func:`~trio_chat.core.text.clean_line`): a paste
    at the console must not drive the clients' terminals either."""
    text = clean_line(line).strip()
    if not text:
        return None
    if not text.startswith("/"):
        reached = chat.operator_says(text)
        if reached == 0:
            return "\N{HEAVY EXCLAMATION MARK SYMBOL} No clients connected to receive message"
        return f"\N{OUTBOX TRAY} Server broadcast: {text}"
    command, _, rest = text.partition(" ")
    command = command.lower()
    args = rest.split()
    try:
        match command:
            case "/quit":
                shutdown()
                return "Shutting down..."
            case "/help":
                return CONSOLE_HELP
            case "/rooms" if not args:
                return rooms_line((name, count) for name, count, _ in chat.room_list())
            case "/who" if len(args) == 1:
                room = args[0].lower()
                return roster_line(room, *chat.roster(room))
            case "/who" if not args:
                return "\n".join(
                    roster_line(name, *chat.roster(name)) for name, _, _ in chat.room_list()
                )
            case "/kick" if args:
                nick = args[0]
                reason = rest.split(None, 1)[1] if len(args) > 1 else DEFAULT_KICK_REASON
                if not chat.kick(nick, reason):
                    return f"Nobody is called {nick}"
                return f"Kicked {nick} ({reason})"
            case "/say" if len(args) >= 2:
                room, message = rest.split(None, 1)
                reached = chat.operator_says(message, room.lower())
                return (
                    f"\N{OUTBOX TRAY} Server said in {room.lower()} ({reached} reached): {message}"
                )
            case "/who" | "/rooms" | "/kick" | "/say":
                return f"Wrong arguments for {command}. {CONSOLE_HELP}"
    except CommandError as error:
        return error_line(error.text)
    return f"Unknown console command {command}. {CONSOLE_HELP}"


async def answer_console_line(line: str, chat: Chat, shutdown: Callable[[], None]) -> str | None:
    """Act on one console line, moderation commands included (they are kept in the
    store first, so this waits for it); what the console should print, if anything."""
    text = line.strip()
    command, _, rest = text.partition(" ")
    command = command.lower()
    if command not in MODERATION_COMMANDS:
        return handle_console_line(line, chat, shutdown)
    args = rest.split()
    try:
        request: Ban | Unban | ListBans | Mute | Unmute
        room = None
        if command in ("/mute", "/unmute"):
            if not 2 <= len(args) <= (3 if command == "/mute" else 2):
                return f"Wrong arguments for {command}. {CONSOLE_HELP}"
            room = valid_room(args[0])
            nick = valid_name(args[1], "nickname")
            if command == "/unmute":
                request = Unmute(nick, room)
            else:
                parsed = parse_plain(f"/mute {' '.join(args[1:])}")
                assert isinstance(parsed, Mute)
                request = Mute(nick, room, parsed.seconds)
        else:
            parsed_command = parse_plain(text)
            assert isinstance(parsed_command, Ban | Unban | ListBans)
            request = parsed_command
        ack = await chat.moderate(request, None, by=OPERATOR, room=room)
    except CommandError as error:
        return error_line(error.text)
    return "\n".join(render.ack_lines(ack.data()))


async def run_console(
    fd: int, chat: Chat, shutdown: Callable[[], None], echo: Callable[[str], None]
) -> None:
    """Read console lines from ``fd`` until end of file or cancellation.

    Owns nothing but a worker thread blocked in ``os.read``, which is abandoned when
    this is cancelled. ``echo`` prints the console's answers; ``shutdown`` is called
    for ``/quit``.
    """
    async for line in read_lines(fd):
        answer = await answer_console_line(line, chat, shutdown)
        if answer is not None:
            echo(answer)
    logger.info("console input ended; still serving (stop with SIGINT or SIGTERM)")
