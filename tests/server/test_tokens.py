"""Login tokens: what :class:`TokenVerifier` accepts and refuses, with keys made here
(``cryptography``) and tokens signed here (PyJWT), and a fake wall clock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from trio_chat.core.identity import Principal, PrincipalKind
from trio_chat.server.accounts.tokens import (
    TokenKeyError,
    TokenRefused,
    TokenVerifier,
    VerifiedToken,
)

NOW = 1_800_000_000.0
SECRET = b"s" * 32


def pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def hs256(claims: dict[str, Any], secret: bytes = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def claims(**extra: Any) -> dict[str, Any]:
    return {"sub": "alice", "exp": NOW + 60, **extra}


def verifier(**keys: Any) -> TokenVerifier:
    return TokenVerifier(keys or {"HS256": SECRET}, clock=lambda: NOW)


def refusal(token: str, check: TokenVerifier | None = None) -> str:
    with pytest.raises(TokenRefused) as info:
        (check or verifier()).verify(token)
    assert not token or token not in info.value.text
    return info.value.text


def test_a_valid_hs256_token_names_its_subject() -> None:
    """``sub`` is the principal ``token:<sub>``; a valid ``sub`` is the nick."""
    assert verifier().verify(hs256(claims())) == VerifiedToken(
        Principal("token:alice", PrincipalKind.TOKEN, "alice", "alice"), None, NOW + 60
    )


def test_the_nick_rooms_and_admin_claims() -> None:
    """``nick`` is the display name, ``rooms`` the allowed rooms in order, ``admin``."""
    verified = verifier().verify(
        hs256(claims(sub="alice@example.com", nick="Alice", rooms=["Support", "lobby"], admin=True))
    )
    assert verified.principal == Principal.token(
        "alice@example.com", nick="Alice", admin=True, rooms=frozenset({"support", "lobby"})
    )
    assert verified.rooms == ("support", "lobby")


def test_rs256_and_es256_public_keys(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    """A PEM RSA key checks RS256 tokens, an EC P-256 key ES256 ones."""
    for key, algorithm in ((rsa_key, "RS256"), (ec_key, "ES256")):
        path = tmp_path / f"{algorithm}.pem"
        path.write_bytes(pem(key))
        loaded = TokenVerifier.from_files(jwt_key=str(path))
        assert loaded is not None
        assert list(loaded.keys) == [algorithm]
        loaded.clock = lambda: NOW
        token = jwt.encode(claims(), key, algorithm=algorithm)
        assert loaded.verify(token).principal.id == "token:alice"


def test_a_token_signed_with_another_key_is_refused(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    """The wrong secret, another RSA key, or an algorithm the server has no key for."""
    assert refusal(hs256(claims(), b"t" * 32)) == (
        "invalid login token: its signature does not match this server's key"
    )
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "key.pem"
    path.write_bytes(pem(rsa_key))
    loaded = TokenVerifier.from_files(jwt_key=str(path))
    assert loaded is not None
    loaded.clock = lambda: NOW
    assert refusal(jwt.encode(claims(), other, algorithm="RS256"), loaded) == (
        "invalid login token: its signature does not match this server's key"
    )
    assert refusal(hs256(claims()), loaded) == (
        "invalid login token: it is not signed with an algorithm this server accepts"
    )


def test_a_public_key_is_never_taken_for_a_secret(
    tmp_path: Path, rsa_key: rsa.RSAPrivateKey
) -> None:
    """A token HMAC-signed with the (public) PEM text is refused: the key is for RS256."""
    path = tmp_path / "key.pem"
    path.write_bytes(pem(rsa_key))
    loaded = TokenVerifier.from_files(jwt_key=str(path))
    assert loaded is not None
    forged = jwt.api_jws.PyJWS().encode(b'{"sub":"alice","exp":9999999999}', b"x" * 32)
    assert "algorithm" in refusal(forged, loaded)


def test_an_unsigned_token_is_refused() -> None:
    """``alg: none`` is no algorithm the server accepts."""
    token = jwt.encode(claims(), None, algorithm="none")
    assert refusal(token) == (
        "invalid login token: it is not signed with an algorithm this server accepts"
    )


def test_expiry_is_required_and_checked_to_the_fraction() -> None:
    """No ``exp``: refused. ``exp`` now or past: expired; a fraction later: valid."""
    assert refusal(hs256({"sub": "alice"})) == "invalid login token: it has no 'exp' claim"
    with pytest.raises(TokenRefused) as info:
        verifier().verify(hs256(claims(exp=NOW)))
    assert info.value.expired
    assert info.value.text == "invalid login token: it has expired"
    assert verifier().verify(hs256(claims(exp=NOW + 0.25))).expires == NOW + 0.25


def test_not_before() -> None:
    """A token whose ``nbf`` is still to come is refused."""
    assert refusal(hs256(claims(nbf=NOW + 5))) == "invalid login token: it is not valid yet"
    assert verifier().verify(hs256(claims(nbf=NOW - 5))).principal.nick == "alice"


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"sub": None}, "it has no 'sub' claim"),
        ({"sub": ""}, "its 'sub' claim must be a string of 1 to 255"),
        ({"sub": "a@b.c"}, "it has no 'nick' claim, and its 'sub' is not a valid nickname"),
        (
            {"nick": "Al ice"},
            "its 'nick' claim is an invalid nickname 'Al ice': use 1-32 "
            "letters, digits, '_', '-' or '.'",
        ),
        ({"nick": 7}, "its 'nick' claim must be a string"),
        ({"admin": "yes"}, "its 'admin' claim must be true or false"),
        ({"rooms": []}, "its 'rooms' claim must be a list of 1 to 100 room names"),
        ({"rooms": "lobby"}, "its 'rooms' claim must be a list of 1 to 100 room names"),
        ({"rooms": ["dev", "no way"]}, "its 'rooms' claim must be a list of 1 to 100 room names"),
        ({"exp": "soon"}, "its 'exp' claim must be a number of seconds"),
        ({"exp": True}, "its 'exp' claim must be a number of seconds"),
    ],
)
def test_bad_claims(extra: dict[str, Any], why: str) -> None:
    """Each claim that breaks its rule is named in the refusal."""
    payload = {key: value for key, value in claims(**extra).items() if value is not None}
    assert refusal(hs256(payload)) == f"invalid login token: {why}"


def test_an_audience_is_refused() -> None:
    """A token meant for a named audience is not meant for us."""
    assert refusal(hs256(claims(aud="billing"))) == (
        "invalid login token: its 'aud' claim names no audience here"
    )


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 200])
def test_garbage_is_not_a_jwt(token: str) -> None:
    assert refusal(token) == "invalid login token: it is not a signed JWT"


def test_key_files(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> None:
    """Each key file that cannot be used gets one line; none given: no verifier."""
    assert TokenVerifier.from_files() is None
    missing = tmp_path / "missing"
    with pytest.raises(TokenKeyError, match=r"^cannot read the JWT secret file .*missing: "):
        TokenVerifier.from_files(jwt_secret_file=str(missing))
    short = tmp_path / "short"
    short.write_bytes(b"hunter2\n")
    with pytest.raises(TokenKeyError) as info:
        TokenVerifier.from_files(jwt_secret_file=str(short))
    assert str(info.value) == (
        f"the JWT secret in {short} is 7 bytes; HS256 needs at least 32 "
        f"(try: openssl rand -hex 32 > {short})"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a key")
    with pytest.raises(TokenKeyError, match="is not a PEM public key"):
        TokenVerifier.from_files(jwt_key=str(garbage))
    p384 = tmp_path / "p384.pem"
    p384.write_bytes(pem(ec.generate_private_key(ec.SECP384R1())))
    with pytest.raises(TokenKeyError, match=r"must be an RSA key .RS256. or an EC P-256 key"):
        TokenVerifier.from_files(jwt_key=str(p384))
    good = tmp_path / "secret"
    good.write_bytes(SECRET + b"\n")
    es = tmp_path / "es.pem"
    es.write_bytes(pem(ec_key))
    both = TokenVerifier.from_files(jwt_key=str(es), jwt_secret_file=str(good))
    assert both is not None
    assert both.keys["HS256"] == SECRET
    assert set(both.keys) == {"HS256", "ES256"}
