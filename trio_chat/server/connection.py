"""One client connection: its reader, its writer, and how it closes.

A :class:`ChatConnection` reads in the task that runs it and writes in a task of its
own nursery. The reader takes messages from the WebSocket and hands them to the
:class:`~trio_chat.server.chat.Chat`; the writer is the connection's bus subscriber and the
only task that sends chat frames to this socket. Whatever ends the connection (the
peer, a close request, a slow consumer, a bug), :meth:`ChatConnection.run` finishes by
sending one close frame with the right code, shielded and time-limited, and only then
returns.
"""

from __future__ import annotations

import logging

import trio

from trio_chat.core.arrival import Arrival
from trio_chat.core.close import (
    BINARY_NOT_SUPPORTED,
    INTERNAL_ERROR,
    SLOW_CONSUMER,
    CloseCode,
    Departure,
    close_for,
    describe_close,
)
from trio_chat.core.events import ErrorEvent
from trio_chat.core.wire import PLAIN, WireFormat

from .bus import Subscription
from .chat import Chat, Member
from .config import ServerConfig
from .net.seam import Address, ChatSocket
from .replay import Replayer

__all__ = ["UNKNOWN_PEER", "ChatConnection", "describe_peer"]

logger = logging.getLogger(__name__)

#: A batch stops growing once its frame reaches this many characters. Large enough
#: to carry hundreds of chat lines in one frame, far below the 1 MiB that common
#: clients (browsers, websockets, trio-websocket) accept in one message.
MAX_FRAME_CHARS = 64 * 1024

#: How a peer whose address is not known (not a socket, or already gone) is logged.
UNKNOWN_PEER = "unknown"


def describe_peer(address: Address | None) -> str:
    """``address`` as the log writes it: ``host:port``, or ``unknown`` when not known."""
    return UNKNOWN_PEER if address is None else str(address)


class ChatConnection:
    """A connected client, from accepted handshake to sent close frame."""

    __slots__ = (
        "_arrival",
        "_chat",
        "_close_code",
        "_close_reason",
        "_close_requested",
        "_closed",
        "_config",
        "_finished",
        "_io_scope",
        "_stream_broken",
        "_subscription",
        "_ws",
        "key",
        "wire",
    )

    def __init__(
        self,
        ws: ChatSocket,
        key: int,
        chat: Chat,
        *,
        config: ServerConfig,
        wire: WireFormat = PLAIN,
        arrival: Arrival | None = None,
    ) -> None:
        self.key = key
        self._arrival = arrival
        #: How this client's frames read and its events are written (plain or JSON).
        self.wire = wire
        self._ws = ws
        self._chat = chat
        self._config = config
        # Cancelling this scope stops both I/O tasks; run() then sends the close frame.
        self._io_scope = trio.CancelScope()
        self._close_code: int = CloseCode.NORMAL_CLOSURE
        self._close_reason: str | None = None
        self._close_requested = False
        # Set when the client stopped reading: a close frame could not reach it.
        self._stream_broken = False
        self._subscription: Subscription | None = None
        # Whether run() is over, and the event that says so (made when first asked for).
        self._finished = False
        self._closed: trio.Event | None = None

    @property
    def closed(self) -> trio.Event:
        """Set once :meth:`run` is over (the close frame sent, or given up on). Made when
        first asked for, already set if run() is over: only a shutdown waits on it, and
        every open connection would otherwise keep an Event and its parking lot (about
        270 bytes)."""
        if self._closed is None:
            self._closed = trio.Event()
            if self._finished:
                self._closed.set()
        return self._closed

    @property
    def peer(self) -> str:
        """The peer's address as the log writes it (``host:port``, or ``unknown``):
        formatted when a line needs it, not kept by every open connection."""
        return describe_peer(self._ws.peer_address)

    def close_soon(self, code: int, reason: str, flush: bool = False) -> None:
        """Ask the connection to close with ``code`` and ``reason``; returns at once.

        With ``flush``, events already queued for the client are sent first (the answer
        to ``/quit``, say); nothing queued later is. Idempotent: the first request decides
        the code. Safe to call from any task, before or during :meth:`run`.
        """
        if not self._close_requested:
            self._close_requested = True
            self._close_code = code
            self._close_reason = reason
        if flush and self._subscription is not None:
            # The writer drains the queue, meets its end, and then cancels the I/O.
            self._subscription.close()
        else:
            self._io_scope.cancel()

    def _depart(self, departure: Departure) -> None:
        """The chat lets this member go (a quit, a kick): close as that calls for."""
        self.close_soon(*close_for(departure))

    async def run(self) -> None:
        """Serve the connection until it closes, then send the close frame.

        Owns the reader and writer tasks and the bus subscription; all three are gone
        when this returns. An exception in either task is logged with its traceback
        and closes this connection alone with 1011. Cancelling ``run`` abandons the
        close handshake and returns promptly (at most ``shutdown_grace`` seconds for the
        member's last messages to be delivered, and as long again for the close).
        """
        member, subscription = self._chat.arrive(
            self.key,
            wire=self.wire,
            disconnect=self._depart,
            queue_depth=self._config.queue_depth,
            on_overflow=self._overflowed,
            arrival=self._arrival,
        )
        self._arrival = None  # used once: an open connection keeps no copy of its URL's query
        self._subscription = subscription
        try:
            with self._io_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, subscription)
                    await self._read_loop(member, subscription)
                    nursery.cancel_scope.cancel()
        except Exception:
            logger.exception("client #%d (%s) failed", self.key, self.peer)
            self.close_soon(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR)
        finally:
            # What the member said last (still being committed) reaches its rooms before
            # the notice that it left. Bounded: the committer may be stopping too.
            with trio.move_on_after(self._config.shutdown_grace, shield=True):
                await member.window.drained()
            self._chat.leave(member, subscription, resumable=self._may_resume())
            await self._send_close_frame()
            self._finished = True
            if self._closed is not None:
                self._closed.set()

    def _may_resume(self) -> bool:
        """Whether this connection's session outlives it (held for ``--nick-hold``): not
        when the client closed it itself, normally (1000) or going away (1001): that is
        a goodbye. A connection lost without a close frame (1006), or closed by the
        server, may come back."""
        if self._close_requested:
            return True
        return self._ws.close_code not in (CloseCode.NORMAL_CLOSURE, CloseCode.GOING_AWAY)

    def _overflowed(self) -> None:
        """The bus found this client's queue full: close it as a slow consumer."""
        logger.warning(
            "client #%d (%s) has %d events queued; closing it as a slow consumer",
            self.key,
            self.peer,
            self._config.queue_depth,
        )
        self.close_soon(CloseCode.POLICY_VIOLATION, SLOW_CONSUMER)

    def describe_close(self) -> str:
        """How the connection ended, e.g. ``1000 (normal closure)``, for the log."""
        if self._close_requested:
            return describe_close(self._close_code, self._close_reason)
        if self._ws.close_code is None:
            return "not closed"
        return describe_close(self._ws.close_code, self._ws.close_reason)

    async def _read_loop(self, member: Member, subscription: Subscription) -> None:
        """Hand every text frame to the chat until the peer closes; answer binary ones."""
        while True:
            message = await self._ws.receive()
            if message is None:
                return
            if isinstance(message, str):
                await self._chat.receive_text(member, message)
            else:
                subscription.offer(ErrorEvent("binary_frame", BINARY_NOT_SUPPORTED))

    async def _write_loop(self, subscription: Subscription) -> None:
        """Send queued events, batched into one frame, until cancelled; have the
        connection's :class:`~trio_chat.server.replay.Replayer` carry out the replays
        queued among them (history on join, resume) in line, and leave out the live
        copies of what it replayed."""
        replayer = Replayer(self._chat.log, subscription.viewer, MAX_FRAME_CHARS)
        while True:
            try:
                lines, replay = await subscription.next_batch(MAX_FRAME_CHARS, replayer.live_filter)
            except trio.EndOfChannel:  # closed with flush: everything queued was sent
                self._io_scope.cancel()
                return
            if lines and not await self._send_frame(lines):
                return
            if replay is not None and not await replayer.carry_out(replay, self._send_frame):
                return
            # Not kept while waiting for the next batch: an idle connection would hold
            # its last frame's lines and its last replay order.
            del lines, replay

    async def _send_frame(self, lines: list[str]) -> bool:
        """Send ``lines`` as one frame; False once the connection cannot take more.

        The frame goes to the socket at once when it has room (no scheduler round trip);
        when it has not, this waits for the socket to drain, at most ``send_timeout``
        seconds, and a client that stays that far behind is dropped as a slow consumer.
        Cancellation is safe at any point: the frame is queued whole.
        """
        try:
            self._ws.send_text("\n".join(lines).encode())
            if self._ws.buffered:
                with trio.move_on_after(self._config.send_timeout) as drain_scope:
                    await self._ws.flush()
                if drain_scope.cancelled_caught:
                    self._stream_broken = True
                    logger.warning(
                        "client #%d (%s): a frame took over %g s to send",
                        self.key,
                        self.peer,
                        self._config.send_timeout,
                    )
                    self.close_soon(CloseCode.POLICY_VIOLATION, SLOW_CONSUMER)
                    return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def _send_close_frame(self) -> None:
        """Close the WebSocket with the decided code, waiting at most ``shutdown_grace``
        seconds for the peer's answer, and close the socket. Shielded: runs to its
        deadline even when the connection is being cancelled."""
        if self._stream_broken:
            # The client stopped reading: a close frame could not reach it.
            await self._ws.abort()
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self._config.shutdown_grace
            await self._ws.aclose(self._close_code, self._close_reason)
