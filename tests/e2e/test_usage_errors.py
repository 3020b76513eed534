"""The client's command line answers a bad flag as the server's does: one line naming the
problem and pointing at --help, exit status 2 (the server's cases are in
test_server_cli.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from support import EVENT_TIMEOUT, ROOT, child_env


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--nope"], "unrecognized arguments: --nope"),
        (["--name"], "argument --name: expected one argument"),
        (
            ["--name", "no spaces"],
            "invalid nickname 'no spaces': use 1-32 letters, digits, '_', '-' or '.'",
        ),
    ],
    ids=["unknown", "missing-value", "bad-nick"],
)
def test_client_bad_flag_is_one_line_and_exit_2(args: list[str], expected: str) -> None:
    """No usage block, no traceback, nothing on stdout, and no connection attempt."""
    result = subprocess.run(
        [sys.executable, "-m", "trio_chat.client", "ws://127.0.0.1:1", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=child_env(),
        cwd=ROOT,
        timeout=EVENT_TIMEOUT,
        check=False,
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == f"trio-chat: error: {expected}; see --help\n"
