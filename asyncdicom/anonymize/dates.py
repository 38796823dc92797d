"""CTP's date arithmetic: its lenient date parser, incrementDate and modifyDate (§8.3–8.4), on
Java's GregorianCalendar: lenient fields, and the Julian calendar before 1582-10-15 (a lookup
table base date such as ``1/1/70`` is the year 70, which DAT counts in Julian days).

Dates are Julian Day Numbers; years are astronomical (0 is 1 BC), as Java's lenient YEAR is."""

from __future__ import annotations

import re
from typing import NamedTuple

from asyncdicom.anonymize.java import parse_float, parse_int, substring

_DROP = re.compile(r"[@:T\-\s]")
CUTOVER = 2299161  # 1582-10-15, the first Gregorian day in Java's calendar


class Date(NamedTuple):
    year: int
    month: int
    day: int


def _gregorian(year: int, month: int, day: int) -> int:
    a = (14 - month) // 12
    y, m = year + 4800 - a, month + 12 * a - 3
    return day + (153 * m + 2) // 5 + 365 * y + y // 4 - y // 100 + y // 400 - 32045


def _julian(year: int, month: int, day: int) -> int:
    a = (14 - month) // 12
    y, m = year + 4800 - a, month + 12 * a - 3
    return day + (153 * m + 2) // 5 + 365 * y + y // 4 - 32083


def lenient(year: int, month: int, day: int) -> int:
    """The day number of a lenient (year, month, day): month 13 rolls into the next year, day 0
    is the last day of the previous month."""
    total = year * 12 + (month - 1)
    year, month = total // 12, total % 12 + 1
    gregorian = _gregorian(year, month, 1) + day - 1
    if year > 1582 or (year == 1582 and gregorian >= CUTOVER):
        return gregorian
    return _julian(year, month, 1) + day - 1


def civil(number: int) -> Date:
    """The calendar date of a day number (Julian calendar before the cutover)."""
    if number >= CUTOVER:
        a = number + 32044
        b = (4 * a + 3) // 146097
        c = a - 146097 * b // 4
    else:
        b = 0
        c = number + 32082
    d = (4 * c + 3) // 1461
    e = c - 1461 * d // 4
    m = (5 * e + 2) // 153
    return Date(100 * b + d - 4800 + m // 10, m + 3 - 12 * (m // 10), e - (153 * m + 2) // 5 + 1)


def parse(text: str) -> int:
    """The date part of a CTP date string (time fields are validated, then ignored).
    Raises ValueError (or IndexError) like the Java parser would throw."""
    s = _DROP.sub("", text)
    if s.startswith("00"):
        s = "19" + s[2:]
    s = s.split("\\", 1)[0]
    year, month, day = parse_int(substring(s, 0, 4)), parse_int(substring(s, 4, 6)), parse_int(substring(s, 6, 8))
    rest = s[8:]
    if rest:
        t = rest.split("&", 1)[0]
        parse_int(substring(t, 0, 2))
        parse_int(substring(t, 2, 4))
        if len(t) > 4:
            parse_float(substring(t, 4))
    return lenient(year, month, day)


def _format(original: str, number: int) -> str:
    date = civil(number)
    year = date.year if date.year > 0 else 1 - date.year  # Calendar.YEAR counts years of an era
    iso = "-" in original
    sep = "-" if iso else ""
    out = f"{year:04d}{sep}{date.month:02d}{sep}{date.day:02d}"
    rest = original[10:] if iso else original[8:]
    return out + rest


def increment(text: str, days: int) -> str:
    """``text`` moved by ``days`` calendar days, formatted like the original."""
    return _format(text, parse(text) + days)


def modify(text: str, year: int, month: int, day: int) -> str:
    """``text`` with each non-negative field replaced (month 1-based), normalised leniently."""
    date = civil(parse(text))
    return _format(
        text,
        lenient(year if year >= 0 else date.year, month if month >= 0 else date.month, day if day >= 0 else date.day),
    )


def _number(text: str, pos: int, count: int | None) -> tuple[int, int]:
    """One numeric field as SimpleDateFormat reads it (its DecimalFormat: integer only, no
    grouping, an optional ``-``): spaces and tabs before it are skipped; ``count`` limits the
    field to that many characters when the next field abuts it. Raises ValueError."""
    while pos < len(text) and text[pos] in " \t":
        pos += 1
    end = len(text) if count is None else min(len(text), pos + count)
    match = re.match(r"-?[0-9]+", text[pos:end])
    if match is None:
        msg = "no number where the date format wants one"
        raise ValueError(msg)
    return int(match.group(0)), pos + match.end()


def parse_compact(text: str) -> int:
    """``new SimpleDateFormat("yyyyMMdd")`` parsing ``text`` leniently (a prefix is enough)."""
    year, pos = _number(text, 0, 4)
    month, pos = _number(text, pos, 2)
    day, _ = _number(text, pos, None)
    return lenient(year, month, day)


def parse_month_day_year(text: str) -> int:
    """``new SimpleDateFormat("M/d/yyyy")`` parsing ``text`` leniently (a prefix is enough)."""
    month, pos = _number(text, 0, None)
    if text[pos : pos + 1] != "/":
        msg = "no / after the month"
        raise ValueError(msg)
    day, pos = _number(text, pos + 1, None)
    if text[pos : pos + 1] != "/":
        msg = "no / after the day"
        raise ValueError(msg)
    year, _ = _number(text, pos + 1, None)
    return lenient(year, month, day)
