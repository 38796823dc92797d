"""Live run counters and the frozen snapshots the progress display renders (pure).

Counters are changed on the event loop thread, except the few a receive or worker thread
feeds (instances expected by a retrieve in flight, latencies, problems), which are single
dict or deque operations.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

PROBLEMS_SHOWN = 4
LATENCY_SAMPLES = 256


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
    threads: int = 0  # the configured maximum of associations
    bytes: int = 0  # of the instances stored in this run
    expected: int = 0  # instances the PACS reported for the retrieves settled and in flight in this run
    kept_compressed: int = 0
    retrying: int = 0  # requests waiting to be tried again
    latency_p50: float | None = None  # seconds: C-FIND round trip, or time to a retrieve's first instance
    latency_p95: float | None = None
    problems: tuple[str, ...] = ()  # the last few, newest last (no patient data)
    window: str = ""  # the schedule: "", "open, closes in …", "closed, opens in …"
    planned_instances: int = 0  # what `asyncdicom plan` counted and the ledger did not hold yet

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

    @property
    def received(self) -> int:
        """Instances that arrived in this run (stored, duplicates, held back)."""
        return self.instances + self.duplicates + self.quarantined


@dataclass
class RunStats:
    """Mutable counters of one run."""

    planned: int
    skipped: int
    concurrency: int
    clock: Callable[[], float] = time.monotonic
    done: int = 0
    failed: int = 0
    in_flight: int = 0
    matches: int = 0
    partial: int = 0
    instances: int = 0
    duplicates: int = 0
    quarantined: int = 0
    kept_compressed: int = 0
    retries: int = 0
    rejections: int = 0
    silent: int = 0
    resumed: int = 0  # interrupted requests resumed by asking only for what was missing
    retrying: int = 0
    bytes: int = 0
    expected_settled: int = 0
    expected_in_flight: dict[int, int] = field(default_factory=dict)  # message ID → instances reported
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLES))
    problems: deque[str] = field(default_factory=lambda: deque(maxlen=PROBLEMS_SHOWN))
    window: Callable[[], str] = lambda: ""
    threads: int = 0
    problem_counts: dict[str, int] = field(default_factory=dict)  # by kind, once the run is over
    planned_instances: int = 0
    refused_classes: dict[str, int] = field(default_factory=dict)  # SOP class → C-GET requests it failed

    def __post_init__(self) -> None:
        self._start = self.clock()
        self.threads = self.threads or self.concurrency

    def snapshot(self) -> RunSnapshot:
        """A frozen copy of the counters."""
        samples = sorted(self.latencies)
        p50 = statistics.median(samples) if samples else None
        p95 = samples[min(len(samples) - 1, int(0.95 * len(samples)))] if samples else None
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
            elapsed=self.clock() - self._start,
            instances=self.instances,
            duplicates=self.duplicates,
            quarantined=self.quarantined,
            threads=self.threads,
            bytes=self.bytes,
            expected=self.expected_settled + sum(list(self.expected_in_flight.values())),
            kept_compressed=self.kept_compressed,
            retrying=self.retrying,
            latency_p50=p50,
            latency_p95=p95,
            problems=tuple(self.problems),
            window=self.window(),
            planned_instances=self.planned_instances,
        )

    def __repr__(self) -> str:
        s = self.snapshot()
        return (
            f"<RunStats done={s.done} failed={s.failed} in_flight={s.in_flight} "
            f"remaining={s.remaining} concurrency={s.concurrency}>"
        )
