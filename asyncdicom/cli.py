"""The ``asyncdicom`` command line (typer).

stdout carries only the ``--json`` document; everything for people goes to stderr.
Exit codes: 0 all done, 1 fatal, 2 config/usage error, 3 finished with failed requests,
130 interrupted. There are no prompts.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import anyio
import typer

from asyncdicom.anonymize.startup import without_pixel_libraries

# This process never decodes pixel data (worker processes do, and import pydicom themselves):
# pydicom is loaded without numpy, GDCM and pylibjpeg, ~25 MB and ~0.1 s less for every command.
with without_pixel_libraries():
    import pydicom  # noqa: F401

from asyncdicom import __version__, logs, report
from asyncdicom.errors import AsyncDicomError, ConfigError, ExitCode

if TYPE_CHECKING:  # imported where used: `anonymize` starts faster without the config machinery
    from asyncdicom import dashboard
    from asyncdicom.config import Config
    from asyncdicom.ledger import LedgerSummary
    from asyncdicom.plan import Plan

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,  # plain help: no <bool> placeholders on flags, no boxes in a log file
    context_settings={"help_option_names": ["-h", "--help"]},
    help="Pull large image datasets out of a PACS: batch C-FIND, C-MOVE and C-GET, resumable.",
)

_T = TypeVar("_T")
log = logging.getLogger("asyncdicom")

ConfigArg = Annotated[Path, typer.Argument(metavar="CONFIG", help="YAML configuration file.", show_default=False)]
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Batch CSV; overrides request.elements_batch_file.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON summary on stdout.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="Only warnings and errors on stderr.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True, help="More detail on stderr (repeatable).")]


def _version(value: bool) -> None:
    if value:
        print(f"asyncdicom {__version__}")  # noqa: T201 - the version is the command's output
        raise typer.Exit(0)


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """Pull large image datasets out of a PACS for research: batch C-FIND, C-MOVE and C-GET."""


def _count(number: int, noun: str) -> str:
    """``1 thread``, ``4 threads``."""
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _guard(body: Callable[[], _T], json_command: str | None = None) -> _T:
    """Run a command body, turning errors into a one-line message and an exit code; with
    ``json_command`` (``--json`` was given) the error is also one JSON document on stdout."""
    try:
        return body()
    except BaseException as exc:
        code, message = _error_of(exc)
        if code is None:
            raise
        report.error(message)
        if json_command is not None:
            report.emit_json(
                {"schema": 1, "command": json_command, "ok": False, "exit_code": int(code), "error": message}
            )
        raise typer.Exit(int(code)) from None


def _error_of(exc: BaseException) -> tuple[ExitCode | None, str]:
    """Exit code and message for an exception (the first project error of a group); None for
    the exits typer handles itself."""
    leaves = [exc]
    while any(isinstance(leaf, BaseExceptionGroup) for leaf in leaves):
        leaves = [
            inner for leaf in leaves for inner in (leaf.exceptions if isinstance(leaf, BaseExceptionGroup) else (leaf,))
        ]
    for leaf in leaves:
        if isinstance(leaf, AsyncDicomError):
            return leaf.exit_code, str(leaf)
    leaf = leaves[0]
    if isinstance(leaf, typer.Exit | SystemExit):
        return None, ""
    if isinstance(leaf, KeyboardInterrupt):
        return ExitCode.INTERRUPTED, "interrupted"
    # No traceback (its frames could hold patient data); -v shows it in the log.
    log.debug("internal error", exc_info=leaf)
    return ExitCode.FATAL, f"internal error: {type(leaf).__name__}: {leaf}; please report it (run with -v for details)"


def _load(config_path: Path, csv: Path | None) -> tuple[Config, Plan]:
    from asyncdicom.config import load_config
    from asyncdicom.plan import build_plan

    config = load_config(config_path, batch_file=csv)
    for message in config.warnings:
        report.warning(message)
    plan = build_plan(config)
    for message in plan.warnings:
        report.warning(message)
    return config, plan


@app.command()
def run(
    config: ConfigArg,
    csv: CsvOpt = None,
    restart: Annotated[bool, typer.Option("--restart", help="Forget earlier progress and start over.")] = False,
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Run requests that failed earlier again.")
    ] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="No live dashboard or progress lines (the summary stays).")
    ] = False,
    log_file: Annotated[
        Path | None, typer.Option("--log-file", help="Also append the log to this file (info and up, even with -q).")
    ] = None,
) -> None:
    """Run the batch in CONFIG, resuming where an earlier run stopped."""
    try:
        logs.setup(verbose, quiet, report.console(), log_file)
    except ConfigError as exc:
        report.error(str(exc))
        raise typer.Exit(int(exc.exit_code)) from None

    def body() -> int:
        from asyncdicom.runner import RunOptions, backend_for, echo, restrict_permissions
        from asyncdicom.runner import run as run_plan

        cfg, plan = _load(config, csv)
        restrict_permissions(cfg.output.permissions)
        for text in _script_warnings(cfg, plan):
            report.warning(text)
        backend = backend_for(cfg)
        if cfg.request.type == "c-echo":
            return _echo_result(cfg, anyio.run(echo, backend, backend="asyncio"), json_out)
        options = RunOptions(restart=restart, retry_failed=retry_failed)
        if quiet or no_progress:
            result = anyio.run(run_plan, cfg, plan, backend, options, backend="asyncio")
        elif report.dashboard_wanted():
            from asyncdicom import dashboard

            with dashboard.live(_dashboard_header(cfg), report.console()) as board:
                options = replace(options, progress=board.update, progress_every=1 / dashboard.REFRESH_PER_SECOND)
                result = anyio.run(run_plan, cfg, plan, backend, options, backend="asyncio")
        else:
            retrieve = cfg.request.type in ("c-move", "c-get")
            options = replace(
                options, progress=partial(report.progress, retrieve=retrieve), progress_every=report.progress_interval()
            )
            result = anyio.run(run_plan, cfg, plan, backend, options, backend="asyncio")
        if not quiet or result.message:
            report.summary(result.to_json())
        if json_out:
            report.emit_json(result.to_json())
        return int(result.exit_code)

    raise typer.Exit(_guard(body, "run" if json_out else None))


def _dashboard_header(cfg: Config) -> dashboard.Header:
    from asyncdicom import dashboard
    from asyncdicom.ledger import where

    output = cfg.output.directory or cfg.output.library_file
    return dashboard.Header(
        kind=cfg.request.type,
        pacs=cfg.pacs.where,
        output=str(output) if output else "",
        ledger=where(cfg),
    )


def _echo_result(cfg: Config, result: tuple[int, float], json_out: bool) -> int:
    status, elapsed = result
    where = cfg.pacs.where
    what = "DICOMweb echo (QIDO-RS)" if cfg.pacs.web else "C-ECHO"
    ok = status == 0
    if json_out:
        report.emit_json(
            {"schema": 1, "command": "echo", "pacs": where, "status": status, "ok": ok, "seconds": round(elapsed, 4)}
        )
    if ok:
        report.info(f"{what} {where}: success in {elapsed * 1000:.1f} ms")
        return int(ExitCode.OK)
    report.error(f"{what} {where}: status 0x{status:04X}")
    return int(ExitCode.FATAL)


@app.command()
def echo(
    config: ConfigArg,
    move: Annotated[
        bool,
        typer.Option(
            "--move",
            help="Also check the way back: ask the PACS to C-MOVE one instance to our storage SCP "
            "(local.aet, local.port) and say whether it arrived (nothing is written).",
        ),
    ] = False,
    study: Annotated[
        str | None, typer.Option("--study", help="With --move: the Study Instance UID to send an instance of.")
    ] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Verify that the PACS in CONFIG answers a C-ECHO (and, with --move, can send to us)."""
    logs.setup(verbose)

    def body() -> int:
        from asyncdicom.config import load_config
        from asyncdicom.runner import backend_for
        from asyncdicom.runner import echo as echo_pacs

        cfg = load_config(config)
        for message in cfg.warnings:
            report.warning(message)
        if not move:
            return _echo_result(cfg, anyio.run(echo_pacs, backend_for(cfg), backend="asyncio"), json_out)
        return _echo_move(cfg, study, json_out)

    raise typer.Exit(_guard(body, "echo" if json_out else None))


def _echo_move(cfg: Config, study: str | None, json_out: bool) -> int:
    import re

    from asyncdicom import wayback
    from asyncdicom.runner import backend_for

    if study is not None and (len(study) > 64 or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", study)):
        why = "expected a Study Instance UID: digits separated by single dots, at most 64 characters"
        option = "--study"
        raise ConfigError(option, why)

    if cfg.pacs.web:
        option, why = "--move", "a DICOMweb source has no C-MOVE and no way back to check; run echo without it"
        raise ConfigError(option, why)
    find = backend_for(replace(cfg, request=replace(cfg.request, type="c-find")))
    move = backend_for(replace(cfg, request=replace(cfg.request, type="c-move")))
    result = anyio.run(wayback.check, cfg, find, move, study, backend="asyncio")
    where = cfg.pacs.where
    if json_out:
        report.emit_json(
            {
                "schema": 1,
                "command": "echo",
                "pacs": where,
                "move": True,
                "ok": result.ok,
                "status": result.status,
                "seconds": round(result.seconds, 4),
                "bytes": result.bytes,
                "message": result.message,
            }
        )
    if result.ok:
        report.info(f"C-MOVE from {where}: {result.message}")
        return int(ExitCode.OK)
    report.error(f"C-MOVE from {where}: {result.message}")
    return int(ExitCode.FATAL)


def _describe(cfg: Config) -> Mapping[str, object]:
    from asyncdicom.config import describe

    return describe(cfg)


def _script_warnings(cfg: Config, plan: Plan) -> list[str]:
    """What DAT would silently ignore in the anonymization script (rules, unknown functions), and
    the batch's values that a rule looks up in a table that lacks them (by CSV line)."""
    section = cfg.anonymization
    if not section.enabled or section.script is None:
        return []
    from asyncdicom.anonymize.lint import lookup_misses, warnings
    from asyncdicom.anonymize.lookup import LookupTable
    from asyncdicom.anonymize.script import load

    script = load(section.script)
    table = LookupTable.load(section.lookup_table) if section.lookup_table else LookupTable.empty()
    requests = [
        (request.line, {s.leaf.keyword: s.value for s in request.elements if len(s.path) == 1 and s.value})
        for request in plan.requests
    ]
    return [*warnings(script), *lookup_misses(script, table, requests)]


@app.command()
def check(config: ConfigArg, csv: CsvOpt = None, json_out: JsonOpt = False) -> None:
    """Validate CONFIG and its batch CSV without any network traffic."""

    def body() -> int:
        cfg, plan = _load(config, csv)
        script_warnings = _script_warnings(cfg, plan)
        doc: dict[str, Any] = {
            "schema": 1,
            "command": "check",
            "ok": True,
            **_describe(cfg),
            "requests": len(plan.requests),
            "csv_rows": plan.rows,
            "duplicates": plan.duplicates,
            "columns": list(plan.columns),
            "warnings": [*cfg.warnings, *plan.warnings, *script_warnings],
        }
        for text in script_warnings:
            report.warning(text)
        source = f" from {plan.source}" if plan.source else ""
        dupes = f" ({plan.duplicates} duplicate rows removed)" if plan.duplicates else ""
        request = cfg.request
        threads = f"auto threads (at most {request.max_threads})" if request.auto_threads else None
        report.info(
            f"{config}: OK: {request.type}, {request.model} model, "
            f"{threads or _count(request.threads, 'thread')}; {_count(len(plan.requests), 'request')}{source}{dupes}"
        )
        window = _window_text(cfg)
        if window:
            doc["schedule"] = window
            report.info(f"schedule: {window}")
        if json_out:
            report.emit_json(doc)
        return int(ExitCode.OK)

    raise typer.Exit(_guard(body, "check" if json_out else None))


def _window_text(cfg: Config) -> str:
    """The schedule window now, and when it next opens ("" without a schedule)."""
    from asyncdicom.runner import window_gate

    gate = window_gate(cfg)
    if gate.schedule is None:
        return ""
    state = gate.describe()
    now = state if state.startswith("open") else f"{state}: at {gate.opening_text()}"
    return f"{cfg.schedule.describe()}; {now}"


@app.command()
def status(config: ConfigArg, json_out: JsonOpt = False) -> None:
    """Summarise the ledger of CONFIG: requests by state, last run, first failures."""

    def body() -> int:
        from asyncdicom.config import load_config
        from asyncdicom.ledger import open_job_ledger, where
        from asyncdicom.timestamps import iso_time

        cfg = load_config(config)

        async def read() -> tuple[LedgerSummary, list[dict[str, Any]]]:
            async with open_job_ledger(cfg, readonly=True) as ledger:
                runs = [dataclasses.asdict(run) for run in await ledger.runs()]
                return await ledger.summary(), runs

        summary, runs = anyio.run(read, backend="asyncio")
        counts = summary.requests
        retrieve = cfg.request.type in ("c-move", "c-get")
        found = f"{summary.instances} instances" if retrieve else f"{summary.matches} matches"
        report.info(f"ledger {where(cfg)}: {found}")
        window = _window_text(cfg)
        if window:
            report.info(f"schedule: {window}")
        report.status_tables(dataclasses.asdict(counts), runs)
        for failure in summary.failures:
            report.info(f"  failed: line {failure.line}: {failure.error}")
        report.held_back([{"kind": h.kind, "reason": h.reason, "count": h.count} for h in summary.held_back])
        if json_out:
            document = {"schema": 1, "command": "status", "ledger_file": where(cfg)}
            iso_runs = [
                {**run, "started": iso_time(run["started"]), "finished": iso_time(run["finished"])} for run in runs
            ]
            report.emit_json({**document, **summary.to_json(), "runs": iso_runs, "schedule": window or None})
        return int(ExitCode.OK)

    raise typer.Exit(_guard(body, "status" if json_out else None))


REQUEST_COLUMNS = (
    "line", "elements", "state", "status", "meaning", "attempts", "expected", "received", "stored", "held_back",
    "first", "last", "folders", "error",
)  # fmt: skip
INSTANCE_COLUMNS = ("line", "sop_uid", "path", "size", "transfer_syntax", "state", "reason", "received")


@app.command("report")
def report_command(
    config: ConfigArg,
    format_: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    instances: Annotated[bool, typer.Option("--instances", help="One row per instance, not per request.")] = False,
    state: Annotated[str | None, typer.Option("--state", help="Only requests in these states: failed,partial.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Same as --format json.")] = False,
) -> None:
    """Export what the ledger of CONFIG knows: one row per request (or per instance) on stdout."""
    format_ = "json" if json_out else format_

    def body() -> int:
        from asyncdicom.config import load_config
        from asyncdicom.engine.retry import status_meaning
        from asyncdicom.ledger import open_job_ledger

        if format_ not in ("table", "csv", "json"):
            where, msg = "--format", f"unknown format {format_!r}; use table, csv or json"
            raise ConfigError(where, msg)
        states = frozenset(part.strip() for part in state.split(",")) if state else None
        known = {"pending", "done", "failed", "partial"}
        if states is not None and not states <= known:
            where, msg = "--state", f"unknown state {sorted(states - known)[0]!r}; use {', '.join(sorted(known))}"
            raise ConfigError(where, msg)
        cfg = load_config(config)

        async def read() -> list[dict[str, Any]]:
            async with open_job_ledger(cfg, readonly=True) as ledger:
                if instances:
                    return [dataclasses.asdict(row) for row in await ledger.instance_rows(states)]
                rows = []
                for row in await ledger.request_rows(states):
                    item = dataclasses.asdict(row)
                    item["elements"] = " ".join(f"{k}={v}" for k, v in row.elements.items() if v)
                    item["status"] = f"0x{row.status:04X}" if row.status is not None else None
                    item["meaning"] = status_meaning(row.status) if row.status is not None else None
                    item["folders"] = "; ".join(row.folders)
                    rows.append(item)
                return rows

        rows = anyio.run(read, backend="asyncio")
        for row in rows:
            for key in ("first", "last", "received"):
                if isinstance(row.get(key), float):
                    row[key] = report.iso(row[key])
        columns = INSTANCE_COLUMNS if instances else REQUEST_COLUMNS
        if instances and cfg.output.ledger_url is not None:  # several hosts: which one holds each file
            columns = (*columns, "host", "directory")
        elif instances:
            for row in rows:
                del row["host"], row["directory"]
        if format_ == "json":
            report.emit_json({"schema": 1, "command": "report", "rows": rows})
        elif format_ == "csv":
            from asyncdicom.ledger import cells

            guard = cfg.output.csv_formula_guard
            writer = csv.writer(sys.stdout, lineterminator="\n")
            writer.writerow(cells.row(list(columns), guard))
            writer.writerows(cells.row([row.get(c) for c in columns], guard) for row in rows)
        else:
            report.rows_table(rows, columns)
        return int(ExitCode.OK)

    raise typer.Exit(_guard(body, "report" if format_ == "json" else None))


@app.command()
def plan(
    config: ConfigArg,
    csv: CsvOpt = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = 0,
    sample: Annotated[
        int, typer.Option("--sample", help="Without earlier runs: time a retrieve of N requests (files deleted).")
    ] = 0,
) -> None:
    """Before retrieving anything: ask the PACS what the batch in CONFIG covers (studies, series,
    instances), which rows match nothing, and estimate the bytes and the time it will take."""
    logs.setup(verbose, False, report.console())

    def body() -> int:
        from asyncdicom import preflight
        from asyncdicom.runner import backend_for

        cfg, batch = _load(config, csv)

        async def work() -> preflight.PlanReport:
            counted = await preflight.count(cfg, batch, backend_for(preflight.as_find(cfg)))
            measured = await _sample(cfg, batch, sample) if sample > 0 else None
            return await preflight.estimate(cfg, counted, measured)

        result = anyio.run(work, backend="asyncio")
        report.info(
            f"{_count(result.requests, 'request')} cover {result.studies:,} studies, {result.series:,} series and "
            f"{result.instances:,} instances"
            + (f" ({result.counted_below} matches counted one level down)" if result.counted_below else "")
        )
        report.info(f"about {result.bytes / 1e9:.2f} GB, by {result.bytes_basis}")
        if result.seconds is not None:
            report.info(f"about {result.seconds / 3600:.1f} h at {result.rate_basis}; {result.window}")
        else:
            report.info(f"duration unknown: {result.rate_basis}; {result.window}")
        if result.unmatched_lines:
            shown = ", ".join(map(str, result.unmatched_lines[:20])) + (
                ", …" if len(result.unmatched_lines) > 20 else ""
            )
            report.warning(f"{len(result.unmatched_lines)} requests match nothing: CSV lines {shown}")
        if result.failed_lines:
            report.warning(f"{len(result.failed_lines)} requests could not be counted (see the log above)")
        if json_out:
            report.emit_json(result.to_json())
        return int(ExitCode.FAILED_REQUESTS if result.failed_lines else ExitCode.OK)

    raise typer.Exit(_guard(body, "plan" if json_out else None))


async def _sample(cfg: Config, batch: Plan, count: int) -> Any:
    """Retrieve the first ``count`` requests into a throwaway folder beside the output, and time it."""
    import shutil
    import tempfile

    from asyncdicom import preflight
    from asyncdicom.runner import RunOptions, backend_for
    from asyncdicom.runner import run as run_plan

    if cfg.request.type not in ("c-move", "c-get") or cfg.output.directory is None:
        return None
    cfg.output.directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".asyncdicom-sample-", dir=cfg.output.directory.parent))
    try:
        output = replace(  # a sample of its own: never in a shared job's ledger
            cfg.output,
            directory=scratch / "images",
            library_file=None,
            ledger_file=scratch / "l.sqlite3",
            ledger_url=None,
        )
        anonymization = replace(cfg.anonymization, quarantine_directory=scratch / "quarantine")
        trial = replace(cfg, output=output, anonymization=anonymization)
        requests = batch.requests[:count]
        result = await run_plan(trial, replace(batch, requests=requests), backend_for(trial), RunOptions())
        size = sum(path.stat().st_size for path in (scratch / "images").rglob("*.dcm"))
        return preflight.Sample(len(requests), result.instances_new, size, result.elapsed)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


@app.command()
def verify(
    config: ConfigArg,
    json_out: JsonOpt = False,
    checksums: Annotated[
        bool, typer.Option("--checksums", help="Read every file: its SHA-256 must match the one kept before.")
    ] = False,
) -> None:
    """Check that every instance the ledger of CONFIG says is stored is on disk, unchanged; what is
    missing or changed is fetched again by the next run (exit 3 when anything is)."""

    def body() -> int:
        from asyncdicom.config import load_config
        from asyncdicom.verify import verify as check_disk

        cfg = load_config(config)
        if cfg.output.directory is None:
            where, msg = "output.directory", "verify checks a retrieval's image tree; this config has none"
            raise ConfigError(where, msg)
        result = anyio.run(check_disk, cfg, checksums, backend="asyncio")
        report.info(
            f"checked {result.checked} stored instances: {result.missing} missing, {result.changed} changed"
            + (f"; {result.requests} requests will fetch them again on the next run" if not result.ok else "")
        )
        if json_out:
            report.emit_json({"schema": 1, "command": "verify", "ok": result.ok, **dataclasses.asdict(result)})
        return int(ExitCode.OK if result.ok else ExitCode.FAILED_REQUESTS)

    raise typer.Exit(_guard(body, "verify" if json_out else None))


@app.command()
def anonymize(
    source: Annotated[Path, typer.Argument(metavar="INPUT", help="A DICOM file, or a folder tree.")],
    target: Annotated[Path, typer.Argument(metavar="OUTPUT", help="The file, or folder, to write.")],
    script: Annotated[Path, typer.Option("--script", help="CTP DicomAnonymizer script.")],
    lookup_table: Annotated[Path | None, typer.Option("--lookup-table", help="CTP lookup table (.properties).")] = None,
    param: Annotated[list[str] | None, typer.Option("--param", help="NAME=VALUE, overriding the script's <p>.")] = None,
    mode: Annotated[str, typer.Option("--mode", help="faithful (as DAT) or safe.")] = "faithful",
    quarantine_directory: Annotated[
        Path | None,
        typer.Option("--quarantine-directory", help="Keep the originals of quarantined or skipped files here."),
    ] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes for a folder (0: one per core).")] = 0,
    keep_names: Annotated[
        bool,
        typer.Option("--keep-names", help="Folder: keep input file names (else named by the anonymized UID)."),
    ] = False,
    quiet: QuietOpt = False,
) -> None:
    """Anonymize INPUT into OUTPUT with a CTP script; exit 3 when a file was quarantined or skipped."""

    def body() -> int:
        from asyncdicom.anonymize import batch
        from asyncdicom.anonymize.lookup import LookupTable, LookupTableError
        from asyncdicom.anonymize.script import ScriptError, load

        if mode not in ("faithful", "safe"):
            where = "--mode"
            msg = f"unknown mode {mode!r}; use faithful or safe"
            raise ConfigError(where, msg)
        params: dict[str, str] = {}
        for item in param or []:
            name, sep, value = item.partition("=")
            if not sep or not name:
                where = "--param"
                msg = f"{item!r} is not NAME=VALUE"
                raise ConfigError(where, msg)
            params[name] = value
        try:
            load(script)
            if lookup_table is not None:
                LookupTable.load(lookup_table)
        except (ScriptError, LookupTableError) as exc:
            where, msg = "", str(exc)
            raise ConfigError(where, msg) from None
        if not source.exists():
            where = "INPUT"
            msg = f"{source} does not exist"
            raise ConfigError(where, msg)
        job = batch.Job(
            script.resolve(),
            lookup_table.resolve() if lookup_table else None,
            mode,
            quarantine_directory,
            tuple(params.items()),
            keep_names=keep_names,
        )
        with report.file_progress("anonymizing") as progress:
            summary = batch.run(job, source, target, progress if not quiet else None, workers or None)
        if not quiet:
            report.info(f"anonymized {summary.ok}, skipped {summary.skipped}, quarantined {summary.quarantined}")
            for reason, count in summary.reasons.most_common():
                report.info(f"  {count} × {reason}")
        return int(ExitCode.FAILED_REQUESTS) if summary.skipped or summary.quarantined else 0

    global _quick_exit  # read only by main(), after the command
    code = _guard(body)
    _quick_exit = True
    if code:
        raise typer.Exit(code)


@app.command()
def demo(
    directory: Annotated[
        Path, typer.Option("--directory", "-d", help="Where to write the demo config, CSV and library.")
    ] = Path("asyncdicom-demo"),
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Start a built-in PACS with generated studies; C-FIND them, then C-GET what was found."""
    logs.setup(0, quiet)

    def body() -> int:
        from asyncdicom.demo import run_demo, tree_preview

        root = directory.resolve()
        found, retrieved = anyio.run(run_demo, root, report.info, backend="asyncio")
        report.summary(found.to_json())
        report.summary(retrieved.to_json())
        report.info("retrieved tree:")
        for line in tree_preview(root / "images"):
            report.info(f"  {line}")
        if json_out:
            report.emit_json({"schema": 1, "command": "demo", "find": found.to_json(), "retrieve": retrieved.to_json()})
        else:
            report.info(f"demo configs: {root / 'demo.yaml'} and {root / 'demo-retrieve.yaml'}")
        return max(int(found.exit_code), int(retrieved.exit_code))

    raise typer.Exit(_guard(body, "demo" if json_out else None))


_quick_exit = False  # set by a command that leaves nothing open: skip the interpreter's teardown


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        if not _quick_exit:
            raise
        # Unloading pydicom and numpy module by module costs ~0.1 s, a tenth of a 200-file
        # ``anonymize``; its files are written, renamed and closed, its pool is shut down.
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
