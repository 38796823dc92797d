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

    def on_rejected(self, now: float = 0.0) -> int:
        """A transient rejection: lower the limit; returns it (``now`` is for
        :class:`AutoConcurrency`)."""
        self._streak = 0
        self.limit = max(1, self.limit - 1)
        return self.limit

    def on_success(self, now: float = 0.0, work: int = 1, latency: float = 0.0) -> int:
        """A completed request: maybe raise the limit; returns it (the arguments are for
        :class:`AutoConcurrency`)."""
        self._streak += 1
        if self.limit < self.maximum and self._streak >= self.grow_after:
            self._streak = 0
            self.limit += 1
        return self.limit


@dataclass
class AutoConcurrency:
    """``request.threads: auto``: find how many associations the PACS serves best.

    Start at ``start``; measure throughput (work units a second) and median latency over epochs
    of at least ``epoch_work`` units and ``epoch_seconds``. Step up while each step raises the
    throughput by at least half of what it ideally would ((L + 1) / L) and latency holds; step
    back, and stay there, when a step did not pay or latency jumped past ``jump`` times the best
    seen (either is measured over a second epoch before the step is taken back: one epoch can
    be a busy moment of the machine); cut multiplicatively (× ``cut``) on a refusal,
    an out-of-resources status or a timeout, and do not go above the level that failed. After
    ``hold_epochs`` quiet epochs at the ceiling, probe one level higher again (the PACS's load
    changes over a night).
    """

    maximum: int
    start: int = 2
    epoch_work: int = 16
    epoch_seconds: float = 0.5
    jump: float = 2.0
    cut: float = 0.75
    hold_epochs: int = 30
    limit: int = 0
    ceiling: int = 0
    _began: float | None = None
    _work: int = 0
    _latencies: list[float] = field(default_factory=list)
    _previous: float | None = None  # throughput at the level before the last step up
    _stepped_up: bool = False
    _best_latency: float | None = None
    _quiet: int = 0
    _last_cut: float | None = None
    _doubted: bool = False  # the first epoch after a step up did not pay; one more decides
    _slowed: bool = False  # the last epoch's latency jumped; one more decides

    def __post_init__(self) -> None:
        self.limit = self.limit or min(self.start, self.maximum)
        self.ceiling = self.ceiling or self.maximum

    def _new_epoch(self, now: float | None) -> None:
        self._began, self._work, self._latencies = now, 0, []

    def on_success(self, now: float, work: int = 1, latency: float = 0.0) -> int:
        """A request done at ``now`` (monotonic seconds), worth ``work`` units, after ``latency``."""
        if self._began is None:
            self._new_epoch(now)
        self._work += max(1, work)
        self._latencies.append(latency)
        assert self._began is not None
        if self._work >= self.epoch_work and now - self._began >= self.epoch_seconds:
            self._close_epoch(self._work / (now - self._began), sorted(self._latencies)[len(self._latencies) // 2])
            self._new_epoch(now)
        return self.limit

    def _close_epoch(self, throughput: float, latency: float) -> None:
        best = self._best_latency
        self._best_latency = latency if best is None else min(best, latency)
        if best is not None and latency > self.jump * best and self.limit > 1:  # too many: the PACS slows down
            if not self._slowed:  # or the machine was busy for a moment: look once more
                self._slowed = True
                return
            self.limit -= 1
            self.ceiling, self._previous, self._stepped_up, self._quiet = self.limit, None, False, 0
            self._doubted = self._slowed = False
            return
        self._slowed = False
        if self._stepped_up and self._previous is not None:
            level = self.limit - 1
            if throughput < self._previous * (1 + 0.5 / level):  # the step did not pay
                if not self._doubted:  # one epoch may be a busy moment of the machine: look once more
                    self._doubted = True
                    return
                self.limit = level  # twice: back, and stay
                self.ceiling, self._previous, self._stepped_up, self._quiet = level, None, False, 0
                self._doubted = False
                return
            self._doubted = False
        self._quiet += 1
        if self.limit >= self.ceiling and self._quiet >= self.hold_epochs and self.ceiling < self.maximum:
            self.ceiling += 1  # probe again
            self._quiet = 0
        if self.limit < min(self.ceiling, self.maximum):
            self._previous, self._stepped_up = throughput, True
            self.limit += 1
        else:
            self._stepped_up = False

    def on_rejected(self, now: float = 0.0) -> int:
        """A refusal, an out-of-resources status or a timeout at ``now``: cut, once for a burst
        (the refusals within ``epoch_seconds`` of a cut are the same news)."""
        if self._last_cut is None or now - self._last_cut >= self.epoch_seconds:
            self._last_cut = now
            self.ceiling = max(1, self.limit - 1)
            self.limit = max(1, min(self.ceiling, int(self.limit * self.cut)))
            self._previous, self._stepped_up, self._quiet, self._doubted = None, False, 0, False
            self._slowed = False
            self._new_epoch(None)
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
