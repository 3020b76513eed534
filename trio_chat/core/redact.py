"""What of a URL or a request may be written down: the query and any credentials redacted.

A URL's query may carry secrets (``?session=…`` to resume, ``?token=…`` from a browser),
and so may its user-info (``wss://name:password@host``). Log lines and error texts, the
server's and the clients' alike, show a request target or a URL through these functions
only: ``/?session=x&token=y`` becomes ``/?…``. Pure: no I/O.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_target", "redact_text", "redact_url"]

#: What stands in for a redacted part.
REDACTED = "\N{HORIZONTAL ELLIPSIS}"

#: Bytes or text that h11 and wsproto quote in their errors (``b'...'``, ``'...'``): a
#: request line or a header value, which may hold a secret.
_QUOTED = re.compile(r"""b?'(?:[^'\\]|\\.)*'|b?"(?:[^"\\]|\\.)*\"""")


def redact_target(target: str) -> str:
    """A request target (path and query) with its query replaced: ``/?nick=a&token=t``
    becomes ``/?…``; a target without a query is returned as it is."""
    path, mark, query = target.partition("?")
    path = path.partition("#")[0]
    return f"{path}?{REDACTED}" if mark and query else path


def redact_url(url: str) -> str:
    """``url`` (``ws://`` or ``wss://``, or anything URL-shaped) with its query and
    user-info replaced: ``wss://bob:pw@host/?token=t`` becomes ``wss://…@host/?…``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return redact_target(url)
    authority, slash, target = rest.partition("/")
    authority, question, query = authority.partition("?")
    if "@" in authority:
        authority = f"{REDACTED}@{authority.rpartition('@')[2]}"
    if question:
        return f"{scheme}://{authority}?{REDACTED}" if query else f"{scheme}://{authority}"
    return f"{scheme}://{authority}{slash}{redact_target(target)}"


def redact_text(text: str) -> str:
    """A protocol library's error text with every quoted value replaced: h11 says
    ``illegal header line: b'authorization: Bearer …'``, which becomes
    ``illegal header line: …``."""
    return _QUOTED.sub(REDACTED, text)
