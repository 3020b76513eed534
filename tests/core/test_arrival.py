"""What a connection's URL may ask for: nickname, rooms and a resume point."""

from __future__ import annotations

import re

import pytest

from trio_chat.core.arrival import Arrival, parse_arrival


@pytest.mark.parametrize(
    ("path", "arrival"),
    [
        ("/", Arrival()),
        ("/?nick=alice", Arrival("alice")),
        ("/?nick=alice&room=Lobby&room=dev", Arrival("alice", ("lobby", "dev"))),
        ("/?room=lobby,dev,lobby&since=42", Arrival(None, ("lobby", "dev"), 42)),
        ("/chat?since=0", Arrival(None, (), 0)),
        (f"/?since={2**63 - 1}", Arrival(None, (), 2**63 - 1)),
    ],
)
def test_valid_arrivals(path: str, arrival: Arrival) -> None:
    """Nick, rooms (repeated or comma-separated, lower-cased, once each) and since."""
    assert parse_arrival(path) == arrival


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/?since=abc", "since must be one whole number: the id of the last message seen"),
        ("/?since=-1", "since must be one whole number: the id of the last message seen"),
        ("/?since=%C2%B2", "since must be one whole number: the id of the last message seen"),
        ("/?since=1&since=2", "since must be one whole number: the id of the last message seen"),
        (f"/?since={2**63}", f"since must be at most {2**63 - 1}"),
        ("/?nick=a&nick=b", "give one nick"),
        (
            "/?nick=bad%20name",
            "invalid nickname 'bad name': use 1-32 letters, digits, '_', '-' or '.'",
        ),
        ("/?room=", "invalid room name '': use 1-32 letters, digits, '_', '-' or '.'"),
    ],
)
def test_invalid_arrivals_have_one_line_reasons(path: str, reason: str) -> None:
    """Anything invalid is refused with a one-line reason (the server answers HTTP 400)."""
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        parse_arrival(path)
