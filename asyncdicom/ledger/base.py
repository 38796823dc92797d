"""What the runner and the commands need from a ledger, whatever stores it (SQLite today).

The ledger is the job's durable memory: the plan's requests and their states, the matches of
C-FINDs, every received instance, and the runs. A second backend (PostgreSQL, for jobs shared by
several hosts) is one more module implementing :class:`Ledger`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from asyncdicom.models import HeldBack, InstanceRecord, Request, RequestResult, SharedBudget
from asyncdicom.plan import Plan
from asyncdicom.stats import RunStats
from asyncdicom.timestamps import iso_time


@dataclass(frozen=True, slots=True)
class SyncReport:
    """What the ledger already knew about this plan."""

    new: int
    done: int
    failed: int
    pending: int
    dropped: int
    retried: int
    changed: tuple[str, ...]
    first_run: bool
    continued: int = 0  # requests that failed transiently (busy, aborted, silent) and run again


@dataclass(frozen=True, slots=True)
class RequestCounts:
    """Requests of the plan by state."""

    done: int = 0
    failed: int = 0
    pending: int = 0
    partial: int = 0


@dataclass(frozen=True, slots=True)
class LastRun:
    """The most recent run: times as epoch seconds, its outcome once finished."""

    started: float
    finished: float | None
    outcome: str | None


@dataclass(frozen=True, slots=True)
class Failure:
    """A failed request: its CSV line and the reason (no patient data)."""

    line: int
    error: str | None


@dataclass(frozen=True, slots=True)
class HeldBackCount:
    """Instances held back for one reason (the reason names no patient data)."""

    kind: HeldBack
    reason: str
    count: int


@dataclass(frozen=True, slots=True)
class LedgerSummary:
    """What ``status`` shows and a run's report counts."""

    requests: RequestCounts
    instances: int
    matches: int
    warnings: int
    last_run: LastRun | None
    failures: tuple[Failure, ...]
    held_back: tuple[HeldBackCount, ...] = ()

    @property
    def held_back_total(self) -> int:
        """Instances of the plan quarantined, skipped or kept compressed."""
        return sum(item.count for item in self.held_back)

    def to_json(self) -> dict[str, Any]:
        """The summary as JSON-ready values (``status --json``); times in ISO 8601 with time zone."""
        doc = asdict(self)
        doc["failures"] = list(doc["failures"])
        doc["held_back"] = list(doc["held_back"])
        doc["held_back_total"] = self.held_back_total
        if self.last_run is not None:
            doc["last_run"] = {
                "started": iso_time(self.last_run.started),
                "finished": iso_time(self.last_run.finished),
                "outcome": self.last_run.outcome,
            }
        return doc


@dataclass(frozen=True, slots=True)
class RequestRow:
    """One request of the plan as ``report`` exports it (times as epoch seconds)."""

    line: int
    elements: dict[str, str]
    state: str
    status: int | None
    category: str | None
    error: str | None
    attempts: int
    expected: int | None  # what the PACS reported dealing with (completed + failed + warning)
    received: int | None
    stored: int
    held_back: int
    first: float | None  # its first instance arrived, or its last attempt started
    last: float | None  # it was last settled
    folders: tuple[str, ...]  # where its instances are, relative to the output directory


@dataclass(frozen=True, slots=True)
class InstanceRow:
    """One received instance as ``report --instances`` exports it."""

    sop_uid: str
    line: int | None  # the CSV line of its request (None: left in the spool by an older run)
    path: str
    size: int
    transfer_syntax: str | None
    state: str
    reason: str | None
    received: float
    sha256: str | None = None  # kept by ``verify --checksums``
    host: str | None = None  # a shared ledger's: the host that stored it, and its output directory
    directory: str | None = None


@dataclass(frozen=True, slots=True)
class RunRow:
    """One run: when, how it ended, and what it did."""

    started: float
    finished: float | None
    outcome: str | None
    counts: dict[str, int]


class Recorder(Protocol):
    """Queues results for the ledger's single writer (results are durable once committed)."""

    async def record(self, request: Request, result: RequestResult) -> None: ...

    async def record_instance(self, record: InstanceRecord) -> None: ...


class SharedSlotsLike(SharedBudget, Protocol):
    """A budget of associations shared by the hosts of a job (see the PostgreSQL ledger)."""

    count: int

    async def prepare(self) -> None:
        """Make the budget match ``count``."""

    def running(self) -> AbstractAsyncContextManager[Any]:
        """While inside, released slots go back to the other hosts."""


class Ledger(Protocol):
    """A job's ledger, opened by its backend's ``open_ledger``."""

    async def sync_plan(self, plan: Plan, *, digests: dict[str, str], restart: bool, retry_failed: bool) -> SyncReport:
        """Record the plan's requests; forget progress with ``restart``; pend failures again with ``retry_failed``."""

    async def pending(self, plan: Plan) -> list[Request]:
        """Requests of the plan still to run, in CSV order (partial ones narrowed to what is missing)."""

    def work(
        self, plan: Plan, pending: Sequence[Request], on_hosts: Callable[[int], None] | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Request]]:
        """The requests this run takes, in order: ``pending`` itself for a ledger of one host;
        claimed as the run goes for a shared one (which tells ``on_hosts`` how many hosts run
        the job whenever that is known)."""

    def slots(self, count: int) -> SharedSlotsLike | None:
        """The job's association budget shared across hosts, or None when one host runs it."""

    @property
    def last_host(self) -> bool:
        """Whether no other host runs the job any more (after :meth:`work`): the one to write
        the job's CSV files. Always true for a ledger of one host."""

    def recording(self, stats: RunStats) -> AbstractAsyncContextManager[Recorder]:
        """A recorder whose results are committed in batches; all of them before it exits."""

    async def start_run(self) -> None:
        """Note that a run starts."""

    async def finish_run(self, outcome: str, counts: dict[str, Any]) -> None:
        """Note how the run ended."""

    async def summary(self) -> LedgerSummary:
        """Counts by state, the last run, and the first failures."""

    async def request_rows(self, states: frozenset[str] | None = None) -> list[RequestRow]:
        """The plan's requests in CSV order, with their instances counted (``states`` filters)."""

    async def instance_rows(self, states: frozenset[str] | None = None) -> list[InstanceRow]:
        """Every received instance of the plan, by CSV line (``states`` filters by request state)."""

    async def runs(self, limit: int = 5) -> list[RunRow]:
        """The last runs, newest first."""

    async def remember(self, key: str, value: str) -> None:
        """Keep ``value`` in the ledger's meta table under ``key``."""

    async def get_meta(self, key: str) -> str | None:
        """What :meth:`remember` kept under ``key``, if anything."""

    async def checksums(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Keep the SHA-256 of stored instances: (SOP Instance UID, path under the output
        directory, hex digest)."""

    async def stored_by_request(self) -> dict[str, set[str]]:
        """SOP Instance UIDs already received for each unfinished request of the plan."""

    async def held_back_files(self) -> list[tuple[str, str, str, str]]:
        """(SOP Instance UID, request key, quarantine path, transfer syntax) of the plan's
        instances that the anonymizer quarantined or skipped."""

    async def forget_instances(self, uids: Sequence[str], *, ask_again_for_them: bool) -> int:
        """Drop instances found missing or changed on disk and make their requests partial, so the
        next run fetches them (by UID when ``ask_again_for_them``, else whole); how many requests."""

    async def export_library(self, path: Path, columns: Sequence[str], *, guard: bool = True) -> int:
        """Write the C-FIND library CSV atomically (``guard``: spreadsheet-safe cells); returns its
        row count."""

    async def export_requests(self, path: Path, columns: Sequence[str], *, guard: bool = True) -> int:
        """Write the retrieval request CSV atomically (``guard`` as for the library); returns its
        row count."""
