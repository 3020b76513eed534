"""Admission: who a new connection is, decided once from its handshake.

From the HTTP request (its ``Authorization`` header and ``token=`` query), the peer's
address and whether the connection is encrypted, :func:`decide` says one of:

* :class:`Refuse`: answer the handshake with an HTTP status and one line (a bad or
  expired token: 401; a password sent in clear from another machine: 403);
* :class:`Admit`: into the chat at once, as the principal the credentials name (a
  verified token), or as a guest (``principal`` None: the open chat's guest, made lazily);
* :class:`CheckPassword`: HTTP Basic credentials, which the accounts service checks
  (:func:`admit` does, and answers 401 when they are wrong);
* :class:`PendingLogin`: the server requires a login and none came with the request:
  the connection starts outside the chat and must send a ``login`` first.

Before the credentials, every handshake passes the server's :data:`AdmissionCheck`
rules, pure ones that look at the request and the address and refuse or say nothing:
:func:`origin_refusal` (a browser page from another origin: 403) is one; the server
keeps them in a list in order, so a rule that needs only the request is one more
entry. The per-address limits (:mod:`~trio_chat.server.net.addresses`: 429) come after
them, the URL and the bans, and before the credentials, so that a refused page or a
banned address spends nothing of its address's allowance, and no password is checked for
an address over its limits.

:func:`decide` is pure (a token is checked with CPU only); :func:`admit` adds the one
step that waits, the password check. Every later rule (the login phase's insecure-auth
check; per-address limits) uses the same peer address and TLS flag, which the transport
resolved (through trusted proxies) before calling this.
"""

from __future__ import annotations

import binascii
import ipaddress
import math
from base64 import b64decode
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from trio_chat.core import render
from trio_chat.core.commands import (
    MAX_PASSWORD_LENGTH,
    MAX_TOKEN_LENGTH,
    CommandError,
    Login,
    Register,
)
from trio_chat.core.identity import Principal

from .accounts.service import LOGIN_LOCKED, Accounts, LoginRefused
from .accounts.tokens import TokenRefused, TokenVerifier, VerifiedToken
from .config import ServerConfig
from .net.origin import normalize_origin, origin_allowed
from .net.seam import Address, Request

__all__ = [
    "AdmissionCheck",
    "Admit",
    "CheckPassword",
    "Decision",
    "Gate",
    "PendingLogin",
    "Refuse",
    "decide",
    "origin_refusal",
    "passwords_allowed",
]

#: The challenge a 401 for a password carries (RFC 7617); UTF-8 names and passwords.
BASIC_CHALLENGE = ("www-authenticate", 'Basic realm="trio_chat", charset="UTF-8"')
#: The challenge a 401 for a token carries (RFC 6750, section 3).
BEARER_CHALLENGE = ("www-authenticate", 'Bearer realm="trio_chat", error="invalid_token"')


@dataclass(frozen=True, slots=True)
class Refuse:
    """Answer the handshake with ``status``, one line of ``text`` and ``headers``."""

    status: int
    text: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Admit:
    """Into the chat at once as ``principal`` (None: a guest, made when first needed),
    with the ``token`` it logged in with, if any (its rooms and expiry)."""

    principal: Principal | None = None
    token: VerifiedToken | None = None


@dataclass(frozen=True, slots=True)
class CheckPassword:
    """HTTP Basic credentials for the accounts service to check."""

    name: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class PendingLogin:
    """Outside the chat until the connection logs in (or its login time runs out)."""


Decision = Refuse | Admit | CheckPassword | PendingLogin

#: A rule every handshake passes before its address is counted and its credentials
#: checked: given the request, the client's address (through trusted proxies) and whether
#: it came over TLS, a refusal, or None to let it on. Pure and quick: it never waits.
AdmissionCheck = Callable[[Request, Address | None, bool], Refuse | None]


def origin_refusal(
    request: Request, peer: Address | None, tls: bool, *, config: ServerConfig
) -> Refuse | None:
    """403 for a browser's upgrade from a page whose ``Origin`` is neither the server's
    own (``--public-origin``, or the request's ``Host`` with its scheme) nor one of
    ``--allow-origin``; None for one that is, or for a request without ``Origin`` (not a
    browser). An :data:`AdmissionCheck` (with ``config`` bound)."""
    origin = request.header("origin")
    if origin_allowed(
        origin,
        host=request.header("host"),
        tls=tls,
        public_origin=config.public_origin,
        allowed=config.allow_origin,
    ):
        return None
    assert origin is not None
    return Refuse(403, render.origin_refused(normalize_origin(origin)))


def is_loopback(address: Address | None) -> bool:
    """Whether the peer is this machine (127.0.0.0/8, ``::1``, or IPv4 loopback in IPv6)."""
    if address is None:
        return False
    try:
        ip = ipaddress.ip_address(address.host.partition("%")[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def passwords_allowed(peer: Address | None, tls: bool, config: ServerConfig) -> bool:
    """Whether a password may come over this connection: it is encrypted, or from this
    machine (nothing crosses a network in clear), or ``--allow-insecure-auth`` says so.
    A peer whose address is not known (a memory stream) counts as another machine."""
    return tls or config.allow_insecure_auth or is_loopback(peer)


def _address(peer: Address | None) -> str:
    """The peer's address as the login throttle counts it."""
    return peer.host if peer is not None else "unknown"


def _basic(credentials: str) -> CheckPassword | Refuse:
    """The name and password of a Basic ``credentials`` (base64 of ``name:password``)."""
    try:
        decoded = b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return Refuse(400, render.BAD_AUTHORIZATION)
    name, colon, password = decoded.partition(":")
    if not colon or not name or not password or len(password) > MAX_PASSWORD_LENGTH:
        return Refuse(400, render.BAD_AUTHORIZATION)
    return CheckPassword(name, password)


def _credential(request: Request) -> CheckPassword | str | Refuse | None:
    """What the request offers to log in with: Basic credentials, a token (from
    ``Authorization: Bearer`` or the ``token=`` query), a refusal when it cannot be read
    or offers more than one, or None."""
    query_tokens = parse_qs(request.query, keep_blank_values=True).get("token", [])
    authorization = request.header("authorization")
    offered = len(query_tokens) + (authorization is not None)
    if offered > 1:
        return Refuse(400, render.ONE_CREDENTIAL)
    if query_tokens:
        token = query_tokens[0]
    elif authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        match scheme.lower():
            case "basic":
                return _basic(credentials)
            case "bearer":
                token = credentials.strip()
            case _:
                return Refuse(400, render.BAD_AUTHORIZATION)
    else:
        return None
    if not token or len(token) > MAX_TOKEN_LENGTH:
        return Refuse(401, render.invalid_token(render.TOKEN_MALFORMED), (BEARER_CHALLENGE,))
    return token


def decide(
    request: Request,
    peer: Address | None,
    tls: bool,
    config: ServerConfig,
    tokens: TokenVerifier | None,
) -> Decision:
    """What to do with a connection that sent ``request`` from ``peer`` (``tls``: over
    an encrypted connection), on a server configured by ``config`` that checks tokens
    with ``tokens`` (None: it takes none). Never waits."""
    credential = _credential(request)
    match credential:
        case Refuse():
            return credential
        case CheckPassword():
            if not config.accounts:
                return Refuse(401, render.NO_ACCOUNTS)
            if not passwords_allowed(peer, tls, config):
                return Refuse(403, render.INSECURE_AUTH)
            return credential
        case str():
            if tokens is None:
                return Refuse(401, render.NO_TOKENS)
            try:
                verified = tokens.verify(credential)
            except TokenRefused as refused:
                return Refuse(401, refused.text, (BEARER_CHALLENGE,))
            return Admit(verified.principal, verified)
    return PendingLogin() if config.login_required else Admit()


class Gate:
    """The server's logins: admission at the handshake (:meth:`admit`) and the
    ``login``, ``register`` and ``refresh`` commands (:meth:`log_in`, :meth:`refresh`),
    with the server's ``config``, its token verifier (``tokens``) and its accounts.

    Holds no per-connection state: each call is given the peer and TLS flag of the
    connection it is for. ``accounts`` is None unless the server runs ``--accounts``."""

    def __init__(
        self,
        config: ServerConfig,
        tokens: TokenVerifier | None,
        accounts: Accounts | None = None,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.accounts = accounts if config.accounts else None

    async def admit(
        self, request: Request, peer: Address | None, tls: bool
    ) -> Refuse | Admit | PendingLogin:
        """:func:`decide` for one handshake, with HTTP Basic credentials checked by the
        accounts (a wrong password: 401). Waits as long as the check does (a hash in a
        worker thread, the throttle's delay after failures); cancelled, nothing is
        decided and the caller drops the connection."""
        decision = decide(request, peer, tls, self.config, self.tokens)
        if not isinstance(decision, CheckPassword):
            return decision
        if self.accounts is None:
            return Refuse(401, render.NO_ACCOUNTS)
        try:
            principal = await self.accounts.authenticate(
                decision.name, decision.password, _address(peer)
            )
        except LoginRefused as refused:
            # A locked-out pair is told to wait (429, with Retry-After as every 429 has);
            # a wrong password gets the challenge.
            if refused.code == LOGIN_LOCKED:
                wait = max(1, math.ceil(refused.retry_after))
                return Refuse(429, refused.text, (("retry-after", str(wait)),))
            return Refuse(401, refused.text, (BASIC_CHALLENGE,))
        return Admit(principal)

    async def log_in(self, command: Login | Register, peer: Address | None, tls: bool) -> Admit:
        """Carry out a ``login`` or ``register`` command from a connection from
        ``peer``: the principal it logs in as (with its token, for a token login).
        Raises :class:`CommandError` saying why not (``invalid_token``, ``login_failed``,
        ``login_locked``, ``account_exists``, ``no_accounts``, ``no_tokens``,
        ``insecure_auth``...). Waits for the password's hash and the throttle's delay;
        cancelled, nothing is decided (a registration may have been stored)."""
        if isinstance(command, Login) and command.token is not None:
            return Admit(*self._verify(command.token))
        if not self.config.accounts:
            raise CommandError("no_accounts", render.NO_ACCOUNTS)
        if isinstance(command, Register) and not self.config.open_registration:
            raise CommandError("registration_closed", render.REGISTRATION_CLOSED)
        if not passwords_allowed(peer, tls, self.config):
            raise CommandError("insecure_auth", render.INSECURE_AUTH)
        accounts = self.accounts
        if accounts is None:
            raise CommandError("no_accounts", render.NO_ACCOUNTS)
        if isinstance(command, Register):
            # Raises account_exists, invalid_password; the name is reserved from now on.
            return Admit(await accounts.add(command.name, command.password))
        assert command.name is not None
        assert command.password is not None
        # Raises LoginRefused (a CommandError: login_failed, login_locked).
        return Admit(await accounts.authenticate(command.name, command.password, _address(peer)))

    def refresh(self, token: str, current: VerifiedToken) -> VerifiedToken:
        """The new token of a connection logged in with ``current``: verified, and for
        the same subject. Raises :class:`CommandError` (``invalid_token``)."""
        principal, verified = self._verify(token)
        if principal.id != current.principal.id:
            raise CommandError("invalid_token", render.token_subject_changed())
        return verified

    def _verify(self, token: str) -> tuple[Principal, VerifiedToken]:
        if self.tokens is None:
            raise CommandError("no_tokens", render.NO_TOKENS)
        try:
            verified = self.tokens.verify(token)
        except TokenRefused as refused:
            raise CommandError("invalid_token", refused.text) from None
        return verified.principal, verified
