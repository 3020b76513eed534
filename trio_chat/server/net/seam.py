"""The seam between the network layer and the chat: what a client connection offers.

:class:`ChatSocket` is everything :mod:`~trio_chat.server.connection` (and whatever
serves a client next: a heartbeat, a rate limit, an origin check) may use of one
accepted WebSocket: whole messages in, text messages out through a buffer that never
waits, pings, the close handshake, and what is known about the connection (the peer's
address, TLS or not, the request's path, query and headers). Nothing behind it (the
byte stream, h11, wsproto) is reachable through it, so the transport can change (TLS,
memory streams in tests) without the chat noticing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from trio_chat.core.redact import redact_target

__all__ = ["Address", "ChatSocket", "Request"]


@dataclass(frozen=True, slots=True)
class Address:
    """A peer's IP address and port (0 when not known: a client named by a proxy's
    ``X-Forwarded-For``, which gives no port)."""

    host: str
    port: int

    def __str__(self) -> str:
        """``host:port``, with an IPv6 host in brackets (``[::1]:port``); the host alone
        when the port is not known."""
        if not self.port:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Request:
    """The HTTP request that opened a WebSocket: its target and its headers.

    The headers are kept packed in one bytes object (``name:value`` lines joined by
    ``\\n``, which h11 allows in neither), since every open connection keeps its
    request: one object instead of three per header. Build it with :meth:`of`.

    Its ``repr`` shows the target without its query and no header (they may carry a
    session secret, a token, a password), should one ever reach a log line.
    """

    target: str
    packed_headers: bytes = b""

    def __repr__(self) -> str:
        names = sorted({name.decode("latin-1") for name, _ in self.headers})
        return f"Request({redact_target(self.target)!r}, headers={names})"

    @classmethod
    def of(cls, target: str, headers: Iterable[tuple[bytes, bytes]]) -> Request:
        """The request for ``target`` with ``headers`` (as h11 gives them)."""
        return cls(target, b"\n".join(name + b":" + value for name, value in headers))

    @property
    def headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """``(name, value)`` byte pairs in the order sent, names in lower case (as h11
        gives them), repeated headers repeated."""
        if not self.packed_headers:
            return ()
        pairs = (line.partition(b":") for line in self.packed_headers.split(b"\n"))
        return tuple((name, value) for name, _, value in pairs)

    @property
    def path(self) -> str:
        """The target's path: ``/chat`` for ``/chat?nick=alice``."""
        return self.target.partition("?")[0]

    @property
    def query(self) -> str:
        """The target's query, undecoded, without the ``?``: ``nick=alice``."""
        return self.target.partition("?")[2]

    def header(self, name: str) -> str | None:
        """The value of header ``name`` (any case), its repeats joined with ``", "`` as
        HTTP allows; None when it was not sent. Decoded as Latin-1, which never fails."""
        wanted = name.lower().encode("ascii")
        values = [value.decode("latin-1") for key, value in self.headers if key == wanted]
        return ", ".join(values) if values else None


class ChatSocket(Protocol):
    """One client's accepted WebSocket, as the chat layer may use it.

    One task reads (:meth:`receive` until None, then :meth:`aclose`); any task may write
    (:meth:`send_text`, :meth:`flush`, :meth:`ping`), since every frame goes whole
    through one ordered buffer. The connection's byte stream is owned by whoever
    accepted it; :meth:`aclose` and :meth:`abort` close it.
    """

    @property
    def peer_address(self) -> Address | None:
        """The peer's address; None when the stream is not over a socket (memory
        streams) or the peer left before it was asked."""
        ...

    @property
    def tls(self) -> bool:
        """True when the connection is encrypted (a ``trio.SSLStream``)."""
        ...

    @property
    def request(self) -> Request:
        """The HTTP request that opened the WebSocket."""
        ...

    @property
    def close_code(self) -> int | None:
        """How the WebSocket closed (or is closing): the code of whichever side sent the
        first close frame, 1006 when the connection just ended; None while open."""
        ...

    @property
    def close_reason(self) -> str:
        """The reason that came with :attr:`close_code` ("" when none)."""
        ...

    @property
    def buffered(self) -> int:
        """Bytes written to the peer that its connection has not taken yet."""
        ...

    async def receive(self) -> str | bytes | None:
        """The next whole message from the peer (``str`` for text, ``bytes`` for
        binary), or None once the WebSocket is closing. Answers pings and notes pongs
        on the way; only this call reads, so a :meth:`ping` waits on it. Cancel-safe."""
        ...

    def send_text(self, payload: bytes) -> None:
        """Queue one text message holding ``payload`` (UTF-8); never waits. Raises
        ``trio.BrokenResourceError`` when the peer is gone and
        ``trio.ClosedResourceError`` once the WebSocket is closing."""
        ...

    async def flush(self) -> None:
        """Wait until the peer's connection has taken everything sent so far. Raises
        ``trio.BrokenResourceError`` when the peer is gone. Cancel-safe: what is not
        sent yet stays queued, whole and in order."""
        ...

    async def ping(self, payload: bytes) -> None:
        """Send a ping carrying ``payload`` (at most 125 bytes) and wait for its pong
        (a pong for a later ping counts too: a peer may answer only the latest).

        The caller bounds the wait (``trio.fail_after``); cancelled, the ping is still
        sent and its pong ignored. Raises ``ValueError`` when a ping with the same
        payload is already waiting, and ``trio.ClosedResourceError`` when the WebSocket
        is closing or closes before the pong.
        """
        ...

    def send_heartbeat(self) -> None:
        """Send a heartbeat ping without waiting; :attr:`heartbeat_answered` is False
        until its pong arrives (which :meth:`receive` notes). Raises
        ``trio.ClosedResourceError`` once the WebSocket is closing."""
        ...

    @property
    def heartbeat_answered(self) -> bool:
        """False while the last heartbeat ping waits for its pong (True before the first)."""
        ...

    async def hang_up(self, code: int, reason: str | None) -> bool:
        """Close for a peer that stopped answering: a close frame with ``code`` and
        ``reason`` when the peer took everything sent before (True), else none (False),
        then the stream is closed without waiting for an answer. The caller bounds the
        wait; cancelled, the stream is still closed."""
        ...

    async def aclose(self, code: int, reason: str | None, *, wait_for_peer: bool = True) -> None:
        """Close with ``code`` and ``reason`` (unless a close already started), wait
        for the peer's close frame or the end of its connection (unless not
        ``wait_for_peer``: the close frame is sent, and nothing more read), then close the
        stream.
        The caller bounds the wait; cancelled, the stream is still closed."""
        ...

    async def abort(self) -> None:
        """Close the stream at once, without a close frame: for a peer that cannot take
        one (it stopped reading, or its stream broke)."""
        ...
