"""``trio-chat-server ban|unban|bans`` as an operator runs them: on the database of a
stopped server, then through a running server's control socket, in subprocesses (each
test its own database; the sockets in the suite's private runtime folder)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from support import EVENT_TIMEOUT, ServerProcess, failed, server_command, succeeded


def succeeds(*args: str) -> list[str]:
    return succeeded(server_command(*args))


def fails(*args: str) -> str:
    return failed(server_command(*args))


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "chat.db")


def test_bans_on_a_stopped_server_hold_from_its_next_start(
    server_process: type[ServerProcess], db: str
) -> None:
    """Made on the database, the ban is in force once the server starts; lifted through
    the running server, the address gets in again."""
    assert succeeds("ban", "127.0.0.1", "--reason", "testing", "--db", db) == [
        "Banned 127.0.0.1 (testing) for good"
    ]
    assert succeeds("bans", "--db", db)[0].startswith("127.0.0.1 (testing) for good, by operator")
    assert fails("ban", "not a target!", "--db", db).startswith(
        "trio-chat-server ban: cannot ban 'not a target!'"
    )
    assert fails("ban", "alice", "--duration", "soon", "--db", db) == (
        "trio-chat-server ban: invalid duration 'soon': give one such as 30s, 10m, 2h, 7d or 1w"
    )
    server = server_process("--no-console", db=db)
    with pytest.raises(InvalidStatus) as info:
        connect(server.url, open_timeout=EVENT_TIMEOUT).close()
    assert info.value.response.status_code == 403
    through = "(through the running server)"
    assert succeeds("unban", "127.0.0.1", "--db", db) == [f"Lifted the ban on 127.0.0.1 {through}"]
    assert fails("unban", "127.0.0.1", "--db", db) == (
        "trio-chat-server unban: 127.0.0.1 is not banned"
    )
    with connect(server.url, open_timeout=EVENT_TIMEOUT) as ws:
        ws.send("/nick mallory")
        assert ws.recv(timeout=EVENT_TIMEOUT) == "* You are now known as mallory"
        assert succeeds("ban", "mallory", "--duration", "2h", "--db", db)[0].endswith(
            f"UTC; closed 1 connection {through}"
        )
    assert succeeds("bans", "--db", db)[0].startswith("mallory until ")
    server.proc.send_signal(signal.SIGTERM)
    assert server.wait() == 0
    assert succeeds("bans", "--db", db)[0].startswith("mallory until ")
