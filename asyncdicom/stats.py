"""Live run counters and the frozen snapshots the progress display renders (pure)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RunSnapshot:
    """The state of a run at one instant."""

    planned: int
    skipped: int
    done: int
    failed: int
    in_flight: int
    partial: int
    matches: int
    retries: int
    rejections: int
    silent: int
    concurrency: int
    elapsed: float
    instances: int = 0
    duplicates: int = 0
    quarantined: int = 0

    @property
    def finished(self) -> int:
        """Requests settled in this run."""
        return self.done + self.failed + self.partial

    @property
    def remaining(self) -> int:
        """Requests of this run not settled yet."""
        return max(0, self.planned - self.skipped - self.finished)

    @property
    def rate(self) -> float:
        """Settled requests per second in this run."""
        return self.finished / self.elapsed if self.elapsed > 0 else 0.0


class RunStats:
    """Mutable counters, touched only from the event loop thread."""

    def __init__(
        self, planned: int, skipped: int, concurrency: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._start = clock()
        self.planned = planned
        self.skipped = skipped
        self.concurrency = concurrency
        self.done = self.failed = self.in_flight = self.matches = self.partial = 0
        self.instances = self.duplicates = self.quarantined = 0
        self.retries = self.rejections = self.silent = 0

    def snapshot(self) -> RunSnapshot:
        """A frozen copy of the counters."""
        return RunSnapshot(
            planned=self.planned,
            skipped=self.skipped,
            done=self.done,
            failed=self.failed,
            in_flight=self.in_flight,
            partial=self.partial,
            matches=self.matches,
            retries=self.retries,
            rejections=self.rejections,
            silent=self.silent,
            concurrency=self.concurrency,
            elapsed=self._clock() - self._start,
            instances=self.instances,
            duplicates=self.duplicates,
            quarantined=self.quarantined,
        )

    def __repr__(self) -> str:
        s = self.snapshot()
        return (
            f"<RunStats done={s.done} failed={s.failed} in_flight={s.in_flight} "
            f"remaining={s.remaining} concurrency={s.concurrency}>"
        )
