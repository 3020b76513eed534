"""The operator console's commands, without a terminal."""

from __future__ import annotations

from trio_chat.server.chat import Chat
from trio_chat.server.console import CONSOLE_HELP, handle_console_line
from trio_chat.server.history import MessageLog
from trio_chat.server.store import MemoryStore

from support import FakeViewer


def new_chat() -> Chat:
    """A chat for operator commands, which store nothing."""
    return Chat(MessageLog(MemoryStore(10)))


async def test_a_console_line_reaches_every_client() -> None:
    """A plain line is published to everyone and the console confirms it."""
    chat = new_chat()
    shutdowns: list[bool] = []
    with (
        chat.bus.subscribe(FakeViewer(1), 4, lambda: None) as first,
        chat.bus.subscribe(FakeViewer(2), 4, lambda: None) as second,
    ):
        answer = handle_console_line("  hello all ", chat, lambda: shutdowns.append(True))
        assert await first.next_batch(1000) == (["🟢 Server: hello all"], None)
        assert await second.next_batch(1000) == (["🟢 Server: hello all"], None)
    assert answer == "📤 Server broadcast: hello all"
    assert shutdowns == []


def test_a_console_line_with_nobody_connected_says_so() -> None:
    """With no clients, the console says nobody received it."""
    assert handle_console_line("anyone?", new_chat(), lambda: None) == (
        "❗ No clients connected to receive message"
    )


def test_quit_asks_for_shutdown() -> None:
    """``/quit`` (any case) calls the shutdown trigger."""
    shutdowns: list[bool] = []
    assert handle_console_line("/QUIT", new_chat(), lambda: shutdowns.append(True)) == (
        "Shutting down..."
    )
    assert shutdowns == [True]


def test_unknown_commands_and_blank_lines() -> None:
    """An unknown command gets the help text; a blank line does nothing."""
    chat = new_chat()
    assert handle_console_line("/nope now", chat, lambda: None) == (
        f"Unknown console command /nope. {CONSOLE_HELP}"
    )
    assert handle_console_line("   ", chat, lambda: None) is None
    assert handle_console_line("/help", chat, lambda: None) == CONSOLE_HELP


async def test_a_console_line_is_cleaned_like_a_clients() -> None:
    """An escape sequence pasted at the console never reaches the clients."""
    chat = new_chat()
    with chat.bus.subscribe(FakeViewer(1), 4, lambda: None) as viewer:
        answer = handle_console_line("noon\x1b[2K\x07 sharp", chat, lambda: None)
        assert await viewer.next_batch(1000) == (["🟢 Server: noon sharp"], None)
    assert answer == "📤 Server broadcast: noon sharp"
