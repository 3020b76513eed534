"""A programmatic client: ``async with trio_chat.connect(url, nick=...) as chat:``.

For bots, tests and programs: it speaks ``trio-chat.v1`` over trio-websocket, sends
commands (:meth:`Connection.say`, :meth:`Connection.join`... or any
:mod:`trio_chat.core.commands` value with :meth:`Connection.send`), each of which waits
for its ``ack`` and returns it, or raises :class:`CommandFailed` on an ``error``; and it
yields every other event the server sends (``async for event in chat``), decoded from
JSON as ``docs/protocol.md`` describes them.

It does not reconnect (the terminal client does: :mod:`trio_chat.client.connection`);
when the connection ends, iteration ends and commands raise :class:`ChatClosed`. It pings
the server every ``ping_interval`` seconds (20 by default); a ping not answered within
``ping_timeout`` seconds (20) ends the connection as lost (``ChatClosed`` 1006 ``no
answer to a ping within 20 s``): connect again with ``session=chat.session`` and
``since=`` the last id seen to resume it without a gap.

On a server with accounts or tokens it logs in at the handshake: ``login=(name,
password)`` (HTTP Basic) or ``token=provider`` (``Authorization: Bearer``), where the
provider is a callable, plain or async, that returns a token: it is called on connect and
whenever the server sends a ``refresh`` event (its answer goes back as a ``refresh``
command, and the event is not yielded).

Owns: the TCP (or TLS) stream (closed however the block ends, so the socket never leaks, even
when the server closes first), the WebSocket's reader task and this module's own reader
task and its keepalive task, all in one nursery that the ``async with`` block owns.
"""

from __future__ import annotations

import inspect
import itertools
import json
import math
import secrets
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)

from trio_chat.core.arrival import resume_resource
from trio_chat.core.close import CloseCode, describe_close
from trio_chat.core.commands import (
    PROTOCOL,
    Command,
    History,
    Join,
    Leave,
    ListRooms,
    Nick,
    Private,
    Quit,
    Refresh,
    Say,
    Topic,
    Who,
    command_to_json,
)
from trio_chat.core.redact import redact_url

from .connection import (
    ClientError,
    ClientStream,
    authorization,
    client_ssl_context,
    describe_refusal,
    open_stream,
    parse_url,
)

__all__ = [
    "ChatClosed",
    "ChatError",
    "CommandFailed",
    "Connection",
    "Event",
    "TokenProvider",
    "connect",
]

#: An event as the server sends it: one decoded JSON object (``docs/protocol.md``).
Event = dict[str, Any]
#: Where a login token comes from: a callable, plain or async, returning the token.
TokenProvider = Callable[[], str | Awaitable[str]]

#: Time allowed by default for TCP connect, the handshake, the welcome, the nick and the
#: joins together.
CONNECT_TIMEOUT = 10.0
#: Time one command may take to leave (a server that stops reading must not hang us).
SEND_TIMEOUT = 10.0
#: Time allowed for the server to answer our close frame on the way out.
CLOSE_TIMEOUT = 2.0
#: Seconds between pings to the server, and how long each may wait for its pong
#: before the connection counts as lost (the server's own defaults).
PING_INTERVAL = 20.0
PING_TIMEOUT = 20.0
#: Events kept for the caller to iterate; beyond that the connection fails with a
#: :class:`ChatError` rather than hang (the server drops a client that stops reading too).
MAX_QUEUED_EVENTS = 1000
#: Largest message accepted from the server: frames of about 64 KiB of batched lines.
MAX_INCOMING_MESSAGE = 1024 * 1024


class ChatError(Exception):
    """Anything that stops the chat: a connection that cannot be made, a refused
    command, a closed connection. ``str()`` is one line saying what happened."""


class CommandFailed(ChatError):
    """The server answered a command with an ``error`` event: ``code`` (``nick_taken``,
    ``no_such_room``... as in docs/protocol.md), ``text``, and the whole ``event``."""

    def __init__(self, event: Event) -> None:
        self.event = event
        self.code = str(event.get("code"))
        self.text = str(event.get("text"))
        super().__init__(f"{self.code}: {self.text}")


async def _fetch_token(provider: TokenProvider) -> str:
    """A token from ``provider`` (awaited if it is async); ChatError if it gives none.
    The token never enters the error's text."""
    token = provider()
    if inspect.isawaitable(token):
        token = await token
    if not isinstance(token, str) or not token:
        raise ChatError("the token provider returned no token (it must return a string)")
    return token


class ChatClosed(ChatError):
    """The connection is closed: ``code`` and ``reason`` of the close (``code`` None
    when it was lost without a close frame)."""

    def __init__(self, code: int | None, reason: str | None) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"connection closed: {describe_close(code, reason)}")


def _closed(closed: ConnectionClosed) -> ChatClosed:
    reason = closed.reason
    return ChatClosed(reason.code if reason else None, reason.reason if reason else None)


@dataclass
class _Answer:
    """The answer a command waits for: its ``ack`` or ``error`` event, or the failure
    that means none will come."""

    done: trio.Event = field(default_factory=trio.Event)
    event: Event | None = None
    failure: ChatError | None = None


class Connection:
    """One ``trio-chat.v1`` connection, made by :func:`connect`.

    :attr:`welcome` is the server's ``welcome`` event; :attr:`nick`, :attr:`rooms` and
    :attr:`room` follow what this connection's acknowledged commands changed (its nick,
    its rooms in the order joined, the current one last). :attr:`session` is the secret
    that resumes its server session after a lost connection. Commands may be sent from
    several tasks at once; events are taken by iterating (by one task, or shared).
    """

    def __init__(
        self,
        ws: WebSocketConnection,
        *,
        max_queued_events: int,
        resuming: str | None = None,
        nursery: trio.Nursery | None = None,
        token: TokenProvider | None = None,
    ) -> None:
        self._ws = ws
        self._resuming = resuming
        # Where a refresh asked by the server runs, and where its new token comes from.
        self._nursery = nursery
        self._token = token
        #: Why the last token refresh failed (the provider's error, or the server's
        #: refusal), None while none did; the server closes with 1008 at the token's exp.
        self.refresh_failure: ChatError | None = None
        self.welcome: Event = {}
        self.nick: str | None = None
        self.rooms: list[str] = []
        self._welcomed = trio.Event()
        self._cid_prefix = secrets.token_hex(4)  # cids unique per connection and nick
        self._cids = itertools.count(1)
        self._answers: dict[str, _Answer] = {}
        self._max_queued_events = max_queued_events
        self._events_in, self._events_out = trio.open_memory_channel[Event](max_queued_events)
        #: Why the connection ended (None while it is open).
        self.closed: ChatError | None = None
        # The ping timeout that a pong missed (the connection was dropped for it).
        self._unanswered: float | None = None

    @property
    def room(self) -> str | None:
        """The current room: where :meth:`say` goes without a ``room``."""
        return self.rooms[-1] if self.rooms else None

    @property
    def session(self) -> str | None:
        """The secret that resumes this connection's server session (``welcome.session``):
        given to :func:`connect` (``session=``) after a lost connection, within the
        server's ``--nick-hold``, it comes back as the same participant, with its nick
        and private messages. Keep it in memory: it must not be logged or stored where
        others can read it. None from a server that gives none."""
        secret = self.welcome.get("session")
        return secret if isinstance(secret, str) else None

    @property
    def resumed(self) -> bool:
        """Whether :func:`connect` was given a session and the server resumed it (else
        an ``invalid_session`` error event follows the welcome, and this connection is a
        new participant with a new :attr:`session`)."""
        return self._resuming is not None and self.session == self._resuming

    # --- events ---------------------------------------------------------------------------

    def __aiter__(self) -> Connection:
        return self

    async def __anext__(self) -> Event:
        """The next event that is not the answer to one of this connection's commands;
        once the connection is closed and every event taken, the iteration ends (or
        raises the :class:`ChatError` that ended it, if the events overflowed).
        Cancellation takes nothing."""
        try:
            return await self._events_out.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            if self.closed is not None and not isinstance(self.closed, ChatClosed):
                raise self.closed from None
            raise StopAsyncIteration from None

    async def _read(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Read every frame until the connection closes: answers go to the commands
        waiting for them, other events to the iteration. Owns the sending end of the
        events; at the end, fails every command still waiting. Cancellation ends it."""
        task_status.started()
        try:
            while True:
                message = await self._ws.get_message()
                if isinstance(message, str):
                    for line in message.split("\n"):
                        self._take(line)
                if self.closed is not None:  # the events overflowed
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await self._ws.aclose(CloseCode.POLICY_VIOLATION, "events not read")
                    return
        except ConnectionClosed as closed:
            if self._unanswered is not None:
                self.closed = ChatClosed(
                    CloseCode.ABNORMAL_CLOSURE,
                    f"no answer to a ping within {self._unanswered:g} s",
                )
            else:
                self.closed = _closed(closed)
        finally:
            if self.closed is None:  # cancelled: the connection is being torn down
                self.closed = ChatClosed(None, None)
            self._events_in.close()
            self._welcomed.set()
            for answer in self._answers.values():
                answer.failure = self.closed
                answer.done.set()

    async def _keep_alive(self, interval: float, pong_within: float, stream: ClientStream) -> None:
        """Ping the server every ``interval`` seconds; when a pong does not come within
        ``pong_within`` seconds (0: however late), drop the connection (close ``stream``, which the
        block owns: the reader then ends the iteration with a ChatClosed saying why).
        Ends when the connection closes; cancellation ends it between pings."""
        while self.closed is None:
            await trio.sleep(interval)
            with trio.move_on_after(pong_within or math.inf) as waiting:
                try:
                    await self._ws.ping()
                except ConnectionClosed:
                    return
            if waiting.cancelled_caught:
                self._unanswered = pong_within
                await trio.aclose_forcefully(stream)
                return

    def _take(self, line: str) -> None:
        """Route one line: an answer to its command, anything else to the iteration."""
        try:
            event = json.loads(line)
        except (ValueError, RecursionError):  # nested deeper than the decoder recurses too
            return  # not JSON: the server never sends it, nothing can be done with it
        if not isinstance(event, dict) or self.closed is not None:
            return
        kind, cid = event.get("type"), event.get("cid")
        if not self._welcomed.is_set() and kind == "welcome":
            self.welcome = event
            self._follow(event)
            self._welcomed.set()
            return
        if kind == "refresh" and self._token is not None and self._nursery is not None:
            self._nursery.start_soon(self._refresh)
            return
        answer = self._answers.get(cid) if isinstance(cid, str) else None
        if kind in ("ack", "error") and answer is not None:
            if kind == "ack":
                self._follow(event)
            answer.event = event
            answer.done.set()
            return
        try:
            self._events_in.send_nowait(event)
        except trio.WouldBlock:
            self.closed = ChatError(
                f"more than {self._max_queued_events} events were left unread: iterate "
                "the connection (async for event in chat), or connect with a larger "
                "max_queued_events"
            )

    def _follow(self, event: Event) -> None:
        """Track this connection's nick and rooms from a ``welcome`` or one of its acks."""
        kind, command, room = event.get("type"), event.get("command"), event.get("room")
        if kind == "welcome":
            self.nick = event.get("nick")
            rooms = event.get("rooms")
            if isinstance(rooms, list):
                self.rooms = [name for name in rooms if isinstance(name, str) and name != room]
            if isinstance(room, str):
                self.rooms.append(room)
        elif command == "nick" and isinstance(event.get("nick"), str):
            self.nick = event["nick"]
        elif command == "join" and isinstance(room, str):
            self.rooms = [name for name in self.rooms if name != room] + [room]
        elif command == "leave" and isinstance(room, str):
            current = event.get("current")
            self.rooms = [name for name in self.rooms if name not in (room, current)]
            if isinstance(current, str):
                self.rooms.append(current)

    async def _refresh(self) -> None:
        """Answer the server's ``refresh`` event: a new token from the provider, sent as
        a ``refresh`` command. A failure is kept in :attr:`refresh_failure` (the server
        will close the connection when the token expires); cancellation ends it."""
        assert self._token is not None
        try:
            await self.send(Refresh(await _fetch_token(self._token)))
        except ChatError as error:
            self.refresh_failure = error
        except Exception as error:  # the caller's provider: kept, never our task's end
            self.refresh_failure = ChatError(f"the token provider failed: {type(error).__name__}")
        else:
            self.refresh_failure = None

    # --- commands -------------------------------------------------------------------------

    async def send(self, command: Command) -> Event:
        """Send ``command`` and return its ``ack``. Raises :class:`CommandFailed` on an
        ``error``, :class:`ChatClosed` when the connection closes first.

        The command leaves within :data:`SEND_TIMEOUT` under a shield (a frame cut in
        half would break the connection); cancelled while waiting for the answer, the
        command may still have been carried out, and its answer is dropped.
        """
        if self.closed is not None:
            raise self.closed
        cid = f"{self._cid_prefix}-{next(self._cids)}"
        answer = self._answers[cid] = _Answer()
        try:
            await self._send_line(command_to_json(command, cid))
            await answer.done.wait()
        finally:
            del self._answers[cid]
        if answer.failure is not None:
            raise answer.failure
        assert answer.event is not None
        if answer.event["type"] == "error":
            raise CommandFailed(answer.event)
        return answer.event

    async def _send_line(self, line: str) -> None:
        with trio.CancelScope(shield=True):
            try:
                with trio.fail_after(SEND_TIMEOUT):
                    await self._ws.send_message(line)
            except ConnectionClosed as closed:
                raise _closed(closed) from None
            except trio.TooSlowError:
                raise ChatError(
                    f"the server took more than {SEND_TIMEOUT:g} s to take a command"
                ) from None

    async def say(self, text: str, room: str | None = None) -> Event:
        """Say ``text`` in ``room`` (one of ours; default: the current room); the ack
        (``id``, ``room``)."""
        return await self.send(Say(text, room))

    async def me(self, text: str, room: str | None = None) -> Event:
        """An action (``nick * waves``) in ``room`` or the current room; the ack."""
        return await self.send(Say(text, room, action=True))

    async def private(self, to: str, text: str) -> Event:
        """A private message to the nick ``to`` (needs a nick of our own); the ack."""
        return await self.send(Private(to, text))

    async def set_nick(self, nick: str) -> Event:
        """Take ``nick`` (:class:`CommandFailed` ``nick_taken`` if someone has it)."""
        return await self.send(Nick(nick))

    async def join(self, room: str) -> Event:
        """Join ``room`` (created if new) and make it current; the ack (``members``...)."""
        return await self.send(Join(room))

    async def leave(self, room: str | None = None) -> Event:
        """Leave ``room`` (default: the current one); the ack names the new current room."""
        return await self.send(Leave(room))

    async def who(self, room: str | None = None) -> Event:
        """Who is in ``room`` (default: the current one); the ack (``members``...)."""
        return await self.send(Who(room))

    async def list_rooms(self) -> Event:
        """Every room with its member count and topic; the ack (``rooms``)."""
        return await self.send(ListRooms())

    async def topic(self, text: str | None = None, room: str | None = None) -> Event:
        """Set the topic of ``room`` (``""`` clears it), or with no ``text`` ask for it."""
        return await self.send(Topic(room, text))

    async def history(
        self, room: str | None = None, before: int | None = None, limit: int = 50
    ) -> Event:
        """Page back: the ack's ``messages`` are the last ``limit`` stored in ``room``
        with an id below ``before``, oldest first."""
        return await self.send(History(room, before, limit))

    async def quit(self, reason: str | None = None) -> Event:
        """Leave the chat (our rooms see ``reason``); the server then closes with 1000."""
        return await self.send(Quit(reason))

    async def aclose(self) -> None:
        """Close with 1000 and wait (at most :data:`CLOSE_TIMEOUT`, shielded) for the
        server's answer. Idempotent; the reader then ends the iteration."""
        with trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT):
            await self._ws.aclose(CloseCode.NORMAL_CLOSURE)


@asynccontextmanager
async def connect(
    url: str,
    *,
    nick: str | None = None,
    rooms: Sequence[str] = (),
    session: str | None = None,
    since: int | None = None,
    connect_timeout: float = CONNECT_TIMEOUT,
    max_queued_events: int = MAX_QUEUED_EVENTS,
    login: tuple[str, str] | None = None,
    token: TokenProvider | None = None,
    cafile: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    ping_interval: float = PING_INTERVAL,
    ping_timeout: float = PING_TIMEOUT,
) -> AsyncIterator[Connection]:
    """Connect to the trio_chat server at ``url`` (``ws://`` or
    ``wss://HOST[:PORT][/PATH]``), take ``nick`` and join ``rooms`` in order (the last
    one is current), all within ``connect_timeout`` seconds; the :class:`Connection` for
    the block.

    A ``wss://`` server's certificate is verified against the system's CAs, or those in
    ``cafile`` (PEM), or by ``ssl_context`` (give one or the other, for a ``wss://``
    URL only).

    ``session`` (an earlier connection's :attr:`Connection.session`) resumes that
    session: the same participant, its nick and rooms back (see
    :attr:`Connection.resumed`); with ``since`` (the last message id seen) every message
    missed after it is replayed first, its private messages included.

    On a server that requires a login, give ``login=(name, password)`` for an account,
    or ``token=provider`` for a token another application signs: a callable, plain or
    async, called now and whenever the server asks for a new token. A wrong password
    or a bad token is a refused handshake (:class:`ChatError` naming HTTP 401).

    The connection pings the server every ``ping_interval`` seconds (0: never); a pong
    that has not come ``ping_timeout`` seconds later (0: no limit) drops it as lost: the
    iteration ends, and commands raise, with :class:`ChatClosed` (code 1006, reason
    ``no answer to a ping within N s``).

    Raises :class:`ChatError` when the connection cannot be made (no server, a refused
    handshake, a certificate that is not valid, a server that does not speak
    ``trio-chat.v1``, a timeout) and :class:`CommandFailed` when the nick is taken or a
    room cannot be joined. An exception from the block comes out as it is, not in an
    exception group. Error texts show ``url`` without its query or credentials.

    On the way out the connection is closed with 1000 (shielded, within
    :data:`CLOSE_TIMEOUT`), both reader tasks are cancelled and the TCP stream closed.
    """
    if login is not None and token is not None:
        raise ValueError("give login or token, not both")
    shown = redact_url(url)
    try:
        server = parse_url(url)
        if (cafile is not None or ssl_context is not None) and not server.tls:
            raise ClientError(f"{shown}: cafile and ssl_context are for a wss:// URL")
        if cafile is not None and ssl_context is not None:
            raise ClientError("give cafile or ssl_context, not both")
        if server.tls and ssl_context is None:
            ssl_context = client_ssl_context(cafile)
        resource = server.resource
        if session is not None or since is not None:
            resource = resume_resource(resource, since=since, session=session)
        with trio.fail_after(connect_timeout):
            headers = authorization(login, None if token is None else await _fetch_token(token))
        stream = await open_stream(url, server, ssl_context, connect_timeout)
    except ClientError as error:
        raise ChatError(str(error)) from None
    except trio.TooSlowError:
        raise ChatError(f"Could not connect to {shown}: the token provider timed out") from None
    host = server.host
    failure: ChatError | None = None
    raised: BaseException | None = None
    rejected: ConnectionRejected | None = None
    try:
        async with trio.open_nursery() as nursery:
            chat: Connection | None = None
            try:
                with trio.fail_after(connect_timeout):
                    chat = await _start(
                        nursery,
                        stream,
                        host=host,
                        resource=resource,
                        url=url,
                        max_queued_events=max_queued_events,
                        resuming=session,
                        headers=headers,
                        token=token,
                    )
                    if ping_interval:
                        nursery.start_soon(chat._keep_alive, ping_interval, ping_timeout, stream)
                    if nick is not None:
                        await chat.set_nick(nick)
                    for room in rooms:
                        await chat.join(room)
            except ChatError as error:
                failure = error
            except trio.TooSlowError:
                failure = ChatError(f"Could not connect to {shown}: timed out")
            if chat is not None and failure is None:
                try:
                    yield chat
                except BaseException as exc:  # the block's own: raised as it is, below
                    raised = exc
            if chat is not None:
                await chat.aclose()
            nursery.cancel_scope.cancel()
    except* ConnectionRejected as group:
        refusal = group.exceptions[0]
        assert isinstance(refusal, ConnectionRejected)
        rejected = refusal
    except* HandshakeError:
        failure = ChatError(f"Could not connect to {shown}: handshake failed")
    finally:
        await trio.aclose_forcefully(stream)
    # Raised out here, not in the except* clauses (on Python 3.11.0-3.11.3 an exception
    # raised there comes out wrapped in a group).
    if raised is not None:
        raise raised
    if rejected is not None:
        raise ChatError(describe_refusal(url, rejected))
    if failure is not None:
        raise failure


async def _start(
    nursery: trio.Nursery,
    stream: ClientStream,
    *,
    host: str,
    resource: str,
    url: str,
    max_queued_events: int,
    resuming: str | None,
    headers: list[tuple[bytes, bytes]],
    token: TokenProvider | None,
) -> Connection:
    """The handshake (its reader task in ``nursery``), our reader task, the welcome."""
    ws = await wrap_client_stream(
        nursery,
        stream,
        host,
        resource,
        subprotocols=[PROTOCOL],
        extra_headers=headers,
        max_message_size=MAX_INCOMING_MESSAGE,
    )
    if ws.subprotocol != PROTOCOL:
        with trio.move_on_after(CLOSE_TIMEOUT):
            await ws.aclose(CloseCode.NORMAL_CLOSURE)
        raise ChatError(f"{redact_url(url)} does not speak {PROTOCOL}")
    chat = Connection(
        ws,
        max_queued_events=max_queued_events,
        resuming=resuming,
        nursery=nursery,
        token=token,
    )
    await nursery.start(chat._read)
    await chat._welcomed.wait()
    if chat.closed is not None:
        raise chat.closed
    return chat
