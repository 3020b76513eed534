"""The client's screen: safe text, and escape codes only on a terminal."""

from __future__ import annotations

import io

from trio_chat.client.terminal import Screen, make_safe


def test_control_characters_are_made_visible() -> None:
    """ESC, BEL, C1 controls and DEL are shown escaped, never passed through."""
    assert make_safe("a\x1b[2Jb\x07c\x9bd\x7fe") == "a\\x1b[2Jb\\x07c\\x9bd\\x7fe"
    assert make_safe("plain text, ünïcode ☃") == "plain text, ünïcode ☃"


def test_off_a_terminal_lines_are_plain() -> None:
    """Without a terminal: one plain line per message, no escape codes, no prompt."""
    out = io.StringIO()
    screen = Screen(out, interactive=False)
    screen.status("Connected")
    screen.prompt()
    screen.incoming("Someone says: \x1b[31mred")
    screen.finish()
    assert out.getvalue() == "Connected\nSomeone says: \\x1b[31mred\n"


def test_on_a_terminal_incoming_lines_go_above_the_input_line() -> None:
    """On a terminal an incoming line is inserted above the line being typed."""
    out = io.StringIO()
    screen = Screen(out, interactive=True)
    screen.prompt()
    screen.incoming("Someone says: hi")
    assert out.getvalue() == "> \x1b7\n\x1b[A\x1b[LSomeone says: hi\n\x1b8\x1b[B"


def test_interactive_follows_isatty() -> None:
    """Without an explicit choice, the screen is interactive exactly when its stream is a tty."""
    assert Screen(io.StringIO()).interactive is False


def test_rendered_lines_keep_their_own_escape_codes() -> None:
    """show() writes a line the renderer already made safe as it is, colour included."""
    out = io.StringIO()
    screen = Screen(out, interactive=False)
    screen.show("\x1b[32mbob\x1b[0m: hi \\x1b[2J")
    assert out.getvalue() == "\x1b[32mbob\x1b[0m: hi \\x1b[2J\n"
