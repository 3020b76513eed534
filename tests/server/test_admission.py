"""Admission: what a handshake's credentials, the peer and TLS decide, with no network."""

from __future__ import annotations

import base64
import time

import jwt
import pytest

from trio_chat.server.accounts.tokens import TokenVerifier
from trio_chat.server.admission import (
    Admit,
    CheckPassword,
    PendingLogin,
    Refuse,
    decide,
    is_loopback,
)
from trio_chat.server.config import ServerConfig
from trio_chat.server.net.seam import Address, Request

SECRET = b"k" * 32
LOCAL = Address("127.0.0.1", 5000)
REMOTE = Address("203.0.113.9", 5000)
ACCOUNTS = ServerConfig(accounts=True)
TOKENS = TokenVerifier({"HS256": SECRET})
BEARER = ("www-authenticate", 'Bearer realm="trio_chat", error="invalid_token"')


def token(**claims: object) -> str:
    return jwt.encode({"sub": "alice", "exp": time.time() + 60, **claims}, SECRET, "HS256")


def request(target: str = "/", authorization: str | None = None) -> Request:
    headers = [(b"host", b"example")]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode("latin-1")))
    return Request.of(target, headers)


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def test_an_open_server_admits_guests() -> None:
    """No accounts, no tokens: everyone arrives as today (a lazy guest)."""
    assert decide(request(), REMOTE, False, ServerConfig(), None) == Admit()


def test_accounts_without_credentials_wait_for_a_login() -> None:
    assert decide(request(), LOCAL, False, ACCOUNTS, None) == PendingLogin()
    assert decide(request(), LOCAL, False, ServerConfig(jwt_key="k"), TOKENS) == PendingLogin()


def test_with_guests_no_credentials_means_a_guest() -> None:
    config = ServerConfig(accounts=True, guests=True)
    assert decide(request(), LOCAL, False, config, None) == Admit()


def test_basic_credentials_are_for_the_accounts_to_check() -> None:
    """The name and the whole password (colons and spaces included)."""
    decision = decide(request(authorization=basic("alice", "a: b")), LOCAL, False, ACCOUNTS, None)
    assert decision == CheckPassword("alice", "a: b")
    assert "a: b" not in repr(decision)


@pytest.mark.parametrize(
    ("peer", "tls", "allow", "allowed"),
    [
        (LOCAL, False, False, True),
        (Address("::1", 1), False, False, True),
        (Address("::ffff:127.0.0.1", 1), False, False, True),
        (REMOTE, True, False, True),
        (REMOTE, False, True, True),
        (REMOTE, False, False, False),
        (None, False, False, False),
    ],
)
def test_passwords_in_clear_from_another_machine_are_refused(
    peer: Address | None, tls: bool, allow: bool, allowed: bool
) -> None:
    """Loopback, TLS or --allow-insecure-auth; otherwise 403 saying how to fix it."""
    config = ServerConfig(accounts=True, allow_insecure_auth=allow)
    decision = decide(request(authorization=basic("alice", "pw")), peer, tls, config, None)
    if allowed:
        assert decision == CheckPassword("alice", "pw")
    else:
        assert decision == Refuse(
            403,
            "passwords are refused over an unencrypted connection from another machine: "
            "connect with wss://, or the operator may allow it with --allow-insecure-auth",
        )


def test_a_token_from_the_header_or_the_query_admits_its_principal() -> None:
    config = ServerConfig(jwt_secret_file="s")
    for req in (request(authorization=f"Bearer {token()}"), request(f"/?token={token()}")):
        decision = decide(req, REMOTE, False, config, TOKENS)
        assert isinstance(decision, Admit)
        assert decision.principal is not None
        assert decision.principal.id == "token:alice"
        assert decision.token is not None


def test_a_bad_or_expired_token_gets_401() -> None:
    config = ServerConfig(jwt_secret_file="s")
    expired = token(exp=time.time() - 1)
    assert decide(request(f"/?token={expired}"), LOCAL, False, config, TOKENS) == Refuse(
        401, "invalid login token: it has expired", (BEARER,)
    )
    forged = jwt.encode({"sub": "alice", "exp": time.time() + 60}, b"x" * 32, "HS256")
    assert decide(request(authorization=f"Bearer {forged}"), LOCAL, False, config, TOKENS) == (
        Refuse(
            401, "invalid login token: its signature does not match this server's key", (BEARER,)
        )
    )
    assert decide(request("/?token="), LOCAL, False, config, TOKENS) == Refuse(
        401, "invalid login token: it is not a signed JWT", (BEARER,)
    )


def test_credentials_the_server_cannot_use() -> None:
    """A token without a key, a password without accounts, unreadable or doubled ones."""
    assert decide(request(f"/?token={token()}"), LOCAL, False, ACCOUNTS, None) == Refuse(
        401, "this server does not take login tokens"
    )
    assert decide(request(authorization=basic("a", "b")), LOCAL, False, ServerConfig(), None) == (
        Refuse(401, "this server has no accounts; just chat")
    )
    bad = "the Authorization header must be Basic (name:password) or Bearer (a token)"
    for header in ("Digest x", "Basic !!!", basic("alice", ""), "Basic " + "YWxpY2U="):
        assert decide(request(authorization=header), LOCAL, False, ACCOUNTS, None) == Refuse(
            400, bad
        )
    both = request(f"/?token={token()}", authorization=f"Bearer {token()}")
    assert decide(both, LOCAL, False, ServerConfig(jwt_key="k"), TOKENS) == Refuse(
        400, "give one credential: an Authorization header or a token= query, not both"
    )


def test_is_loopback() -> None:
    assert is_loopback(Address("127.8.0.1", 1))
    assert not is_loopback(Address("10.0.0.1", 1))
    assert not is_loopback(Address("not an address", 1))
    assert not is_loopback(None)
