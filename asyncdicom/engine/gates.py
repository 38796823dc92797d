"""Async wrappers around the pure limits: the time-window gate and the request-rate throttle."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

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

    async def wait_open(self) -> None:
        """Return at once inside the window, else sleep until it opens."""
        if self.window is None:
            return
        while (delay := self.window.seconds_until_open(self._now())) > 0:
            if self._on_wait is not None:
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
