"""The watch on what servers log: a test fails on any traceback in a server's output.

In-process (``inproc``): an error or a traceback logged by any logger while a server
runs, the package's or another's (trio's, wsproto's, h11's, the root's), is kept in the
server log's ``errors``, which the fixture requires to be empty at teardown. Subprocess
servers (``support.ServerProcess``): the ``server_process`` fixture fails a test whose
server printed a traceback (:func:`support.tracebacks_in`).
"""

from __future__ import annotations

import logging

import pytest
from inproc import LiveServer

from support import tracebacks_in

pytest_plugins = ["inproc"]


def raised() -> BaseException:
    """An exception with its traceback, as a handler catches it."""
    try:
        raise RuntimeError("boom")
    except RuntimeError as error:
        return error


@pytest.mark.parametrize("name", ["trio", "wsproto", "h11", "trio_chat.server", ""])
@pytest.mark.parametrize(
    ("level", "traceback"), [(logging.ERROR, False), (logging.WARNING, True), (logging.INFO, True)]
)
async def test_an_error_or_a_traceback_from_any_logger_is_caught(
    live_server: LiveServer, name: str, level: int, traceback: bool
) -> None:
    """An ERROR record, or a record of any level with a traceback, from the package's
    logger or any other, is kept in the errors the fixture fails on (and not twice)."""
    logger = logging.getLogger(name)
    logger.setLevel(logging.INFO)
    try:
        logger.log(level, "something broke", exc_info=raised() if traceback else None)
    finally:
        logger.setLevel(logging.NOTSET)
    (error,) = live_server.log.errors
    assert error.startswith(f"{name or 'root'}: something broke")
    assert ("Traceback (most recent call last):" in error) == traceback
    live_server.log.errors.clear()  # seen: this test's server logged nothing wrong


async def test_other_loggers_warnings_and_the_servers_lines_are_no_errors(
    live_server: LiveServer,
) -> None:
    """A warning without a traceback from another logger, and the server's own lines
    (a refusal is one line, at WARNING), are not errors."""
    logging.getLogger("trio").warning("a warning")
    logging.getLogger("trio_chat.server").warning("127.0.0.1:5 refused: 1 connections open")
    assert live_server.log.errors == []


@pytest.mark.parametrize(
    "output",
    [
        "Traceback (most recent call last):\n  File ...\nRuntimeError: boom\n",
        "ok\n  + Exception Group Traceback (most recent call last):\n  |   ...\n",
        "  | Traceback (most recent call last):\n",
        "Exception ignored in: <function f at 0x7f>\n",
    ],
)
def test_a_traceback_in_a_process_output_is_found(output: str) -> None:
    """A traceback printed by a subprocess server is found, even nested in an exception
    group's report."""
    assert tracebacks_in(output)


def test_a_clean_output_has_no_traceback() -> None:
    """A server's usual lines hold no traceback, even when one says the word."""
    output = "✅ Server is running on ws://127.0.0.1:5\n❌ Client #1 (x) disconnected: Traceback\n"
    assert tracebacks_in(output) == []
