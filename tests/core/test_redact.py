"""What of a URL or a request target may be written down: queries and credentials never."""

from __future__ import annotations

import pytest

from trio_chat.core.redact import redact_quoted, redact_target, redact_text, redact_url


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("/?session=x&token=y", "/?…"),
        ("/chat?nick=alice", "/chat?…"),
        ("/chat", "/chat"),
        ("/", "/"),
        ("/?", "/"),
        ("/#frag?x", "/"),
    ],
)
def test_a_target_loses_its_query(target: str, shown: str) -> None:
    assert redact_target(target) == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("wss://chat.example.org/?session=x", "wss://chat.example.org/?…"),
        ("ws://127.0.0.1:8765", "ws://127.0.0.1:8765"),
        ("ws://127.0.0.1:8765/room", "ws://127.0.0.1:8765/room"),
        ("ws://bob:secret@host:1/?token=t", "ws://…@host:1/?…"),
        ("ws://host?token=t", "ws://host?…"),
        ("/?token=t", "/?…"),
    ],
)
def test_a_url_loses_its_query_and_credentials(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_quoted_values_in_a_protocol_error_are_replaced() -> None:
    """h11 and wsproto quote the offending bytes: a header line, a request line."""
    assert redact_text("illegal header line: b'authorization: Bearer s3cret\\x01'") == (
        "illegal header line: …"
    )
    assert redact_text('illegal request line: b"GET /?token=t HTTP/1.1 x"') == (
        "illegal request line: …"
    )
    assert redact_text("illegal header line: bytearray(b'x: y\\x00')") == ("illegal header line: …")
    # wsproto names a header in quotes: its own words, kept.
    assert redact_text("Missing header, 'Upgrade'") == "Missing header, 'Upgrade'"
    assert redact_text("no quotes here") == "no quotes here"


def test_for_a_log_line_every_quoted_value_goes() -> None:
    assert redact_quoted("invalid nickname 'a b': use letters") == "invalid nickname …: use letters"
    assert redact_quoted("no quotes") == "no quotes"
