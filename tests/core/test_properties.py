"""Properties of the pure core over arbitrary input (hypothesis): the command parsers, the
wire formats, the plain wording, the arrival URL, and what a log line may show of a URL.

What holds for any text a peer can send: parsing never fails with anything but the
documented refusal (:class:`CommandError` for a command, ValueError for an arrival URL);
what the client writes (:func:`command_to_json`, :func:`arrival_resource`) the server
reads back as the same thing; a plain frame is as many messages as it has lines, and no
rendering holds a line break its sender did not write, nor a line without its sender;
no redacted URL, target or error text shows a secret it held.

Deterministic: the examples are drawn from each test's name (the ``ci`` profile of
conftest: derandomized, a bounded number, no example database).
"""

from __future__ import annotations

import dataclasses
import json
import re
import string
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from trio_chat.core.arrival import (
    ARRIVAL_KEYS,
    MAX_ARRIVAL_ROOMS,
    Arrival,
    arrival_resource,
    parse_arrival,
    resume_resource,
)
from trio_chat.core.close import describe_close
from trio_chat.core.commands import (
    MAX_CID_LENGTH,
    MAX_HISTORY_PAGE,
    MAX_ID,
    MAX_MESSAGE_LINES,
    NAME_PATTERN,
    SECRET_PATTERN,
    Command,
    CommandError,
    Help,
    History,
    Join,
    Leave,
    ListRooms,
    Nick,
    Private,
    Quit,
    Resume,
    Say,
    Topic,
    Who,
    command_to_json,
    message_text,
    parse_json,
    parse_plain,
)
from trio_chat.core.events import (
    Event,
    HistoryLine,
    Message,
    Presence,
    PrivateMessage,
    TopicChanged,
)
from trio_chat.core.record import Record
from trio_chat.core.redact import redact_quoted, redact_target, redact_text, redact_url
from trio_chat.core.text import clean_line, clean_text, split_lines
from trio_chat.core.wire import JSON, PLAIN

from support import FakeViewer

# --- strategies ------------------------------------------------------------------------------

names = st.from_regex(NAME_PATTERN, fullmatch=True)
rooms = names.map(str.lower)
secrets = st.from_regex(SECRET_PATTERN, fullmatch=True)
#: Text of one line: anything but the two line breaks the protocol knows.
one_line = st.text(st.characters(exclude_characters="\r\n"))
#: A JSON message's text as the parser leaves it: up to the default number of lines.
message_texts = st.lists(one_line, min_size=1, max_size=MAX_MESSAGE_LINES).map("\n".join)
cids = st.none() | st.text(max_size=MAX_CID_LENGTH) | st.integers(-(10**18), 10**18)
ids = st.integers(0, MAX_ID)

commands: st.SearchStrategy[Command] = st.one_of(
    st.builds(Say, message_texts, st.none() | rooms, st.booleans()),
    st.builds(Private, names, message_texts),
    st.builds(Nick, names),
    st.builds(Join, rooms),
    st.builds(Leave, st.none() | rooms),
    st.just(ListRooms()),
    st.builds(Who, st.none() | rooms),
    st.builds(Topic, st.none() | rooms, st.none() | one_line),
    st.just(Help()),
    st.builds(Quit, st.none() | one_line),
    st.builds(
        History, st.none() | rooms, st.none() | ids, st.integers(1, MAX_HISTORY_PAGE), st.booleans()
    ),
    st.builds(Resume, ids, st.none() | secrets),
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=8,
)
#: A value for one of the fields commands have: often of the right kind, often not.
field_values = (
    json_values
    | names
    | rooms
    | secrets
    | message_texts
    | ids
    | st.integers(-5, MAX_HISTORY_PAGE + 5)
    | st.sampled_from([True, False, MAX_ID + 1, -1, 2**64, 1.5, "", " "])
)
TYPES = [
    "message", "me", "private", "nick", "join", "leave", "rooms", "who", "topic", "help",
    "history", "resume", "quit",
]  # fmt: skip
FIELDS = ["room", "text", "to", "nick", "limit", "before", "private", "since", "session", "reason"]
#: JSON objects shaped like commands, so that every branch of the parser is reached.
command_objects = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES) | json_values},
    optional={"cid": cids | json_values, **dict.fromkeys(FIELDS, field_values)},
)


def parse_or_refuse(frame: str) -> tuple[Command, str | int | None] | CommandError:
    """What ``parse_json`` makes of ``frame``: its command and cid, or its refusal (any
    other exception fails the test)."""
    try:
        return parse_json(frame)
    except CommandError as error:
        return error


# --- commands ------------------------------------------------------------------------------


@given(st.text())
@example("/msg")
@example("/msg alice")
@example("/MSG alice \u3000hi")
@example("/me \u2003")
@example("/nick\u00a0alice")
def test_any_plain_line_is_a_command_or_a_command_error(line: str) -> None:
    """Whatever the line, parse_plain returns a command or raises CommandError, and a
    line that does not start with ``/`` once cleaned is said as cleaned."""
    try:
        command = parse_plain(line)
    except CommandError as error:
        refusal = error
    else:
        refusal = None
    if refusal is not None:
        assert refusal.code in {"bad_request", "invalid_name", "unknown_command"}
        assert refusal.text
        return
    cleaned = clean_line(line)
    if not cleaned.startswith("/"):
        assert command == Say(cleaned)


@given(st.text())
@example("[" * 5000)
@example('{"type": "help", "cid": ' + "[" * 5000)
@example('{"type": "history", "limit": 1e400}')
@example('{"type": "history", "limit": ' + "9" * 5000 + "}")
def test_any_text_is_a_json_command_or_a_command_error(frame: str) -> None:
    """Whatever the frame (even JSON nested deeper than the decoder recurses), parse_json
    returns a command or raises CommandError."""
    parse_or_refuse(frame)


@given(command_objects)
def test_any_json_object_is_a_command_or_a_command_error(data: dict[str, Any]) -> None:
    """Every JSON object shaped like a command, its fields of any kind, is read or
    refused with CommandError; a refusal carries the object's cid when that cid is
    valid, and what is read is a command of the type it names."""
    outcome = parse_or_refuse(json.dumps(data))
    cid = data.get("cid")
    valid_cid = cid is None or (
        isinstance(cid, str | int) and not isinstance(cid, bool) and len(str(cid)) <= 64
    )
    if isinstance(outcome, CommandError):
        if valid_cid and outcome.code != "bad_request":
            assert outcome.cid == cid
        return
    command, read_cid = outcome
    assert valid_cid
    assert read_cid == cid
    expected = "message" if isinstance(command, Say) and not command.action else None
    assert json.loads(command_to_json(command))["type"] == (expected or data["type"])


@given(commands, cids)
def test_every_command_survives_its_json_form(command: Command, cid: str | int | None) -> None:
    """What the client sends for a command (command_to_json) is that command again on
    the server (parse_json), with its cid, once its texts are as the server reads them:
    cleaning a text twice changes nothing more (or it was refused, having held nothing
    readable)."""
    outcome = parse_or_refuse(command_to_json(command, cid))
    if isinstance(outcome, CommandError):
        assert outcome.code == "bad_request"
        return
    read, read_cid = outcome
    assert read_cid == cid
    assert parse_json(command_to_json(read, cid)) == (read, cid)


@given(st.text())
@example("/topic  spaced  out ")
@example("/quit \x85")
def test_every_plain_line_means_the_same_in_json(text: str) -> None:
    """The terminal client turns a typed line into JSON with parse_plain and
    command_to_json: for every line parse_plain reads, the server reads that JSON as the
    very same command."""
    for line in text.splitlines() or [text]:
        try:
            command = parse_plain(line)
        except CommandError:
            continue
        assert parse_json(command_to_json(command)) == (command, None)


@given(st.text(), st.integers(1, 50))
def test_a_message_text_keeps_its_lines_or_is_refused(text: str, max_lines: int) -> None:
    """message_text makes every \\r\\n and \\r a \\n, cleans each line and breaks
    nothing else, and refuses with bad_request a text of more than ``max_lines`` lines or
    one that held nothing readable."""
    lines = split_lines(text)
    expected = "\n".join(clean_line(line) for line in lines)
    if len(lines) > max_lines or (text.strip() and not expected.strip()):
        with pytest.raises(CommandError) as refused:
            message_text(text, max_lines)
        assert refused.value.code == "bad_request"
    else:
        assert message_text(text, max_lines) == expected


# --- wire formats ----------------------------------------------------------------------------


@given(st.text())
@example("a\u2028b")
@example("a\x85b\nc")
@example("\r\n\r\n")
def test_a_plain_frame_is_as_many_messages_as_it_has_lines(frame: str) -> None:
    """A plain frame is read line by line, ``\\r\\n``, ``\\r`` and ``\\n`` ending a line
    (a break that ends the frame ends its last line) and nothing else: the look-alikes
    (U+2028, U+0085, FF...) are a space once cleaned, so no plain message holds a line
    break, and an empty frame is one empty line."""
    lines = re.split(r"\r\n|\r|\n", frame)
    if len(lines) > 1 and not lines[-1]:
        lines.pop()
    parsed = PLAIN.parse(frame, max_lines=MAX_MESSAGE_LINES)
    assert len(parsed) == len(lines)
    for line, outcome in zip(lines, parsed, strict=True):
        if isinstance(outcome, CommandError):
            continue
        command, cid = outcome
        assert cid is None
        assert command == parse_plain(line)


@given(st.text() | command_objects.map(json.dumps))
def test_a_json_frame_is_one_command_or_one_refusal(frame: str) -> None:
    """A JSON frame is exactly one command, or one refusal."""
    (outcome,) = JSON.parse(frame, max_lines=MAX_MESSAGE_LINES)
    assert isinstance(outcome, CommandError) or outcome == parse_json(frame)


# --- rendering -------------------------------------------------------------------------------

#: Readers of an event: its sender in the event's room, someone else there, and someone
#: else whose current room is another (so each line is marked ``[room]``).
VIEWERS = (FakeViewer(1, current_room="lobby"), FakeViewer(2), FakeViewer(2, current_room="dev"))
TS = "2026-11-26T05:46:09.123Z"


#: Line breaks besides \n and \r that Python (and many terminals or widgets) honour.
LINE_BREAK_LOOK_ALIKES = ("\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029")

#: A one-line text no renderer changes, to find where a message's text starts.
MARK = "MARK"


def attribution(make: Callable[[str], Event], viewer: FakeViewer) -> str:
    """What a plain line of the event ``make`` builds begins with for ``viewer``, before
    the text: who said it, and where (``[dev] alice says: ``)."""
    rendered = PLAIN.render(make(MARK), viewer)
    assert rendered is not None
    prefix, mark, _ = rendered.rpartition(MARK)
    assert mark
    assert prefix
    return prefix


def assert_attributed(rendered: str, text: str, prefix: str) -> None:
    """``rendered`` is one line per line of ``text`` and no more, each starting with
    ``prefix`` (who said it, and where)."""
    lines = rendered.split("\n")
    assert len(lines) == text.count("\n") + 1, (rendered, text)
    assert all(line.startswith(prefix) for line in lines), (rendered, prefix)


@given(
    text=st.text().map(clean_text).filter(str.strip),
    sender=st.none() | names,
    action=st.booleans(),
    private=st.booleans(),
    history=st.booleans(),
)
def test_a_message_renders_one_attributed_line_per_line_it_has(
    text: str, sender: str | None, action: bool, private: bool, history: bool
) -> None:
    """However many lines a message has, and whatever they hold, a plain reader gets
    exactly that many lines, each with its sender, and no ``\\r`` nor other line break;
    a JSON reader gets one line, which decodes to the event's data."""
    record = Record(
        id=7,
        ts=TS,
        room=None if private else "lobby",
        sender=sender,
        recipient="bob" if private else None,
        text=text,
        action=action and not private,
    )

    def make(text: str) -> Event:
        said = dataclasses.replace(record, text=text)
        if history:
            return HistoryLine(said)
        return PrivateMessage(said, 1) if private else Message(said, 1)

    event = make(text)
    for viewer in VIEWERS:
        rendered = PLAIN.render(event, viewer)
        assert rendered is not None
        assert "\r" not in rendered
        # Nor any other character a terminal or a text widget takes for a line break.
        assert not any(break_ in rendered for break_ in LINE_BREAK_LOOK_ALIKES), rendered
        assert_attributed(rendered, text, attribution(make, viewer))
    line = JSON.render(event, FakeViewer(2, json=True))
    assert "\n" not in line
    assert "\r" not in line
    assert json.loads(line) == event.data()


@given(one_line, st.none() | names, st.none() | one_line)
def test_topics_and_reasons_render_as_one_line(
    topic: str, by: str | None, reason: str | None
) -> None:
    """A topic and a quit reason (one line each, as the parsers leave them) render as
    one plain line."""
    events = [
        TopicChanged("lobby", topic or None, by),
        Presence("quit", by or "alice", TS, reason=reason),
        Presence("kick", by or "alice", TS, reason=reason),
    ]
    for event in events:
        for viewer in VIEWERS:
            rendered = PLAIN.render(event, viewer)
            assert rendered is not None
            assert "\n" not in rendered
            assert "\r" not in rendered


# --- the arrival URL -------------------------------------------------------------------------

query_keys = st.sampled_from([*ARRIVAL_KEYS, "x", ""]) | st.text(max_size=8)
query_values = st.text(max_size=40) | names | secrets | ids.map(str)
queries = st.lists(st.tuples(query_keys, query_values, st.booleans()), max_size=6).map(
    lambda pairs: "&".join(
        f"{quote(key)}={quote(value) if quoted else value}" for key, value, quoted in pairs
    )
)


@given(st.text() | queries.map(lambda query: f"/?{query}"))
@example("//[x/?nick=a")
@example("/?nick=%ff")
@example("/?since=" + "9" * 5000)
@example("/?room=" + ",".join(f"r{n}" for n in range(MAX_ARRIVAL_ROOMS + 1)))
def test_any_url_is_an_arrival_or_a_value_error(path: str) -> None:
    """Whatever the request target, parse_arrival returns an arrival of valid names or
    raises ValueError with a one-line reason."""
    try:
        arrival = parse_arrival(path)
    except ValueError as error:
        reason = str(error)
    else:
        reason = None
    if reason is not None:
        assert reason
        assert "\n" not in reason
        return
    for name in [arrival.nick, *arrival.rooms]:
        assert name is None or NAME_PATTERN.fullmatch(name)
    assert arrival.since is None or 0 <= arrival.since <= MAX_ID
    assert len(arrival.rooms) <= MAX_ARRIVAL_ROOMS


arrivals = st.builds(
    Arrival,
    st.none() | names,
    st.lists(rooms, unique=True, max_size=5).map(tuple),
    st.none() | ids,
    st.none() | secrets,
)
resources = st.sampled_from(["/", "", "/chat", "/chat?x=1", "/?x=1&x=2&y=%20"])


@given(resources, arrivals)
def test_an_arrival_survives_its_url(resource: str, arrival: Arrival) -> None:
    """What the client puts in its URL for an arrival (arrival_resource) is that arrival
    again on the server (parse_arrival), and the other keys of the query stay."""
    built = arrival_resource(resource, arrival)
    assert parse_arrival(built) == arrival
    assert "x=1" in built or "x=1" not in resource


@given(resources, arrivals, st.none() | ids, st.none() | secrets)
def test_a_resume_keeps_the_arrival_but_its_resume_point(
    resource: str, arrival: Arrival, since: int | None, session: str | None
) -> None:
    """resume_resource changes the resume point and the session of an arrival's URL,
    and nothing else of it."""
    resumed = resume_resource(arrival_resource(resource, arrival), since=since, session=session)
    assert parse_arrival(resumed) == Arrival(arrival.nick, arrival.rooms, since, session)


# --- what a log line may show ----------------------------------------------------------------

#: A secret, long enough that it is in no other part of a generated URL by chance.
long_secrets = st.text(string.ascii_letters + string.digits, min_size=16, max_size=24)
paths = st.text(st.characters(exclude_characters="?#"), max_size=20)
#: What RFC 3986 allows in a URL's user-info: unreserved, percent-encoded, sub-delims, ':'.
user_info = st.text(string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:", max_size=12)


@given(paths, st.text(max_size=20), long_secrets, st.text(max_size=20))
def test_a_redacted_target_shows_nothing_of_its_query(
    path: str, before: str, secret: str, after: str
) -> None:
    """Whatever the query holds, redact_target shows none of it: only the path."""
    redacted = redact_target(f"{path}?{before}{secret}{after}")
    assert secret not in redacted or secret in path
    assert redacted.startswith(path)


@given(
    scheme=st.sampled_from(["ws", "wss", "http"]),
    user=user_info,
    password=long_secrets,
    host=st.sampled_from(["host", "127.0.0.1:8765", "[::1]:8765", "chat.example"]),
    path=paths.map(lambda path: f"/{path}"),
    token=st.none() | long_secrets,
)
def test_a_redacted_url_shows_no_password_and_no_query(
    *, scheme: str, user: str, password: str, host: str, path: str, token: str | None
) -> None:
    """redact_url shows neither a URL's password nor its query, and keeps its host."""
    query = "" if token is None else f"?token={token}"
    redacted = redact_url(f"{scheme}://{user}:{password}@{host}{path}{query}")
    assert password not in redacted or password in path
    assert token is None or token not in redacted or token in path
    assert f"@{host}" in redacted


@given(
    st.text(st.characters(exclude_characters="'\"b"), max_size=10),
    st.binary(max_size=30),
    long_secrets,
    st.booleans(),
)
def test_quoted_bytes_are_left_out_of_error_texts(
    prefix: str, data: bytes, secret: str, as_bytearray: bool
) -> None:
    """However a quoted bytes value is escaped (quotes, backslashes, any byte), h11's
    error text shows nothing of it once redacted; nor does a log line quote a text."""
    value = data + secret.encode()
    quoted = repr(bytearray(value) if as_bytearray else value)
    assert secret not in redact_text(f"{prefix}: {quoted} (the rest)")
    assert secret not in redact_quoted(f"{prefix}: {quoted} and {secret!r}")


@given(st.none() | st.integers(0, 65535), st.none() | st.text())
def test_a_close_is_described_in_one_printable_line(code: int | None, reason: str | None) -> None:
    """Whatever reason a peer puts in its close frame, its description (a log line, a
    client's last line) is one line of printable characters: no line break to forge
    another log line with, no escape sequence for the operator's terminal."""
    described = describe_close(code, reason)
    assert described.isprintable()
    assert len(described.splitlines()) == 1
