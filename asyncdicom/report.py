"""What people read (stderr) and what scripts parse (stdout, one JSON document)."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from pydicom.uid import UID
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from asyncdicom.stats import RunSnapshot
from asyncdicom.timestamps import iso_time

_stderr = Console(stderr=True, highlight=False)


def console() -> Console:
    """The one console on stderr that messages, logs, progress and the dashboard share."""
    return _stderr


def dashboard_wanted() -> bool:
    """Whether a live dashboard fits stderr: a terminal that takes colours and cursor moves
    (not with NO_COLOR or TERM=dumb; plain progress lines then, and in log files)."""
    return _stderr.is_terminal and not _stderr.is_dumb_terminal and "NO_COLOR" not in os.environ


def error(message: str) -> None:
    """One-line error on stderr."""
    _stderr.print(f"error: {message}", markup=False, soft_wrap=True)


def warning(message: str) -> None:
    """One-line warning on stderr."""
    _stderr.print(f"warning: {message}", markup=False, soft_wrap=True)


def info(message: str) -> None:
    """A line for people on stderr."""
    _stderr.print(message, markup=False, soft_wrap=True)


@contextmanager
def file_progress(label: str) -> Iterator[Callable[[int, int, int, int], None]]:
    """A progress display on a terminal (nothing under cron): bar, files, ETA, files/s, MB/s and
    files held back so far; call the result with (done, total, bytes, held back)."""
    if not dashboard_wanted():
        yield lambda done, total, size, held: None
        return
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[rates]}"),
        TextColumn("{task.fields[held]}"),
    )
    with Progress(*columns, console=_stderr, transient=True, refresh_per_second=4) as bar:
        task = bar.add_task(label, total=None, rates="", held="")
        start = time.monotonic()

        def update(done: int, total: int, size: int, held: int) -> None:
            seconds = max(time.monotonic() - start, 1e-6)
            rates = f"{done / seconds:.0f} files/s · {size / 1e6 / seconds:.1f} MB/s"
            bar.update(task, completed=done, total=total, rates=rates, held=f"{held} held back" if held else "")

        yield update


def emit_json(document: Mapping[str, Any]) -> None:
    """The one machine-readable document on stdout."""
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")
    sys.stdout.flush()


def progress_line(snap: RunSnapshot, retrieve: bool = False) -> str:
    """A plain progress line: settled/total, what arrived, rates, failures, concurrency."""
    total = snap.planned - snap.skipped
    line = f"{snap.finished}/{total} requests ({snap.done} done, {snap.failed} failed), "
    if retrieve:
        expected = max(snap.expected, snap.received)
        megabytes = snap.bytes / 1e6 / snap.elapsed if snap.elapsed > 0 else 0.0
        line += f"{snap.received}/{expected} instances, {megabytes:.1f} MB/s, "
    else:
        line += f"{snap.matches} matches, "
    line += f"{snap.rate:.1f} req/s, {snap.in_flight} in flight"
    extras = [
        f"{n} {label}"
        for n, label in ((snap.retries, "retries"), (snap.rejections, "rejections"), (snap.silent, "silent aborts"))
        if n
    ]
    if extras:
        line += ", " + ", ".join(extras)
    return line


def progress_interval() -> float:
    """Seconds between progress lines: often on a terminal, rarely in a log file (cron)."""
    return 2.0 if _stderr.is_terminal else 30.0


def progress(snap: RunSnapshot, retrieve: bool = False) -> None:
    """Print the progress line on stderr."""
    info(progress_line(snap, retrieve))


def iso(epoch: float | None) -> str:
    """Epoch seconds as local ISO 8601 with the offset ("" for none), for tables."""
    return iso_time(epoch) or ""


def status_tables(counts: Mapping[str, int], runs: Sequence[Mapping[str, Any]]) -> None:
    """``status``: requests by state, and the last runs with their duration and rates."""
    states = Table(show_header=True, title_justify="left", box=None)
    states.add_column("state")
    states.add_column("requests", justify="right")
    for state, number in counts.items():
        states.add_row(state, f"{number:,}")
    _stderr.print(states)
    if not runs:
        return
    table = Table(title="last runs", title_justify="left", box=None)
    for name in ("started", "seconds", "outcome", "requests", "requests/s", "instances", "MB/s"):
        table.add_column(name, justify="left" if name in ("started", "outcome") else "right")
    for run in runs:
        seconds = (run["finished"] - run["started"]) if run.get("finished") else None
        counts_ = run.get("counts") or {}
        table.add_row(
            iso(run["started"]),
            f"{seconds:.0f}" if seconds is not None else "running",
            run.get("outcome") or "",
            str(counts_.get("ran", "")),
            _per_second(counts_.get("ran", 0), seconds),
            str(counts_.get("instances", "")),
            _per_second(counts_.get("bytes", 0) / 1e6, seconds),
        )
    _stderr.print(table)


def _per_second(value: float, seconds: float | None) -> str:
    return f"{value / seconds:.1f}" if seconds else ""


def rows_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """``report --format table``: the rows on stdout (the report is the command's output)."""
    table = Table(box=None)
    for name in columns:
        table.add_column(name, overflow="fold")
    for row in rows:
        table.add_row(*("" if row.get(name) is None else str(row.get(name)) for name in columns))
    Console(highlight=False).print(table)


def held_back(groups: Sequence[Mapping[str, Any]]) -> None:
    """One line per reason instances were held back (quarantined, skipped, kept compressed)."""
    if not groups:
        return
    total = sum(int(group["count"]) for group in groups)
    warning(f"{total} instances were held back (work left to do; the ledger's instances table has each):")
    for group in groups:
        info(f"  {group['count']} × {group['kind']}: {group['reason'] or 'no reason recorded'}")


def refused_classes(classes: Mapping[str, int]) -> None:
    """One line per SOP class a C-GET needed and the PACS accepted no presentation context for."""
    if not classes:
        return
    warning("the PACS accepted no C-GET presentation context for these SOP classes (use request.type c-move):")
    for uid, count in classes.items():
        info(f"  {UID(uid).name} ({uid}): {count} request{'' if count == 1 else 's'}")


def summary(report: Mapping[str, Any]) -> None:
    """The end-of-run table on stderr."""
    table = Table(title=f"asyncdicom run: {report['outcome']}", show_header=False, title_justify="left")
    table.add_column("what")
    table.add_column("value", justify="right")
    retrieve = report.get("kind") in ("c-move", "c-get")
    rows = [
        ("requests planned", "planned"),
        ("done", "done"),
        *([("partly retrieved", "partial")] if report.get("partial") else []),
        ("failed", "failed"),
        ("still pending", "pending"),
        ("skipped (done earlier)", "skipped"),
        *(
            [
                ("instances stored in this run", "instances_new"),
                ("received again (already stored)", "duplicate_instances"),
                *([("quarantined or skipped", "quarantined_instances")] if report.get("quarantined_instances") else []),
                ("instances in the ledger", "instances"),
            ]
            if retrieve
            else [("matches", "matches")]
        ),
        ("retries", "retries"),
        ("seconds", "elapsed"),
    ]
    for label, key in rows:
        table.add_row(label, str(report.get(key, "")))
    _stderr.print(table)
    if report.get("library_file"):
        name = "request CSV" if retrieve else "library"
        info(f"{name}: {report['library_file']} ({report.get('library_rows', 0)} rows)")
    info(f"ledger: {report['ledger_file']}")
    held_back(report.get("held_back") or [])
    refused_classes(report.get("refused_classes") or {})
    repeated = {kind: count for kind, count in (report.get("problems") or {}).items() if count > 1}
    for kind, count in repeated.items():
        warning(f"{count} × {kind}")
    if report.get("message"):
        error(str(report["message"]))
