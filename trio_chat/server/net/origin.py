"""Which web pages may open a WebSocket here: the ``Origin`` rule.

A browser lets any page it shows open a WebSocket to any server, and sends the user's
cookies and its address along; what it does tell the server is the page's origin, in the
upgrade's ``Origin`` header. Without a rule, any page a user opens could talk to their
chat server as them. So a browser upgrade is let in only from the server's own origin,
or from one the operator lists:

* no ``Origin`` header: not a browser (a terminal client, a bot): let in;
* ``--allow-origin *``: every origin is let in (the tutorial reader's browser console);
* the server's own origin: ``--public-origin`` when given (behind a proxy the ``Host``
  header may be the proxy's upstream name), otherwise the request's ``Host`` with the
  scheme the client used (``https`` over TLS, through a trusted proxy too);
* an origin listed with ``--allow-origin`` (``null``, what a ``file://`` page or a
  sandboxed frame sends, only when listed as such).

Origins are compared normalised (RFC 6454): scheme and host in lower case, the default
port left out (``http://Chat.Example:80`` is ``http://chat.example``). Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from urllib.parse import urlsplit

__all__ = [
    "ANY_ORIGIN",
    "NULL_ORIGIN",
    "normalize_origin",
    "origin_allowed",
    "own_origin",
    "parse_allowed_origin",
]

#: ``--allow-origin *``: every origin.
ANY_ORIGIN = "*"
#: The origin a browser sends for a ``file://`` page, a sandboxed frame or a redirect
#: across origins: nobody's in particular, so never the server's own.
NULL_ORIGIN = "null"
#: The ports a scheme implies, left out of a normalised origin.
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
#: What a host may be made of once normalised: a name, an IPv4 address, or an IPv6
#: address (in brackets). Anything else is not an origin a browser sends, and is never
#: quoted back into an answer or a log line.
_HOST = re.compile(r"[a-z0-9.-]+|\[[0-9a-f:.]+\]")
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


def normalize_origin(text: str) -> str | None:
    """``text`` (an ``Origin`` header, a ``--public-origin``) as a normalised origin
    (``scheme://host[:port]``, or ``null``, or ``file://``); None when it is not one:
    a path, a query, user info or a bad port make it none. A trailing ``/`` is taken."""
    text = text.strip()
    if text.lower() == NULL_ORIGIN:
        return NULL_ORIGIN
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not _SCHEME.fullmatch(scheme) or parts.query or parts.fragment:
        return None
    if parts.path not in ("", "/") or "@" in parts.netloc:
        return None
    if scheme == "file":
        return "file://" if not parts.netloc else None
    host = parts.hostname
    if not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    if not _HOST.fullmatch(host):
        return None
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def parse_allowed_origin(text: str) -> str:
    """An ``--allow-origin`` value: ``*``, ``null`` or an origin, normalised. Raises
    ValueError saying why not."""
    if text.strip() == ANY_ORIGIN:
        return ANY_ORIGIN
    origin = normalize_origin(text)
    if origin is None:
        raise ValueError(f"{text!r} is not an origin (SCHEME://HOST[:PORT], null or *)")
    return origin


def own_origin(host: str | None, tls: bool) -> str | None:
    """The server's own origin as a request names it: its ``Host`` header (``host``) with
    ``https`` when the client came over TLS (``tls``), ``http`` otherwise; None without
    a usable ``Host``."""
    if not host:
        return None
    origin = normalize_origin(f"{'https' if tls else 'http'}://{host.strip()}")
    return None if origin in (None, NULL_ORIGIN, "file://") else origin


def origin_allowed(
    origin: str | None,
    *,
    host: str | None,
    tls: bool,
    public_origin: str | None,
    allowed: Sequence[str],
) -> bool:
    """Whether a request with the ``Origin`` header ``origin`` (None: it sent none) may
    open a WebSocket, on a server whose own origin is ``public_origin`` (when given) or
    what the request's ``Host`` header (``host``) and ``tls`` say, with the ``allowed``
    origins of ``--allow-origin`` (normalised; ``*`` for all)."""
    if origin is None or ANY_ORIGIN in allowed:
        return True
    normalized = normalize_origin(origin)
    if normalized is None:
        return False
    if normalized in allowed:
        return True
    own = public_origin if public_origin is not None else own_origin(host, tls)
    return normalized not in (NULL_ORIGIN, "file://") and normalized == own
