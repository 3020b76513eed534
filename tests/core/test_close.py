"""Close codes and how they are described."""

from __future__ import annotations

import pytest

from trio_chat.core.close import (
    SESSION_TAKEN_OVER,
    CloseCode,
    TakenOver,
    close_for,
    describe_close,
    should_reconnect,
)


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (1001, "server shutting down", "1001 server shutting down"),
        (1000, None, "1000 (normal closure)"),
        (1006, "", "1006 (abnormal closure)"),
        (4321, None, "4321"),
        (None, None, "no close code"),
        (1000, "bye\n\u2705 Client #9 connected", "1000 bye\\n\u2705 Client #9 connected"),
        (1000, "\x1b[2K\x1b]0;title\x07\u202e", "1000 \\x1b[2K\\x1b]0;title\\x07\\u202e"),
    ],
)
def test_describe_close(code: int | None, reason: str | None, expected: str) -> None:
    """Close codes print with their reason, or their name when there is none; a reason's
    line breaks, escapes and format characters print as Python escapes."""
    assert describe_close(code, reason) == expected


def test_close_codes_match_rfc_6455() -> None:
    """The codes the server sends are the RFC's numbers."""
    assert CloseCode.GOING_AWAY == 1001
    assert CloseCode.POLICY_VIOLATION == 1008
    assert CloseCode.MESSAGE_TOO_BIG == 1009
    assert CloseCode.INTERNAL_ERROR == 1011


def test_a_session_taken_over_is_closed_with_a_reason_not_to_reconnect() -> None:
    """Another connection resumed the session: 1008 with its reason, at once, and a client
    must not reconnect (it would take the session back, and so on)."""
    assert close_for(TakenOver()) == (1008, SESSION_TAKEN_OVER, False)
    assert SESSION_TAKEN_OVER == "session resumed by another connection"
    assert not should_reconnect(1008, SESSION_TAKEN_OVER)
    assert should_reconnect(1008, "slow consumer")
