"""The operator console: lines typed at the server's terminal.

A plain line goes to every client as ``🟢 Server: <text>``; ``/quit`` shuts the server
down. At end of file (a service manager, ``< /dev/null``) the console stops quietly and
the server keeps serving; no task is left polling stdin.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from .chat import Chat
from .lines import read_lines

__all__ = ["CONSOLE_HELP", "run_console"]

logger = logging.getLogger(__name__)

CONSOLE_HELP = "Type a line to broadcast it to every client; /quit stops the server."


def handle_console_line(line: str, chat: Chat, shutdown: Callable[[], None]) -> str | None:
    """Act on one console line; return what the console should print, if anything."""
    text = line.strip()
    if not text:
        return None
    if text.startswith("/"):
        command = text.split()[0].lower()
        if command == "/quit":
            shutdown()
            return "Shutting down..."
        if command == "/help":
            return CONSOLE_HELP
        return f"Unknown console command {command}. {CONSOLE_HELP}"
    reached = chat.operator_says(text)
    if reached == 0:
        return "\N{HEAVY EXCLAMATION MARK SYMBOL} No clients connected to receive message"
    return f"\N{OUTBOX TRAY} Server broadcast: {text}"


async def run_console(
    fd: int, chat: Chat, shutdown: Callable[[], None], echo: Callable[[str], None]
) -> None:
    """Read console lines from ``fd`` until end of file or cancellation.

    Owns nothing but a worker thread blocked in ``os.read``, which is abandoned when
    this is cancelled. ``echo`` prints the console's answers; ``shutdown`` is called
    for ``/quit``.
    """
    async for line in read_lines(fd):
        answer = handle_console_line(line, chat, shutdown)
        if answer is not None:
            echo(answer)
    logger.info("console input ended; still serving (stop with SIGINT or SIGTERM)")
