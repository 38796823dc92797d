"""The live dashboard of ``run`` on a terminal: a pure rendering of the run's snapshots.

:func:`render` turns the current snapshot and an earlier one (for moving-average rates) into a
rich renderable; :class:`Dashboard` keeps the recent snapshots and drives a ``rich.live.Live``
at most :data:`REFRESH_PER_SECOND` times a second, from the run's progress callback (never from
the receive path). Nothing here reads patient data: the snapshots hold counts and messages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from asyncdicom.stats import RunSnapshot

REFRESH_PER_SECOND = 2
RATE_WINDOW = 10.0  # seconds the moving averages look back
BAR_WIDTH = 30


@dataclass(frozen=True, slots=True)
class Header:
    """What the dashboard says about the run besides its counters."""

    kind: str  # c-find, c-move or c-get
    pacs: str  # AET@host:port
    output: str  # the output directory or library file
    ledger: str


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def _with_bar(done: int, total: int, text: str) -> RenderableType:
    """A progress bar and its figures on one line (the figures wrap below on a narrow terminal)."""
    row = Table.grid(padding=(0, 2))
    row.add_column(no_wrap=True)
    row.add_column(overflow="fold")
    row.add_row(ProgressBar(total=max(total, 1), completed=min(done, max(total, 1)), width=BAR_WIDTH), text)
    return row


def _rates(now: RunSnapshot, earlier: RunSnapshot | None) -> tuple[float, float, float]:
    """Requests/s, instances/s and MB/s over the window (since the start without an earlier snapshot)."""
    base_elapsed = earlier.elapsed if earlier is not None else 0.0
    seconds = now.elapsed - base_elapsed
    if seconds <= 0:
        return 0.0, 0.0, 0.0
    requests = now.finished - (earlier.finished if earlier else 0)
    instances = now.received - (earlier.received if earlier else 0)
    megabytes = (now.bytes - (earlier.bytes if earlier else 0)) / 1e6
    return requests / seconds, instances / seconds, megabytes / seconds


def _seconds(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f} s"


def render(header: Header, now: RunSnapshot, earlier: RunSnapshot | None = None) -> RenderableType:
    """The dashboard for ``now``; rates are averaged since ``earlier``."""
    retrieve = header.kind in ("c-move", "c-get")
    total = max(0, now.planned - now.skipped)
    per_second, instances_per_second, megabytes_per_second = _rates(now, earlier)
    eta = "–"
    if per_second > 0 and now.remaining:
        eta = _clock(now.remaining / per_second)
    elif not now.remaining:
        eta = "0:00:00"
    title = Text.assemble(
        ("asyncdicom run", "bold"), f" · {header.kind} · {header.pacs} · elapsed {_clock(now.elapsed)}"
    )
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold", no_wrap=True)
    grid.add_column(overflow="fold")
    percent = f"{100 * now.finished / total:.0f}%" if total else "–"
    grid.add_row("requests", _with_bar(now.finished, total, f"{now.finished:,}/{total:,}  {percent}  ETA {eta}"))
    if retrieve:
        if now.planned_instances > now.expected:  # `asyncdicom plan` counted the whole batch beforehand
            expected = max(now.planned_instances, now.received)
            figures = f"{now.received:,}/{expected:,} planned"
            if instances_per_second > 0 and expected > now.received:
                figures += f"  ETA {_clock((expected - now.received) / instances_per_second)}"
        else:
            expected = max(now.expected, now.received)
            figures = f"{now.received:,}/{expected:,} reported by the PACS so far"
        grid.add_row("instances", _with_bar(now.received, expected, figures))
        rates = (
            f"{per_second:.1f} requests/s · {instances_per_second:.0f} instances/s · {megabytes_per_second:.1f} MB/s"
        )
    else:
        grid.add_row("matches", f"{now.matches:,}")
        rates = f"{per_second:.1f} requests/s"
    grid.add_row("rates", f"{rates}  (last {RATE_WINDOW:.0f} s)")
    latency = "time to first instance" if retrieve else "C-FIND round trip"
    grid.add_row(
        "PACS",
        f"{latency} p50 {_seconds(now.latency_p50)} · p95 {_seconds(now.latency_p95)} · "
        f"associations {now.in_flight} in use, limit {now.concurrency} of {now.threads or now.concurrency}",
    )
    outcomes = [f"done {now.done:,}"]
    outcomes += [f"{label} {count:,}" for label, count in _outcome_counts(now) if count]
    grid.add_row("outcomes", " · ".join(outcomes))
    if now.window:
        grid.add_row("schedule", now.window)
    for index, problem in enumerate(now.problems):
        grid.add_row("problems" if index == 0 else "", Text(f"• {problem}", style="yellow"))
    grid.add_row("output", header.output)
    grid.add_row("ledger", header.ledger)
    return Group(title, grid)


def _outcome_counts(now: RunSnapshot) -> list[tuple[str, int]]:
    return [
        ("partial", now.partial),
        ("failed", now.failed),
        ("retrying", now.retrying),
        ("quarantined", now.quarantined),
        ("kept compressed", now.kept_compressed),
        ("duplicates", now.duplicates),
        ("rejections", now.rejections),
        ("silent aborts", now.silent),
    ]


class Dashboard:
    """Recent snapshots, rendered into a ``Live`` display at most :data:`REFRESH_PER_SECOND` times a second."""

    def __init__(self, header: Header, live: Live) -> None:
        self.header = header
        self._live = live
        self._history: deque[RunSnapshot] = deque()

    def update(self, snapshot: RunSnapshot) -> None:
        """Show ``snapshot`` (called by the run's progress task, on the event loop)."""
        history = self._history
        history.append(snapshot)
        while len(history) > 2 and snapshot.elapsed - history[1].elapsed >= RATE_WINDOW:
            history.popleft()
        earlier = history[0] if len(history) > 1 else None
        self._live.update(render(self.header, snapshot, earlier), refresh=True)


@contextmanager
def live(header: Header, console: Console) -> Iterator[Dashboard]:
    """A dashboard on ``console`` while the block runs; it disappears at the end (the caller prints
    the summary), and log lines printed meanwhile scroll above it."""
    with Live(console=console, auto_refresh=False, transient=True, redirect_stdout=False) as display:
        yield Dashboard(header, display)
