"""Hostile text made harmless, and the rule of names: written once, for every way in.

Whatever a user writes that someone else will read (message lines, actions, private
messages, topics, quit reasons) passes through :func:`clean_line` (one line) or
:func:`clean_text` (a message that may span lines) when its command is parsed, so what
is stored, relayed and replayed is already clean, for plain and JSON clients alike.

**Stripped, not refused.** Characters that could drive a terminal, reorder or hide
text, or break a line where the server did not are removed, and the rest of the text is
kept (a paste with a stray colour code still arrives). Only a text that held something
and holds nothing once cleaned is refused, by the parser (``bad_request``), so that a
sender never gets an ack for a message nobody sees. What goes:

* escape sequences, whole: CSI (``ESC [`` … final byte, or the 8-bit ``U+009B``), OSC,
  DCS, SOS, PM and APC strings (``ESC ]``, ``ESC P``, ``ESC X``, ``ESC ^``, ``ESC _``
  or their 8-bit forms) up to their terminator (BEL or ST) or the end of the line, and
  every other ``ESC`` sequence: ``\\x1b[2K`` and ``\\x1b]0;title\\x07`` leave nothing;
* every other control character (C0, DEL, C1: NUL, BEL, BS, CR...) except tab; the
  separators that some terminals or programs take for a line break (VT, FF, ``U+0085``
  NEL, ``U+2028``, ``U+2029``) become a space, so that words stay apart;
* invisible format characters (Unicode category Cf): bidirectional overrides, embeddings
  and isolates (``U+202A``-``U+202E``, ``U+2066``-``U+2069``), marks (``U+200E``,
  ``U+200F``, ``U+061C``), zero-width spaces and joiners, the BOM, soft hyphens, and so
  on, except what emoji and scripts need: one zero-width joiner or non-joiner between
  two characters (``👩‍💻``; a run of them is one, at the start or end of a line none),
  and the tag characters of a flag (``🏴`` followed by at most
  :data:`MAX_FLAG_TAGS` tags and the cancel tag);
* lone surrogates (``\\ud800`` in JSON), which are not text;
* stacked diacritics ("Zalgo" text): past :data:`MAX_STACKED_MARKS` combining marks in a
  row from the blocks of combining diacritics, the rest of the run, which would spill
  over the lines above and below (and hide their start) in many terminals and browsers.

Only CR and LF break lines (``\\r\\n``, ``\\r`` and ``\\n`` alike): :func:`split_lines`
reads a plain frame's lines, and a JSON message's breaks become ``\\n``.

**Names** (nicknames, room names, account names) are 1 to 32 ASCII letters, digits,
``_``, ``-`` and ``.`` (:data:`NAME_PATTERN`): nothing in them can look like anything
else. Room names are the same and are shown in lower case; a few are reserved
(:data:`RESERVED_ROOMS`) because their ``[room]`` mark would read as another mark.
:data:`RESERVED_NICKS` are the nicknames nobody may take because they name the server,
an anonymous sender or the reader in the plain wording.

Pure: only :mod:`re` and :mod:`unicodedata`.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = [
    "MAX_FLAG_TAGS",
    "MAX_STACKED_MARKS",
    "NAME_PATTERN",
    "RESERVED_NICKS",
    "RESERVED_ROOMS",
    "clean_line",
    "clean_text",
    "name_problem",
    "room_problem",
    "split_lines",
]

#: Nicknames, room names and account names: ASCII letters, digits, ``_``, ``-``, ``.``,
#: 1 to 32 of them. ASCII only, so that no two names can look alike on screen.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_.\-]{1,32}")
#: Nicknames nobody may take (compared case-folded): the operator speaks as "Server",
#: an anonymous sender reads "Someone", and "You" is how a reader sees itself.
RESERVED_NICKS = frozenset({"server", "someone", "you"})
#: Room names nobody may use: a line from a room ``private`` or ``history`` would be
#: marked ``[private]`` or ``[history]``, which are the marks of private messages and
#: replayed ones.
RESERVED_ROOMS = frozenset({"private", "history"})
#: Tag characters kept after a black flag (``🏴``): a subdivision flag needs about six;
#: more is text smuggled out of sight.
MAX_FLAG_TAGS = 8
#: Combining diacritics kept in a row on one character: languages need two or three.
MAX_STACKED_MARKS = 4
_MARK = "[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]"
#: A run of more: the combining diacritics blocks (the ones stacking generators use).
#: Found by a pattern of single classes, which the regex engine scans much faster than
#: a counted repeat.
_TOO_MANY_MARKS = re.compile(_MARK * (MAX_STACKED_MARKS + 1))
_STACKED_MARKS = re.compile(f"({_MARK * MAX_STACKED_MARKS}){_MARK}+")

#: A whole escape sequence, 7-bit or 8-bit: CSI with its parameters, intermediates and
#: final byte (a truncated one too); a control string (OSC, DCS, SOS, PM, APC) up to its
#: terminator (BEL, ST as ``ESC \\`` or ``U+009C``) or the end of the line; any other
#: ``ESC`` with its intermediates and final byte.
_ESCAPE_SEQUENCE = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]?"
    r"|(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)?"
    r"|\x1b[ -/]*[0-~]?"
)
#: Characters some terminals or programs take for a line break: a space instead.
_SEPARATORS = frozenset("\x0b\x0c\x85\u2028\u2029")
ZWNJ, ZWJ = "\u200c", "\u200d"
_JOINERS = ZWNJ + ZWJ
_RUN_OF_JOINERS = re.compile(f"[{_JOINERS}]{{2,}}")
BLACK_FLAG = "\U0001f3f4"
CANCEL_TAG = "\U000e007f"
_TAGS = range(0xE0020, 0xE0080)
_BREAKS = re.compile(r"\r\n|\r|\n")


def split_lines(text: str) -> list[str]:
    """``text`` cut at its line breaks (``\\r\\n``, ``\\r`` or ``\\n``), and nowhere else:
    the other separators are a space once cleaned (:func:`clean_line`)."""
    if "\n" not in text and "\r" not in text:
        return [text]
    return _BREAKS.split(text)


def clean_text(text: str) -> str:
    """A message that may span lines, cleaned: its breaks made ``\\n``, each line cleaned
    by :func:`clean_line`."""
    return "\n".join(clean_line(line) for line in split_lines(text))


def clean_line(line: str) -> str:
    """One line with every escape sequence, control character (but tab), invisible format
    character and lone surrogate removed, and the line-break look-alikes made a space
    (the rules are the module's). A line break in ``line`` is removed too: callers split
    first. Text with nothing to remove comes back as it is, at C speed."""
    if line.isprintable():
        # No control, format, separator (but space) or surrogate character; marks may
        # still be stacked (they are printable).
        if line.isascii() or not _TOO_MANY_MARKS.search(line):
            return line
        return _STACKED_MARKS.sub(r"\1", line)
    if "\x1b" in line or any("\x80" <= char <= "\x9f" for char in line):
        line = _ESCAPE_SEQUENCE.sub("", line)
    kept: list[str] = []
    tags = -1  # tag characters kept after a black flag; -1: not after one
    for char in line:
        if char in "\t ":
            kept.append(char)
            tags = -1
            continue
        if char in _SEPARATORS:
            kept.append(" ")
            tags = -1
            continue
        category = unicodedata.category(char)
        if category == "Cf":
            if char in _JOINERS:
                kept.append(char)
            elif ord(char) in _TAGS and 0 <= tags < MAX_FLAG_TAGS:
                kept.append(char)
                tags = -1 if char == CANCEL_TAG else tags + 1
            continue
        if category in ("Cc", "Cs", "Zl", "Zp"):
            continue
        kept.append(char)
        tags = 0 if char == BLACK_FLAG else -1
    cleaned = "".join(kept)
    if ZWJ in cleaned or ZWNJ in cleaned:
        cleaned = _RUN_OF_JOINERS.sub(lambda run: run.group()[0], cleaned)
        cleaned = _strip_joiners(cleaned)
    return _STACKED_MARKS.sub(r"\1", cleaned)


def _strip_joiners(line: str) -> str:
    """``line`` without joiners that join nothing: at its ends, or beside a space or tab."""
    chars = list(line)
    for index, char in enumerate(chars):
        if char in _JOINERS:
            before = chars[index - 1] if index > 0 else ""
            after = chars[index + 1] if index + 1 < len(chars) else ""
            if before in ("", " ", "\t") or after in ("", " ", "\t", ZWJ, ZWNJ):
                chars[index] = ""
    return "".join(chars)


def name_problem(name: str, what: str) -> str | None:
    """Why ``name`` is not a valid ``what`` (nickname, room name, account name), or None
    when it is: the refusal's text, for the caller's error."""
    if NAME_PATTERN.fullmatch(name):
        return None
    return f"invalid {what} {name!r}: use 1-32 letters, digits, '_', '-' or '.'"


def room_problem(name: str) -> str | None:
    """Why ``name`` is not a valid room name (the name rule, and not reserved), or None."""
    problem = name_problem(name, "room name")
    if problem is None and name.lower() in RESERVED_ROOMS:
        folded = name.lower()
        problem = f"the room name {folded} is reserved: it would read as the [{folded}] mark"
    return problem
