"""Rate and concurrency arithmetic (pure: injected clocks, no awaits, no sleeps)."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field


@dataclass
class TokenBucket:
    """At most ``rate`` requests per second on average, with bursts of ``capacity``.

    ``rate == 0`` means unlimited. :meth:`reserve` returns how long the caller must wait.
    """

    rate: float
    capacity: float = 1.0
    _tokens: float | None = field(default=None, repr=False)
    _stamp: float = field(default=0.0, repr=False)

    def reserve(self, now: float) -> float:
        """Take one token; the seconds to wait before using it (0 when one was available)."""
        if self.rate <= 0:
            return 0.0
        tokens = self.capacity if self._tokens is None else self._tokens
        tokens = min(self.capacity, tokens + (now - self._stamp) * self.rate) - 1.0
        self._tokens, self._stamp = tokens, now
        return 0.0 if tokens >= 0 else -tokens / self.rate


@dataclass
class AdaptiveConcurrency:
    """How many associations to hold: cut on rejection, grow back after a run of successes.

    A rejected association means the PACS is at its limit, so the limit drops by one
    (never below 1); after ``grow_after`` successes in a row it rises again, up to ``maximum``.
    """

    maximum: int
    grow_after: int = 50
    limit: int = 0
    _streak: int = 0

    def __post_init__(self) -> None:
        self.limit = self.limit or self.maximum

    def on_rejected(self) -> int:
        """A transient rejection: lower the limit; returns it."""
        self._streak = 0
        self.limit = max(1, self.limit - 1)
        return self.limit

    def on_success(self) -> int:
        """A completed request: maybe raise the limit; returns it."""
        self._streak += 1
        if self.limit < self.maximum and self._streak >= self.grow_after:
            self._streak = 0
            self.limit += 1
        return self.limit


@dataclass
class LatencyTracker:
    """Response gaps seen so far, and the deadline after which a request counts as silent.

    Until ``min_samples`` gaps are known the deadline is ``ceiling`` (the DIMSE timeout).
    Then it is ``factor`` times the ``quantile`` of recent gaps, at least ``floor`` seconds.
    """

    ceiling: float
    floor: float = 1.0
    factor: float = 10.0
    quantile: float = 0.99
    min_samples: int = 50
    window: int = 2000
    _samples: deque[float] = field(default_factory=deque, repr=False)
    _cached: float | None = field(default=None, repr=False)

    def add(self, seconds: float) -> None:
        """Record one gap between sending a request (or a response) and the next response."""
        self._samples.append(seconds)
        if len(self._samples) > self.window:
            self._samples.popleft()
        self._cached = None

    def deadline(self, attempt: int = 0) -> float:
        """Seconds of silence after which to give up on a request; doubles per retry."""
        if len(self._samples) < self.min_samples:
            return self.ceiling
        if self._cached is None:
            ordered = sorted(self._samples)
            index = min(len(ordered) - 1, math.ceil(self.quantile * len(ordered)) - 1)
            self._cached = max(self.floor, self.factor * ordered[index])
        return float(min(self.ceiling, self._cached * 2.0**attempt))
