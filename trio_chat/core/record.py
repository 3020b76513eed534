"""A stored message, as the store keeps it and as replays and renderings read it.

Pure data: the server's store writes and reads :class:`Record` values, the events and
the plain-text wording are built from them, and nothing here knows where they are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Record"]


@dataclass(frozen=True, slots=True)
class Record:
    """One stored message. ``room`` is None for a private message, which has a
    ``recipient`` instead. ``dedupe`` is the sender's resend key (principal and ``cid``),
    unique among stored records, or None.

    A private message also names the principals of its sender and its recipient
    (:class:`~trio_chat.core.identity.Principal` ids): they alone may read it again (a
    resume, a ``history`` page), whoever holds those nicknames later. A private record
    without them (stored before principals existed) is replayed to nobody."""

    id: int
    ts: str
    room: str | None
    sender: str | None
    recipient: str | None
    text: str
    action: bool = False
    dedupe: str | None = None
    sender_principal: str | None = None
    recipient_principal: str | None = None
