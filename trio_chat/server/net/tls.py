"""TLS on the server: the context made from ``--certfile`` / ``--keyfile``, and the words
for a TLS handshake that failed.

The context is made once, at start-up, so that a certificate that cannot be used stops
the server before it listens, in one line (:class:`TLSSetupError`), rather than failing
every handshake later. :class:`~trio_chat.server.server.ChatServer` wraps each accepted
stream in a ``trio.SSLStream`` with it; everything above the stream seam is unchanged.
"""

from __future__ import annotations

import contextlib
import ssl

import trio

__all__ = [
    "PLAIN_HTTP_ON_TLS",
    "TLSSetupError",
    "answer_plain_http",
    "describe_tls_failure",
    "is_plain_http",
    "server_ssl_context",
]

#: The answer, in clear text, to a plain HTTP (``ws://``) request on the TLS port: a
#: client pointed at the wrong scheme is told which one to use.
PLAIN_HTTP_ON_TLS = "this port speaks TLS: connect with wss://"

#: Bytes of each file looked at before OpenSSL reads it (a chain is a few KiB).
MAX_PEM_BYTES = 1024 * 1024

#: What an OpenSSL reason means, when its own words do not say it to an operator.
_REASONS = {
    "HTTP_REQUEST": "a plain HTTP request on the TLS port",
    "HTTPS_PROXY_REQUEST": "a plain HTTP proxy request on the TLS port",
    "WRONG_VERSION_NUMBER": "not TLS",
    "UNKNOWN_PROTOCOL": "not TLS",
    "TLSV1_ALERT_UNKNOWN_CA": "the client does not trust the certificate (unknown CA)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the client rejected the certificate",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "the client rejected the certificate",
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": "the client says the certificate has expired",
    "NO_SHARED_CIPHER": "no cipher in common with the client",
    "UNSUPPORTED_PROTOCOL": "the client's TLS version is not supported",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common with the client",
}


class TLSSetupError(Exception):
    """The certificate or key cannot be used; ``str()`` is one line saying which and why."""


def _refuse_password() -> str:
    # Called by OpenSSL for an encrypted key: the server cannot ask for a passphrase
    # (it may run under a service manager), so the key is refused instead.
    raise TLSSetupError("encrypted")


def server_ssl_context(certfile: str, keyfile: str) -> ssl.SSLContext:
    """A server-side TLS context serving ``certfile`` (a PEM chain: the certificate, then
    its intermediates) with ``keyfile`` (its PEM private key), with the ``ssl`` module's
    defaults for a server (TLS 1.2 or later, no compression). Raises
    :class:`TLSSetupError` saying which file cannot be used: missing, unreadable, not
    PEM, an encrypted key, or a key that does not belong to the certificate."""
    contents = {}
    for what, path in (("certificate", certfile), ("key", keyfile)):
        try:
            with open(path, "rb") as file:
                contents[what] = file.read(MAX_PEM_BYTES)
        except OSError as exc:
            raise TLSSetupError(
                f"cannot use the TLS {what} file {path}: {exc.strerror or exc}"
            ) from None
    if b"-----BEGIN CERTIFICATE-----" not in contents["certificate"]:
        raise TLSSetupError(
            f"cannot use the TLS certificate file {certfile}: not a PEM certificate"
        )
    if b"PRIVATE KEY-----" not in contents["key"]:
        raise TLSSetupError(f"cannot use the TLS key file {keyfile}: not a PEM private key")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(certfile, keyfile, password=_refuse_password)
    except TLSSetupError:
        raise TLSSetupError(
            f"cannot use the TLS key file {keyfile}: it is encrypted (give the key without "
            "a passphrase, readable only by the server's user)"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TLSSetupError(
                f"cannot use the TLS key file {keyfile}: it is not the key of the "
                f"certificate in {certfile}"
            ) from None
        raise TLSSetupError(
            f"cannot use the TLS certificate {certfile} with the key {keyfile}: {_reason(exc)}"
        ) from None
    return context


def _reason(exc: ssl.SSLError) -> str:
    reason = exc.reason or ""
    if reason in _REASONS:
        return _REASONS[reason]
    return reason.lower().replace("_", " ") if reason else str(exc)


def describe_tls_failure(exc: BaseException) -> str:
    """Why a TLS handshake failed, in a few words for the log: from the ``ssl.SSLError``
    that caused ``exc`` (trio wraps it in ``trio.BrokenResourceError``), or, when the
    peer simply left, that it closed the connection."""
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError | OSError):
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLEOFError | ssl.SSLZeroReturnError) or cause is None:
        return "the client closed the connection"
    if isinstance(cause, ssl.SSLError):
        return _reason(cause)
    return cause.strerror or str(cause)


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    cause: BaseException | None = exc
    while cause is not None and not isinstance(cause, ssl.SSLError):
        cause = cause.__cause__ or cause.__context__
    return cause


def is_plain_http(exc: BaseException) -> bool:
    """True when the failed TLS handshake ``exc`` was a plain HTTP request."""
    cause = _ssl_cause(exc)
    return cause is not None and cause.reason in ("HTTP_REQUEST", "HTTPS_PROXY_REQUEST")


async def answer_plain_http(transport: trio.abc.Stream) -> None:
    """Answer a plain HTTP request that came to the TLS port with HTTP 400 and
    :data:`PLAIN_HTTP_ON_TLS`, in clear text on ``transport`` (the TCP stream under the
    failed TLS stream). Borrows ``transport``; a peer that already left gets nothing.
    The caller bounds the time it takes."""
    body = f"{PLAIN_HTTP_ON_TLS}\n".encode()
    head = (
        "HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode()
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await transport.send_all(head + body)
