"""The command lines' argument parser: argparse, with a usage error as one line.

argparse answers a bad flag with its whole usage block (13 lines for the server) and
the error at the bottom; people expect what other servers print: one line saying what
is wrong, and where to look. Both command lines (server and client) use
:class:`ArgumentParser`.
"""

from __future__ import annotations

import argparse
from typing import NoReturn

__all__ = ["USAGE_ERROR", "ArgumentParser"]

#: The exit status of a usage error (argparse's, and the shell convention).
USAGE_ERROR = 2


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose usage errors are one line on stderr,
    ``PROG: error: MESSAGE; see --help``, and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``message`` as one line and exit 2 (``--help`` still prints the usage)."""
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}; see --help\n")
