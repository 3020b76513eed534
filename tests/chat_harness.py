"""A chat with no sockets, for the tests of its rules: :class:`Harness` runs a
:class:`~trio_chat.server.chat.Chat` over a message log in memory, connects members to it
as a connection would, and :class:`Client` reads what each member was sent."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
import trio
import trio.testing

from trio_chat.core.arrival import Arrival
from trio_chat.core.close import close_for
from trio_chat.core.commands import MAX_MESSAGE_LINES, CommandError
from trio_chat.core.events import ErrorEvent, Notice
from trio_chat.core.identity import Principal
from trio_chat.core.wire import JSON, PLAIN
from trio_chat.server.bus import Subscription
from trio_chat.server.chat import Chat, Member
from trio_chat.server.history import MessageLog
from trio_chat.server.store import MemoryStore

__all__ = ["END", "Client", "Harness", "receive_text", "room", "running_log"]

#: The plain line of the marker that ends a :meth:`Client.received`.
END = "🟢 Server: (end)"


async def receive_text(chat: Chat, member: Member, text: str) -> None:
    """Carry out one text frame from ``member`` as its connection would (its wire format
    reads it; each refusal goes back to the member alone, each command to
    :meth:`Chat.execute`), for tests that drive the chat without a connection."""
    for parsed in member.wire.parse(text, max_lines=chat.max_message_lines):
        if isinstance(parsed, CommandError):
            chat.bus.publish(ErrorEvent(parsed.code, parsed.text, parsed.cid), (member.key,))
        else:
            await chat.execute(member, *parsed)


@dataclass
class Client:
    """One member and what was asked of its connection."""

    member: Member
    subscription: Subscription
    closes: list[tuple[int, str, bool]] = field(default_factory=list)

    async def received(self) -> list[str]:
        """Every line queued for this member so far (a marker ends the read)."""
        self.subscription.offer(Notice("(end)"))
        lines: list[str] = []
        while True:
            batch, _ = await self.subscription.next_batch(1 << 20)
            for line in batch:
                if line == END or line.endswith('"text":"(end)"}'):
                    return lines
                lines.append(line)


class Harness:
    """A chat (its message log in memory, running) and the members connected to it."""

    def __init__(
        self,
        stack: ExitStack,
        log: MessageLog,
        presence_limit: int = 100,
        max_message_lines: int = MAX_MESSAGE_LINES,
    ) -> None:
        self.chat = Chat(
            log,
            presence_limit=presence_limit,
            history_on_join=0,
            max_message_lines=max_message_lines,
            clock=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        )
        self._stack = stack
        self._keys = iter(range(1, 1000))

    async def connect(
        self,
        nick: str | None = None,
        *,
        json_mode: bool = False,
        principal: Principal | None = None,
        arrival: Arrival | None = None,
    ) -> Client:
        """A member arriving (as ``principal``, with ``arrival``), then taking ``nick``
        with a nick command of its wire format."""
        closes: list[tuple[int, str, bool]] = []

        def overflow() -> None:
            raise AssertionError("no queue may overflow here")

        member, subscription = self.chat.arrive(
            next(self._keys),
            wire=JSON if json_mode else PLAIN,
            disconnect=lambda departure: closes.append(close_for(departure)),
            queue_depth=1000,
            on_overflow=overflow,
            arrival=arrival,
            principal=principal,
        )
        self._stack.callback(self.chat.leave, member, subscription)
        client = Client(member, subscription, closes)
        if nick:
            command = json.dumps({"type": "nick", "nick": nick}) if json_mode else f"/nick {nick}"
            await self.say(client, command)
        return client

    def disconnect(self, client: Client) -> None:
        """The client's connection ends."""
        self.chat.leave(client.member, client.subscription)

    async def say(self, client: Client, text: str) -> None:
        """Send ``text`` as ``client`` and let the log commit and deliver it."""
        await receive_text(self.chat, client.member, text)
        await trio.testing.wait_all_tasks_blocked()


async def running_log(nursery: trio.Nursery) -> MessageLog:
    """A message log in memory, open and running in ``nursery``."""
    log = MessageLog(MemoryStore(100))
    await log.open()
    await nursery.start(log.run)
    return log


@pytest.fixture
async def room(nursery: trio.Nursery) -> AsyncIterator[Harness]:
    """A chat whose members leave at the end of the test."""
    log = await running_log(nursery)
    with ExitStack() as stack:
        yield Harness(stack, log)
