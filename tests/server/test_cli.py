"""The server's command line without a process: flags and environment to settings, start-up
errors to one line, the settings table to the README's flag table.

``parse_args``, ``config_from_args`` and ``startup_failure`` are called directly; what
needs the process (exit statuses, the lines on stderr, a flag seen in a running server's
behaviour) is in tests/e2e/test_server_cli.py.
"""

from __future__ import annotations

import errno
import ipaddress
from dataclasses import replace
from typing import Any

import pytest

from trio_chat.server.cli import config_from_args, parse_args, startup_failure
from trio_chat.server.config import SETTINGS, ServerConfig, Setting, flag_table
from trio_chat.server.net.tls import TLSSetupError
from trio_chat.server.store import StoreError

from support import ROOT

#: For every setting of the table: a text to give its flag (None for a switch) and the value
#: it must parse to, never the default (a flag that is dropped on the way must show).
SAMPLES: dict[str, tuple[str | None, object]] = {
    "host": ("::1", "::1"),
    "port": ("9001", 9001),
    "max_message_size": ("100", 100),
    "max_message_lines": ("3", 3),
    "queue_depth": ("7", 7),
    "send_timeout": ("2.5", 2.5),
    "handshake_timeout": ("3.5", 3.5),
    "ping_interval": ("0", 0.0),
    "ping_timeout": ("5", 5.0),
    "max_connections": ("5", 5),
    "max_connections_per_ip": ("0", 0),
    "connect_rate_per_ip": ("5", 5),
    "limits_exempt": ("127.0.0.1/8", (ipaddress.ip_network("127.0.0.0/8"),)),
    "max_pending_handshakes": ("7", 7),
    "max_pending_handshakes_per_ip": ("0", 0),
    "public_origin": ("HTTPS://Chat.Example:443/", "https://chat.example"),
    "allow_origin": ("*", ("*",)),
    "rate_limit": ("0", 0.0),
    "rate_burst": ("3", 3),
    "rate_backlog": ("7", 7),
    "max_frame_lines": ("0", 0),
    "command_rate": ("2.5", 2.5),
    "command_burst": ("2", 2),
    "max_rooms": ("9", 9),
    "max_room_members": ("0", 0),
    "db": ("elsewhere.db", "elsewhere.db"),
    "history_limit": ("20", 20),
    "history_on_join": ("0", 0),
    "nick_hold": ("0", 0.0),
    "presence_limit": ("3", 3),
    "hash_concurrency": ("3", 3),
    "login_failures": ("2", 2),
    "login_lockout": ("60", 60.0),
    "admins": ("bob", ("bob",)),
    "control_socket": ("control.sock", "control.sock"),
    "shutdown_grace": ("0.5", 0.5),
    "accounts": (None, True),
    "open_registration": (None, True),
    "guests": (None, True),
    "allow_insecure_auth": (None, True),
    "jwt_key": ("key.pem", "key.pem"),
    "jwt_secret_file": ("secret", "secret"),
    "token_refresh": ("5", 5.0),
    "login_timeout": ("7.5", 7.5),
    "certfile": ("cert.pem", "cert.pem"),
    "keyfile": ("key.pem", "key.pem"),
    "trusted_proxy": ("10.1.2.3/8", (ipaddress.ip_network("10.0.0.0/8"),)),
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


def test_admin_may_be_given_several_times() -> None:
    """Each --admin adds a name, in order; a name no account can have is a usage error."""
    args = parse_args(["--admin", "alice", "--admin", "Bob"])
    assert config_from_args(args).admins == ("alice", "Bob")


def test_admin_refuses_a_name_no_account_can_have(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["--admin", "no way"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "trio-chat-server: error: argument --admin: invalid account name 'no way': "
        "use 1-32 letters, digits, '_', '-' or '.'; see --help"
    )


def test_only_a_start_up_error_is_one_line() -> None:
    """An OSError is a port problem only before the server listens; a StoreError is one
    line at any time; anything else mixed in is a bug, whose traceback must show."""
    config = ServerConfig(host="example.test", port=1)
    in_use = ExceptionGroup("", [OSError(errno.EADDRINUSE, "Address already in use")])
    assert startup_failure(in_use, config, listening=False) == (
        "Could not listen on example.test:1: Address already in use"
    )
    assert startup_failure(in_use, config, listening=True) is None
    stored = ExceptionGroup("", [ExceptionGroup("", [StoreError("cannot use it")])])
    assert startup_failure(stored, config, listening=True) == "cannot use it"
    mixed = ExceptionGroup("", [StoreError("cannot use it"), ValueError("a bug")])
    assert startup_failure(mixed, config, listening=False) is None


def readme_flag_table() -> list[str]:
    """The flag table of README.md's "The server" section, line by line."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index("| flag | default | what it does |")
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def test_readme_flag_table_is_the_settings_table() -> None:
    """README.md's flag table says what the settings table says: flags, defaults,
    variables and help (regenerate it from ``trio_chat.server.config.flag_table()``)."""
    assert readme_flag_table() == flag_table()


def test_parse_args_reads_only_the_environment_it_is_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """parse_args reads no environment of its own: the mapping it is given decides, and a
    flag wins over it."""
    monkeypatch.setenv("TRIO_CHAT_PORT", "1")
    monkeypatch.setenv("TRIO_CHAT_HOST", "example.invalid")
    defaults = parse_args([])
    assert (defaults.host, defaults.port) == ("localhost", 8765)
    given = parse_args([], {"TRIO_CHAT_PORT": "9001", "TRIO_CHAT_HOST": "::1"})
    assert (given.host, given.port) == ("::1", 9001)
    flagged = parse_args(["--port", "9002"], {"TRIO_CHAT_PORT": "nope"})
    assert flagged.port == 9002
    assert config_from_args(defaults) == ServerConfig()


def test_a_certificate_that_cannot_be_used_is_one_line() -> None:
    """A TLSSetupError, before or after listening, is the operator's to fix: its line."""
    config = ServerConfig()
    failed = ExceptionGroup(
        "", [TLSSetupError("cannot use the TLS key file k.pem: it is encrypted")]
    )
    assert startup_failure(failed, config, listening=False) == (
        "cannot use the TLS key file k.pem: it is encrypted"
    )


def test_trusted_proxy_may_be_given_several_times() -> None:
    """Each --trusted-proxy adds an address or a block; a bad one is a usage error."""
    args = parse_args(["--trusted-proxy", "127.0.0.1", "--trusted-proxy", "fd00::/8"])
    assert config_from_args(args).trusted_proxy == (
        ipaddress.ip_network("127.0.0.1/32"),
        ipaddress.ip_network("fd00::/8"),
    )
    assert config_from_args(parse_args([])).trusted_proxy == ()
