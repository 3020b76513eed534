"""Everything a connection is sent once, in id order, from the store: history on joining a
room (and on connecting), resume after an id (URL ``since=`` and the ``resume`` command),
and paging back (the ``history`` command).

A replay is an order to one connection's writer, queued on its subscription in line with
its events (:class:`ReplayRecent`, :class:`ReplaySince`, made by :func:`recent_history`
and :func:`missed_since` when the member arrives, joins or asks), so it reaches the
member exactly between what was queued before and after it. Each order is bounded by the
log's position when it was made (``until``, the next id then): the member's own new
lines, and anything else said from then on, come live, never as history.

The writer carries orders out through its connection's :class:`Replayer`, which owns the
runs of ids already sent per room (and for private messages). A stored message inside
its room's run is not sent again, neither by a later replay nor as a live copy queued
behind the replay (:attr:`Replayer.live_filter`, which the writer hands to
:meth:`~trio_chat.server.bus.Subscription.next_batch` only while such copies may still
come, so the fan-out's hot path pays nothing otherwise).

A resume also says whether everything after ``since`` is still kept: its ``resume`` ack
(sent by the writer, before the replayed messages; for the URL form too, without a
``cid``) carries ``"recovered": true``, or ``false`` with ``oldest``, the id from which
nothing is missing, when retention (``--history-limit``) dropped messages after ``since``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

from trio_chat.core.events import Ack, ErrorEvent, Event, HistoryLine, message_data
from trio_chat.core.render import HISTORY_UNAVAILABLE
from trio_chat.core.wire import Viewer

from .bus import Instruction
from .history import MessageLog, StoreFailed
from .store import Record, StoreError

__all__ = [
    "RESUME_PAGE",
    "ReplayRecent",
    "ReplayRequest",
    "ReplaySince",
    "Replayer",
    "SendFrame",
    "history_page",
    "missed_since",
    "private_history_page",
    "recent_history",
]

logger = logging.getLogger(__name__)

#: Stored messages fetched per query while resuming; a long absence is replayed in
#: pages so that memory stays bounded.
RESUME_PAGE = 1000

#: Sends one frame of lines; False once the connection cannot take more.
SendFrame = Callable[[list[str]], Awaitable[bool]]


class ReplayRequest(Instruction):
    """An order to a connection's writer to send stored messages now, before the events
    queued after it. Not an event: it renders to nothing; its replay is the answer."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class ReplayRecent(ReplayRequest):
    """History on join: the last ``limit`` messages of ``room`` with an id below
    ``until`` (the log's next id when the member arrived in the room)."""

    room: str
    limit: int
    until: int


@dataclass(frozen=True, slots=True)
class ReplaySince(ReplayRequest):
    """A resume: every message with an id above ``after`` and below ``until`` in
    ``rooms``, and the private messages of the principal ``principal_id`` (None: none),
    after a ``resume`` ack answering ``cid`` (None for the URL form, or a command
    without one)."""

    after: int
    rooms: tuple[str, ...]
    principal_id: str | None
    until: int
    cid: str | int | None = None


def recent_history(log: MessageLog, room: str, limit: int) -> ReplayRecent:
    """The order for ``room``'s history, for a member arriving in it now."""
    return ReplayRecent(room, limit, log.next_id)


def missed_since(
    log: MessageLog,
    since: int,
    rooms: Collection[str],
    principal_id: str | None,
    cid: str | int | None = None,
) -> ReplaySince:
    """The order for a resume after ``since``, for a member in ``rooms`` acting as the
    principal ``principal_id`` (whose private messages it gets; None: none)."""
    return ReplaySince(since, tuple(rooms), principal_id, log.next_id, cid)


async def history_page(
    log: MessageLog, room: str, limit: int, before: int | None, cid: str | int | None
) -> Ack:
    """The ``history`` command's answer: the last ``limit`` messages of ``room`` below
    ``before``, oldest first. Raises :class:`StoreFailed` when the store cannot say."""
    try:
        records = await log.store.recent(room, limit, before)
    except StoreError as exc:
        raise StoreFailed(str(exc)) from exc
    messages = [{**message_data(record), "history": True} for record in records]
    return Ack("history", cid, room=room, messages=messages)


async def private_history_page(
    log: MessageLog, principal_id: str, limit: int, before: int | None, cid: str | int | None
) -> Ack:
    """The answer to ``{"type": "history", "private": true}``: the last ``limit``
    private messages sent or received by principal ``principal_id`` below ``before``,
    oldest first (nobody else's, whatever nick they were sent to). Raises
    :class:`StoreFailed` when the store cannot say."""
    try:
        records = await log.store.recent_private(principal_id, limit, before)
    except StoreError as exc:
        raise StoreFailed(str(exc)) from exc
    messages = [{**message_data(record), "history": True} for record in records]
    return Ack("history", cid, private=True, messages=messages)


class Replayer:
    """One connection's replays: carries out its orders and remembers, per room (None:
    private messages), the run of ids already sent, ``(first, last)``: everything the
    room had in between reached the member, by replay or live (after a replay the live
    stream follows without a gap).

    Owned by the connection's writer task, the only caller of :meth:`carry_out`.
    """

    __slots__ = ("_log", "_mark", "_max_chars", "_runs", "_viewer", "live_filter")

    def __init__(self, log: MessageLog, viewer: Viewer, max_frame_chars: int) -> None:
        self._log = log
        self._viewer = viewer
        self._max_chars = max_frame_chars
        # Made with the first run: a connection that has replayed nothing (history on
        # join found no messages) keeps no empty dict.
        self._runs: dict[str | None, tuple[int, int]] | None = None
        # The highest id a replay sent: a live copy queued behind a replay is at or below it.
        self._mark = 0
        #: While live copies of replayed messages may still be queued: the test that
        #: drops them (True: drop). None once they cannot come any more.
        self.live_filter: Callable[[Event], bool] | None = None

    def _is_live_copy(self, event: Event) -> bool:
        """Whether ``event`` is a live copy of a message a replay already sent."""
        position = event.log_position
        if position is None:
            return False
        room, message_id = position
        if message_id > self._mark:
            # Stored messages are delivered in id order: no copy of a replayed one can
            # follow this one, so the writer stops asking.
            self.live_filter = None
            return False
        return self._already_sent(room, message_id)

    def _run(self, scope: str | None) -> tuple[int, int] | None:
        """The run of ids of ``scope`` already sent, ``(first, last)``; None if none."""
        return None if self._runs is None else self._runs.get(scope)

    def _already_sent(self, scope: str | None, message_id: int) -> bool:
        """Whether message ``message_id`` of ``scope`` is inside the run already sent."""
        run = self._run(scope)
        return run is not None and run[0] <= message_id <= run[1]

    async def carry_out(self, request: Instruction, send: SendFrame) -> bool:
        """Send what ``request`` (a :class:`ReplayRequest`) asks for, in frames of about
        the writer's frame size, and remember it as sent. False once the connection
        cannot take more. A store that fails is logged and answered with one
        ``store_failed`` error (carrying the ``resume`` command's ``cid`` when it failed
        before the ack was sent). If cancelled, what was sent stays sent and only
        completed replays count as sent, so a later one skips nothing it should send."""
        try:
            match request:
                case ReplayRecent():
                    return await self._recent(request, send)
                case ReplaySince():
                    return await self._since(request, send)
        except StoreError as exc:
            cid = request.cid if isinstance(request, ReplaySince) else None
            return await self._unavailable(exc, cid, send)
        raise TypeError(f"not a replay request: {request!r}")

    async def _unavailable(self, error: StoreError, cid: str | int | None, send: SendFrame) -> bool:
        logger.error("history unavailable: %s", error)
        failure = ErrorEvent("store_failed", HISTORY_UNAVAILABLE, cid)
        line = self._viewer.wire.render(failure, self._viewer)
        return line is None or await send([line])

    async def _recent(self, request: ReplayRecent, send: SendFrame) -> bool:
        """History on join: one query, the records not sent yet, a new run for the room."""
        records = await self._log.store.recent(request.room, request.limit, request.until)
        if not await self._send_records([], records, send):
            return False
        if records:
            # A (re)join starts a new run: what was sent before leaving is over.
            previous = (self._run(request.room) or (0, 0))[1]
            self._remember(request.room, records[0].id, max(previous, records[-1].id))
        return True

    async def _since(self, request: ReplaySince, send: SendFrame) -> bool:
        """A resume: the ``resume`` ack, then page after page of what followed ``after``
        (RESUME_PAGE records per query, so memory stays bounded), then one run per room
        (and for private messages, with a principal) from ``after + 1`` to the last id
        sent."""
        store = self._log.store
        scopes: list[str | None] = [*request.rooms]
        if request.principal_id is not None:
            scopes.append(None)
        after = request.after
        records = await store.since(
            after, request.rooms, request.principal_id, RESUME_PAGE, request.until
        )
        # Asked after the first page: retention that ran in between makes the report
        # cautious (recovered: false), never falsely complete. Retention cannot overtake
        # the later pages in a room the member is in: that takes --history-limit new
        # messages there meanwhile, each queued for this member, who is closed as a slow
        # consumer long before (--queue-depth is far smaller). Only a flood of other
        # people's private messages could, and then this report is all that is said.
        trimmed = await store.trimmed(scopes)
        report = self._report(request, trimmed)
        lines = [] if report is None else [report]
        while True:
            if not await self._send_records(lines, records, send):
                return False
            lines = []
            if records:
                after = records[-1].id
            if len(records) < RESUME_PAGE:
                break
            try:
                records = await store.since(
                    after, request.rooms, request.principal_id, RESUME_PAGE, request.until
                )
            except StoreError as exc:  # the ack is out: this error answers no command
                return await self._unavailable(exc, None, send)
        # Everything after `since` up to `after` has now been sent, with any earlier run.
        for scope in scopes:
            first, last = self._run(scope) or (request.after + 1, 0)
            self._remember(scope, min(first, request.after + 1), max(last, after))
        return True

    def _report(self, request: ReplaySince, trimmed: int) -> str | None:
        """The ``resume`` ack, rendered: recovered, or not and from which id."""
        since = request.after
        if trimmed <= since:
            ack = Ack("resume", request.cid, since=since, recovered=True)
        else:
            oldest = trimmed + 1
            ack = Ack("resume", request.cid, since=since, recovered=False, oldest=oldest)
        return self._viewer.wire.render(ack, self._viewer)

    def _remember(self, scope: str | None, first: int, last: int) -> None:
        """Record the run ``first..last`` of ``scope`` as sent, and drop live copies of
        it from now on."""
        if self._runs is None:
            self._runs = {}
        self._runs[scope] = (first, last)
        self._mark = max(self._mark, last)
        self.live_filter = self._is_live_copy

    async def _send_records(self, lines: list[str], records: list[Record], send: SendFrame) -> bool:
        """Send ``lines`` and then ``records`` as history lines, in frames of about the
        frame size, skipping records already sent (inside their room's run)."""
        viewer = self._viewer
        size = sum(len(line) + 1 for line in lines)
        for record in records:
            if self._already_sent(record.room, record.id):
                continue
            line = viewer.wire.render(HistoryLine(record), viewer)
            if line is None:
                continue
            lines.append(line)
            size += len(line) + 1
            if size >= self._max_chars:
                if not await send(lines):
                    return False
                lines, size = [], 0
        return not lines or await send(lines)
