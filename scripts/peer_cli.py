"""The command line the two peer servers share (peer_server.py, peer_trio_server.py)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 8765


def format_url(host: str, port: int) -> str:
    """``ws://host:port``, with an IPv6 address in brackets."""
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"ws://{host}:{port}"


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 to 65535 (0 picks a free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range (0-65535): {port}")
    return port


def parse_args(description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--host", default=DEFAULT_HOST, help=f"interface to listen on (default {DEFAULT_HOST})"
    )
    parser.add_argument(
        "--port",
        type=port_number,
        default=DEFAULT_PORT,
        help=f"port to listen on; 0 picks a free one (default {DEFAULT_PORT})",
    )
    parser.add_argument(
        "--verbose", action="store_true", help="print every received message (slow)"
    )
    return parser.parse_args(argv)


def main(
    description: str, run: Callable[[str, int, bool], None], argv: Sequence[str] | None
) -> int:
    """Parse the command line and call ``run(host, port, verbose)``; a listening error
    is one line on stderr and status 1."""
    args = parse_args(description, argv)
    try:
        run(args.host, args.port, args.verbose)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
