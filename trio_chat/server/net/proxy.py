"""Who the client is when a reverse proxy stands between it and the server.

Behind nginx (or any reverse proxy) every connection comes from the proxy's address, over
whatever the proxy speaks to us. The proxy says who its client is in the request's
headers: ``X-Forwarded-For`` (the addresses of the hops, client first) with
``X-Forwarded-Proto`` (the scheme the client used), or RFC 7239 ``Forwarded``
(``for=...;proto=...``, one element per hop). Anybody can send those headers, so they are
believed only from the peers of ``--trusted-proxy``, and resolved once, as a connection is
admitted (:func:`forwarded_client`): the address and TLS flag found become the seam's
``peer_address`` and ``tls``, which every later rule uses.

Which hop is the client: walking the list from the right (the hop nearest to us), the first
address that is not itself a trusted proxy; a client cannot forge its way past our own
proxies, since each appends the address it saw. When ``Forwarded`` is sent it is used, and
the ``X-Forwarded-*`` headers are then ignored. A header that cannot be parsed is ignored
as a whole (the connection keeps the proxy's address and scheme) and named in
:attr:`Forwarding.problem`, for one log line.

Pure: no I/O, no trio.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from trio_chat.server.config import Network

from .seam import Address

__all__ = [
    "Forwarding",
    "forwarded_client",
    "is_trusted",
    "parse_forwarded",
    "parse_node",
]

#: The schemes a proxy may name, and whether each is encrypted.
_SCHEMES = {"https": True, "wss": True, "http": False, "ws": False}

#: One ``name=value`` pair of a ``Forwarded`` element and what ends it (``;`` the next
#: pair, ``,`` the next element). Values are tokens or quoted strings (RFC 7239, 4); a
#: token is read leniently (any run without spaces, quotes, ``;`` or ``,``), since
#: proxies write ``for=192.0.2.1:4711`` unquoted.
_PAIR = re.compile(
    r"""[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)=(?:"((?:[^"\\]|\\.)*)"|([^\s;,"]+))[ \t]*([;,]|$)"""
)
_ESCAPE = re.compile(r"\\(.)")


@dataclass(frozen=True, slots=True)
class Forwarding:
    """The client as admitted: its address, whether it reached us over TLS, and, when a
    trusted proxy's header was ignored because it is malformed, why (for the log)."""

    address: Address | None
    tls: bool
    problem: str | None = None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:10.0.0.1 is 10.0.0.1, as a dual-stack socket says
    return address


def is_trusted(host: str, trusted: Sequence[Network]) -> bool:
    """True when ``host`` (an IP address as text) is in one of the ``trusted`` blocks."""
    try:
        address = _ip(host)
    except ValueError:
        return False
    return any(address in network for network in trusted)


def parse_node(text: str) -> Address | None:
    """A hop as ``X-Forwarded-For`` or ``Forwarded: for=`` write it: ``192.0.2.7``,
    ``192.0.2.7:4711``, ``2001:db8::1``, ``[2001:db8::1]:4711``; None for a hop that
    hides its address (``unknown``, an obfuscated ``_name``). Port 0 when none is given.
    Raises ValueError for anything else."""
    text = text.strip()
    if text.lower() == "unknown" or text.startswith("_"):
        return None
    host, port = text, "0"
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError("an address in brackets is not closed")
        port = rest[1:] or "0"
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError("a port is not a port number")
    try:
        address = _ip(host)
    except ValueError:
        raise ValueError("an entry is not an IP address") from None
    return Address(str(address), int(port))


def parse_forwarded(value: str) -> list[dict[str, str]]:
    """The elements of a ``Forwarded`` header (RFC 7239), one per hop, client first, each
    a dict of its (lower-case) parameter names to their values, quotes and escapes
    removed. Raises ValueError when it is not a list of ``name=value`` pairs."""
    elements: list[dict[str, str]] = []
    current: dict[str, str] = {}
    position = 0
    while position < len(value):
        match = _PAIR.match(value, position)
        if match is None or match.end() == position:
            raise ValueError("not a list of name=value pairs")
        name = match[1].lower()
        if name in current:
            raise ValueError(f"{name}= is given twice in one element")
        quoted = match[2]
        current[name] = _ESCAPE.sub(r"\1", quoted) if quoted is not None else match[3]
        if match[4] != ";":
            elements.append(current)
            current = {}
        position = match.end()
    if current or not elements:
        raise ValueError("an element is empty")
    return elements


def _scheme(text: str) -> bool:
    try:
        return _SCHEMES[text.strip().lower()]
    except KeyError:
        raise ValueError("the scheme is not http or https") from None


def _header(headers: Iterable[tuple[bytes, bytes]], name: bytes) -> str | None:
    values = [value.decode("latin-1") for key, value in headers if key == name]
    return ", ".join(values) if values else None


def forwarded_client(
    headers: Iterable[tuple[bytes, bytes]],
    peer: Address | None,
    tls: bool,
    trusted: Sequence[Network],
) -> Forwarding:
    """The client of a connection from ``peer`` (over TLS or not, ``tls``) that sent
    ``headers`` (lower-case names, as h11 gives them): the one its forwarding headers
    name when ``peer`` is in ``trusted``, else ``peer`` itself (headers from anybody else
    are ignored). A malformed header is ignored, with :attr:`Forwarding.problem` saying
    which and why."""
    if peer is None or not trusted or not is_trusted(peer.host, trusted):
        return Forwarding(peer, tls)
    headers = list(headers)
    forwarded = _header(headers, b"forwarded")
    header = "Forwarded"
    try:
        if forwarded is not None:
            hops = [
                (parse_node(element["for"]) if "for" in element else None, element.get("proto"))
                for element in parse_forwarded(forwarded)
            ]
        else:
            header = "X-Forwarded-For"
            addresses = _header(headers, b"x-forwarded-for")
            nodes = [] if addresses is None else [parse_node(hop) for hop in addresses.split(",")]
            header = "X-Forwarded-Proto"
            schemes = _header(headers, b"x-forwarded-proto")
            protos = [] if schemes is None else [part.strip() for part in schemes.split(",")]
            if not nodes:
                # A scheme alone: the client's address is the peer's.
                return Forwarding(peer, _scheme(protos[-1]) if protos else tls)
            if len(protos) == len(nodes):
                hops = list(zip(nodes, protos, strict=True))
            elif len(protos) <= 1:
                # One scheme (nginx's $scheme): the one the client used.
                hops = [(node, protos[0] if protos else None) for node in nodes]
            else:
                raise ValueError("it names more schemes than X-Forwarded-For has hops")
        address, proto = hops[0]
        for hop in reversed(hops):
            address, proto = hop
            if address is None or not is_trusted(address.host, trusted):
                break
        client_tls = tls if proto is None else _scheme(proto)
    except ValueError as exc:
        return Forwarding(peer, tls, f"{header}: {exc}")
    # A hop that hides its address leaves the proxy's: per-address rules then count the
    # proxy, not nobody.
    return Forwarding(address if address is not None else peer, client_tls)
