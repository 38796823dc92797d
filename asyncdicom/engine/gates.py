"""Async wrappers around the pure limits: the time-window gate and the request-rate throttle."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio

from asyncdicom.engine.limits import TimeWindow, TokenBucket


class WindowGate:
    """Blocks while the schedule window is closed; always open without a window."""

    def __init__(
        self,
        window: TimeWindow | None,
        on_wait: Callable[[float], None] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.window = window
        self._on_wait = on_wait
        self._now = now
        self._announced: datetime | None = None

    def describe(self) -> str:
        """The window's state in words: "" without a window, else "open, closes in 3h 05m" or
        "closed, opens in 45m"."""
        if self.window is None:
            return ""
        now = self._now()
        opens = self.window.seconds_until_open(now)
        if opens > 0:
            return f"closed, opens in {duration(opens)}"
        return f"open, closes in {duration(self.window.seconds_until_close(now))}"

    def next_opening(self) -> datetime | None:
        """When the window next opens (now when it is open), in its time zone; None without one."""
        if self.window is None:
            return None
        now = self._now()
        opening = now + timedelta(seconds=self.window.seconds_until_open(now))
        return opening.astimezone(self.window.zone) if self.window.zone else opening.astimezone()

    def opening_text(self) -> str:
        """When the window opens, locally and in UTC: "19:00 America/New_York (2026-12-01;
        2026-12-02T00:00:00Z), in 7h 12m"."""
        opening = self.next_opening()
        assert opening is not None
        assert self.window is not None
        zone = self.window.zone.key if self.window.zone else (opening.tzname() or "local time")
        utc = opening.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        delay = (opening - self._now()).total_seconds()
        return f"{opening:%H:%M} {zone} ({opening:%Y-%m-%d}; {utc}), in {duration(delay)}"

    async def wait_open(self) -> None:
        """Return at once inside the window, else sleep until it opens; the wait is announced once
        per closed period, however many workers wait."""
        if self.window is None:
            return
        while (delay := self.window.seconds_until_open(self._now())) > 0:
            opening = self.next_opening()
            if self._on_wait is not None and opening != self._announced:
                self._announced = opening
                self._on_wait(delay)
            await anyio.sleep(delay)


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

    async def acquire(self) -> None:
        """Wait for the next token."""
        delay = self._bucket.reserve(self._clock())
        if delay > 0:
            await anyio.sleep(delay)
