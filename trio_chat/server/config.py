"""Server settings: :class:`ServerConfig`, and :data:`SETTINGS`, the one table of them.

Every setting the server's command line knows is one :class:`Setting` row here: the
:class:`ServerConfig` field (or, for what belongs to the process, the option's name), the
parser of its text, the metavar, the help text and the environment variable that may
supply it. :mod:`trio_chat.server.cli` builds argparse from the table, and the README's
flag table is generated from it (a test compares the two), so a flag, its default and its
documentation cannot drift apart.

There is one database default: ``db=None``, the file ``history.db`` in the user's data
folder (:func:`trio_chat.server.store.default_db_path`), for the command line and for
``ServerConfig()`` alike. Pass ``db=":memory:"`` to keep messages in memory only.
"""

from __future__ import annotations

import argparse
import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Final, TypeAlias

from trio_chat.core.arrival import DEFAULT_HOST, DEFAULT_PORT
from trio_chat.core.commands import MAX_MESSAGE_LINES, CommandError, valid_name

from .accounts.passwords import DEFAULT_HASH_CONCURRENCY
from .accounts.throttle import DEFAULT_LOCKOUT, DEFAULT_LOGIN_FAILURES
from .limits import RateLimits
from .net.origin import NULL_ORIGIN, normalize_origin, parse_allowed_origin

__all__ = [
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MEMORY",
    "SETTINGS",
    "Network",
    "ServerConfig",
    "Setting",
    "flag_table",
]

#: The ``--db`` value that keeps messages in memory only.
MEMORY: Final = ":memory:"

#: An address block (``--trusted-proxy 10.0.0.0/8``; a single address is a block of one).
Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """What a server was told; immutable once it runs. The defaults are here, and
    :data:`SETTINGS` takes them from here: ``ServerConfig()`` is exactly what
    ``trio-chat-server`` without flags runs."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    #: Largest message accepted from a client, in bytes (UTF-8 for text). Chat lines
    #: are short; a cap well under the usual 1 MiB keeps one client from making the
    #: server buffer (and fan out) megabytes. Over it: close 1009.
    max_message_size: int = 64 * 1024
    #: Lines one JSON message may carry (a message's text may span lines; each is shown
    #: with its sender). A paste is one message; a wall of text is refused.
    max_message_lines: int = MAX_MESSAGE_LINES
    #: Events queued per client before it counts as a slow consumer (close 1008) when it
    #: is not reading (its writer has waited over a second for its socket); a client that
    #: keeps up may have 16 times as many queued (a room's burst published before its
    #: writer's turn). Shallow enough that a stuck client costs little.
    queue_depth: int = 256
    #: Seconds given to closing every connection at shutdown before the rest are dropped.
    shutdown_grace: float = 2.0
    #: Seconds one frame may take to reach a client's socket before the client is
    #: dropped as a slow consumer; a peer that stops reading otherwise blocks forever.
    send_timeout: float = 10.0
    #: Seconds a new TCP connection has to complete its WebSocket handshake.
    handshake_timeout: float = 10.0
    #: Seconds between heartbeat pings to each client (0: none). A peer that vanished
    #: without a FIN (or behind a NAT mapping that expired) is found this way.
    ping_interval: float = 20.0
    #: Seconds a client has to answer a heartbeat ping before it is closed with 1011
    #: (0: pings are sent, to keep NAT mappings alive, but nobody is closed for them).
    ping_timeout: float = 20.0
    #: Open connections allowed at once; the next handshake is refused with 503.
    max_connections: int = 10_000
    #: Open connections one address may hold (IPv6: one /64); the next gets 429. Keeps
    #: one host from taking every place of ``max_connections``. 0: no cap.
    max_connections_per_ip: int = 20
    #: New connections one address may open a minute (in bursts of as many); over it,
    #: 429 with the seconds to wait. 0: no rate.
    connect_rate_per_ip: int = 60
    #: Blocks under no per-address rule (local bots, tests): none by default.
    limits_exempt: tuple[Network, ...] = ()
    #: Handshakes in progress at once (accepted, request not answered yet); past it a new
    #: TCP connection is closed at once, so trickling requests cannot hold every file
    #: descriptor. 0: no cap.
    max_pending_handshakes: int = 512
    #: Handshakes in progress from one TCP peer (IPv6: one /64), trusted proxies and
    #: exempt blocks aside; past it its new connections are closed at once. 0: no cap.
    max_pending_handshakes_per_ip: int = 10
    #: The origin browsers see the server at (``https://chat.example.org``), when the
    #: request's Host and scheme do not say it (behind a proxy); None: from the request.
    public_origin: str | None = None
    #: Origins whose pages may open a WebSocket besides the server's own (``*``: any).
    allow_origin: tuple[str, ...] = ()
    #: Rooms with more members than this get no presence notices: a room of 5,000 must
    #: not cost 25 million join notices. /who still lists everyone.
    presence_limit: int = 100
    #: Password hashes computed at once (argon2id, ~64 MiB and tens of ms each), in
    #: worker threads: a burst of logins waits for them, the chat does not.
    hash_concurrency: int = DEFAULT_HASH_CONCURRENCY
    #: Failed logins of one name from one address before that pair is locked out.
    login_failures: int = DEFAULT_LOGIN_FAILURES
    #: Seconds a locked-out (name, address) pair stays locked.
    login_lockout: float = DEFAULT_LOCKOUT
    #: Account names that are admins while the server runs with them (``--admin NAME``).
    admins: tuple[str, ...] = ()
    #: The admin channel's Unix socket (``trio-chat-server user ...`` talks to it); None:
    #: the default beside the database (:func:`trio_chat.server.control.default_control_socket`),
    #: none for ``--db :memory:``.
    control_socket: str | None = None
    #: Where messages are stored: a SQLite file, ``":memory:"`` to keep them in memory
    #: only, or None for the default file in the user's data folder (the one folder the
    #: server creates when it is missing).
    db: str | None = None
    #: Messages kept per room (and for private messages), oldest dropped first.
    history_limit: int = 10_000
    #: Stored messages a member is sent when it joins a room (0: none).
    history_on_join: int = 50
    #: Seconds a session outlives its connection (0: not at all): meanwhile its secret
    #: resumes it and its nick is held for it. At most ``max_connections`` are held.
    nick_hold: float = 120.0
    #: Require a login with an account (or a token, with a JWT key) before anything else.
    accounts: bool = False
    #: Let anyone create an account with ``register`` (needs ``accounts``).
    open_registration: bool = False
    #: With ``accounts`` or a JWT key: let connections that do not log in chat as guests
    #: (who can never take a registered name) instead of requiring a login.
    guests: bool = False
    #: Take passwords over plain ``ws://`` from other machines too (behind a proxy that
    #: terminates TLS without ``--trusted-proxy``, say). Off: they would travel in clear.
    allow_insecure_auth: bool = False
    #: A PEM public key (RSA: RS256, EC P-256: ES256) that checks login tokens.
    jwt_key: str | None = None
    #: A file holding the shared secret (at least 32 bytes) that checks HS256 tokens.
    jwt_secret_file: str | None = None
    #: Seconds before a token's ``exp`` at which the server asks for a new one.
    token_refresh: float = 30.0
    #: Seconds a connection that must log in has to do so before it is closed (1008).
    login_timeout: float = 30.0

    #: The certificate chain (PEM) served to clients; with :attr:`keyfile`, the server
    #: speaks TLS only (``wss://``). Both or neither.
    certfile: str | None = None
    #: The private key (PEM, not encrypted) of :attr:`certfile`.
    keyfile: str | None = None
    #: Chat lines (and commands) a second one principal may send, sustained; guests count
    #: per address (a /64 for IPv6). Over it they wait (fake lag). 0: no rate limit.
    rate_limit: float = 5.0
    #: Messages one principal may send at once before ``rate_limit`` applies.
    rate_burst: int = 10
    #: Messages waiting for tokens beyond which the connection gets ``rate_limited``
    #: and is closed with 1008: at 5 a second, 50 is ten seconds of lag.
    rate_backlog: int = 50
    #: Lines one plain frame may carry (each is a message); more: the frame is refused
    #: whole (``too_many_lines``). 0: no cap.
    max_frame_lines: int = 50
    #: Costly commands (``/join`` of a new room, ``/nick``, ``/history``) a minute, on
    #: top of ``rate_limit``. 0: no such limit.
    command_rate: float = 20.0
    #: Costly commands one principal may send at once before ``command_rate`` applies.
    command_burst: int = 5
    #: Rooms that may exist at once (the lobby among them); 0: no cap.
    max_rooms: int = 1000
    #: Members one room other than the lobby may hold (the lobby: ``max_connections``);
    #: 0: no cap.
    max_room_members: int = 5000

    #: Peers whose ``X-Forwarded-For`` / ``X-Forwarded-Proto`` or ``Forwarded`` headers
    #: are believed: the reverse proxies in front of the server. Nobody else's are.
    trusted_proxy: tuple[Network, ...] = ()

    @property
    def rate_limits(self) -> RateLimits:
        """The flood limits as :mod:`~trio_chat.server.limits` applies them."""
        return RateLimits(
            rate=self.rate_limit,
            burst=self.rate_burst,
            backlog=self.rate_backlog,
            command_rate=self.command_rate,
            command_burst=self.command_burst,
        )

    def welcome_limits(self) -> dict[str, Any]:
        """The ``limits`` every ``welcome`` announces (0: that limit is off)."""
        return {
            "message_bytes": self.max_message_size,
            "message_lines": self.max_message_lines,
            "frame_lines": self.max_frame_lines,
            **self.rate_limits.announce(),
        }

    @property
    def tokens(self) -> bool:
        """Whether the server takes login tokens (it was given a key to check them)."""
        return self.jwt_key is not None or self.jwt_secret_file is not None

    @property
    def login_required(self) -> bool:
        """Whether a connection must log in before it is in the chat."""
        return (self.accounts or self.tokens) and not self.guests

    def login_problem(self) -> str | None:
        """Why these login settings do not go together, in one line; None when they do."""
        if self.open_registration and not self.accounts:
            return "--open-registration needs --accounts"
        if self.guests and not (self.accounts or self.tokens):
            return "--guests needs --accounts, --jwt-key or --jwt-secret-file (it is the default)"
        return None


# --- parsers: text to value, or argparse.ArgumentTypeError saying why not --------------------


def _text(text: str) -> str:
    return text


def _whole_number(minimum: int, rule: str) -> Callable[[str], int]:
    """A parser of whole numbers of at least ``minimum``; ``rule`` says so when not."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r} {rule}")
        return value

    return parse


_positive_int = _whole_number(1, "must be at least 1")
_non_negative_int = _whole_number(0, "must be 0 or more")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0 seconds")
    return value


def _seconds_or_zero(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number of seconds, 0 or more")
    return value


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a number, 0 or more")
    return value


def _account_name(text: str) -> str:
    try:
        return valid_name(text, "account name")
    except CommandError as error:
        raise argparse.ArgumentTypeError(error.text) from None


def _path(text: str) -> str:
    if not text:
        raise argparse.ArgumentTypeError("the path is empty")
    return text


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _network(text: str) -> Network:
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an IP address or block (ADDRESS or ADDRESS/PREFIX)"
        ) from None


def _public_origin(text: str) -> str:
    origin = normalize_origin(text)
    if origin is None or origin in (NULL_ORIGIN, "file://"):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an origin: SCHEME://HOST[:PORT], e.g. https://chat.example.org"
        )
    return origin


def _allowed_origin(text: str) -> str:
    try:
        return parse_allowed_origin(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in _LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"{text!r} is not one of {', '.join(_LOG_LEVELS)}")
    return level


#: A setting's default, when :class:`ServerConfig` holds it.
_FROM_CONFIG: Final = object()


@dataclass(frozen=True, slots=True)
class Setting:
    """One row of :data:`SETTINGS`: a command-line option and where its value goes."""

    #: The :class:`ServerConfig` field (``server=True``), or the option's name in the
    #: parsed namespace for what belongs to the process (``server=False``).
    field: str
    #: Text to value; raises ``argparse.ArgumentTypeError`` saying why not. None: a switch
    #: (the option takes no value and turns the setting on).
    parse: Callable[[str], object] | None
    metavar: str
    #: What it does, in Markdown (only ``backticks`` and ``**bold**``): the README shows
    #: it as it is, ``--help`` without the marks.
    help: str
    #: The environment variable that supplies the value when the option is absent.
    env: str | None = None
    server: bool = True
    #: The default, for process settings (server settings take ServerConfig's).
    own_default: object = _FROM_CONFIG
    #: How the default reads in --help and the README, when its value does not say it.
    shown_default: str | None = None
    #: The option may be given several times; the value is the tuple of them all.
    repeated: bool = False
    #: The option's name when it is not the field's (``--admin`` for ``admins``).
    option: str | None = None

    @property
    def plain_help(self) -> str:
        """:attr:`help` (Markdown, for the README) as plain text, for ``--help``."""
        return self.help.replace("**", "").replace("`", "")

    @property
    def flag(self) -> str:
        """``--field-name``, or ``--option``."""
        return "--" + (self.option or self.field).replace("_", "-")

    @property
    def default(self) -> object:
        """The value when neither the option nor its environment variable is given."""
        if self.own_default is _FROM_CONFIG:
            return getattr(ServerConfig(), self.field)
        return self.own_default

    def describe_default(self) -> str:
        """The default as documented: ``65536``, ``10``, ``off``..."""
        if self.shown_default is not None:
            return self.shown_default
        value = self.default
        if self.parse is None:
            return "on" if value else "off"
        if self.repeated:
            return ", ".join(map(str, value)) if isinstance(value, tuple) and value else "none"
        if isinstance(value, float):
            return f"{value:g}"
        return str(value)


SETTINGS: Final[tuple[Setting, ...]] = (
    Setting("host", _text, "HOST", "interface to listen on", env="TRIO_CHAT_HOST"),
    Setting(
        "port",
        _port,
        "PORT",
        "TCP port; `0` picks a free one (the log and the ready file say which)",
        env="TRIO_CHAT_PORT",
    ),
    Setting(
        "max_message_size",
        _positive_int,
        "BYTES",
        "largest message accepted from a client, in UTF-8 bytes over all its fragments; "
        "a larger one closes that client with **1009**",
    ),
    Setting(
        "max_message_lines",
        _positive_int,
        "LINES",
        "most lines one JSON message may carry (each shown with its sender's prefix to "
        "plain clients); more is refused with `bad_request`",
    ),
    Setting(
        "queue_depth",
        _positive_int,
        "EVENTS",
        "events queued for a client that is not reading (its writer has waited over 1 s for "
        "its socket to take a frame); past it the client is closed with "
        "**1008 `slow consumer`**. A client that reads is judged by that progress, not by a "
        "burst: it may have 16 times as many queued (200 members sending 5 lines at once "
        "is 1,000 events for each) before the same close",
    ),
    Setting(
        "send_timeout",
        _seconds,
        "SECONDS",
        "time one frame may take to reach a client's socket; past it the client is dropped "
        "as a slow consumer (no close frame can follow a half-sent one)",
    ),
    Setting(
        "handshake_timeout",
        _seconds,
        "SECONDS",
        "time a new TCP connection has to complete the WebSocket handshake",
    ),
    Setting(
        "ping_interval",
        _seconds_or_zero,
        "SECONDS",
        "the server pings every client this often (from the connection's writer, no task "
        "per ping), which finds a peer that vanished without a FIN or behind an expired "
        "NAT mapping; `0` for no pings",
    ),
    Setting(
        "ping_timeout",
        _seconds_or_zero,
        "SECONDS",
        "time a client has to answer a ping; past it the client is closed with "
        "**1011 `ping timeout`** (dropped without a close frame when not even that can be "
        "written), so a dead peer goes within interval + timeout; `0`: never closed for it",
    ),
    Setting(
        "max_connections",
        _positive_int,
        "N",
        "connections open at once; the next handshake is refused with HTTP **503 `server full`**",
    ),
    Setting(
        "max_connections_per_ip",
        _non_negative_int,
        "N",
        "connections one address may hold open (IPv6: one /64; behind `--trusted-proxy`, the "
        "client's address); the next handshake gets HTTP **429** with `Retry-After: 10`; "
        "`0` for no cap",
    ),
    Setting(
        "connect_rate_per_ip",
        _non_negative_int,
        "PER_MINUTE",
        "new connections one address may open a minute, in bursts of as many; past it "
        "HTTP **429** with `Retry-After` (the seconds until the next may come); `0` for no rate",
    ),
    Setting(
        "limits_exempt",
        _network,
        "ADDRESS[/PREFIX]",
        "a block under no per-address limit (`--max-connections-per-ip`, "
        "`--connect-rate-per-ip`, `--max-pending-handshakes-per-ip`): local bots, tests "
        "(repeat for several)",
        shown_default="none",
        repeated=True,
    ),
    Setting(
        "max_pending_handshakes",
        _non_negative_int,
        "N",
        "handshakes in progress at once (accepted, request not answered yet); past it a new "
        "TCP connection is closed at once, unanswered, so trickled requests cannot hold every "
        "file descriptor; `0` for no cap",
    ),
    Setting(
        "max_pending_handshakes_per_ip",
        _non_negative_int,
        "N",
        "handshakes in progress from one TCP peer (IPv6: one /64); past it its new "
        "connections are closed at once, before a byte is read; trusted proxies and "
        "`--limits-exempt` blocks are not capped; `0` for no cap",
    ),
    Setting(
        "public_origin",
        _public_origin,
        "URL",
        "the origin browsers reach the server at (`https://chat.example.org`), when the "
        "request's `Host` and scheme do not say it (behind a proxy); a browser's upgrade "
        "from any other `Origin` gets HTTP **403** unless `--allow-origin` lists it",
        shown_default="from Host",
    ),
    Setting(
        "allow_origin",
        _allowed_origin,
        "ORIGIN",
        "an `Origin` whose pages may open a WebSocket too (`https://app.example`, `null` "
        "for `file://` pages; `*` for any); repeat for several. Requests without `Origin` "
        "(terminal clients, bots) always pass",
        shown_default="none",
        repeated=True,
    ),
    Setting(
        "rate_limit",
        _rate,
        "PER_SECOND",
        "messages (chat lines and commands; a plain frame of N lines is N) one account or "
        "token subject may send a second over all its connections, guests per address "
        "(IPv6: per /64; each guest connection alone from a `--limits-exempt` address); "
        "over it they wait (fake lag) while pings are still answered; `0` for no limit. "
        "Admins are exempt",
    ),
    Setting(
        "rate_burst",
        _positive_int,
        "MESSAGES",
        "messages that may be sent at once before `--rate-limit` applies",
    ),
    Setting(
        "rate_backlog",
        _positive_int,
        "MESSAGES",
        "messages waiting for the rate limit beyond which the client gets `rate_limited` "
        "and is closed with **1008 `rate limited`**",
    ),
    Setting(
        "max_frame_lines",
        _non_negative_int,
        "LINES",
        "lines one plain frame may carry; a frame with more is refused whole with "
        "`too_many_lines`; `0` for no cap",
    ),
    Setting(
        "command_rate",
        _rate,
        "PER_MINUTE",
        "costly commands (`/join` of a room one is not in, `/nick`, `/history`) a minute, "
        "on top of `--rate-limit`; over it they wait too; `0` for no limit",
    ),
    Setting(
        "command_burst",
        _positive_int,
        "COMMANDS",
        "costly commands that may be sent at once before `--command-rate` applies",
    ),
    Setting(
        "max_rooms",
        _non_negative_int,
        "ROOMS",
        "rooms that may exist at once (the lobby included); joining a new one past it is "
        "refused with `too_many_rooms`; `0` for no cap",
    ),
    Setting(
        "max_room_members",
        _non_negative_int,
        "MEMBERS",
        "members a room other than the lobby may hold; joining a full one is refused with "
        "`room_full`; `0` for no cap",
    ),
    Setting(
        "db",
        _path,
        "PATH",
        "the SQLite file that stores every message; `:memory:` keeps them in memory only. "
        "Its folder must exist (only the default one is created). A file in use by another "
        "server, one that is not an SQLite database, or one that cannot be written: one "
        "line, exit status 2",
        shown_default="$XDG_DATA_HOME/trio_chat/history.db (~/.local/share/...)",
    ),
    Setting(
        "history_limit",
        _positive_int,
        "MESSAGES",
        "messages kept per room (and for private messages); the oldest go first",
    ),
    Setting(
        "history_on_join",
        _non_negative_int,
        "MESSAGES",
        "stored messages a client is sent when it joins a room (and on connecting); `0` for none",
    ),
    Setting(
        "certfile",
        _path,
        "FILE",
        "serve TLS (`wss://`) with this certificate chain (PEM; e.g. Let's Encrypt's "
        "`fullchain.pem`); needs `--keyfile`. A file that is missing, unreadable or does not "
        "match the key: one line, exit status 2",
        shown_default="none",
    ),
    Setting(
        "keyfile",
        _path,
        "FILE",
        "the private key of `--certfile` (PEM, not encrypted; e.g. `privkey.pem`)",
        shown_default="none",
    ),
    Setting(
        "trusted_proxy",
        _network,
        "ADDRESS[/PREFIX]",
        "a reverse proxy whose `X-Forwarded-For`/`X-Forwarded-Proto` or `Forwarded` headers "
        "give the client's address and scheme (repeat for several); those headers from any "
        "other peer are ignored",
        shown_default="none",
        repeated=True,
    ),
    Setting(
        "presence_limit",
        _non_negative_int,
        "MEMBERS",
        "rooms with more members than this get no join/leave/nick/quit notices (a room of "
        "5,000 must not cost 25 million notices); `/who` still lists everyone",
    ),
    Setting(
        "nick_hold",
        _seconds_or_zero,
        "SECONDS",
        "how long a JSON client's session outlives its connection: meanwhile its "
        "`welcome.session` secret resumes it (its nick, rooms and private messages) and "
        "nobody else may take its nick; `0` for no holds. Sessions live in memory: a restart "
        "ends them. At most `--max-connections` are held (past it the oldest hold ends)",
    ),
    Setting(
        "hash_concurrency",
        _positive_int,
        "N",
        "account passwords hashed at once (argon2id: about 64 MiB and tens of milliseconds "
        "each), in worker threads; a burst of logins waits for them while the chat goes on",
    ),
    Setting(
        "login_failures",
        _positive_int,
        "N",
        "failed logins of one name from one address before that pair is locked out (each "
        "failure first waits a doubling delay); the name stays open from other addresses",
    ),
    Setting(
        "login_lockout",
        _seconds,
        "SECONDS",
        "how long a locked-out (name, address) pair is refused without checking its password",
    ),
    Setting(
        "admins",
        _account_name,
        "NAME",
        "the account NAME is an admin while the server runs with this flag (repeat it for "
        "more); `trio-chat-server user add --admin` marks one for good",
        repeated=True,
        option="admin",
    ),
    Setting(
        "control_socket",
        _path,
        "PATH",
        "the admin channel's Unix socket (mode 0600, its folder 0700), which "
        "`trio-chat-server user ...` uses while the server runs; removed at a clean exit. "
        "HASH: 12 hex digits of the SHA-256 of the database's absolute path; in the data "
        "folder without `XDG_RUNTIME_DIR`; none for `--db :memory:` unless given",
        shown_default="$XDG_RUNTIME_DIR/trio_chat/control-HASH.sock",
    ),
    Setting(
        "shutdown_grace",
        _seconds,
        "SECONDS",
        "time given at shutdown for every client to answer its 1001 close; "
        "the rest are then dropped",
    ),
    Setting(
        "accounts",
        None,
        "",
        "accounts with passwords: a connection must log in (`/login NAME PASSWORD`, a "
        "`login` command or HTTP Basic) before anything else; manage them with "
        "`trio-chat-server user`",
    ),
    Setting(
        "open_registration",
        None,
        "",
        "with `--accounts`: anyone may create an account (`/register NAME PASSWORD`)",
    ),
    Setting(
        "guests",
        None,
        "",
        "with `--accounts` or a JWT key: connections that do not log in chat as guests, "
        "who can never take a registered name",
    ),
    Setting(
        "allow_insecure_auth",
        None,
        "",
        "take passwords over plain `ws://` from other machines too (they travel in clear "
        "text); otherwise they are refused unless the connection is TLS or from loopback",
    ),
    Setting(
        "jwt_key",
        _path,
        "FILE",
        "a PEM public key (RSA for RS256, EC P-256 for ES256) that checks login tokens "
        "(`Authorization: Bearer`, `?token=`, a `login` command); `exp` and `sub` required",
        shown_default="none",
    ),
    Setting(
        "jwt_secret_file",
        _path,
        "FILE",
        "a file holding the shared secret (at least 32 bytes) that checks HS256 login tokens",
        shown_default="none",
    ),
    Setting(
        "token_refresh",
        _seconds,
        "SECONDS",
        "how long before a login token expires the server sends a `refresh` event; without "
        "a new token by `exp` the connection is closed with **1008 `token expired`**",
    ),
    Setting(
        "login_timeout",
        _seconds,
        "SECONDS",
        "time a connection that must log in has to do so; then it is closed with "
        "**1008 `no login in time`**",
    ),
    Setting(
        "ready_file",
        _path,
        "PATH",
        'once listening, write `{"pid": ..., "urls": [...], "port": ...}` to PATH as JSON '
        "(atomically: complete or absent); removed at a clean exit",
        server=False,
        own_default=None,
        shown_default="none",
    ),
    Setting(
        "no_console",
        None,
        "",
        "do not read operator lines from standard input",
        server=False,
        own_default=False,
    ),
    Setting(
        "log_level",
        _log_level,
        "LEVEL",
        "logging threshold: `DEBUG`, `INFO`, `WARNING` or `ERROR`",
        server=False,
        own_default="INFO",
    ),
)


def _check_table() -> None:
    """Every ServerConfig field has exactly one row: a new field without a flag fails at
    import, not in production."""
    rows = [setting.field for setting in SETTINGS if setting.server]
    config_fields = [field.name for field in fields(ServerConfig)]
    if sorted(rows) != sorted(config_fields):
        raise AssertionError(f"SETTINGS {rows} do not match ServerConfig {config_fields}")


_check_table()


def flag_table() -> list[str]:
    """The README's flag table, as Markdown lines (header included), from :data:`SETTINGS`."""
    lines = ["| flag | default | what it does |", "| --- | --- | --- |"]
    for setting in SETTINGS:
        flag = setting.flag if setting.parse is None else f"{setting.flag} {setting.metavar}"
        default = f"`{setting.describe_default()}`"
        if setting.env is not None:
            default += f" (env `{setting.env}`)"
        lines.append(f"| `{flag}` | {default} | {setting.help} |")
    return lines
