"""The command line the two peer servers share (peer_server.py, peer_trio_server.py),
and how they say where they listen: the start-up line, and ``--ready-file`` (the same
JSON as trio_chat's, written atomically once listening, removed at exit)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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
    parser.add_argument(
        "--ready-file",
        type=Path,
        metavar="PATH",
        help='once listening, write {"pid": ..., "urls": [...], "port": ...} to PATH as JSON',
    )
    return parser.parse_args(argv)


def announce(host: str, port: int, ready_file: Path | None) -> None:
    """Say where the server listens: the start-up line on stdout, and the ready file
    (written beside itself under a temporary name, then renamed: complete or absent)."""
    url = format_url(host, port)
    print(f"\N{WHITE HEAVY CHECK MARK} Server is running on {url}", flush=True)
    if ready_file is not None:
        content = json.dumps({"pid": os.getpid(), "urls": [url], "port": port}) + "\n"
        temporary = ready_file.with_name(f".{ready_file.name}.{os.getpid()}.tmp")
        temporary.write_text(content, encoding="utf-8")
        temporary.replace(ready_file)


def main(
    description: str,
    run: Callable[[str, int, bool, Path | None], None],
    argv: Sequence[str] | None,
) -> int:
    """Parse the command line and call ``run(host, port, verbose, ready_file)``; a
    listening error is one line on stderr and status 1. The ready file is removed on the
    way out."""
    args = parse_args(description, argv)
    try:
        run(args.host, args.port, args.verbose, args.ready_file)
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.ready_file is not None:
            args.ready_file.unlink(missing_ok=True)
    return 0
