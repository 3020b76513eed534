"""Room and private messages: stored, then acknowledged and delivered, on one path.

A message gets its id from the :class:`~trio_chat.server.history.MessageLog` (which
stores it in a group commit and delivers in id order), is acknowledged to its sender
before anyone sees it (so a client knows the id first), and is published on the bus to
its audience. A message sent again with the same resend key (a client resending after a
reconnect) is acknowledged with the stored id and not stored twice. Each sender has a
:class:`Window` of messages being committed: its reader goes on to the next frame while
earlier messages commit (so one busy sender fills a whole commit), and waits past
:data:`MAX_UNCONFIRMED`.

Runs in the reader task of the sending connection; every change of state happens
between two awaits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Protocol

import trio

from trio_chat.core.events import Ack, ErrorEvent, Event, Message, PrivateMessage
from trio_chat.core.identity import Principal
from trio_chat.core.render import NOT_STORED

from .bus import Bus
from .history import MessageLog
from .store import Record, StoreError

__all__ = ["MAX_UNCONFIRMED", "Messaging", "Sender", "Window", "resend_key"]

#: Messages one connection may have being committed at once. Its reader goes on to the
#: next frame while earlier messages commit (so one busy sender fills a whole commit),
#: and waits past this many.
MAX_UNCONFIRMED = 64


class Window:
    """One sender's messages submitted to the log and not yet delivered (or failed)."""

    __slots__ = ("_changed", "unconfirmed")

    def __init__(self) -> None:
        self.unconfirmed = 0
        # Set (and replaced) when a message is confirmed, for a task waiting on the count.
        self._changed: trio.Event | None = None

    async def submitted(self) -> None:
        """Count a message just submitted, and wait while too many are being committed.
        Cancelling the wait leaves the message counted (it is still being committed).

        Under the limit this returns without a checkpoint, on purpose: a reader that
        yielded after every message would hand the committer smaller groups and the
        writers smaller batches (measured: a quarter more server CPU per delivery)."""
        self.unconfirmed += 1
        await self._wait_for_at_most(MAX_UNCONFIRMED)

    async def drained(self) -> None:
        """Wait until every message submitted so far is delivered (or failed): what a
        member said last reaches its rooms before the news that it left. Cancel-safe."""
        if not self.unconfirmed:
            await trio.lowlevel.checkpoint()
            return
        await self._wait_for_at_most(0)

    async def _wait_for_at_most(self, count: int) -> None:
        while self.unconfirmed > count:
            if self._changed is None:
                self._changed = trio.Event()
            await self._changed.wait()

    def confirmed(self) -> None:
        """One message was delivered or failed: a waiting task may go on."""
        self.unconfirmed -= 1
        if self._changed is not None:
            self._changed.set()
            self._changed = None


class Sender(Protocol):
    """Who sends a message: its connection's key, its nickname, the principal it acts
    as (made when first asked for) and its window."""

    @property
    def key(self) -> int: ...
    @property
    def nick(self) -> str | None: ...
    @property
    def principal(self) -> Principal: ...
    @property
    def window(self) -> Window: ...


class Messaging:
    """Sends room and private messages through ``log`` and out on ``bus``; ``now`` is
    the time a message is stamped with."""

    def __init__(self, log: MessageLog, bus: Bus, now: Callable[[], str]) -> None:
        self.log = log
        self.bus = bus
        self._now = now

    async def to_room(
        self,
        sender: Sender,
        cid: str | int | None,
        room: str,
        text: str,
        *,
        action: bool,
        audience: Callable[[], Iterable[int]],
    ) -> None:
        """Send ``text`` to ``room`` (``action``: a ``/me``); ``audience`` names the
        members who get it, asked at delivery (the room may have changed meanwhile)."""
        kind = "me" if action else "message"
        await self._send(sender, cid, kind, text, room=room, to=None, audience=audience)

    async def to_principal(
        self,
        sender: Sender,
        cid: str | int | None,
        to: str,
        recipient: Principal,
        text: str,
        *,
        audience: Callable[[], Iterable[int]],
    ) -> None:
        """Send ``text`` privately to the principal ``recipient``, whose nick is ``to``;
        stored for both principals (they alone may read it again). ``audience`` names
        the members who get it live, asked at delivery: every device of both."""
        await self._send(
            sender, cid, "private", text, room=None, to=to, audience=audience, recipient=recipient
        )

    async def _send(
        self,
        sender: Sender,
        cid: str | int | None,
        kind: str,
        text: str,
        *,
        room: str | None,
        to: str | None,
        audience: Callable[[], Iterable[int]],
        recipient: Principal | None = None,
    ) -> None:
        """The one path of every message: a resend is acknowledged with its stored id;
        a new message is submitted to the log, and on delivery acknowledged, then
        published. Returns once the sender's window has room again.

        Cancelled while looking up a resend, nothing was sent; cancelled while waiting
        for the window, the message stays submitted and is still delivered (or fails)
        and acknowledged: the log owns it from :meth:`MessageLog.submit` on."""
        where = {"room": room} if room is not None else {"to": to}
        nick, ts = sender.nick, self._now()
        # Only a private message, or a message with a resend key, needs the sender's
        # principal: a plain sender of room lines never has one made.
        sender_id = sender.principal.id if cid is not None or recipient is not None else None
        dedupe = resend_key(sender_id, cid, kind, room if room is not None else to or "")
        if dedupe is not None:
            found = await self.log.find_resend(dedupe)
            if found is not None:
                self._reply(sender, Ack(kind, cid, id=found, **where, duplicate=True))
                return
        action = kind == "me"

        private_ids = (sender_id, recipient.id) if recipient is not None else (None, None)

        def record(message_id: int) -> Record:
            return Record(message_id, ts, room, nick, to, text, action, dedupe, *private_ids)

        def deliver(stored: Record) -> None:
            sender.window.confirmed()
            # The ack comes first, so a client knows the id before it sees the message.
            self._reply(sender, Ack(kind, cid, id=stored.id, **where))
            event = (
                Message(stored, sender.key)
                if room is not None
                else PrivateMessage(stored, sender.key)
            )
            self.bus.publish(event, audience())

        def fail(error: StoreError) -> None:
            sender.window.confirmed()
            self._reply(
                sender,
                ErrorEvent("store_failed", NOT_STORED, cid),
            )

        self.log.submit(record, deliver, fail, dedupe)
        await sender.window.submitted()

    def _reply(self, sender: Sender, event: Event) -> None:
        self.bus.publish(event, (sender.key,))


def resend_key(
    principal_id: str | None, cid: str | int | None, kind: str, target: str
) -> str | None:
    """The key that identifies a resent message: the sender's principal (the same after
    a resume, never another's), the kind of message and where it went (room or
    recipient), and its ``cid`` as sent (so ``1`` and ``"1"`` differ). Only messages
    with a ``cid`` have one (JSON clients: plain lines have none)."""
    if cid is None or principal_id is None:
        return None
    return f"{principal_id}\n{kind}\n{target.casefold()}\n{json.dumps(cid)}"
