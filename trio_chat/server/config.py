"""Server settings: every limit the server enforces, with its default and the reason for it."""

from __future__ import annotations

from dataclasses import dataclass

from trio_chat.core.arrival import DEFAULT_HOST, DEFAULT_PORT

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ServerConfig"]


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What ``python -m trio_chat.server`` was told; immutable once the server runs."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: Largest message accepted from a client, in bytes (UTF-8 for text). Chat lines
    #: are short; a cap well under the usual 1 MiB keeps one client from making the
    #: server buffer (and fan out) megabytes. Over it: close 1009.
    max_message_size: int = 64 * 1024
    #: Events queued per client before it counts as a slow consumer (close 1008).
    #: Deep enough to absorb bursts, shallow enough that a stuck client costs little.
    queue_depth: int = 256
    #: Seconds given to closing every connection at shutdown before the rest are dropped.
    shutdown_grace: float = 2.0
    #: Seconds one frame may take to reach a client's socket before the client is
    #: dropped as a slow consumer; a peer that stops reading otherwise blocks forever.
    send_timeout: float = 10.0
    #: Seconds a new TCP connection has to complete its WebSocket handshake.
    handshake_timeout: float = 10.0
    #: Open connections allowed at once; the next handshake is refused with 503.
    max_connections: int = 10_000
    #: Rooms with more members than this get no presence notices: a room of 5,000 must
    #: not cost 25 million join notices. /who still lists everyone.
    presence_limit: int = 100
    #: Where messages are stored: a SQLite file, or ":memory:" to keep them in memory
    #: only. (The command line defaults to a file in the user's data directory.)
    db: str = ":memory:"
    #: Messages kept per room (and for private messages), oldest dropped first.
    history_limit: int = 10_000
    #: Stored messages a member is sent when it joins a room (0: none).
    history_on_join: int = 50
