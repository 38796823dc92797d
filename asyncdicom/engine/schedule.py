"""When requests may be sent: weekly windows in a time zone (pure: the caller passes the instant).

A window opens on each of its days at ``start`` and lasts until ``end``: the same day when ``end``
is later, else the next day (a window that crosses midnight belongs to the day it starts, and an
``end`` equal to ``start`` makes it 24 hours). Windows that overlap or touch join into one open
period. Wall-clock times are turned into instants with the zone's rules, so durations across a DST
change are real seconds; a start in the hour skipped in spring opens at the same offset as the hour
before the change (02:30 becomes 03:30), and a start in the hour repeated in autumn opens at its
first occurrence.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from zoneinfo import ZoneInfo

EVERY_DAY = frozenset(range(7))
_LOOK_BACK = 1  # a window of yesterday may still be open
_LOOK_AHEAD = 8  # the next opening of a weekly schedule is less than 8 days away


@dataclass(frozen=True)
class Window:
    """One weekly window: ``days`` (0 = Monday) at ``start`` until ``end``."""

    start: time
    end: time
    days: frozenset[int] = EVERY_DAY

    def on(self, day: date, zone: tzinfo) -> tuple[datetime, datetime] | None:
        """This window's open period starting on ``day``, as UTC instants (None on other days)."""
        if day.weekday() not in self.days:
            return None
        opens = datetime.combine(day, self.start, tzinfo=zone)
        closes_on = day if self.end > self.start else day + timedelta(days=1)
        closes = datetime.combine(closes_on, self.end, tzinfo=zone)
        return opens.astimezone(UTC), closes.astimezone(UTC)


@dataclass(frozen=True)
class Schedule:
    """Weekly windows in one time zone (``None``: this machine's zone)."""

    windows: tuple[Window, ...]
    zone: ZoneInfo | None = None

    def _zone(self) -> tzinfo:
        if self.zone is not None:
            return self.zone
        local = datetime.now().astimezone().tzinfo
        assert local is not None
        return local

    def periods(self, now: datetime) -> Iterator[tuple[datetime, datetime]]:
        """Open periods (UTC, overlapping and touching windows joined) from the day before ``now``
        to a week after it, in order."""
        zone = self._zone()
        today = now.astimezone(zone).date()
        spans = sorted(
            span
            for offset in range(-_LOOK_BACK, _LOOK_AHEAD + 1)
            for window in self.windows
            if (span := window.on(today + timedelta(days=offset), zone)) is not None and span[1] > span[0]
        )
        current: tuple[datetime, datetime] | None = None
        for opens, closes in spans:
            if current is not None and opens <= current[1]:
                current = (current[0], max(current[1], closes))
                continue
            if current is not None:
                yield current
            current = (opens, closes)
        if current is not None:
            yield current

    def _around(self, now: datetime) -> tuple[datetime, datetime] | None:
        """The open period containing ``now``, else the next one (None if none is within a week)."""
        instant = now.astimezone(UTC)
        for opens, closes in self.periods(now):
            if closes > instant:
                return opens, closes
        return None

    def seconds_until_open(self, now: datetime) -> float:
        """0 when ``now`` is inside a window, else the seconds until one opens (inf: never)."""
        period = self._around(now)
        if period is None:
            return float("inf")
        return max(0.0, (period[0] - now.astimezone(UTC)).total_seconds())

    def seconds_until_close(self, now: datetime) -> float:
        """Seconds left before the open period around ``now`` closes (0 when closed)."""
        period = self._around(now)
        instant = now.astimezone(UTC)
        if period is None or period[0] > instant:
            return 0.0
        return (period[1] - instant).total_seconds()

    def always_open(self, now: datetime) -> bool:
        """True when the windows cover the whole week (nothing ever closes)."""
        return self.seconds_until_close(now) >= 7 * 86400
