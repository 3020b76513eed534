"""The bundled client honours a resume's ``recovered``: its user is told when messages
after the resume point were no longer kept, and nothing when the resume was complete."""

from __future__ import annotations

import json

from trio_chat.client.session import JsonSession
from trio_chat.client.view import Style, render_event


def resume_ack(**result: object) -> str:
    """The server's answer to ``since=`` in the URL: an ack without cid."""
    return json.dumps({"type": "ack", "command": "resume", **result})


def test_a_resume_that_lost_messages_is_one_line_for_the_user() -> None:
    session = JsonSession(Style(False), "sam")
    shown = session.receive(resume_ack(since=41, recovered=False, oldest=57)).show
    assert shown == [
        "* Some messages since 41 are no longer kept and were missed; replaying from 57"
    ]


def test_a_complete_resume_shows_nothing() -> None:
    session = JsonSession(Style(False), "sam")
    assert session.receive(resume_ack(since=41, recovered=True)).show == []


def test_the_line_is_dimmed_with_colour_on() -> None:
    event = {"type": "ack", "command": "resume", "since": 1, "recovered": False, "oldest": 4}
    assert render_event(event, Style(True)) == [
        "\x1b[2m* Some messages since 1 are no longer kept and were missed; replaying from 4\x1b[0m"
    ]
