"""How a client arrives: the server's default address, and the URL query that names the
nickname, rooms and resume point a connection starts with.

``ws://HOST:PORT/?nick=alice&room=lobby&room=dev&since=42`` is parsed here for the server
(:func:`parse_arrival`) and built here for the client (:func:`arrival_query`), so both
ends agree on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit, urlunsplit

from .commands import MAX_ID, CommandError, valid_name, valid_room, valid_secret

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MAX_ARRIVAL_ROOMS",
    "Arrival",
    "arrival_resource",
    "parse_arrival",
    "resume_resource",
]

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8765
#: Rooms one connection may name in its URL.
MAX_ARRIVAL_ROOMS = 100
#: The query keys this module owns; others in a URL are left alone.
ARRIVAL_KEYS = ("nick", "room", "since", "session")


@dataclass(frozen=True, slots=True)
class Arrival:
    """How a connection asked to arrive (URL query): nickname, rooms, the id of the
    last message it saw, to resume after, and the secret of the session to resume
    (``welcome.session``; not shown in its repr)."""

    nick: str | None = None
    rooms: tuple[str, ...] = ()
    since: int | None = None
    session: str | None = field(default=None, repr=False)


def parse_arrival(path: str) -> Arrival:
    """The nickname, rooms and resume point a client asked for in its URL's query:
    ``/?nick=alice&room=lobby&room=dev&since=42`` (``room=lobby,dev`` works too).
    Raises ValueError with a one-line reason for anything invalid."""
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)
    try:
        nicks = query.get("nick", [])
        if len(nicks) > 1:
            raise ValueError("give one nick")
        nick = valid_name(nicks[0], "nickname") if nicks else None
        rooms = tuple(
            dict.fromkeys(
                valid_room(name) for value in query.get("room", []) for name in value.split(",")
            )
        )
    except CommandError as error:
        raise ValueError(error.text) from None
    since_values = query.get("since", [])
    since = None
    if since_values:
        if len(since_values) > 1 or not re.fullmatch(r"[0-9]{1,19}", since_values[0]):
            raise ValueError("since must be one whole number: the id of the last message seen")
        since = int(since_values[0])
        if since > MAX_ID:
            raise ValueError(f"since must be at most {MAX_ID}")
    if len(rooms) > MAX_ARRIVAL_ROOMS:
        raise ValueError(f"at most {MAX_ARRIVAL_ROOMS} rooms")
    sessions = query.get("session", [])
    if len(sessions) > 1:
        raise ValueError("give one session")
    try:
        session = valid_secret(sessions[0]) if sessions else None
    except CommandError as error:
        raise ValueError(error.text) from None
    return Arrival(nick, rooms, since, session)


def arrival_resource(resource: str, arrival: Arrival) -> str:
    """``resource`` (a URL's path and query) with the query that asks for ``arrival``:
    ``nick=``, one ``room=`` per room (in order: the current one last), ``since=`` and
    ``session=``, each left out when not set. Other keys of the query are kept."""
    parts = urlsplit(resource)
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key not in ARRIVAL_KEYS
    ]
    if arrival.nick is not None:
        query.append(("nick", arrival.nick))
    query.extend(("room", room) for room in arrival.rooms)
    if arrival.since is not None:
        query.append(("since", str(arrival.since)))
    if arrival.session is not None:
        query.append(("session", arrival.session))
    return urlunsplit(("", "", parts.path or "/", urlencode(query), ""))


def resume_resource(resource: str, *, since: int | None, session: str | None) -> str:
    """``resource`` with ``since=`` and ``session=`` set to these (each left out when
    None); every other key of its query (``nick``, ``room``...) kept as it is."""
    parts = urlsplit(resource)
    query = [
        (key, value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key not in ("since", "session")
    ]
    if since is not None:
        query.append(("since", str(since)))
    if session is not None:
        query.append(("session", session))
    return urlunsplit(("", "", parts.path or "/", urlencode(query), ""))
