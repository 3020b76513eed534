"""The plain wording: every phrase written once, in :mod:`trio_chat.core.render`, and the
lines of a multi-line message each attributed to its sender."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from trio_chat.core import render
from trio_chat.core.render import Hooks, ack_lines, chat_lines

PACKAGE = Path(render.__file__).parents[1]

#: Fragments of the phrases people read: each may be in string literals of render.py
#: only (docstrings and comments aside).
PHRASES = [
    "You said",
    " says: ",
    "You said to ",
    "You are now known as",
    "joined ",
    "You left ",
    "now talking in",
    "is now known as",
    "was kicked",
    "set the topic of",
    "cleared the topic of",
    "Topic of ",
    "has no topic",
    ". Topic: ",
    " here)",
    "Rooms: ",
    "In ",
    "without a nickname",
    "Server:",
    "Error: ",
    "Done: ",
    "[history]",
    "[private]",
    "Someone",
    "you are not in ",
    "nobody is called",
    "your only room",
    "there is no room",
    "set a nickname with /nick",
    "could not be stored",
    "history is unavailable",
    "no longer kept",
    "wrong name or password",
    "too many failed logins",
    "there is already an account",
    "the password is",
    "You are logged in as",
    "log in first",
    "invalid login token",
    "passwords are refused over",
    "only an admin may",
    "registration is closed",
    "login token expires in",
    "too many connections from your address",
    "too many new connections from",
    "may not open a WebSocket",
]


def literals(path: Path) -> list[str]:
    """The string literals of a module that are not docstrings (f-string parts too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


@pytest.fixture(scope="module")
def strings() -> dict[str, list[str]]:
    return {
        str(path.relative_to(PACKAGE)): literals(path) for path in sorted(PACKAGE.rglob("*.py"))
    }


#: Whole literals (f-string parts) too common as fragments: matched exactly.
EXACT = [" left ", " quit"]


@pytest.mark.parametrize("literal", EXACT)
def test_each_short_phrase_is_written_once_in_render(
    strings: dict[str, list[str]], literal: str
) -> None:
    """A short phrase people read is a literal of core/render.py, once, and nowhere else."""
    where = [
        (module, text) for module, texts in strings.items() for text in texts if text == literal
    ]
    assert where == [("core/render.py", literal)]


@pytest.mark.parametrize("phrase", PHRASES)
def test_each_phrase_is_written_once_in_render(strings: dict[str, list[str]], phrase: str) -> None:
    """A phrase people read appears in literals of core/render.py and nowhere else."""
    where = {
        (module, text) for module, texts in strings.items() for text in texts if phrase in text
    }
    assert where
    assert {module for module, _ in where} == {"core/render.py"}, where


def test_the_phrase_check_finds_a_phrase_written_twice(tmp_path: Path) -> None:
    """The literal scan sees f-string parts and skips docstrings."""
    module = tmp_path / "m.py"
    module.write_text('"""You said it."""\nx = f"You said: {y}"\n', encoding="utf-8")
    assert literals(module) == ["You said: "]


MESSAGE = {"type": "message", "id": 7, "room": "dev", "from": "alice", "text": "a\nb", "ts": ""}


def test_every_line_of_a_message_is_attributed() -> None:
    """Sender and others read each line with its attribution; actions, privates and
    replays too."""
    assert chat_lines(MESSAGE, own=True) == ["You said: a", "You said: b"]
    assert chat_lines(MESSAGE) == ["alice says: a", "alice says: b"]
    assert chat_lines({**MESSAGE, "action": True}) == ["alice * a", "alice * b"]
    assert chat_lines({**MESSAGE, "from": None}) == ["Someone says: a", "Someone says: b"]
    assert chat_lines({**MESSAGE, "history": True}, own=True) == [
        "[history] alice says: a",
        "[history] alice says: b",
    ]
    private = {"type": "private", "from": "alice", "to": "bob", "text": "a\nb"}
    assert chat_lines(private, own=True) == [
        "[private] You said to bob: a",
        "[private] You said to bob: b",
    ]
    assert chat_lines(private) == ["[private] alice says: a", "[private] alice says: b"]
    assert chat_lines({**private, "history": True}) == [
        "[history] [private] alice to bob: a",
        "[history] [private] alice to bob: b",
    ]


def test_hooks_see_every_outside_string_and_each_line_alone() -> None:
    """Text goes through ``hooks.text`` line by line, nicknames through ``hooks.nick``."""
    hooks = Hooks(text=lambda value: f"<{value}>", nick=lambda value: f"({value})")
    assert chat_lines(MESSAGE, hooks) == ["(alice) says: <a>", "(alice) says: <b>"]
    who = {"type": "ack", "command": "who", "room": "dev", "members": ["al"], "anonymous": 1}
    assert ack_lines(who, hooks) == ["* In <dev>: (al) and 1 without a nickname"]


def test_the_login_answers_and_the_refresh_event_in_plain_words() -> None:
    """Each login-related answer is one line; the refresh event says what to do."""
    assert ack_lines({"command": "login", "nick": "alice", "admin": False}) == [
        "* You are logged in as alice"
    ]
    assert ack_lines({"command": "login", "nick": "root", "admin": True}) == [
        "* You are logged in as root (admin)"
    ]
    assert ack_lines({"command": "register", "nick": "bob"}) == [
        "* Registered bob; you are logged in"
    ]
    assert ack_lines({"command": "refresh", "expires": "x"}) == ["* Your login token was renewed"]
    assert ack_lines({"command": "kick", "nick": "bob", "reason": "r"}) == ["* You kicked bob"]
    assert ack_lines({"command": "announce", "room": "dev", "reached": 3}) == [
        "* Said in dev (3 reached)"
    ]
    assert render.token_refresh({"type": "refresh", "expires": "x", "seconds": 30}) == (
        "* Your login token expires in 30 s; send a new one with /refresh TOKEN"
    )
