"""Login tokens another application signs: verifying a JWT into a :class:`Principal`.

The way a chat embeds in a product: the product's backend signs a JWT for its user and
the user's client hands it to the chat, which checks it here with PyJWT. Either a shared
secret (``--jwt-secret-file``: HS256) or the product's public key (``--jwt-key``: a PEM
RSA key for RS256, or an EC P-256 key for ES256) checks the signature; the token's
header names which, and a key is only ever used with its own algorithm (a public key is
never taken for an HMAC secret).

The claims: ``exp`` (required) and ``sub`` (required, the principal ``token:<sub>``; an
id, not a nickname); ``nick`` (optional, the display name; else ``sub`` when it is a
valid nickname, else the token is refused); ``rooms`` (optional list: the only rooms the
connection may be in, the first is where it starts); ``admin`` (optional bool); ``nbf``
is honoured when present. ``exp`` and ``nbf`` are checked here against :attr:`clock`
(a float timestamp may carry a fraction of a second), so that tests can use a fake one.

Owns the keys, read once at start-up. Pure apart from that: :meth:`TokenVerifier.verify`
is a little CPU and never waits. No refusal ever repeats the token.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from trio_chat.core import render
from trio_chat.core.arrival import MAX_ARRIVAL_ROOMS
from trio_chat.core.commands import CommandError, valid_name, valid_room
from trio_chat.core.identity import Principal

__all__ = [
    "MIN_SECRET_BYTES",
    "TokenKeyError",
    "TokenRefused",
    "TokenVerifier",
    "VerifiedToken",
]

#: The shortest HS256 secret accepted: RFC 7518 (section 3.2) asks for a key at least as
#: long as the hash, 256 bits; a shorter one can be guessed offline from any token.
MIN_SECRET_BYTES = 32
#: The longest ``sub`` accepted: it becomes a principal id stored with every private
#: message; e-mail addresses and UUIDs fit easily.
MAX_SUBJECT_LENGTH = 255


class TokenKeyError(Exception):
    """A key file cannot be used; ``str()`` is one line saying why."""


class TokenRefused(Exception):
    """A token that cannot log in: ``text`` says why, for the client (never the token);
    ``expired`` tells an expired token from a bad one."""

    def __init__(self, why: str, *, expired: bool = False) -> None:
        self.text = render.invalid_token(why)
        self.expired = expired
        super().__init__(self.text)


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """What a valid token says: who (``principal``), the rooms it allows in the order
    given (None: any; the first is where the connection starts) and when it expires
    (``expires``, seconds since the epoch, as :attr:`TokenVerifier.clock` counts)."""

    principal: Principal
    rooms: tuple[str, ...] | None
    expires: float


def _read_secret(path: str) -> bytes:
    try:
        secret = Path(path).read_bytes()
    except OSError as exc:
        raise TokenKeyError(f"cannot read the JWT secret file {path}: {exc.strerror}") from None
    # A file written with `echo` ends with a newline that is no part of the secret.
    secret = secret.rstrip(b"\r\n")
    if len(secret) < MIN_SECRET_BYTES:
        raise TokenKeyError(
            f"the JWT secret in {path} is {len(secret)} bytes; "
            f"HS256 needs at least {MIN_SECRET_BYTES} (try: openssl rand -hex 32 > {path})"
        )
    return secret


def _read_public_key(path: str) -> tuple[Any, str]:
    """The public key in PEM file ``path`` and the one algorithm it checks."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TokenKeyError(f"cannot read the JWT key file {path}: {exc.strerror}") from None
    try:
        key = load_pem_public_key(data)
    except ValueError:
        raise TokenKeyError(
            f"{path} is not a PEM public key (-----BEGIN PUBLIC KEY-----); "
            "give the public half of the key that signs the tokens"
        ) from None
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise TokenKeyError(
        f"{path}: the JWT key must be an RSA key (RS256) or an EC P-256 key (ES256)"
    )


class TokenVerifier:
    """Checks login tokens with the server's keys: ``keys`` maps each accepted algorithm
    (``HS256``, ``RS256``, ``ES256``) to its key."""

    def __init__(self, keys: dict[str, Any], *, clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("a TokenVerifier needs at least one key")
        self.keys = keys
        #: The wall clock ``exp`` and ``nbf`` are checked against (seconds since the epoch).
        self.clock = clock

    @classmethod
    def from_files(
        cls, *, jwt_key: str | None = None, jwt_secret_file: str | None = None
    ) -> TokenVerifier | None:
        """The verifier for the server's ``--jwt-key`` and ``--jwt-secret-file`` (either
        or both); None when neither is given. Raises :class:`TokenKeyError`."""
        keys: dict[str, Any] = {}
        if jwt_secret_file is not None:
            keys["HS256"] = _read_secret(jwt_secret_file)
        if jwt_key is not None:
            key, algorithm = _read_public_key(jwt_key)
            keys[algorithm] = key
        return cls(keys) if keys else None

    def verify(self, token: str) -> VerifiedToken:
        """The principal ``token`` names, with its room limit and expiry; raises
        :class:`TokenRefused` saying why not."""
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise TokenRefused(render.TOKEN_MALFORMED) from None
        if not isinstance(algorithm, str) or algorithm not in self.keys:
            raise TokenRefused(render.TOKEN_BAD_ALGORITHM)
        try:
            claims = jwt.decode(
                token,
                self.keys[algorithm],
                algorithms=[algorithm],
                # exp and nbf are checked below, against our clock; iat says nothing
                # that exp does not.
                options={
                    "require": ["exp", "sub"],
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                },
            )
        except jwt.MissingRequiredClaimError as exc:
            raise TokenRefused(render.token_missing_claim(exc.claim)) from None
        except jwt.InvalidSignatureError:
            raise TokenRefused(render.TOKEN_BAD_SIGNATURE) from None
        except jwt.InvalidAudienceError:
            raise TokenRefused(render.token_bad_claim("aud", "names no audience here")) from None
        except jwt.InvalidTokenError:
            raise TokenRefused(render.TOKEN_MALFORMED) from None
        return self._read_claims(claims)

    def _read_claims(self, claims: dict[str, Any]) -> VerifiedToken:
        """The verified token of a signature-checked payload, or :class:`TokenRefused`."""
        now = self.clock()
        expires = _timestamp(claims, "exp")
        if expires <= now:
            raise TokenRefused(render.TOKEN_EXPIRED, expired=True)
        if "nbf" in claims and _timestamp(claims, "nbf") > now:
            raise TokenRefused(render.TOKEN_NOT_YET_VALID)
        subject = claims["sub"]
        if not isinstance(subject, str) or not 0 < len(subject) <= MAX_SUBJECT_LENGTH:
            raise TokenRefused(
                render.token_bad_claim("sub", f"must be a string of 1 to {MAX_SUBJECT_LENGTH}")
            )
        nick = _nick(claims, subject)
        admin = claims.get("admin", False)
        if not isinstance(admin, bool):
            raise TokenRefused(render.token_bad_claim("admin", "must be true or false"))
        rooms = _rooms(claims)
        principal = Principal.token(
            subject,
            nick=nick,
            admin=admin,
            rooms=None if rooms is None else frozenset(rooms),
        )
        return VerifiedToken(principal, rooms, expires)


def _timestamp(claims: dict[str, Any], claim: str) -> float:
    value = claims[claim]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenRefused(render.token_bad_claim(claim, "must be a number of seconds"))
    return float(value)


def _nick(claims: dict[str, Any], subject: str) -> str:
    """The display name: the ``nick`` claim, else ``sub`` when it is a valid nickname."""
    nick = claims.get("nick")
    if nick is None:
        try:
            return valid_name(subject, "nickname")
        except CommandError:
            raise TokenRefused(render.TOKEN_NO_NICK) from None
    if not isinstance(nick, str):
        raise TokenRefused(render.token_bad_claim("nick", "must be a string"))
    try:
        return valid_name(nick, "nickname")
    except CommandError as error:
        raise TokenRefused(render.token_bad_claim("nick", f"is an {error.text}")) from None


def _rooms(claims: dict[str, Any]) -> tuple[str, ...] | None:
    """The ``rooms`` claim as room names in order (lower case, repeats dropped)."""
    rooms = claims.get("rooms")
    if rooms is None:
        return None
    rule = f"must be a list of 1 to {MAX_ARRIVAL_ROOMS} room names"
    if not isinstance(rooms, list) or not 0 < len(rooms) <= MAX_ARRIVAL_ROOMS:
        raise TokenRefused(render.token_bad_claim("rooms", rule))
    try:
        names = [valid_room(room) for room in rooms if isinstance(room, str)]
    except CommandError:
        names = []
    if len(names) != len(rooms):
        raise TokenRefused(render.token_bad_claim("rooms", rule))
    return tuple(dict.fromkeys(names))
