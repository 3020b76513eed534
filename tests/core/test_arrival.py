"""What a connection's URL may ask for: nickname, rooms and a resume point."""

from __future__ import annotations

import re

import pytest

from trio_chat.core.arrival import Arrival, arrival_resource, parse_arrival


@pytest.mark.parametrize(
    ("path", "arrival"),
    [
        ("/", Arrival()),
        ("/?nick=alice", Arrival("alice")),
        ("/?nick=alice&room=Lobby&room=dev", Arrival("alice", ("lobby", "dev"))),
        ("/?room=lobby,dev,lobby&since=42", Arrival(None, ("lobby", "dev"), 42)),
        ("/chat?since=0", Arrival(None, (), 0)),
        (f"/?since={2**63 - 1}", Arrival(None, (), 2**63 - 1)),
        ("/?nick=a&since=3&session=Ab-_9", Arrival("a", (), 3, "Ab-_9")),
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
        ("/?session=a&session=b", "give one session"),
        ("/?session=s3cr3t!", "session must be the secret a welcome gave"),
        ("/?session=", "session must be the secret a welcome gave"),
    ],
)
def test_invalid_arrivals_have_one_line_reasons(path: str, reason: str) -> None:
    """Anything invalid is refused with a one-line reason (the server answers HTTP 400)."""
    with pytest.raises(ValueError, match=f"^{re.escape(reason)}$"):
        parse_arrival(path)


def test_the_client_builds_what_the_server_parses() -> None:
    """arrival_resource puts nick, rooms, since and session in the query; parse_arrival
    reads the same back; other keys are kept; a secret is not in the repr."""
    arrival = Arrival("alice", ("lobby", "dev"), 7, "Ab-_9")
    resource = arrival_resource("/chat?x=1&session=old", arrival)
    assert resource == "/chat?x=1&nick=alice&room=lobby&room=dev&since=7&session=Ab-_9"
    assert parse_arrival(resource) == arrival
    assert "Ab-_9" not in repr(arrival)
