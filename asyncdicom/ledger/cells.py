"""CSV cells a spreadsheet opens safely: the library, request and report CSV files.

Values come from the PACS (hostile bytes included) and from the batch CSV. A cell that a
spreadsheet would run as a formula (first character ``=``, ``+``, ``-``, ``@``, tab or carriage
return) is prefixed with ``'`` unless it is a plain number (``-12.5`` stays a number: data
scientists sort and plot these columns); ``output.csv_formula_guard: false`` turns the prefix off.
Line breaks inside a value become ``\\n``, which the CSV writer quotes (a bare carriage return
would not be, and readers would split the row); NUL, ESC and the other control characters, and
the marks that change the text's direction (U+202A–U+202E, U+2066–U+2069: ``exe.jpg`` shown
as ``gpj.exe``), become U+FFFD. The SQLite ledger keeps every value as received.
"""

from __future__ import annotations

import re

FORMULA_STARTS = frozenset("=+-@\t\r")
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\u202a-\u202e\u2066-\u2069]")
_BREAK = re.compile("\r\n?")


def cell(value: object, guard: bool = True) -> str:
    """``value`` as a CSV cell a spreadsheet shows and never runs."""
    text = "" if value is None else str(value)
    if not text:
        return text
    if guard and text[0] in FORMULA_STARTS and not _NUMBER.fullmatch(text):
        text = "'" + text
    return _CONTROL.sub("\ufffd", _BREAK.sub("\n", text))


def row(values: list[object], guard: bool = True) -> list[str]:
    return [cell(value, guard) for value in values]
