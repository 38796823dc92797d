"""Async wrappers around the pure limits: the time-window gate and the request-rate throttle."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio

from asyncdicom.config.schema import clock
from asyncdicom.engine.limits import TokenBucket
from asyncdicom.engine.schedule import Schedule


class WindowGate:
    """The schedule's state for the scheduler: is it open, when does it open or close, and waiting
    for either (always open without a schedule). The clock is read again at least every ``poll``
    seconds while waiting, so a clock change or a suspended machine does not oversleep."""

    def __init__(
        self,
        schedule: Schedule | None,
        on_wait: Callable[[float], None] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        poll: float = 60.0,
    ) -> None:
        self.schedule = schedule
        self._on_wait = on_wait
        self._now = now
        self._poll = poll
        self._announced: datetime | None = None

    def is_open(self) -> bool:
        """Whether requests may be sent now."""
        return self.schedule is None or self.schedule.seconds_until_open(self._now()) == 0

    def describe(self) -> str:
        """The window's state in words: "" without a window, else "open, closes in 3h 05m" or
        "closed, opens in 45m"."""
        if self.schedule is None:
            return ""
        now = self._now()
        opens = self.schedule.seconds_until_open(now)
        if opens == float("inf"):
            return "closed, never opens"
        if opens > 0:
            return f"closed, opens in {duration(opens)}"
        if self.schedule.always_open(now):
            return "open all week"
        return f"open, closes in {duration(self.schedule.seconds_until_close(now))}"

    def next_opening(self) -> datetime | None:
        """When the window next opens (now when it is open), in its time zone; None without one
        (or when no window ever opens)."""
        if self.schedule is None:
            return None
        now = self._now()
        delay = self.schedule.seconds_until_open(now)
        if delay == float("inf"):
            return None
        opening = now + timedelta(seconds=delay)
        return opening.astimezone(self.schedule.zone) if self.schedule.zone else opening.astimezone()

    def opening_text(self) -> str:
        """When the window opens, locally and in UTC: "19:00 America/New_York (2026-12-01;
        2026-12-02T00:00:00Z), in 7h 12m"."""
        opening = self.next_opening()
        if opening is None or self.schedule is None:
            return "never (no window in the schedule)"
        zone = self.schedule.zone.key if self.schedule.zone else (opening.tzname() or "local time")
        utc = opening.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        delay = (opening - self._now()).total_seconds()
        return f"{clock(opening)} {zone} ({opening:%Y-%m-%d}; {utc}), in {duration(delay)}"

    def seconds_until_close(self) -> float:
        """Seconds until the open window closes (0 when closed or without a schedule)."""
        return 0.0 if self.schedule is None else self.schedule.seconds_until_close(self._now())

    async def wait_open(self) -> None:
        """Return at once inside the window, else sleep until it opens; the wait is announced once
        per closed period, however many callers wait."""
        if self.schedule is None:
            return
        while (delay := self.schedule.seconds_until_open(self._now())) > 0:
            opening = self.next_opening()
            if self._on_wait is not None and opening != self._announced:
                self._announced = opening
                self._on_wait(delay)
            await anyio.sleep(min(delay, self._poll))

    async def wait_closed(self) -> None:
        """Sleep until the open window closes (forever without a schedule, or when it never closes)."""
        if self.schedule is None:
            await anyio.sleep_forever()
        assert self.schedule is not None
        while (left := self.schedule.seconds_until_close(self._now())) > 0:  # noqa: ASYNC110 - a clock, no event
            await anyio.sleep(min(left, self._poll))


def duration(seconds: float) -> str:
    """``3h 05m``, ``12m``, ``40s``: a coarse duration for people."""
    whole = int(seconds)
    if whole >= 3600:
        return f"{whole // 3600}h {whole % 3600 // 60:02d}m"
    if whole >= 60:
        return f"{whole // 60}m"
    return f"{whole}s"


class Throttle:
    """A shared token bucket (``request.max_rate``) in front of every request."""

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._bucket = TokenBucket(rate=rate, capacity=1.0)
        self._clock = clock

    def set_rate(self, rate: float) -> None:
        """A new rate from now on (0: unlimited)."""
        self._bucket.rate = rate

    async def acquire(self) -> None:
        """Wait for the next token."""
        delay = self._bucket.reserve(self._clock())
        if delay > 0:
            await anyio.sleep(delay)
