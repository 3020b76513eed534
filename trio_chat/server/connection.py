"""One client connection: its reader, its writer, and how it closes.

A :class:`ChatConnection` reads in the task that runs it and writes in a task of its
own nursery. The reader takes messages from the WebSocket and hands them to the
:class:`~trio_chat.server.chat.Chat`; the writer is the connection's bus subscriber and the
only task that sends chat frames to this socket. Whatever ends the connection (the
peer, a close request, a slow consumer, a bug), :meth:`ChatConnection.run` finishes by
sending one close frame with the right code, shielded and time-limited, and only then
returns.

A connection the admission left pending (the server requires a login) first runs its
login phase (:meth:`ChatConnection._log_in`): outside the chat, sent nothing unasked,
it may only log in, register, ask for help or quit, within ``login_timeout``. The
``login``, ``register`` and ``refresh`` commands are the connection's to carry out
(it knows its peer, and the server's :class:`~trio_chat.server.admission.Gate`), in the
chat too; a connection logged in with a token has its expiry watched
(:meth:`ChatConnection._watch_token`): a ``refresh`` event ``token_refresh`` seconds
before, and a 1008 ``token expired`` close at the end unless a new token came.

The reader is where a line is accepted, so the flood limits are applied there, once
(:meth:`ChatConnection._read_loop`): every command read (a plain frame of N lines is N)
takes a token of its sender's :class:`~trio_chat.server.limits.Allowance`; without one it
waits in the connection's backlog (fake lag) while the reader goes on reading, so that
pings, pongs and close frames are still answered; a backlog past ``rate_backlog`` gets
``rate_limited`` and a 1008 close. A plain frame over ``max_frame_lines`` lines is
refused whole (``too_many_lines``).
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Final

import trio

from trio_chat.core import render
from trio_chat.core.arrival import Arrival
from trio_chat.core.close import (
    BINARY_NOT_SUPPORTED,
    INTERNAL_ERROR,
    INVALID_TOKEN,
    LOGIN_TIMED_OUT,
    PING_TIMEOUT,
    QUIT_REASON,
    RATE_LIMITED,
    SLOW_CONSUMER,
    TOKEN_EXPIRED,
    CloseCode,
    Departure,
    close_for,
    describe_close,
    fit_reason,
)
from trio_chat.core.commands import (
    CommandError,
    Help,
    Login,
    Quit,
    Refresh,
    Register,
)
from trio_chat.core.events import (
    Ack,
    ErrorEvent,
    Event,
    LoginPrompt,
    TokenRefresh,
    help_ack,
    timestamp,
)
from trio_chat.core.identity import PrincipalKind
from trio_chat.core.wire import PLAIN, Parsed, WireFormat

from .accounts.tokens import VerifiedToken
from .admission import Admit, Gate, PendingLogin
from .bus import Instruction, Subscription
from .chat import LOBBY, Chat, Member
from .config import ServerConfig
from .limits import Allowance, Allowances, is_costly
from .logfold import LogFold
from .net.addresses import address_key, in_networks
from .net.seam import Address, ChatSocket
from .replay import Replayer

__all__ = ["HEARTBEAT_STEP", "UNKNOWN_PEER", "ChatConnection", "Heartbeat", "describe_peer"]

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


@dataclass(frozen=True, slots=True)
class _Outside:
    """The viewer of a connection not in the chat yet (its login phase)."""

    key: int
    wire: WireFormat
    current_room: str = LOBBY


@dataclass(eq=False, slots=True)
class _TokenWatch:
    """The login token a connection holds, and the event that wakes its watcher when a
    ``refresh`` replaces it. Made only for connections that log in with a token."""

    token: VerifiedToken
    renewed: trio.Event = field(default_factory=trio.Event)

    def renew(self, token: VerifiedToken) -> None:
        self.token = token
        self.renewed.set()
        self.renewed = trio.Event()


class _Waiting(enum.Enum):
    """What one command of the login phase leaves to do when it did not log in."""

    #: Go on waiting for a login (the command was answered).
    GO_ON = "go on"
    #: Close the connection (its close code is set): a quit, a bad token.
    CLOSE = "close"


#: The command that logged a connection in (``login`` or ``register``) and its cid.
_LoginAnswer = tuple[str, str | int | None]


def _login_kind(command: Login | Register) -> str:
    return "register" if isinstance(command, Register) else "login"


def _expiry(token: VerifiedToken) -> str:
    """When ``token`` expires, as events write times."""
    return timestamp(datetime.fromtimestamp(token.expires, UTC))


class _HeartbeatStep(Instruction):
    """The instruction the heartbeat queues for a writer: take a heartbeat step."""

    __slots__ = ()


#: Queued for each connection's writer at every tick of the server's :class:`Heartbeat`.
HEARTBEAT_STEP: Final = _HeartbeatStep()


class Heartbeat:
    """The server's heartbeat clock: one task (:meth:`run`) that ticks every ``period``
    seconds and queues :data:`HEARTBEAT_STEP` for every connection's writer, in line
    with its events; each writer then pings, or closes a client whose ping went
    unanswered (:meth:`ChatConnection._heartbeat_step`). No task per ping or per
    connection, and nothing on the fan-out path: a deadline on every writer's wait for
    its next batch was measured at half a microsecond per delivery.

    The period is the shorter of ``interval`` and ``timeout``; both are counted in
    ticks of it, so a dead peer is closed within interval + timeout (exactly, with the
    defaults of 20 s each; rounded to the tick otherwise).
    """

    __slots__ = ("interval_ticks", "period", "tick", "timeout_ticks")

    def __init__(self, interval: float, timeout: float) -> None:
        if not interval > 0:
            raise ValueError("a heartbeat needs an interval above 0")
        self.period = min(interval, timeout) if timeout else interval
        #: Ticks between pings, and ticks a ping may wait for its pong (0: however long).
        self.interval_ticks = max(1, round(interval / self.period))
        self.timeout_ticks = max(1, round(timeout / self.period)) if timeout else 0
        #: Ticks so far.
        self.tick = 0

    async def run(self, connections: Mapping[int, ChatConnection]) -> None:
        """Tick every period, for ``connections`` (the server's open ones), until
        cancelled. Never waits on a connection."""
        start = trio.current_time()
        while True:
            await trio.sleep_until(start + (self.tick + 1) * self.period)
            self.tick += 1
            for connection in list(connections.values()):
                connection.heartbeat_due()


class ChatConnection:
    """A connected client, from accepted handshake to sent close frame."""

    __slots__ = (
        "_admission",
        "_allowance",
        "_allowances",
        "_arrival",
        "_chat",
        "_close_code",
        "_close_reason",
        "_close_requested",
        "_closed",
        "_config",
        "_finished",
        "_flooded",
        "_gate",
        "_heartbeat",
        "_io_scope",
        "_log_fold",
        "_ping_tick",
        "_stream_broken",
        "_subscription",
        "_token_watch",
        "_unanswered",
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
        gate: Gate | None = None,
        admission: Admit | PendingLogin | None = None,
        heartbeat: Heartbeat | None = None,
        allowances: Allowances | None = None,
        log_fold: LogFold | None = None,
    ) -> None:
        self.key = key
        # The server's folding of repeated log lines (a flood of floods writes one line
        # and a count); None: every line written.
        self._log_fold = log_fold
        # The server's heartbeat clock (None: no pings), and the tick of this
        # connection's last ping (so that the first tick after it arrived pings it).
        self._heartbeat = heartbeat
        self._ping_tick = 0 if heartbeat is None else heartbeat.tick - heartbeat.interval_ticks
        # The flood limits' allowances of the server's principals (shared), and this
        # connection's own while it sends as a guest (made when it first sends).
        self._allowances = (
            allowances
            if allowances is not None
            else Allowances(config.rate_limits, trio.current_time)
        )
        self._allowance: Allowance | None = None
        self._arrival = arrival
        self._gate = gate if gate is not None else Gate(config, None)
        # How the admission let it in: as whom (None: a guest), or pending a login.
        self._admission = admission
        # The token it logged in with, watched for expiry; None for most connections.
        self._token_watch: _TokenWatch | None = None
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
        # Set when the client did not answer a heartbeat: nobody waits for its close.
        self._unanswered = False
        # Set when it is closed for flooding: the server sends its close frame and
        # hangs up, without reading the flood on for the peer's answer.
        self._flooded = False
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
    def socket(self) -> ChatSocket:
        """The client's WebSocket as the seam shows it: what is known of the connection
        (the client's address and scheme, as admitted; the request)."""
        return self._ws

    @property
    def peer(self) -> str:
        """The peer's address as the log writes it (``host:port``, or ``unknown``):
        formatted when a line needs it, not kept by every open connection."""
        return describe_peer(self._ws.peer_address)

    @property
    def stalled(self) -> bool:
        """Whether the writer is waiting for the client's socket to take a frame (the
        client is not reading as fast as it is sent to)."""
        subscription = self._subscription
        return subscription is not None and subscription.stalled_since is not None

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

        A connection admitted pending a login first runs its login phase (outside the
        chat). Owns the reader and writer tasks (and the token watcher, for a token
        login) and the bus subscription; all are gone when this returns. An
        exception in either task is logged with its traceback and closes this
        connection alone with 1011. Cancelling ``run`` abandons the close handshake and
        returns promptly (at most ``shutdown_grace`` seconds for the member's last
        messages to be delivered, and as long again for the close).
        """
        admission = self._admission
        self._admission = None
        arrived: tuple[Member, Subscription] | None = None
        try:
            with self._io_scope:
                login_ack: _LoginAnswer | None = None
                pending: Sequence[Parsed] = ()
                if not isinstance(admission, Admit) and self._resumes_account():
                    admission = Admit()  # the session's secret stands for its login
                if not isinstance(admission, Admit):
                    logged_in = await self._log_in()
                    if logged_in is None:
                        return
                    admission, login_ack, pending = logged_in
                else:
                    self._logged_in(admission)  # at the handshake
                arrived = member, subscription = self._arrive(admission)
                del admission
                if login_ack is not None:
                    # Before the welcome the writer is about to send: the login's answer,
                    # with the nick the principal holds now.
                    await self._send_now(self._login_ack(member, *login_ack))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_loop, subscription)
                    if self._token_watch is not None:
                        nursery.start_soon(self._watch_token, self._token_watch, subscription)
                    for parsed in pending:  # what came after the login in its frame
                        await self._carry_out(member, subscription, parsed, nursery)
                    del pending
                    await self._read_loop(member, subscription, nursery)
                    nursery.cancel_scope.cancel()
        except Exception:
            logger.exception("client #%d (%s) failed", self.key, self.peer)
            self.close_soon(CloseCode.INTERNAL_ERROR, INTERNAL_ERROR)
        finally:
            if arrived is not None:
                member, subscription = arrived
                # What the member said last (still being committed) reaches its rooms
                # before the notice that it left. Bounded: the committer may be stopping.
                with trio.move_on_after(self._config.shutdown_grace, shield=True):
                    await member.window.drained()
                self._chat.leave(member, subscription, resumable=self._may_resume())
            await self._send_close_frame()
            self._finish()

    def _resumes_account(self) -> bool:
        """Whether the URL's ``session=`` names an account's session still open or held:
        its secret then logs the device back in, without the password (the chat resumes
        it on arrival). A token's session needs a valid token all the same."""
        arrival = self._arrival
        if arrival is None or arrival.session is None:
            return False
        session = self._chat.sessions.find(arrival.session)
        return session is not None and session.principal.kind is PrincipalKind.ACCOUNT

    def _arrive(self, admission: Admit) -> tuple[Member, Subscription]:
        """Into the chat as the admission decided: the member and its subscription."""
        arrival = self._arrival
        self._arrival = None  # used once: an open connection keeps no copy of its URL's query
        if admission.token is not None:
            self._token_watch = _TokenWatch(admission.token)
            if (
                admission.token is not None
                and admission.token.rooms
                and not (arrival is not None and arrival.rooms)
            ):
                # A token that limits the rooms starts in the first of them.
                arrival = replace(arrival or Arrival(), rooms=admission.token.rooms[:1])
        member, subscription = self._chat.arrive(
            self.key,
            wire=self.wire,
            disconnect=self._depart,
            queue_depth=self._config.queue_depth,
            on_overflow=self._overflowed,
            arrival=arrival,
            principal=admission.principal,
        )
        peer = self._ws.peer_address
        member.address = None if peer is None else peer.host  # what address bans match
        self._subscription = subscription
        return member, subscription

    def _finish(self) -> None:
        """:meth:`run` is over: say so to whoever waits on :attr:`closed`."""
        self._finished = True
        if self._closed is not None:
            self._closed.set()

    # --- logging in ---------------------------------------------------------------------

    async def _log_in(self) -> tuple[Admit, _LoginAnswer, Sequence[Parsed]] | None:
        """The login phase of a connection that must log in before it is in the chat.

        Reads frames until one logs in (``login``, or ``register`` where open), answering
        ``help`` and refusing anything else with ``login_required``. Returns how it was
        admitted, the command and cid to acknowledge once in the chat, and the rest of
        the frame's commands (plain lines after the ``/login``); None when the
        connection is to close instead (close code set): a ``quit``, a bad token,
        ``login_timeout`` running out, or the peer leaving. Cancelled (a shutdown), it
        returns nothing and the caller closes."""
        with trio.move_on_after(self._config.login_timeout):
            if self.wire is PLAIN:
                # A plain client (websocat, the tutorial's) would otherwise face silence.
                await self._send_now(LoginPrompt(self._login_required_text()))
            while True:
                message = await self._ws.receive()
                if message is None:
                    return None
                if not isinstance(message, str):
                    await self._send_now(ErrorEvent("binary_frame", BINARY_NOT_SUPPORTED))
                    continue
                parsed = self._parse_frame(message)
                for index, item in enumerate(parsed):
                    outcome = await self._before_login(item)
                    if outcome is _Waiting.CLOSE:
                        return None
                    if outcome is not _Waiting.GO_ON:
                        return (*outcome, parsed[index + 1 :])
        logger.info(
            "client #%d (%s) did not log in within %g s",
            self.key,
            self.peer,
            self._config.login_timeout,
        )
        self.close_soon(CloseCode.POLICY_VIOLATION, LOGIN_TIMED_OUT)
        return None

    async def _before_login(self, item: Parsed) -> tuple[Admit, _LoginAnswer] | _Waiting:
        """One command of the login phase: when it logged in, the admission and the
        answer to send once in the chat; else what to do next (its answer sent)."""
        if isinstance(item, CommandError):
            await self._send_now(ErrorEvent(item.code, item.text, item.cid))
            return _Waiting.GO_ON
        command, cid = item
        match command:
            case Login() | Register():
                try:
                    admitted = await self._gate.log_in(command, self._ws.peer_address, self._ws.tls)
                except CommandError as error:
                    await self._send_now(ErrorEvent(error.code, error.text, cid))
                    if error.code == "invalid_token":
                        self.close_soon(CloseCode.POLICY_VIOLATION, INVALID_TOKEN)
                        return _Waiting.CLOSE
                    return _Waiting.GO_ON
                principal = admitted.principal
                peer = self._ws.peer_address
                try:
                    # Banned since the handshake, the address too: a login waits a while.
                    self._chat.check_not_banned(
                        principal=None if principal is None else principal.id,
                        nick=None if principal is None else principal.nick,
                        address=None if peer is None else peer.host,
                    )
                except CommandError as error:
                    # A banned login ends the connection: it may do nothing else.
                    logger.warning(
                        "client #%d (%s) refused: banned login as %s",
                        self.key,
                        self.peer,
                        principal.name if principal is not None else None,
                    )
                    await self._send_now(ErrorEvent(error.code, error.text, cid))
                    self.close_soon(CloseCode.POLICY_VIOLATION, fit_reason(error.text))
                    return _Waiting.CLOSE
                self._logged_in(admitted)
                return admitted, (_login_kind(command), cid)
            case Help():
                await self._send_now(help_ack(cid))
            case Quit():
                await self._send_now(Ack("quit", cid))
                self.close_soon(CloseCode.NORMAL_CLOSURE, QUIT_REASON)
                return _Waiting.CLOSE
            case _:
                text = self._login_required_text()
                await self._send_now(ErrorEvent("login_required", text, cid))
        return _Waiting.GO_ON

    def _login_required_text(self) -> str:
        """How to log in to this server, as ``login_required`` says it."""
        config = self._config
        return render.login_required(
            accounts=config.accounts, registration=config.accounts and config.open_registration
        )

    def _logged_in(self, admitted: Admit) -> None:
        """Log who this connection logged in as (never with what)."""
        principal = admitted.principal
        if principal is not None:
            logger.info(
                "client #%d (%s) logged in as %s %s",
                self.key,
                self.peer,
                principal.kind.value,
                principal.name,
            )

    def _login_ack(self, member: Member, command: str, cid: str | int | None) -> Ack:
        """The answer to a login (or registration) of ``member``: its nick, whether it
        is an admin, and when its token expires (for a token login)."""
        principal = member.principal
        result: dict[str, Any] = {"nick": member.nick, "admin": principal.admin}
        watch = self._token_watch
        if watch is not None:
            result["expires"] = _expiry(watch.token)
        return Ack(command, cid, **result)

    async def _send_now(self, event: Event) -> None:
        """Send ``event`` at once, outside the writer: in the login phase (the member is
        not made yet), or before the writer starts."""
        text = self.wire.render(event, _Outside(self.key, self.wire))
        if text is not None:
            await self._send_frame([text])

    async def _carry_out(
        self, member: Member, subscription: Subscription, item: Parsed, tasks: trio.Nursery
    ) -> None:
        """One command read from a frame: the chat's to carry out, or, for ``login``,
        ``register`` and ``refresh``, this connection's (a token login starts the watch
        on its expiry in ``tasks``, the connection's I/O nursery)."""
        if isinstance(item, CommandError):
            subscription.offer(ErrorEvent(item.code, item.text, item.cid))
            return
        command, cid = item
        if not isinstance(command, Login | Register | Refresh):
            await self._chat.execute(member, command, cid)
            return
        answer: Event
        try:
            if isinstance(command, Refresh):
                answer = self._refresh(command, cid)
            else:
                answer = await self._log_in_member(member, subscription, command, cid, tasks)
        except CommandError as error:
            answer = ErrorEvent(error.code, error.text, cid)
        subscription.offer(answer)

    async def _log_in_member(
        self,
        member: Member,
        subscription: Subscription,
        command: Login | Register,
        cid: str | int | None,
        tasks: trio.Nursery,
    ) -> Ack:
        """A login from a member already in the chat (a guest, with ``--guests``): it
        acts as the account or token subject from now on; a token's expiry is watched
        from a task started in ``tasks``. Raises CommandError."""
        principal = member.known_principal
        if principal is not None and principal.kind is not PrincipalKind.GUEST:
            raise CommandError("already_logged_in", render.already_logged_in(member.nick or ""))
        admitted = await self._gate.log_in(command, self._ws.peer_address, self._ws.tls)
        assert admitted.principal is not None
        self._chat.authenticate(member, admitted.principal)
        self._logged_in(admitted)
        if admitted.token is not None:
            self._token_watch = _TokenWatch(admitted.token)
            tasks.start_soon(self._watch_token, self._token_watch, subscription)
        return self._login_ack(member, _login_kind(command), cid)

    def _refresh(self, command: Refresh, cid: str | int | None) -> Ack:
        """A new token for this connection: same subject, later expiry. Raises
        CommandError (``not_token``, ``invalid_token``)."""
        watch = self._token_watch
        if watch is None:
            raise CommandError("not_token", render.NOT_TOKEN)
        token = self._gate.refresh(command.token, watch.token)
        watch.renew(token)
        return Ack("refresh", cid, expires=_expiry(token))

    async def _watch_token(self, watch: _TokenWatch, subscription: Subscription) -> None:
        """Watch this connection's login token: ``token_refresh`` seconds before it
        expires, ask for a new one (a ``refresh`` event, once per token); when it expires
        with no new one, close with 1008 ``token expired``. A ``refresh`` wakes it to
        count again from the new expiry. Runs until cancelled."""
        assert self._gate.tokens is not None
        clock = self._gate.tokens.clock
        asked_for: float | None = None  # the expiry a new token was asked for
        while True:
            token = watch.token
            now = clock()
            if token.expires <= now:
                logger.info("client #%d (%s): its login token expired", self.key, self.peer)
                self.close_soon(CloseCode.POLICY_VIOLATION, TOKEN_EXPIRED)
                return
            ask_at = token.expires - self._config.token_refresh
            if asked_for != token.expires and ask_at <= now:
                asked_for = token.expires
                seconds = math.ceil(token.expires - now)
                subscription.offer(TokenRefresh(_expiry(token), seconds))
            wake = token.expires if asked_for == token.expires else ask_at
            with trio.move_on_after(wake - now):
                await watch.renewed.wait()

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
        subscription = self._subscription
        logger.warning(
            "client #%d (%s) has %d events queued; closing it as a slow consumer",
            self.key,
            self.peer,
            self._config.queue_depth if subscription is None else subscription.queued,
        )
        self.close_soon(CloseCode.POLICY_VIOLATION, SLOW_CONSUMER)

    def describe_close(self) -> str:
        """How the connection ended, e.g. ``1000 (normal closure)``, for the log."""
        if self._close_requested:
            return describe_close(self._close_code, self._close_reason)
        if self._ws.close_code is None:
            return "not closed"
        return describe_close(self._ws.close_code, self._ws.close_reason)

    def _parse_frame(self, frame: str) -> list[Parsed]:
        """The commands in text ``frame``; one ``too_many_lines`` refusal instead when it
        holds more than ``max_frame_lines`` (nothing of it is carried out)."""
        parsed = self.wire.parse(frame, max_lines=self._chat.max_message_lines)
        cap = self._config.max_frame_lines
        if cap and len(parsed) > cap:
            return [CommandError("too_many_lines", render.too_many_lines(len(parsed), cap))]
        return parsed

    def _allowance_of(self, member: Member) -> Allowance | None:
        """What ``member`` may still send: its principal's allowance for an account or a
        token subject (shared by its devices), its address's for a guest; None when
        nothing limits it (an admin, or no limits set)."""
        allowances = self._allowances
        if not allowances.limits.on:
            return None
        principal = member.known_principal  # never made here for a plain guest
        if principal is not None:
            if principal.admin:
                return None
            if principal.kind is not PrincipalKind.GUEST:
                return allowances.of(principal.id)
        if self._allowance is None:
            self._allowance = self._guest_allowance(allowances)
        return self._allowance

    def _guest_allowance(self, allowances: Allowances) -> Allowance:
        """A guest's allowance: shared by every guest connection from its address (its
        /64 for IPv6; the real client's behind a trusted proxy), so that reconnecting or
        opening more connections buys a flooder nothing; its own when the address is not
        known or is exempt (``--limits-exempt``: local bots and tests)."""
        address = self._ws.peer_address
        if address is None or in_networks(address.host, self._config.limits_exempt):
            return allowances.new()
        return allowances.of(f"address:{address_key(address.host)}")

    async def _read_loop(
        self, member: Member, subscription: Subscription, tasks: trio.Nursery
    ) -> None:
        """Carry out every command the peer sends, within its flood limits, until it
        closes; answer binary frames.

        A command without a token waits in ``backlog`` (fake lag) while this goes on
        reading (the WebSocket answers pings and notes pongs and close frames as it
        reads), until its token comes; past ``rate_backlog`` waiting, the peer gets
        ``rate_limited`` and is closed with 1008 once that is sent."""
        # Made when something waits, and dropped when nothing does: an idle connection's
        # reader would otherwise hold an empty deque (about 600 bytes) for good.
        backlog: deque[Parsed] | None = None
        clock = self._allowances.clock
        bound = self._allowances.limits.backlog
        while True:
            wait = 0.0
            while backlog:
                item = backlog[0]
                allowance = self._allowance_of(member)
                if allowance is not None:
                    costly = not isinstance(item, CommandError) and is_costly(item[0], member.rooms)
                    now = clock()
                    wait = allowance.wait(now, costly)
                    if wait > 0:
                        break
                    allowance.take(now, costly)
                backlog.popleft()
                await self._carry_out(member, subscription, item, tasks)
            if not backlog:
                backlog = None
            if backlog:
                with trio.move_on_after(wait):
                    message = await self._ws.receive()
                    if message is None:
                        return
                    backlog = self._take_in(message, backlog)
            else:
                message = await self._ws.receive()
                if message is None:
                    return
                if self._allowance_of(member) is None:
                    # Nothing limits it: straight through, no backlog kept.
                    await self._carry_all(member, subscription, message, tasks)
                    continue
                backlog = self._take_in(message, backlog)
            if len(backlog) > bound and self._allowance_of(member) is not None:
                await self._rate_limited(member, subscription, len(backlog))
                return

    def _take_in(self, message: str | bytes, backlog: deque[Parsed] | None) -> deque[Parsed]:
        """Queue what ``message`` asks for at the end of ``backlog`` (a new one if None);
        returns the backlog."""
        if backlog is None:
            backlog = deque()
        if isinstance(message, str):
            backlog.extend(self._parse_frame(message))
        else:
            backlog.append(CommandError("binary_frame", BINARY_NOT_SUPPORTED))
        return backlog

    async def _carry_all(
        self, member: Member, subscription: Subscription, message: str | bytes, tasks: trio.Nursery
    ) -> None:
        """Carry out every command of ``message`` at once (nothing limits its sender)."""
        if isinstance(message, str):
            for parsed in self._parse_frame(message):
                await self._carry_out(member, subscription, parsed, tasks)
        else:
            subscription.offer(ErrorEvent("binary_frame", BINARY_NOT_SUPPORTED))

    async def _rate_limited(self, member: Member, subscription: Subscription, waiting: int) -> None:
        """The backlog passed its bound: once what ``member`` said is delivered (at most
        ``shutdown_grace`` seconds), say ``rate_limited``, close with 1008 once what is
        queued for the peer is sent, reading nothing more. Cancelled by the writer once
        it sent everything; returns after ``send_timeout`` seconds otherwise."""
        limits = self._allowances.limits
        message = "client #%d (%s) had %d messages waiting for the rate limit: rate_limited, "
        message += "closing it with 1008"
        if self._log_fold is None:
            logger.warning(message, self.key, self.peer, waiting)
        else:
            address = self._ws.peer_address
            host = self.peer if address is None else address.host
            self._log_fold.log(
                logger,
                logging.WARNING,
                f"{host}: rate_limited, closed with 1008",
                message,
                self.key,
                self.peer,
                waiting,
            )
        with trio.move_on_after(self._config.shutdown_grace):
            await member.window.drained()
        subscription.offer(
            ErrorEvent("rate_limited", render.rate_limited(limits.rate, limits.backlog))
        )
        self._flooded = True
        self.close_soon(CloseCode.POLICY_VIOLATION, RATE_LIMITED, flush=True)
        # Nothing more is read: what it sends meanwhile is its flood. The writer cancels
        # this once everything queued is sent; a writer that found the peer gone cannot,
        # hence the bound.
        await trio.sleep(self._config.send_timeout)

    async def _write_loop(self, subscription: Subscription) -> None:
        """Send queued events, batched into one frame, until cancelled; have the
        connection's :class:`~trio_chat.server.replay.Replayer` carry out the replays
        queued among them (history on join, resume) in line, and leave out the live
        copies of what it replayed. The heartbeat's steps come queued in line too
        (:data:`HEARTBEAT_STEP`, from the server's :class:`Heartbeat`): the writer pings
        or closes (:meth:`_heartbeat_step`), so no task waits per ping."""
        replayer = Replayer(self._chat.log, subscription.viewer, MAX_FRAME_CHARS)
        while True:
            try:
                lines, replay = await subscription.next_batch(MAX_FRAME_CHARS, replayer.live_filter)
            except trio.EndOfChannel:  # closed with flush: everything queued was sent
                self._io_scope.cancel()
                return
            if lines and not await self._send_frame(lines):
                return
            if replay is HEARTBEAT_STEP:
                if not self._heartbeat_step():
                    return
            elif replay is not None and not await replayer.carry_out(replay, self._send_frame):
                return
            # Not kept while waiting for the next batch: an idle connection would hold
            # its last frame's lines and its last replay order.
            del lines, replay

    def heartbeat_due(self) -> None:
        """The server's heartbeat ticked: queue a heartbeat step for the writer, in line
        with the events (nothing while the connection is not in the chat yet: its login
        phase has a timeout of its own)."""
        if self._subscription is not None:
            self._chat.bus.instruct(self.key, HEARTBEAT_STEP)

    def _heartbeat_step(self) -> bool:
        """The writer's heartbeat step at the server heartbeat's tick: close the client
        when its last ping has waited ``ping_timeout`` for its pong (False: the writer
        stops), else send a ping when ``ping_interval`` has passed since the last one.
        Never waits."""
        heartbeat = self._heartbeat
        if heartbeat is None:
            return True
        elapsed = heartbeat.tick - self._ping_tick
        if not self._ws.heartbeat_answered and heartbeat.timeout_ticks:
            if elapsed < heartbeat.timeout_ticks:
                return True
            logger.warning(
                "client #%d (%s) did not answer a ping within %g s; closing it",
                self.key,
                self.peer,
                self._config.ping_timeout,
            )
            self._unanswered = True
            self.close_soon(CloseCode.INTERNAL_ERROR, PING_TIMEOUT)
            return False
        # Without a timeout, pings go out unanswered too: they keep NAT mappings alive.
        if elapsed >= heartbeat.interval_ticks:
            try:
                self._ws.send_heartbeat()
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return False  # the reader finds the connection's end
            self._ping_tick = heartbeat.tick
        return True

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
                # Meanwhile the bus judges this client by how long it has been waiting.
                subscription = self._subscription
                if subscription is not None:
                    subscription.stalled_since = trio.current_time()
                try:
                    with trio.move_on_after(self._config.send_timeout) as drain_scope:
                        await self._ws.flush()
                finally:
                    if subscription is not None:
                        subscription.stalled_since = None
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
        seconds for the peer's answer (not at all for a flooder: its answer would come
        behind its flood), and close the socket. Shielded: runs to its
        deadline even when the connection is being cancelled."""
        if self._stream_broken:
            # The client stopped reading: a close frame could not reach it.
            await self._ws.abort()
            return
        if self._unanswered:
            # The client stopped answering: nobody would answer the close either.
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self._config.shutdown_grace
                if not await self._ws.hang_up(self._close_code, self._close_reason):
                    logger.info(
                        "client #%d (%s): no close frame could be written; dropped",
                        self.key,
                        self.peer,
                    )
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + self._config.shutdown_grace
            await self._ws.aclose(
                self._close_code, self._close_reason, wait_for_peer=not self._flooded
            )
