"""Java ``.properties`` files (``Properties.load(Reader)``): lookup tables and legacy scripts.

Each entry remembers the line it started on, so errors can point at it.
"""

from __future__ import annotations

from dataclasses import dataclass

_SEPARATORS = "=:"
_WHITE = " \t\f"
_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


class PropertiesError(ValueError):
    """A malformed ``\\uXXXX`` escape: Java stops loading there (entries so far are kept)."""

    def __init__(self, message: str, line: int, entries: list[Entry]) -> None:
        super().__init__(message)
        self.line = line
        self.entries = entries


@dataclass(frozen=True, slots=True)
class Entry:
    key: str
    value: str
    line: int


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Natural lines joined where a line ends in an odd number of backslashes (the next line's
    leading whitespace dropped); comments and blank lines removed. (first line number, text)."""
    physical = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    out: list[tuple[int, str]] = []
    index = 0
    while index < len(physical):
        start = index
        line = physical[index].lstrip(_WHITE)
        index += 1
        if not line or line[0] in "#!":
            continue
        while True:
            trailing = len(line) - len(line.rstrip("\\"))
            if trailing % 2 == 0 or index >= len(physical):
                if trailing % 2:
                    line = line[:-1]
                break
            line = line[:-1] + physical[index].lstrip(_WHITE)
            index += 1
        out.append((start + 1, line))
    return out


def _unescape(text: str, line: int) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 >= len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u":
            digits = text[i + 2 : i + 6]
            if len(digits) < 4 or any(c not in "0123456789abcdefABCDEF" for c in digits):
                msg = f"malformed \\uxxxx escape on line {line}"
                raise ValueError(msg)
            out.append(chr(int(digits, 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)


def _split_entry(line: str) -> tuple[str, str]:
    i = 0
    while i < len(line):
        char = line[i]
        if char == "\\":
            i += 2
            continue
        if char in _SEPARATORS or char in _WHITE:
            break
        i += 1
    key = line[:i]
    rest = line[i:].lstrip(_WHITE)
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(_WHITE)
    return key, rest


def parse(text: str) -> list[Entry]:
    """Every entry in file order (a later duplicate key wins when put in a dict).
    Raises PropertiesError at a malformed ``\\u`` escape."""
    entries: list[Entry] = []
    for number, line in _logical_lines(text):
        raw_key, raw_value = _split_entry(line)
        try:
            entries.append(Entry(_unescape(raw_key, number), _unescape(raw_value, number), number))
        except ValueError as exc:
            raise PropertiesError(str(exc), number, entries) from None
    return entries
