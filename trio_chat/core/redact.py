"""What of a URL or a request may be written down: the query and any credentials redacted.

A URL's query may carry secrets (``?session=…`` to resume, ``?token=…`` from a browser),
and so may its user-info (``wss://name:password@host``). Log lines and error texts, the
server's and the clients' alike, show a request target or a URL through these functions
only: ``/?session=x&token=y`` becomes ``/?…``. Pure: no I/O.
"""

from __future__ import annotations

import re

__all__ = ["REDACTED", "redact_quoted", "redact_target", "redact_text", "redact_url"]

#: What stands in for a redacted part.
REDACTED = "\N{HORIZONTAL ELLIPSIS}"

#: Bytes that h11 quotes in its errors (``b'...'``, ``bytearray(b'...')``): a request
#: line or a header line, which may hold a secret. (wsproto quotes only its own words,
#: header names: those are kept.)
_QUOTE = r"""(?:'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")"""
_QUOTED = re.compile(rf"bytearray\(b{_QUOTE}\)|b{_QUOTE}")
#: Any quoted value, text too: what a refusal quotes of the request (``invalid nickname
#: 'x'``) is the query's, and is left out of the log with the query.
_ANY_QUOTED = re.compile(rf"bytearray\(b{_QUOTE}\)|b?{_QUOTE}")


def redact_target(target: str) -> str:
    """A request target (path and query) with its query replaced: ``/?nick=a&token=t``
    becomes ``/?…``; a target without a query is returned as it is."""
    path, mark, query = target.partition("#")[0].partition("?")
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
    """A protocol library's error text with every quoted bytes value replaced: h11 says
    ``illegal header line: b'authorization: Bearer …'``, which becomes
    ``illegal header line: …``."""
    return _QUOTED.sub(REDACTED, text)


def redact_quoted(text: str) -> str:
    """``text`` with every quoted value, text or bytes, replaced: for a log line about a
    request (``invalid nickname 'x'`` becomes ``invalid nickname …``)."""
    return _ANY_QUOTED.sub(REDACTED, text)
