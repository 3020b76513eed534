"""What a ban or a mute names, and for how long: parsed once, for the console, admins'
commands, the control socket and ``trio-chat-server ban``.

A **target** is one of:

* a nickname: ``alice`` (or ``nick:alice``, for a nickname that looks like an address,
  such as ``nick:10.0.0.1``), compared ignoring case;
* an address or a network: ``203.0.113.7``, ``203.0.113.0/24``, ``2001:db8::/48`` (or
  ``ip:...``); a single address is its /32 or /128;
* a principal: ``principal:account:3``, ``principal:token:SUB``, ``principal:guest:HEX``
  (the ids the server logs), or ``account:NAME``, the principal of that account (looked
  up by the server when the ban is made).

A **duration** is a whole number with a unit, ``30s``, ``10m``, ``2h``, ``7d`` or ``1w``
(a bare number is seconds); none means for good.

Pure: :mod:`ipaddress` and :mod:`re` only.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass

from .text import NAME_PATTERN, name_problem

__all__ = [
    "MAX_DURATION",
    "BanKind",
    "BanTarget",
    "describe_duration",
    "is_duration",
    "parse_duration",
    "parse_target",
]

#: The longest duration one may give (ten years): past it, ban for good instead.
MAX_DURATION = 10 * 365 * 86400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"([0-9]{1,10})([smhdw]?)")
#: A principal id as the server makes them: its kind, a colon, up to 256 characters.
_PRINCIPAL = re.compile(r"(account|token|guest):[^\s]{1,256}")


class BanKind(enum.Enum):
    """What a ban names: a nickname, an address (or network), or a principal."""

    NICK = "nick"
    ADDRESS = "address"
    PRINCIPAL = "principal"
    #: ``account:NAME``: resolved to :attr:`PRINCIPAL` by the server before it is kept.
    ACCOUNT = "account"


@dataclass(frozen=True, slots=True)
class BanTarget:
    """A parsed target: ``value`` is the folded nick, the network in its compact form
    (``203.0.113.0/24``), the principal id, or the account name."""

    kind: BanKind
    value: str

    def __str__(self) -> str:
        """The target as the operator writes it, for answers and lists."""
        match self.kind:
            case BanKind.NICK:
                return (
                    self.value if _looks_like_address(self.value) is None else f"nick:{self.value}"
                )
            case BanKind.ADDRESS:
                # One address reads as itself, not as its /32 (or /128).
                full = "/128" if ":" in self.value else "/32"
                return self.value.removesuffix(full)
            case BanKind.PRINCIPAL:
                return f"principal:{self.value}"
        return f"account:{self.value}"


def _looks_like_address(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def parse_target(text: str) -> BanTarget:
    """The target ``text`` names; ValueError with a one-line reason when it names none."""
    kind, colon, rest = text.partition(":")
    if colon and kind == "nick":
        problem = name_problem(rest, "nickname")
        if problem is not None:
            raise ValueError(problem)
        return BanTarget(BanKind.NICK, rest.casefold())
    if colon and kind == "ip":
        text = rest
    elif colon and kind == "principal":
        if not _PRINCIPAL.fullmatch(rest):
            raise ValueError(
                f"invalid principal {rest!r}: give an id the server logs, such as account:3"
            )
        return BanTarget(BanKind.PRINCIPAL, rest)
    elif colon and kind == "account":
        problem = name_problem(rest, "account name")
        if problem is not None:
            raise ValueError(problem)
        return BanTarget(BanKind.ACCOUNT, rest)
    network = _looks_like_address(text)
    if network is not None:
        return BanTarget(BanKind.ADDRESS, network.compressed)
    if colon and kind == "ip":
        raise ValueError(f"invalid address {text!r}: give one such as 203.0.113.7 or 2001:db8::/48")
    if NAME_PATTERN.fullmatch(text):
        return BanTarget(BanKind.NICK, text.casefold())
    raise ValueError(
        f"cannot ban {text!r}: give a nickname, an address or network (203.0.113.0/24), "
        "principal:ID or account:NAME"
    )


def parse_duration(text: str) -> int:
    """Seconds in ``text`` (``30s``, ``10m``, ``2h``, ``7d``, ``1w``; a bare number is
    seconds), at least 1 and at most :data:`MAX_DURATION`; ValueError otherwise."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"invalid duration {text!r}: give one such as 30s, 10m, 2h, 7d or 1w")
    seconds = int(match.group(1)) * _UNITS[match.group(2) or "s"]
    if not 1 <= seconds <= MAX_DURATION:
        raise ValueError(f"invalid duration {text!r}: from 1 second to 10 years")
    return seconds


def is_duration(text: str) -> bool:
    """Whether ``text`` reads as a duration (the optional word after a target)."""
    try:
        parse_duration(text)
    except ValueError:
        return False
    return True


def describe_duration(seconds: int) -> str:
    """``seconds`` in the largest unit that divides it: ``2h``, ``90m``, ``45s``."""
    for unit, size in sorted(_UNITS.items(), key=lambda item: -item[1]):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
