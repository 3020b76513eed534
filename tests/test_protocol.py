"""The sans-I/O core: renderings and close descriptions, with plain function calls."""

from __future__ import annotations

import pytest

from trio_chat.protocol import ChatLine, CloseCode, ErrorLine, OperatorLine, describe_close


def test_chat_line_reads_as_the_tutorial_for_sender_and_others() -> None:
    """The sender reads ``You said:``, everyone else ``Someone says:``."""
    line = ChatLine.from_text(sender=7, text="hello")
    assert line.render(7) == "You said: hello"
    assert line.render(8) == "Someone says: hello"


def test_operator_line_is_the_same_for_everyone() -> None:
    """A console line carries the tutorial's green-circle prefix for every recipient."""
    line = OperatorLine.from_text("maintenance at noon")
    assert line.render(1) == line.render(2) == "🟢 Server: maintenance at noon"


def test_error_line_renders_as_given() -> None:
    """An error line is delivered verbatim."""
    assert ErrorLine("Error: nope").render(3) == "Error: nope"


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
