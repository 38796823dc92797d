"""Composition root: ledger, engine, signals and progress in one task group."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import anyio

from asyncdicom import events
from asyncdicom.config import Config
from asyncdicom.config.load import passcode, tls_files
from asyncdicom.engine.gates import WindowGate
from asyncdicom.engine.schedule import Schedule, Window
from asyncdicom.engine.scheduler import Scheduler, settings_for, with_schedule
from asyncdicom.errors import AsyncDicomError, ExitCode, NetworkError, OutputError, WindowClosed, leaves
from asyncdicom.ledger import Ledger, SyncReport, open_job_ledger, where
from asyncdicom.net.acse import UserIdentity
from asyncdicom.net.base import DicomBackend
from asyncdicom.net.pace import MEGABYTE, Pacer
from asyncdicom.net.scu import ScuBackend, ScuSettings
from asyncdicom.net.tls import client_context
from asyncdicom.plan import Plan
from asyncdicom.problems import GroupedLog
from asyncdicom.retrieve import Retriever
from asyncdicom.stats import RunSnapshot, RunStats
from asyncdicom.timestamps import iso_time

if TYPE_CHECKING:
    from asyncdicom.web.backend import WebBackend

log = logging.getLogger("asyncdicom")


class Outcome(StrEnum):
    """How a run ended (in the JSON summary and the ledger's runs table)."""

    COMPLETE = "complete"
    FAILED_REQUESTS = "failed-requests"
    HELD_BACK = (
        "instances-held-back"  # every request settled, but instances were quarantined, skipped or kept compressed
    )
    INTERRUPTED = "interrupted"
    FATAL = "fatal"
    OUTPUT_ERROR = "output-error"
    OUTSIDE_WINDOW = "outside-window"  # schedule.outside_window: exit, and the window was closed


_EXIT_CODES = {
    Outcome.COMPLETE: ExitCode.OK,
    Outcome.FAILED_REQUESTS: ExitCode.FAILED_REQUESTS,
    Outcome.HELD_BACK: ExitCode.FAILED_REQUESTS,
    Outcome.INTERRUPTED: ExitCode.INTERRUPTED,
    Outcome.FATAL: ExitCode.FATAL,
    Outcome.OUTPUT_ERROR: ExitCode.OUTPUT,
    Outcome.OUTSIDE_WINDOW: ExitCode.OUTSIDE_WINDOW,
}
PROGRESS_EVERY = 2.0


@dataclass(frozen=True)
class RunOptions:
    """Command-line choices that change what a run does."""

    restart: bool = False
    retry_failed: bool = False
    progress: Callable[[RunSnapshot], None] | None = None
    progress_every: float = PROGRESS_EVERY


@dataclass
class RunReport:
    """The end of a run, for the human summary and the ``--json`` document."""

    outcome: Outcome
    kind: str  # the request type: c-find, c-move or c-get
    planned: int
    duplicates: int
    ran: int
    done: int
    failed: int
    pending: int
    skipped: int
    matches: int
    elapsed: float
    library_file: str | None
    ledger_file: str
    library_rows: int | None = None
    message: str | None = None
    retries: int = 0
    rejections: int = 0
    silent: int = 0
    notes: list[str] = field(default_factory=list)
    partial: int = 0
    instances: int = 0
    instances_new: int = 0
    duplicate_instances: int = 0
    quarantined_instances: int = 0
    held_back_instances: int = 0  # of the plan, in the ledger: quarantined, skipped or kept compressed
    held_back: list[dict[str, Any]] = field(default_factory=list)  # by kind and reason, with counts
    problems: dict[str, int] = field(default_factory=dict)  # repeated problems of the run, by kind
    started: str | None = None  # ISO 8601 with the time zone
    finished: str | None = None
    threads: int | str = 0  # request.threads: a number, or "auto"
    concurrency: int = 0  # associations allowed at the end (where threads: auto settled)
    refused_classes: dict[str, int] = field(default_factory=dict)  # SOP class → C-GET requests it failed

    @property
    def exit_code(self) -> ExitCode:
        """0 all done, 1 fatal, 3 some requests failed or instances held back, 4 output volume
        full or unwritable, 5 outside the schedule window (outside_window: exit), 130 interrupted."""
        return _EXIT_CODES[self.outcome]

    def to_json(self) -> dict[str, Any]:
        """The machine-readable summary (schema 1)."""
        return {"schema": 1, "command": "run", **asdict(self), "exit_code": int(self.exit_code)}


def pacer_for(config: Config) -> Pacer | None:
    """The cap on received bytes of ``request.max_megabytes_per_second`` (None: no cap)."""
    rate = config.request.max_megabytes_per_second
    return Pacer(rate * MEGABYTE) if rate > 0 and config.request.type in ("c-move", "c-get") else None


def backend_for(config: Config) -> ScuBackend | WebBackend:
    """The backend for the configured source (DIMSE, or DICOMweb with ``pacs.url``), with the cap
    on received bytes if one is set."""
    pacs, request = config.pacs, config.request
    if pacs.web:
        from asyncdicom.web.backend import WebBackend, WebSettings  # httpx loads only for DICOMweb sources

        return WebBackend(
            WebSettings(
                url=pacs.url,
                auth=pacs.auth,
                ca_file=pacs.ca_file,
                connect_timeout=request.connect_timeout,
                timeout=request.timeout,
                pacer=pacer_for(config),
            )
        )
    return ScuBackend(
        ScuSettings(
            host=pacs.hostname,
            port=pacs.port,
            called_aet=pacs.aet,
            calling_aet=config.local.aet,
            request_type=request.type,
            model=request.model,
            connect_timeout=request.connect_timeout,
            timeout=request.timeout,
            sop_classes=request.sop_classes,
            pacer=pacer_for(config),
            tls=client_context(tls_files(pacs.tls, "pacs.tls")) if pacs.tls else None,
            identity=UserIdentity(pacs.username, passcode(pacs.password_env, pacs.password_file))
            if pacs.username
            else None,
        )
    )


UMASKS = {"private": 0o077, "group": 0o027}


def restrict_permissions(permissions: str) -> None:
    """``output.permissions``: the files and folders a run writes (tree, spool, quarantine,
    ledger, CSV files; they hold patient data) are readable by their owner only (``private``:
    600 and 700), or also by the group (``group``: 640 and 750); ``inherit`` keeps the umask
    the process was started with. Worker processes inherit it."""
    mask = UMASKS.get(permissions)
    if mask is not None:
        os.umask(os.umask(mask) | mask)  # never loosen a stricter umask


def window_gate(config: Config) -> WindowGate:
    """The schedule gate of the config (always open when the schedule is disabled)."""
    schedule = config.schedule
    windows = schedule.all_windows()
    if not schedule.enabled or not windows:
        return WindowGate(None)
    zone = ZoneInfo(schedule.timezone) if schedule.timezone else None
    weekly = Schedule(tuple(Window(w.start_time, w.end_time, frozenset(w.days)) for w in windows), zone)
    gate: WindowGate = WindowGate(
        weekly, on_wait=lambda delay: log.info("outside the schedule window; waiting until %s", gate.opening_text())
    )
    return gate


def input_digests(config: Config, plan: Plan) -> dict[str, str]:
    """Fingerprints of the run's inputs, so the next run can say what changed."""
    csv = hashlib.sha256(plan.source.read_bytes()).hexdigest() if plan.source else ""
    elements = hashlib.sha256(repr([(s.name, s.value) for s in config.request.elements]).encode()).hexdigest()
    return {"csv": csv, "query": config.query_fingerprint(), "elements": elements}


def describe_sync(plan: Plan, sync: SyncReport) -> list[str]:
    """Sentences telling the user what the ledger already knew."""
    notes = [
        f"plan: {len(plan.requests)} requests"
        + (f" ({plan.duplicates} duplicate rows removed)" if plan.duplicates else "")
    ]
    if "query" in sync.changed:
        notes.append(
            "the PACS, request type or model changed since the last run: earlier results do not count for this plan"
        )
    if "elements" in sync.changed:
        notes.append("request.elements changed since the last run: requests whose elements changed run again")
    if sync.changed:
        what = "the batch CSV" if sync.changed == ("csv",) else "the inputs"
        notes.append(
            f"{what} changed since the last run: {sync.new} new requests; "
            f"{sync.dropped} earlier requests are no longer in it and are left out of the library"
        )
    if not sync.first_run:
        notes.append(
            f"resuming: {sync.done} done earlier (skipped), {sync.failed} failed earlier"
            + (" (skipped; --retry-failed runs them again)" if sync.failed else "")
            + (f", {sync.retried} failures to retry" if sync.retried else "")
            + (
                f", {sync.continued} that failed transiently (busy, aborted or silent PACS) run again"
                if sync.continued
                else ""
            )
        )
    return notes


async def run(config: Config, plan: Plan, backend: DicomBackend, options: RunOptions | None = None) -> RunReport:
    """Run the plan against the backend, resuming from the ledger."""
    options = options or RunOptions()
    async with open_job_ledger(config) as ledger:
        with events.recording(events.events_file(config.output.ledger_file)):
            return await _run(config, plan, backend, options, ledger)


async def _run(config: Config, plan: Plan, backend: DicomBackend, options: RunOptions, ledger: Ledger) -> RunReport:
    sync = await ledger.sync_plan(
        plan, digests=input_digests(config, plan), restart=options.restart, retry_failed=options.retry_failed
    )
    notes = describe_sync(plan, sync)
    for note in notes:
        log.info("%s", note)
    pending = await ledger.pending(plan)
    stats = RunStats(len(plan.requests), len(plan.requests) - len(pending), config.request.workers)
    stats.planned_instances = await _instances_left(ledger)
    await ledger.start_run()
    events.emit("run-started", kind=config.request.type, planned=len(plan.requests), pending=len(pending))
    gate = window_gate(config)
    if config.schedule.outside_window == "exit" and pending and gate.describe().startswith("closed"):
        message = f"outside the schedule window, so nothing was sent; it opens at {gate.opening_text()}"
        log.info("%s", message)
        outcome, error = Outcome.OUTSIDE_WINDOW, None
        notes = [*notes, message]
    else:
        outcome, error = await _execute(config, ledger, backend, plan, pending, stats, options)
    if isinstance(error, OutputError):
        outcome = Outcome.OUTPUT_ERROR
    with anyio.CancelScope(shield=True):
        report = await _finish(config, plan, ledger, stats, outcome, str(error) if error else None, notes)
    events.emit(
        "run-finished",
        outcome=report.outcome,
        exit_code=int(report.exit_code),
        done=report.done,
        failed=report.failed,
        partial=report.partial,
        pending=report.pending,
        instances_new=report.instances_new,
        message=report.message,
    )
    return report


async def _execute(
    config: Config,
    ledger: Ledger,
    backend: DicomBackend,
    plan: Plan,
    pending: list[Any],
    stats: RunStats,
    options: RunOptions,
) -> tuple[Outcome, AsyncDicomError | None]:
    destination = f"AE title {config.local.aet} at {socket.gethostname()}, port {config.local.port}"
    settings = settings_for(config.request, find=config.request.type == "c-find", destination=destination)
    settings = with_schedule(settings, config.schedule)
    interrupted = False
    fatal: AsyncDicomError | None = None
    unexpected: BaseException | None = None
    problems = GroupedLog(log)
    async with ledger.recording(stats) as recorder, contextlib.AsyncExitStack() as stack:
        stack.enter_context(_problems_into(stats))
        shared = ledger.slots(config.request.workers)  # several hosts: the job's associations
        if shared is not None:
            try:
                await shared.prepare()
            except AsyncDicomError as exc:
                return Outcome.FATAL, exc
            await stack.enter_async_context(shared.running())
        operation = None
        retriever: Retriever | None = None
        if config.request.type in ("c-move", "c-get"):
            try:
                again = await ledger.held_back_files() if options.retry_failed and config.anonymization.enabled else []
                stored = {} if options.restart else await ledger.stored_by_request()  # restart: ask for everything
                finder = backend_for(
                    dataclasses.replace(config, request=dataclasses.replace(config.request, type="c-find"))
                )
                # the byte pacer the backend's sessions share (ScuBackend's or WebBackend's; a mock has none)
                pacer = getattr(getattr(backend, "settings", None), "pacer", None)
                retriever = Retriever(config, recorder, stats, problems, again, stored, finder, pacer)
                retriever = await stack.enter_async_context(retriever.running())
                operation = retriever.operation
            except Exception as exc:
                fatal = project_error(exc)
        if fatal is not None:
            return Outcome.FATAL, fatal
        gate = window_gate(config)
        stats.window = gate.describe
        scheduler = Scheduler(
            backend,
            settings,
            recorder,
            stats,
            gate,
            operation,
            problems,
            on_open=retriever.listen if retriever else None,
            on_close=retriever.stop_listening if retriever else None,
            progress=retriever.progress if retriever else None,
            pacer=retriever.pacer if retriever else None,
            shared=shared,
        )
        async with anyio.create_task_group() as tg:

            async def on_signal() -> None:
                nonlocal interrupted
                with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for signum in signals:
                        name = signal.Signals(signum).name
                        if not interrupted:
                            interrupted = True
                            log.warning(
                                "%s received: no new request starts; requests in flight get %s s to finish "
                                "(send it again to abort them now; everything stays resumable)",
                                name,
                                f"{settings.drain:g}",
                            )
                            tg.start_soon(scheduler.stop)
                            continue
                        log.warning("%s received again: aborting the requests in flight", name)
                        tg.cancel_scope.cancel()
                        with anyio.CancelScope(shield=True):
                            await scheduler.abort_all()
                        return

            async def progress() -> None:
                if options.progress is None:
                    return
                while True:
                    await anyio.sleep(options.progress_every)
                    options.progress(stats.snapshot())

            async def work() -> None:
                nonlocal fatal, unexpected
                try:
                    async with ledger.work(plan, pending, scheduler.share) as requests:
                        await scheduler.run(requests)
                except Exception as exc:  # one error, or a group of them from the workers
                    try:
                        fatal = project_error(exc)
                    except Exception as other:  # a bug: the CLI reports it, after the ledger is saved
                        unexpected = other
                    with anyio.CancelScope(shield=True):
                        await scheduler.abort_all()  # the other workers stop now, not after their request
                tg.cancel_scope.cancel()

            tg.start_soon(on_signal)
            tg.start_soon(progress)
            tg.start_soon(work)
    stats.problem_counts = problems.counts()
    if unexpected is not None:
        raise unexpected
    if interrupted:
        return Outcome.INTERRUPTED, None
    if isinstance(fatal, WindowClosed):
        return Outcome.OUTSIDE_WINDOW, fatal
    if fatal is not None:
        return Outcome.FATAL, fatal
    return (Outcome.FAILED_REQUESTS if stats.failed or stats.partial else Outcome.COMPLETE), None


class _ProblemCollector(logging.Handler):
    """Keeps the last few warnings of the run for the dashboard (asyncdicom's messages hold no
    patient data)."""

    def __init__(self, stats: RunStats) -> None:
        super().__init__(logging.WARNING)
        self._stats = stats

    def emit(self, record: logging.LogRecord) -> None:
        self._stats.problems.append(record.getMessage())


@contextlib.contextmanager
def _problems_into(stats: RunStats) -> Iterator[None]:
    handler = _ProblemCollector(stats)
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)


async def _instances_left(ledger: Ledger) -> int:
    """Instances ``asyncdicom plan`` counted that the ledger does not hold yet (0 without a plan)."""
    kept = await ledger.get_meta("plan")
    if not kept:
        return 0
    try:
        planned = int(json.loads(kept).get("instances", 0))
    except (ValueError, TypeError, AttributeError):
        return 0
    return max(0, planned - (await ledger.summary()).instances)


def project_error(exc: BaseException) -> AsyncDicomError:
    """The error to report for ``exc``, which may be an exception group: its first AsyncDicomError
    (the cause; a worker's BrokenResourceError or a cancellation beside it is a consequence).
    Raises the first other exception, unwrapped, when there is none."""
    found = list(leaves(exc))
    for leaf in found:
        if isinstance(leaf, AsyncDicomError):
            return leaf
    for leaf in found:
        if not isinstance(leaf, anyio.get_cancelled_exc_class()):
            raise leaf
    raise exc


async def _finish(
    config: Config, plan: Plan, ledger: Ledger, stats: RunStats, outcome: Outcome, message: str | None, notes: list[str]
) -> RunReport:
    summary = await ledger.summary()
    counts = summary.requests
    library_rows = None
    library = config.output.library_file
    if library is not None and not ledger.last_host:  # written once per job: by the last host to finish
        notes = [
            *notes,
            f"other hosts still run job {config.output.job_name}: the last of them to finish writes {library.name}",
        ]
        library = None
    try:
        if config.request.type == "c-find" and library is not None:
            library_rows = await ledger.export_library(library, plan.columns, guard=config.output.csv_formula_guard)
        elif config.request.type in ("c-move", "c-get") and library is not None:
            library_rows = await ledger.export_requests(library, plan.columns, guard=config.output.csv_formula_guard)
    except OutputError as exc:  # the ledger has it all; the next run writes the file again
        notes = [*notes, str(exc)]
        log.error("%s", exc)
    if outcome in (Outcome.COMPLETE, Outcome.FAILED_REQUESTS) and counts.pending:
        outcome = Outcome.INTERRUPTED  # pragma: no cover - defensive: work left without a signal
    snap = stats.snapshot()
    report = RunReport(
        outcome=outcome,
        kind=config.request.type,
        planned=len(plan.requests),
        duplicates=plan.duplicates,
        ran=snap.finished,
        done=counts.done,
        failed=counts.failed,
        pending=counts.pending,
        skipped=snap.skipped,
        matches=summary.matches,
        elapsed=round(snap.elapsed, 3),
        library_file=str(library) if library else None,
        ledger_file=where(config),
        library_rows=library_rows,
        message=message,
        retries=snap.retries,
        rejections=snap.rejections,
        silent=snap.silent,
        notes=notes,
        partial=counts.partial,
        instances=summary.instances,
        instances_new=snap.instances,
        duplicate_instances=snap.duplicates,
        quarantined_instances=snap.quarantined,
        held_back_instances=summary.held_back_total,
        held_back=[{"kind": h.kind, "reason": h.reason, "count": h.count} for h in summary.held_back],
        problems=stats.problem_counts,
        started=iso_time(time.time() - snap.elapsed),
        finished=iso_time(time.time()),
        threads="auto" if config.request.auto_threads else config.request.threads,
        concurrency=snap.concurrency,
        refused_classes=dict(stats.refused_classes),
    )
    if outcome is Outcome.COMPLETE and (counts.failed or counts.partial):
        report.outcome = Outcome.FAILED_REQUESTS
    elif outcome is Outcome.COMPLETE and summary.held_back_total:
        report.outcome = Outcome.HELD_BACK
    done = {"done": report.done, "failed": report.failed, "pending": report.pending, "ran": snap.finished}
    await ledger.finish_run(report.outcome, {**done, "instances": snap.instances, "bytes": snap.bytes})
    return report


async def echo(backend: DicomBackend) -> tuple[int, float]:
    """One C-ECHO: its status and round-trip seconds."""
    session = backend.session()
    start = time.monotonic()
    try:
        status = await anyio.to_thread.run_sync(session.echo)
    finally:
        await anyio.to_thread.run_sync(session.close)
    return status, time.monotonic() - start


__all__ = ["NetworkError", "RunOptions", "RunReport", "echo", "run"]
