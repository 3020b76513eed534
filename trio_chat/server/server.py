"""The chat server: where connections are accepted, and how the server stops.

``python -m trio_chat.server`` runs :func:`trio_chat.server.cli.main`, which calls
:func:`serve`. The pieces, outside in:

* :class:`ChatServer` listens (``trio.serve_listeners``), accepts, and owns every
  connection's task. Its :meth:`~ChatServer.handle_stream` is the single place a new
  connection enters: any ``trio.abc.Stream`` (TCP, TLS, a memory stream in tests).
  Admission happens there, in this order: the cap on handshakes in progress (before a
  byte is read), the TLS handshake, the HTTP request (RFC 6455's rules), the server's
  state, the :data:`~trio_chat.server.admission.AdmissionCheck` rules (the ``Origin``),
  the URL, the bans, the per-address limits, the credentials.
* :class:`~trio_chat.server.connection.ChatConnection` serves one client (reader + writer).
* :class:`~trio_chat.server.chat.Chat` turns lines into events;
  :class:`~trio_chat.server.bus.Bus` fans them out.

Shutdown (``/quit``, SIGINT, SIGTERM) is not driven by cancellation, because a
cancelled connection cannot send a close frame: the server stops accepting, asks every
connection to close with 1001 concurrently, waits up to ``shutdown_grace`` seconds, and
only then cancels what is left.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import h11
import trio

from trio_chat._version import server_name
from trio_chat.core import render
from trio_chat.core.arrival import Arrival, parse_arrival
from trio_chat.core.close import BANNED, SERVER_FULL, SERVER_SHUTTING_DOWN, CloseCode
from trio_chat.core.redact import redact_quoted, redact_target
from trio_chat.core.wire import WireFormat, negotiate

from .accounts import Accounts, LoginThrottle, Passwords
from .accounts.tokens import TokenVerifier
from .admission import AdmissionCheck, Admit, Gate, PendingLogin, Refuse, origin_refusal
from .chat import Chat
from .config import ServerConfig
from .connection import ChatConnection, Heartbeat, describe_peer
from .console import CONSOLE_HELP, run_console
from .control import ControlOps, close_account, control_socket_for, serve_control
from .history import MessageLog
from .limits import Allowances
from .logfold import LogFold
from .moderation import Ban as BanInForce
from .net.addresses import AddressLimits, Crowded, HandshakeSlots, Throttled
from .net.proxy import forwarded_client
from .net.seam import Address, Request
from .net.stream import ConnectionStream, describe_transport, open_connection_stream
from .net.tls import (
    TLSSetupError,
    answer_plain_http,
    describe_tls_failure,
    is_plain_http,
    server_ssl_context,
)
from .net.websocket import Handshake, Refusal, WebSocket, offered_subprotocols
from .store import describe_db, open_store

__all__ = ["ChatServer", "serve"]

logger = logging.getLogger("trio_chat.server")

Listeners = Sequence[trio.abc.Listener[trio.abc.Stream]]


@dataclass(slots=True)
class _Accepted:
    """A handshake that opened a WebSocket: what the connection is served with, and the
    key its address is counted under (None: not counted), given back when it ends."""

    ws: WebSocket
    arrival: Arrival
    wire: WireFormat
    admission: Admit | PendingLogin
    address_key: str | None


def _host(address: Address | None) -> str:
    """The peer's host as a folded log line names it (its port varies)."""
    return describe_peer(address) if address is None else address.host


def _throttled(throttled: Throttled) -> Refusal:
    """The 429 answer, with ``Retry-After``, of a per-address rule."""
    if throttled.rule == "connections":
        text = render.too_many_connections(throttled.limit)
    else:
        text = render.connecting_too_fast(throttled.limit, throttled.retry_after)
    return Refusal(429, text, (("retry-after", str(throttled.retry_after)),))


class ChatServer:
    """A chat server: :meth:`run` listens and serves until :meth:`shutdown`.

    Everything it does comes from ``config``: where it listens, the limits, TLS
    (``certfile`` and ``keyfile``), and the chat's store and settings (``db``,
    ``history_limit``, ``presence_limit``, ``history_on_join``, ``max_message_lines``,
    ``nick_hold``). Its :attr:`accounts` are kept in the same store; its admin channel
    (:mod:`~trio_chat.server.control`) listens on :attr:`control_socket` while it runs.
    A certificate or key that cannot be used raises
    :class:`~trio_chat.server.net.tls.TLSSetupError` here, before anything listens.
    """

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        # The welcome names the server's version, read from the package metadata: read
        # it now, at start-up. Left to the first welcome, importlib.metadata and the
        # modules it loads (about 1.5 MB) would arrive with the first client, and that
        # client would wait while the metadata is found.
        server_name()
        if (config.certfile is None) != (config.keyfile is None):
            raise TLSSetupError("certfile and keyfile go together: give both, or neither")
        #: The TLS context every accepted stream is wrapped with; None: plain TCP.
        self.ssl_context = (
            None
            if config.certfile is None or config.keyfile is None
            else server_ssl_context(config.certfile, config.keyfile)
        )
        #: Repeated log lines (refusals, store failures) folded into counts.
        self.log_fold = LogFold(clock=trio.current_time)
        self.chat = Chat(
            MessageLog(open_store(config.db, config.history_limit), log_fold=self.log_fold),
            presence_limit=config.presence_limit,
            history_on_join=config.history_on_join,
            max_message_lines=config.max_message_lines,
            nick_hold=config.nick_hold,
            max_held=config.max_connections,
            max_rooms=config.max_rooms,
            max_room_members=config.max_room_members,
            limits=config.welcome_limits(),
        )
        #: The accounts kept with the messages (loaded once the store is open).
        self.accounts = Accounts(
            self.chat.log.store,
            Passwords(config.hash_concurrency),
            LoginThrottle(
                failures=config.login_failures,
                lockout=config.login_lockout,
                clock=trio.current_time,
            ),
            admins=config.admins,
            on_remove=functools.partial(close_account, self.chat),
        )
        self.chat.find_account = self.accounts.get
        #: The admin channel's socket (None: none, for a database in memory).
        #: The flood limits' allowance of every principal that sent lately.
        self.allowances = Allowances(config.rate_limits, trio.current_time)
        self.control_socket = control_socket_for(config.db, config.control_socket)
        #: Who may log in, and how: the handshake's credentials, the login commands.
        #: The keys that check tokens are read here (TokenKeyError when they cannot be).
        tokens = TokenVerifier.from_files(
            jwt_key=config.jwt_key, jwt_secret_file=config.jwt_secret_file
        )
        # Logins use the accounts only with --accounts (the admin channel always may).
        self.gate = Gate(config, tokens, self.accounts)
        #: The rules every handshake passes before its address is counted (in order;
        #: see :data:`~trio_chat.server.admission.AdmissionCheck`).
        self.admission_checks: list[AdmissionCheck] = [
            functools.partial(origin_refusal, config=config)
        ]
        #: Open connections and new ones a minute, per client address.
        self.address_limits = AddressLimits(
            max_connections=config.max_connections_per_ip,
            connect_rate=config.connect_rate_per_ip,
            exempt=config.limits_exempt,
            clock=trio.current_time,
        )
        #: Handshakes in progress, in all and per TCP peer; a proxy carries many clients.
        self.handshakes = HandshakeSlots(
            total=config.max_pending_handshakes,
            per_peer=config.max_pending_handshakes_per_ip,
            exempt=(*config.limits_exempt, *config.trusted_proxy),
        )
        self.connections: dict[int, ChatConnection] = {}
        # The clock of every connection's pings (None: --ping-interval 0).
        self._heartbeat = (
            Heartbeat(config.ping_interval, config.ping_timeout) if config.ping_interval else None
        )
        #: Where the server listens: the address of each socket listener, read from its
        #: socket once it is bound (the port chosen, when asked for port 0).
        self.addresses: list[Address] = []
        self._keys = itertools.count(1)
        self._shutdown_requested = trio.Event()
        self._accepting = True
        #: Set once :meth:`run` has returned: every connection is closed.
        self.stopped = trio.Event()

    @property
    def port(self) -> int:
        """The port of the first listener (the one chosen, when asked for port 0)."""
        if not self.addresses:
            raise RuntimeError("the server is not listening on a socket")
        return self.addresses[0].port

    @property
    def urls(self) -> list[str]:
        """The URL of each socket listener: ``wss://`` when the server speaks TLS,
        ``ws://`` otherwise."""
        scheme = "ws" if self.ssl_context is None else "wss"
        return [f"{scheme}://{address}" for address in self.addresses]

    def shutdown(self) -> None:
        """Ask :meth:`run` to stop: it closes every connection and returns. Idempotent."""
        self._shutdown_requested.set()

    async def reload_certificate(self) -> bool:
        """Read ``certfile`` and ``keyfile`` again (a renewed certificate, say): connections
        accepted from now on get the new one, open ones keep theirs. True when reloaded;
        False, logged, when the server has no certificate or the files cannot be used
        (it goes on with the one it had). The files are read in a worker thread."""
        certfile, keyfile = self.config.certfile, self.config.keyfile
        if certfile is None or keyfile is None:
            logger.warning("no TLS certificate to reload: the server speaks plain TCP")
            return False
        try:
            self.ssl_context = await trio.to_thread.run_sync(server_ssl_context, certfile, keyfile)
        except TLSSetupError as error:
            logger.warning("%s; still serving the certificate loaded before", error)
            return False
        logger.info("reloaded the TLS certificate %s", certfile)
        return True

    async def run(
        self,
        *,
        listeners: Listeners | None = None,
        task_status: trio.TaskStatus[ChatServer] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen, serve until :meth:`shutdown`, close every connection, and return.

        Listens on ``config.host`` and ``config.port``, or, when ``listeners`` are
        given, on those instead (any ``trio.abc.Listener`` of streams; ``config.host``
        and ``config.port`` are then not used). Calls ``task_status.started(self)`` once
        it is listening (:attr:`addresses` is filled in), and its admin channel with it.
        Owns the listeners, the admin channel and every connection's task: none outlives
        this call. Cancelling it is a hard stop that
        drops connections without close frames; :meth:`shutdown` is the clean way.
        """
        try:
            await self._run(listeners, task_status)
        finally:
            # Every count of a folded line is written before the server says it stopped.
            self.log_fold.flush()
            self.stopped.set()

    async def _run(
        self, listeners: Listeners | None, task_status: trio.TaskStatus[ChatServer]
    ) -> None:
        # Bind first: a port clash is then reported as one even when the history file
        # is in use too (by the server that holds the port, usually).
        if listeners is None:
            listeners = await self.open_listeners()
        try:
            await self.chat.log.open()
        except BaseException:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
            raise
        try:
            async with trio.open_nursery() as log_tasks:
                await log_tasks.start(self.chat.log.run)
                try:
                    await self._open_admin(log_tasks)
                except BaseException:
                    for listener in listeners:
                        await trio.aclose_forcefully(listener)
                    raise
                await self._serve(listeners, task_status)
                log_tasks.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await self.chat.log.store.aclose()

    async def _open_admin(self, nursery: trio.Nursery) -> None:
        """Read the accounts, and start the admin channel in ``nursery`` (where it runs
        until cancelled): before the listeners serve, so that once the server is ready,
        so is its control socket."""
        await self.accounts.load()
        if self.config.accounts:
            # The live mapping: a name registered from now on is reserved at once. Only
            # with --accounts: an open chat's nicks are free for anyone to take.
            self.chat.reserved_names = self.accounts.registered()
        await self.chat.load_moderation()
        if self.control_socket is not None:
            ops = ControlOps(self.accounts, self.chat)
            # The default folder is the server's own (named by --control-socket, not).
            own_folder = self.config.control_socket is None
            await nursery.start(
                functools.partial(serve_control, self.control_socket, ops, own_folder=own_folder)
            )

    async def open_listeners(self) -> list[trio.SocketListener]:
        """Bind ``config.host`` and ``config.port`` (every address the host resolves
        to); the caller owns the listeners (:meth:`run` closes those it is given)."""
        return await trio.open_tcp_listeners(self.config.port, host=self.config.host)

    async def _serve(self, listeners: Listeners, task_status: trio.TaskStatus[ChatServer]) -> None:
        """Accept on ``listeners`` until :meth:`shutdown`, then stop accepting (which
        closes them), close every connection with 1001 and return.

        Owns ``listeners`` (closed on the way out, whatever happens) and the handler
        nursery, where every connection's task runs: none outlives this call.
        """
        try:
            self.addresses = [
                Address(*listener.socket.getsockname()[:2])
                for listener in listeners
                if isinstance(listener, trio.SocketListener)
            ]
            async with trio.open_nursery() as handlers:
                async with trio.open_nursery() as accepting:
                    # serve_listeners starts each connection's task in `handlers`, and
                    # pauses and retries when accept() runs out of file descriptors.
                    await accepting.start(
                        functools.partial(
                            trio.serve_listeners,
                            self.handle_stream,
                            list(listeners),
                            handler_nursery=handlers,
                        )
                    )
                    if self._heartbeat is not None:
                        accepting.start_soon(self._heartbeat.run, self.connections)
                    for url in self.urls:
                        logger.info("\N{WHITE HEAVY CHECK MARK} Server is running on %s", url)
                    task_status.started(self)
                    await self._shutdown_requested.wait()
                    # Stop accepting: serve_listeners closes the listeners, so new
                    # connections are refused at once.
                    accepting.cancel_scope.cancel()
                await self._close_all()
                handlers.cancel_scope.cancel()
        finally:
            for listener in listeners:
                await trio.aclose_forcefully(listener)
        self.log_fold.flush()
        logger.info("server stopped")

    async def handle_stream(
        self, stream: trio.abc.Stream, *, peer_address: Address | None = None
    ) -> None:
        """The one place a new connection enters: the cap on handshakes in progress (over
        it the stream is closed at once, unread), TLS (when the server has a
        certificate), its HTTP request, the limits, then the WebSocket until it closes.
        ``stream`` may be any ``trio.abc.Stream``: a plain ``trio.SocketStream`` gets
        the direct write path, any other (a ``trio.SSLStream`` too) a sender task
        (:func:`~trio_chat.server.net.stream.open_connection_stream`).

        Owns ``stream`` and closes it on the way out, whatever happens. An error in
        this connection (ours or a protocol library's) is logged here, closes this
        connection alone, and never reaches the server. Cancelled, it drops the
        connection without a close frame.

        ``peer_address`` is the peer's address when ``stream`` cannot tell it (a memory
        stream in a test, a listener that knows it otherwise).
        """
        key = next(self._keys)
        # Counted before anything is read or a task started: a flood of connections that
        # trickle their requests holds at most the caps' worth of file descriptors.
        address, tls = describe_transport(stream)
        if address is None:
            address = peer_address
        slot = self.handshakes.enter(None if address is None else address.host)
        if isinstance(slot, Crowded):
            self._log_crowded(address, slot)
            await trio.aclose_forcefully(stream)
            return
        tls_stream: trio.SSLStream[trio.abc.Stream] | None = None
        if self.ssl_context is not None:
            # https_compatible: the peer may close without a TLS close_notify (browsers
            # do), which then reads as the end of the stream, not as an attack.
            stream = tls_stream = trio.SSLStream(
                stream, self.ssl_context, server_side=True, https_compatible=True
            )
            tls = True
        try:
            async with open_connection_stream(stream) as connection_stream:
                try:
                    accepted = await self._handshake(connection_stream, address, tls, tls_stream)
                finally:
                    self.handshakes.leave(slot)
                if accepted is None:
                    return
                address_key = accepted.address_key
                try:
                    connection = ChatConnection(
                        accepted.ws,
                        key,
                        self.chat,
                        config=self.config,
                        wire=accepted.wire,
                        arrival=accepted.arrival,
                        gate=self.gate,
                        admission=accepted.admission,
                        heartbeat=self._heartbeat,
                        allowances=self.allowances,
                        log_fold=self.log_fold,
                    )
                    # Not kept while the connection runs (the connection uses its arrival
                    # once, as it joins the chat): about 120 bytes per open connection.
                    del accepted
                    await self._serve_connection(connection, address)
                finally:
                    self.address_limits.release(address_key)
        except Exception:
            logger.exception("connection #%d (%s) failed", key, describe_peer(address))
        finally:
            self.handshakes.leave(slot)  # if the handshake never began

    async def _serve_connection(self, connection: ChatConnection, address: Address | None) -> None:
        """Serve ``connection`` until it closes, listed in :attr:`connections` meanwhile,
        and log its coming and going (``address``: its TCP peer, named too when a trusted
        proxy forwarded it)."""
        key, wire = connection.key, connection.wire
        self.connections[key] = connection
        # Behind a proxy, the proxy it came through too.
        tcp_peer = describe_peer(address)
        via = "" if connection.peer == tcp_peer else f" via {tcp_peer}"
        logger.info(
            "\N{WHITE HEAVY CHECK MARK} Client #%d connected from %s%s%s",
            key,
            connection.peer,
            via,
            f" ({wire.subprotocol})" if wire.subprotocol else "",
        )
        # Summaries of folded lines whose window is over come out with the traffic.
        self.log_fold.flush_expired()
        try:
            await connection.run()
        finally:
            del self.connections[key]
            logger.info(
                "\N{CROSS MARK} Client #%d (%s) disconnected: %s",
                key,
                connection.peer,
                connection.describe_close(),
            )
            self.log_fold.flush_expired()

    async def _handshake(
        self,
        stream: ConnectionStream,
        address: Address | None,
        tls: bool,
        tls_stream: trio.SSLStream[trio.abc.Stream] | None,
    ) -> _Accepted | None:
        """The accepted WebSocket, the arrival its URL asks for, its wire format and
        its admission; or None when the TLS handshake (``tls_stream``: the stream under
        ``stream``, when the server speaks TLS) failed, the request was refused, or they
        did not complete within ``handshake_timeout`` (each logged in one line)."""
        with trio.move_on_after(self.config.handshake_timeout):
            if tls_stream is not None:
                try:
                    await tls_stream.do_handshake()
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                    failure = describe_tls_failure(exc)
                    self.log_fold.log(
                        logger,
                        logging.INFO,
                        f"{_host(address)}: TLS handshake failed: {failure}",
                        "%s: TLS handshake failed: %s",
                        describe_peer(address),
                        failure,
                    )
                    if is_plain_http(exc):
                        await answer_plain_http(tls_stream.transport_stream)
                    return None
            return await self._answer_request(Handshake(stream), address, tls)
        timeout = self.config.handshake_timeout
        self.log_fold.log(
            logger,
            logging.INFO,
            f"{_host(address)}: no WebSocket handshake within {timeout:g} s",
            "%s: no WebSocket handshake within %g s",
            describe_peer(address),
            timeout,
        )
        return None

    async def _answer_request(
        self, handshake: Handshake, address: Address | None, tls: bool
    ) -> _Accepted | None:
        """Read the connection's HTTP request and answer it: the upgrade, or an HTTP
        status saying why not (None then). A request that is not a valid upgrade is
        refused first (4xx); then the server's state (503); then the
        :attr:`admission_checks` (403 for a page from another origin); then the URL
        (400); then the bans (403); then the per-address limits (429); then its
        credentials (401, or 403 for a password in clear). The connection counted for its
        address by the per-address limits is counted out again when it is refused later."""
        request = await handshake.read_request()
        if request is None:
            return None
        # Who the client is, once, before anything looks at the address: behind a
        # trusted proxy, the one its headers name.
        address, tls = self._admitted_client(request, address, tls)
        refusal = handshake.check(request)
        if refusal is not None:
            await self._refuse(handshake, request, address, refusal)
            return None
        if not self._accepting:
            await self._refuse(handshake, request, address, Refusal(503, SERVER_SHUTTING_DOWN))
            return None
        if len(self.connections) >= self.config.max_connections:
            self.log_fold.log(
                logger,
                logging.WARNING,
                f"{_host(address)} refused: {SERVER_FULL}",
                "%s refused: %d connections open",
                describe_peer(address),
                len(self.connections),
            )
            await handshake.respond(503, SERVER_FULL)
            return None
        seam_request = Request.of(request.target.decode("ascii", "replace"), request.headers)
        for check in self.admission_checks:
            refused = check(seam_request, address, tls)
            if refused is not None:
                refusal = Refusal(refused.status, refused.text, refused.headers)
                await self._refuse(handshake, request, address, refusal)
                return None
        try:
            arrival = parse_arrival(seam_request.target)
        except ValueError as exc:
            await self._refuse(handshake, request, address, Refusal(400, str(exc)))
            return None
        # A banned address, nick or session: refused before anything is counted for its
        # address or any credential is checked.
        ban = self.chat.banned_arrival(None if address is None else address.host, arrival)
        if ban is not None:
            await self._refuse_banned(handshake, request, address, ban)
            return None
        counted = self.address_limits.admit(None if address is None else address.host)
        if isinstance(counted, Throttled):
            await self._refuse(handshake, request, address, _throttled(counted))
            return None
        accepted = None
        try:
            accepted = await self._open_websocket(
                handshake, request, seam_request, arrival, address=address, tls=tls
            )
        finally:
            if accepted is None:
                self.address_limits.release(counted)
        if accepted is not None:
            accepted.address_key = counted
        return accepted

    async def _open_websocket(
        self,
        handshake: Handshake,
        request: h11.Request,
        seam_request: Request,
        arrival: Arrival,
        *,
        address: Address | None,
        tls: bool,
    ) -> _Accepted | None:
        """The last steps of :meth:`_answer_request`: the credentials, then the 101
        answer; None when they are refused (answered and logged) or the peer left."""
        admission = await self.gate.admit(seam_request, address, tls)
        if isinstance(admission, Refuse):
            refusal = Refusal(admission.status, admission.text, admission.headers)
            await self._refuse(handshake, request, address, refusal)
            return None
        if isinstance(admission, Admit) and admission.principal is not None:
            # Who the credentials name (an account, a token's subject), and its nick.
            principal = admission.principal
            ban = self.chat.moderation.banned(principal=principal.id, nick=principal.nick)
            if ban is not None:
                await self._refuse_banned(handshake, request, address, ban)
                return None
        # The JSON subprotocol when the client offers it; plain text otherwise.
        wire = negotiate(offered_subprotocols(request))
        ws = await handshake.accept(
            request,
            subprotocol=wire.subprotocol,
            max_message_size=self.config.max_message_size,
            peer_address=address,
            tls=tls,
        )
        return None if ws is None else _Accepted(ws, arrival, wire, admission, None)

    async def _refuse_banned(
        self, handshake: Handshake, request: h11.Request, address: Address | None, ban: BanInForce
    ) -> None:
        """Refuse a banned client with 403 ``banned``, in one log line naming the ban
        (folded with its repeats)."""
        refusal = Refusal(403, BANNED)
        method = request.method.decode("ascii", "replace")
        target = redact_target(request.target.decode("ascii", "replace"))
        self.log_fold.log(
            logger,
            logging.WARNING,
            f"{_host(address)}: refused {method} {target}: 403 banned ({ban.target})",
            "%s: refused %s %s: 403 banned (%s)",
            describe_peer(address),
            method,
            target,
            ban.target,
        )
        await handshake.respond(*refusal)

    async def _refuse(
        self,
        handshake: Handshake,
        request: h11.Request,
        address: Address | None,
        refusal: Refusal,
    ) -> None:
        """Answer ``request`` with ``refusal``, and log it in one line (folded with the
        same refusal of the same host, :class:`~trio_chat.server.logfold.LogFold`): the
        method, the target with its query redacted (it may carry a secret:
        ``?session=``, ``?token=``) and the refusal without what it quotes of the
        request; never a header."""
        target = redact_target(request.target.decode("ascii", "replace"))
        method = request.method.decode("ascii", "replace")
        text = redact_quoted(refusal.text)
        self.log_fold.log(
            logger,
            logging.INFO,
            f"{_host(address)}: refused {method} {target}: {refusal.status} {text}",
            "%s: refused %s %s: %d %s",
            describe_peer(address),
            method,
            target,
            refusal.status,
            text,
        )
        await handshake.respond(*refusal)

    def _log_crowded(self, address: Address | None, crowded: Crowded) -> None:
        """One (folded) line for a connection closed unread: too many handshakes in
        progress, in all or from its peer."""
        if crowded.rule == "handshakes":
            # Folded whoever it is from: a flood from many addresses is one kind of line.
            what = f"closed at once: {crowded.limit} handshakes in progress"
            key = what
        else:
            what = f"closed at once: {crowded.limit} handshakes in progress from this address"
            key = f"{_host(address)}: {what}"
        self.log_fold.log(
            logger,
            logging.WARNING,
            key,
            "%s: %s",
            describe_peer(address),
            what,
        )

    def _admitted_client(
        self, request: h11.Request, peer: Address | None, tls: bool
    ) -> tuple[Address | None, bool]:
        """The client's address and whether it reached us over TLS: ``peer`` and ``tls``,
        or, from a ``trusted_proxy``, what its forwarding headers say
        (:func:`~trio_chat.server.net.proxy.forwarded_client`; a malformed header is
        ignored, and logged in one line, folded with its repeats)."""
        if not self.config.trusted_proxy:
            return peer, tls
        forwarding = forwarded_client(request.headers, peer, tls, self.config.trusted_proxy)
        if forwarding.problem is not None:
            self.log_fold.log(
                logger,
                logging.WARNING,
                f"{_host(peer)}: ignored the trusted proxy's headers: {forwarding.problem}",
                "%s: ignored the trusted proxy's headers: %s",
                describe_peer(peer),
                forwarding.problem,
            )
        return forwarding.address, forwarding.tls

    async def _close_all(self) -> None:
        """Close every connection with 1001, concurrently, within ``shutdown_grace``.

        Each connection sends its own close frame from its own task (shielded), so this
        only asks and waits; whatever is still open at the deadline is left to the
        caller's cancellation.
        """
        self._accepting = False
        connections = list(self.connections.values())
        if connections:
            logger.info("closing %d connection(s)", len(connections))
        for connection in connections:
            connection.close_soon(CloseCode.GOING_AWAY, SERVER_SHUTTING_DOWN)
        with trio.move_on_after(self.config.shutdown_grace):
            for connection in connections:
                await connection.closed.wait()


async def serve(
    config: ServerConfig | None = None,
    *,
    console_fd: int | None = None,
    handle_signals: bool = False,
    task_status: trio.TaskStatus[ChatServer] = trio.TASK_STATUS_IGNORED,
    **settings: Any,
) -> None:
    """Run a chat server until it shuts down or this call is cancelled.

    ``config`` (default: ``ServerConfig()``, what ``trio-chat-server`` runs without
    flags) with ``settings`` (any :class:`ServerConfig` field) laid over it:
    ``await serve(port=0, db=":memory:")``. ``task_status.started`` gets the running
    :class:`ChatServer` once it listens (``server.urls``, ``server.port``), so
    ``server = await nursery.start(serve)`` works, and ``server.shutdown()`` is the
    clean stop (every client gets 1001).

    Off unless asked, since a program owns its process: ``handle_signals`` turns SIGINT
    and SIGTERM into a clean shutdown (and, for a server with TLS, SIGHUP into
    :meth:`ChatServer.reload_certificate`); ``console_fd`` runs the operator console on that
    file descriptor (its help printed on stdout), whose ``/quit`` shuts down too.

    Owns the server (its listeners, connections and history store), the signal watcher
    and the console; none outlives this call. Cancelling it is a hard stop that drops
    connections without close frames; the console's blocked read is abandoned.
    """
    if config is None:
        config = ServerConfig()
    if settings:
        config = dataclasses.replace(config, **settings)
    server = ChatServer(config)
    async with trio.open_nursery() as nursery:
        if handle_signals:  # first: a signal during start-up is a clean stop too
            await nursery.start(_watch_signals, server)
        await nursery.start(server.run)
        logger.info("history: %s", describe_db(config.db))
        if console_fd is not None:
            print(CONSOLE_HELP, flush=True)
            nursery.start_soon(run_console, console_fd, server.chat, server.shutdown, _echo)
        task_status.started(server)
        await server.stopped.wait()
        # The server has closed every connection; the watcher and the console's
        # blocked read only need stopping.
        nursery.cancel_scope.cancel()


async def _watch_signals(
    server: ChatServer, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Turn SIGINT and SIGTERM into a clean shutdown (a second signal changes nothing),
    and, when the server speaks TLS, SIGHUP into a reload of its certificate (a renewed
    one, without dropping anybody); started once the signals are caught. Runs until
    cancelled."""
    caught = [signal.SIGINT, signal.SIGTERM]
    if server.ssl_context is not None:
        # Only then: a plain server keeps the usual meaning of SIGHUP (its terminal left).
        caught.append(signal.SIGHUP)
    with trio.open_signal_receiver(*caught) as signals:
        task_status.started()
        async for signum in signals:
            if signum == signal.SIGHUP:
                logger.info("received SIGHUP; reloading the TLS certificate")
                await server.reload_certificate()
                continue
            logger.info("received %s; shutting down", signal.Signals(signum).name)
            server.shutdown()


def _echo(text: str) -> None:
    print(text, flush=True)
