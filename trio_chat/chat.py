"""Where a chat line goes once it has entered: the chat's state and routing.

The transport hands every line here; this module decides which event it becomes and
publishes it on the bus. It owns no tasks and never awaits.
"""

from __future__ import annotations

from .bus import Bus
from .protocol import ChatLine, OperatorLine

__all__ = ["Chat"]


class Chat:
    """The chat every connection of one server takes part in."""

    def __init__(self) -> None:
        self.bus = Bus()

    @property
    def member_count(self) -> int:
        """Connections currently receiving the chat."""
        return len(self.bus)

    def receive_text(self, sender: int, text: str) -> None:
        """Publish what connection ``sender`` sent.

        A frame is one chat line. A frame holding several lines is taken as that many
        chat lines, so that every line on the wire stays exactly one event.
        """
        lines = text.splitlines() if ("\n" in text or "\r" in text) else [text]
        for line in lines:
            self.bus.publish(ChatLine.from_text(sender, line))

    def operator_says(self, text: str) -> int:
        """Publish a console line to everyone; returns how many clients it reached."""
        return self.bus.publish(OperatorLine.from_text(text))
