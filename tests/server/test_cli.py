"""The server's command line without a process: every flag to the setting it names.

``parse_args`` and ``config_from_args`` are called directly; what needs the process (exit
statuses, the lines on stderr, a flag seen in a running server's behaviour) is in
tests/e2e/test_server_cli.py.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from trio_chat.server.cli import config_from_args, parse_args
from trio_chat.server.config import SETTINGS, ServerConfig, Setting

#: For every setting of the table: a text to give its flag (None for a switch) and the value
#: it must parse to, never the default (a flag that is dropped on the way must show).
SAMPLES: dict[str, tuple[str | None, object]] = {
    "host": ("::1", "::1"),
    "port": ("9001", 9001),
    "max_message_size": ("100", 100),
    "queue_depth": ("7", 7),
    "send_timeout": ("2.5", 2.5),
    "handshake_timeout": ("3.5", 3.5),
    "max_connections": ("5", 5),
    "db": ("elsewhere.db", "elsewhere.db"),
    "history_limit": ("20", 20),
    "history_on_join": ("0", 0),
    "presence_limit": ("3", 3),
    "shutdown_grace": ("0.5", 0.5),
    "ready_file": ("ready.json", "ready.json"),
    "no_console": (None, True),
    "log_level": ("debug", "DEBUG"),
}


def test_every_setting_has_a_sample() -> None:
    """The table below covers the settings table exactly: a new flag needs its row."""
    assert sorted(SAMPLES) == sorted(setting.field for setting in SETTINGS)


@pytest.mark.parametrize("setting", SETTINGS, ids=[setting.flag for setting in SETTINGS])
def test_each_flag_sets_its_field_and_nothing_else(setting: Setting) -> None:
    """``FLAG VALUE`` gives a ServerConfig whose field is the parsed value and every other
    field its default; a process setting (--ready-file, --no-console, --log-level) lands
    in the parsed namespace and leaves the ServerConfig at its defaults. A setting with an
    environment variable gets the same value from it."""
    text, expected = SAMPLES[setting.field]
    assert expected != setting.default
    argv = [setting.flag] if text is None else [setting.flag, text]
    sources = [parse_args(argv)]
    if setting.env is not None:
        assert text is not None
        sources.append(parse_args([], {setting.env: text}))
    for args in sources:
        actual = getattr(args, setting.field)
        assert (type(actual), actual) == (type(expected), expected)
        if setting.server:
            changed: dict[str, Any] = {setting.field: expected}
            assert config_from_args(args) == replace(ServerConfig(), **changed)
        else:
            assert config_from_args(args) == ServerConfig()
