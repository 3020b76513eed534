"""Close codes and how they are described."""

from __future__ import annotations

import pytest

from trio_chat.core.close import CloseCode, describe_close


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        (1001, "server shutting down", "1001 server shutting down"),
        (1000, None, "1000 (normal closure)"),
        (1006, "", "1006 (abnormal closure)"),
        (4321, None, "4321"),
        (None, None, "no close code"),
    ],
)
def test_describe_close(code: int | None, reason: str | None, expected: str) -> None:
    """Close codes print with their reason, or their name when there is none."""
    assert describe_close(code, reason) == expected


def test_close_codes_match_rfc_6455() -> None:
    """The codes the server sends are the RFC's numbers."""
    assert CloseCode.GOING_AWAY == 1001
    assert CloseCode.POLICY_VIOLATION == 1008
    assert CloseCode.MESSAGE_TOO_BIG == 1009
    assert CloseCode.INTERNAL_ERROR == 1011
