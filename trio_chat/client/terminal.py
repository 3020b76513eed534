"""The client's screen: what the user sees, and how it stays readable.

On a terminal, an incoming line is inserted *above* the line being typed, so a
half-typed message is never broken up (the same ANSI sequence websockets' interactive
client uses: save cursor, insert line, restore). Anywhere else (a pipe, a file) every
line is printed plainly, with no escape codes, and flushed at once so a script can read
it. Text from other people is made safe first: control characters are shown, never
sent to the terminal raw (:meth:`Screen.incoming` does it for a raw line; the renderer
in :mod:`trio_chat.client.view` does it field by field before :meth:`Screen.show`).
"""

from __future__ import annotations

import itertools
import sys
from typing import TextIO

__all__ = ["PROMPT", "Screen", "make_safe"]

PROMPT = "> "

# Every C0 control character, DEL and every C1 control character (U+0080-U+009F)
# becomes its Python escape (``\x1b``): visible, and inert on any terminal.
_CONTROL_ESCAPES = str.maketrans(
    {code: repr(chr(code))[1:-1] for code in itertools.chain(range(32), range(127, 160))}
)


def make_safe(text: str) -> str:
    """``text`` with every control character made visible (``\\x1b``, ``\\x07``...)."""
    return text.translate(_CONTROL_ESCAPES)


class Screen:
    """Writes the client's output to ``stream``; interactive when it is a terminal."""

    def __init__(self, stream: TextIO | None = None, interactive: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout
        self.interactive = self._stream.isatty() if interactive is None else interactive

    def incoming(self, line: str) -> None:
        """Show a line received from the server, made safe."""
        self._write_line(make_safe(line))

    def status(self, text: str) -> None:
        """Show one of the client's own messages (connected, closed, errors)."""
        self._write_line(text)

    def show(self, line: str) -> None:
        """Show a line already rendered for display: every part of it that came from
        outside was made safe by the renderer, and its own escape codes (colour) are
        written as they are."""
        self._write_line(line)

    def prompt(self) -> None:
        """Show the input prompt (on a terminal only)."""
        if self.interactive:
            self._stream.write(PROMPT)
            self._stream.flush()

    def finish(self) -> None:
        """Leave the cursor at the start of a clean line, for the shell."""
        if self.interactive:
            # Carriage return, then erase the prompt line.
            self._stream.write("\r\x1b[K")
            self._stream.flush()

    def _write_line(self, line: str) -> None:
        if self.interactive:
            self._stream.write(
                "\x1b7"  # save the cursor (on the line being typed)
                "\n"  # make sure there is a line below
                "\x1b[A"  # back up to the typing line
                "\x1b[L"  # insert a blank line there, pushing the typing line down
                f"{line}\n"  # print into the blank line
                "\x1b8"  # restore the cursor...
                "\x1b[B"  # ...one line down: on the typing line, at the same column
            )
        else:
            self._stream.write(f"{line}\n")
        self._stream.flush()
