"""Who the client is behind a trusted reverse proxy (``--trusted-proxy``).

The header rules are pure (:mod:`trio_chat.server.net.proxy`) and tested directly; the
in-process tests show that the result is what the server's log and the seam (the
WebSocket's ``peer_address`` and ``tls``, which the insecure-auth rule and the per-address
rules read) see, and that headers from an untrusted peer change nothing.
"""

from __future__ import annotations

import base64
import ipaddress
import re

import argon2
import pytest
import websockets.exceptions
from inproc import LiveServer, StartLiveServer, connect_to
from websockets.trio.client import ClientConnection

from trio_chat.server.accounts import passwords
from trio_chat.server.config import Network
from trio_chat.server.net.proxy import (
    Forwarding,
    forwarded_client,
    is_trusted,
    parse_forwarded,
    parse_node,
)
from trio_chat.server.net.seam import Address

pytest_plugins = ["inproc"]

PROXY = Address("127.0.0.1", 40000)
LOOPBACK: tuple[Network, ...] = (ipaddress.ip_network("127.0.0.1"),)
PROXIES: tuple[Network, ...] = (
    ipaddress.ip_network("127.0.0.1"),
    ipaddress.ip_network("10.0.0.0/8"),
)


def resolve(
    *headers: tuple[str, str],
    peer: Address | None = PROXY,
    tls: bool = False,
    trusted: tuple[Network, ...] = PROXIES,
) -> Forwarding:
    raw = [(name.lower().encode(), value.encode("latin-1")) for name, value in headers]
    return forwarded_client(raw, peer, tls, trusted)


# --- the pure rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("203.0.113.7", Address("203.0.113.7", 0)),
        (" 203.0.113.7:4711 ", Address("203.0.113.7", 4711)),
        ("2001:db8::1", Address("2001:db8::1", 0)),
        ("[2001:db8::1]", Address("2001:db8::1", 0)),
        ("[2001:db8::1]:4711", Address("2001:db8::1", 4711)),
        ("::ffff:198.51.100.2", Address("198.51.100.2", 0)),
        ("unknown", None),
        ("_hidden", None),
    ],
)
def test_a_hop_is_an_address_with_an_optional_port(text: str, address: Address | None) -> None:
    """Every form proxies write; unknown and obfuscated hops have no address."""
    assert parse_node(text) == address


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("example.org", "an entry is not an IP address"),
        ("203.0.113.7:http", "a port is not a port number"),
        ("203.0.113.7:70000", "a port is not a port number"),
        ("[2001:db8::1", "an address in brackets is not closed"),
        ("", "an entry is not an IP address"),
    ],
)
def test_a_malformed_hop_is_refused_with_its_reason(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(problem)}$"):
        parse_node(text)


def test_forwarded_is_parsed_as_rfc_7239_has_it() -> None:
    """Elements by commas, pairs by semicolons, quoted strings with escapes, any case."""
    assert parse_forwarded(
        'for=192.0.2.60;proto=https;by=203.0.113.43, For="[2001:db8:cafe::17]:4711", for="_a\\"b"'
    ) == [
        {"for": "192.0.2.60", "proto": "https", "by": "203.0.113.43"},
        {"for": "[2001:db8:cafe::17]:4711"},
        {"for": '_a"b'},
    ]
    refusals = {
        "for": "not a list of name=value pairs",
        'for="open': "not a list of name=value pairs",
        "for=1.2.3.4,,for=1.2.3.5": "not a list of name=value pairs",
        "for=1.2.3.4;": "an element is empty",
        "for=a;FOR=b": "for= is given twice in one element",
    }
    for bad, problem in refusals.items():
        with pytest.raises(ValueError, match=f"^{problem}$"):
            parse_forwarded(bad)


def test_headers_from_an_untrusted_peer_are_ignored() -> None:
    """Anybody can send X-Forwarded-For: from a peer not in --trusted-proxy it changes
    nothing (nor with no trusted proxy at all, nor for a peer of unknown address)."""
    forged = (("X-Forwarded-For", "198.51.100.9"), ("X-Forwarded-Proto", "https"))
    stranger = Address("192.0.2.1", 5000)
    assert resolve(*forged, peer=stranger) == Forwarding(stranger, False)
    assert resolve(*forged, trusted=()) == Forwarding(PROXY, False)
    assert resolve(*forged, peer=None) == Forwarding(None, False)
    assert resolve(("Forwarded", "for=198.51.100.9"), peer=stranger) == Forwarding(stranger, False)


def test_x_forwarded_for_gives_the_rightmost_address_that_is_not_a_proxy() -> None:
    """A client cannot forge its way past our proxies: each appends what it saw."""
    assert resolve(("X-Forwarded-For", "203.0.113.7")) == Forwarding(
        Address("203.0.113.7", 0), False
    )
    # The client wrote "1.1.1.1" itself; nginx appended the address it really came from.
    assert resolve(("X-Forwarded-For", "1.1.1.1, 203.0.113.7, 10.0.0.5")) == Forwarding(
        Address("203.0.113.7", 0), False
    )
    # Repeated headers are one list; a chain of nothing but proxies gives its first.
    assert resolve(("X-Forwarded-For", "10.0.0.9"), ("X-Forwarded-For", "10.0.0.5")) == Forwarding(
        Address("10.0.0.9", 0), False
    )


def test_x_forwarded_proto_gives_the_scheme() -> None:
    """One scheme applies to the client; one per hop is matched to the client's hop; a
    scheme alone keeps the proxy's address."""
    client = Address("203.0.113.7", 0)
    assert resolve(
        ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https")
    ) == Forwarding(client, True)
    assert resolve(
        ("X-Forwarded-For", "203.0.113.7, 10.0.0.5"), ("X-Forwarded-Proto", "https, http")
    ) == Forwarding(client, True)
    assert resolve(("X-Forwarded-Proto", "https")) == Forwarding(PROXY, True)
    # The proxy says the client spoke clear text, though the proxy spoke TLS to us.
    assert resolve(
        ("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "http"), tls=True
    ) == Forwarding(client, False)
    # No scheme given: the connection's own.
    assert resolve(("X-Forwarded-For", "203.0.113.7"), tls=True) == Forwarding(client, True)


def test_forwarded_wins_over_x_forwarded_for() -> None:
    """RFC 7239 Forwarded, when sent, decides (its proto from the client's element)."""
    assert resolve(
        ("Forwarded", 'for="[2001:db8::7]:4711";proto=https, for=10.0.0.5;proto=http'),
        ("X-Forwarded-For", "198.51.100.1"),
    ) == Forwarding(Address("2001:db8::7", 4711), True)
    # A hop that hides its address leaves the proxy's (per-address rules count the proxy).
    assert resolve(("Forwarded", "for=unknown;proto=https")) == Forwarding(PROXY, True)


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        (
            (("X-Forwarded-For", "203.0.113.7, nonsense"),),
            "X-Forwarded-For: an entry is not an IP address",
        ),
        (
            (("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "gopher")),
            "X-Forwarded-Proto: the scheme is not http or https",
        ),
        (
            (
                ("X-Forwarded-For", "203.0.113.7, 10.0.0.1"),
                ("X-Forwarded-Proto", "https,http,http"),
            ),
            "X-Forwarded-Proto: it names more schemes than X-Forwarded-For has hops",
        ),
        ((("Forwarded", "for=203.0.113.7;;"),), "Forwarded: not a list of name=value pairs"),
        ((("Forwarded", "for=nonsense"),), "Forwarded: an entry is not an IP address"),
    ],
)
def test_a_malformed_header_is_ignored_and_named(
    headers: tuple[tuple[str, str], ...], problem: str
) -> None:
    """The connection keeps the proxy's own address and scheme; the problem is named."""
    assert resolve(*headers, tls=True) == Forwarding(PROXY, True, problem)


def test_trust_is_by_address_block_and_ipv4_mapped_addresses_count() -> None:
    assert is_trusted("10.200.0.1", PROXIES)
    assert is_trusted("::ffff:127.0.0.1", LOOPBACK)
    assert not is_trusted("127.0.0.2", LOOPBACK)
    assert not is_trusted("not an address", PROXIES)


# --- in a running server ----------------------------------------------------------------------


async def _connection_of(live: LiveServer, ws: ClientConnection) -> tuple[int, str]:
    """The server's number for ``ws`` and the rest of its connect line."""
    port = ws.local_address[1]
    match = await live.wait_for(
        re.compile(rf"Client #(\d+) connected from (.*) via 127\.0\.0\.1:{port}$")
    )
    return int(match[1]), match[2]


async def test_a_trusted_proxys_client_is_what_the_log_and_the_seam_see(
    start_live_server: StartLiveServer,
) -> None:
    """Behind a trusted proxy, the connect line names the forwarded client (and the proxy
    it came through), and the WebSocket's peer_address and tls are the client's."""
    live = await start_live_server(trusted_proxy=LOOPBACK)
    async with connect_to(
        live.url,
        headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
    ) as ws:
        key, client = await _connection_of(live, ws)
        assert client == "203.0.113.7"
        socket = live.server.connections[key].socket
        assert (socket.peer_address, socket.tls) == (Address("203.0.113.7", 0), True)
        await ws.send("hi")
        assert await ws.recv() == "You said: hi"
    await live.wait_for("Client #1 (203.0.113.7) disconnected: ")


async def test_an_untrusted_peers_forwarding_headers_change_nothing(
    start_live_server: StartLiveServer,
) -> None:
    """Without --trusted-proxy (or from another address), the peer is who it is."""
    live = await start_live_server(trusted_proxy=(ipaddress.ip_network("10.0.0.0/8"),))
    async with connect_to(
        live.url,
        headers={"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"},
    ) as ws:
        port = ws.local_address[1]
        match = await live.wait_for(
            re.compile(rf"Client #(\d+) connected from 127\.0\.0\.1:{port}$")
        )
        socket = live.server.connections[int(match[1])].socket
        assert (socket.peer_address, socket.tls) == (Address("127.0.0.1", port), False)


async def test_a_malformed_header_from_a_trusted_proxy_is_one_log_line(
    start_live_server: StartLiveServer,
) -> None:
    """Ignored, said once, and the connection goes on as the proxy's."""
    live = await start_live_server(trusted_proxy=LOOPBACK)
    async with connect_to(live.url, headers={"X-Forwarded-For": "nonsense"}) as ws:
        port = ws.local_address[1]
        await live.wait_for(
            f"127.0.0.1:{port}: ignored the trusted proxy's headers: "
            "X-Forwarded-For: an entry is not an IP address"
        )
        await live.wait_for(re.compile(rf"Client #\d+ connected from 127\.0\.0\.1:{port}$"))


async def test_the_insecure_auth_rule_sees_the_forwarded_client(
    start_live_server: StartLiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Behind a trusted proxy on this machine, a password from a remote client that
    reached the proxy over http is refused (as if it came straight over the network),
    and one that came over https is taken; without the proxy's word, the loopback peer
    would have let both through."""
    hasher = argon2.PasswordHasher
    monkeypatch.setattr(
        passwords.argon2,
        "PasswordHasher",
        lambda: hasher(time_cost=1, memory_cost=8, parallelism=1),
    )
    live = await start_live_server(accounts=True, trusted_proxy=LOOPBACK)
    await live.server.accounts.add("alice", "wonder land")
    credentials = base64.b64encode(b"alice:wonder land").decode()
    forwarded = {"Authorization": f"Basic {credentials}", "X-Forwarded-For": "203.0.113.7"}
    with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
        async with connect_to(live.url, headers={**forwarded, "X-Forwarded-Proto": "http"}):
            pass
    assert refused.value.response.status_code == 403
    await live.wait_for(re.compile(r"^203\.0\.113\.7: refused GET /: 403 passwords are refused"))
    async with connect_to(live.url, headers={**forwarded, "X-Forwarded-Proto": "https"}) as ws:
        key, client = await _connection_of(live, ws)
        assert client == "203.0.113.7"
        socket = live.server.connections[key].socket
        assert (socket.peer_address, socket.tls) == (Address("203.0.113.7", 0), True)
