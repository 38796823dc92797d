"""CTP's date arithmetic: its lenient date parser, incrementDate and modifyDate (§8.3–8.4)."""

from __future__ import annotations

import datetime as dt
import re

from asyncdicom.anonymize.java import parse_float, parse_int

_DROP = re.compile(r"[@:T\-\s]")


def lenient(year: int, month: int, day: int) -> dt.date:
    """Java's lenient Gregorian calendar: month 13 rolls into the next year, day 0 is the last
    day of the previous month. Raises ValueError outside years 1–9999."""
    total = year * 12 + (month - 1)
    first = dt.date(total // 12, total % 12 + 1, 1)
    return first + dt.timedelta(days=day - 1)


def parse(text: str) -> dt.date:
    """The date part of a CTP date string (time fields are validated, then ignored).
    Raises ValueError (or IndexError) like the Java parser would throw."""
    s = _DROP.sub("", text)
    if s.startswith("00"):
        s = "19" + s[2:]
    s = s.split("\\", 1)[0]
    year, month, day = parse_int(s[0:4]), parse_int(s[4:6]), parse_int(s[6:8])
    rest = s[8:]
    if rest:
        t = rest.split("&", 1)[0]
        parse_int(t[0:2])
        parse_int(t[2:4])
        if len(t) > 4:
            parse_float(t[4:])
    return lenient(year, month, day)


def _format(original: str, date: dt.date) -> str:
    iso = "-" in original
    sep = "-" if iso else ""
    out = f"{date.year:04d}{sep}{date.month:02d}{sep}{date.day:02d}"
    rest = original[10:] if iso else original[8:]
    return out + rest


def increment(text: str, days: int) -> str:
    """``text`` moved by ``days`` calendar days, formatted like the original."""
    return _format(text, parse(text) + dt.timedelta(days=days))


def modify(text: str, year: int, month: int, day: int) -> str:
    """``text`` with each non-negative field replaced (month 1-based), normalised leniently."""
    date = parse(text)
    return _format(
        text,
        lenient(year if year >= 0 else date.year, month if month >= 0 else date.month, day if day >= 0 else date.day),
    )
