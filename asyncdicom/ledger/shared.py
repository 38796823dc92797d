"""What both ledgers (SQLite and PostgreSQL) do the same way once the rows are read: the
report's rows, the exported CSV files, the event-log lines of what was committed."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiofiles
import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from asyncdicom.elements import column_text
from asyncdicom.errors import LedgerError, output_error
from asyncdicom.events import emit
from asyncdicom.ledger import cells
from asyncdicom.ledger.base import RequestRow
from asyncdicom.models import InstanceRecord, InstanceState, Request, RequestResult, narrow
from asyncdicom.stats import RunStats

log = logging.getLogger("asyncdicom.ledger")

HELD = (InstanceState.QUARANTINED, InstanceState.SKIPPED)
SUMMARY_STATES = ("done", "failed", "pending", "partial")

Item = tuple[Request, RequestResult] | InstanceRecord
"""What a recorder queues for the ledger's writer: a settled request, or a placed instance."""


def narrowed(request: Request, state: str, missing: str | None) -> Request:
    """The request, asking only for its missing instances when a partial retrieve knows them
    (``missing``: the ledger's JSON list of their SOP Instance UIDs)."""
    narrower = narrow(request, json.loads(missing)) if state == "partial" and missing else None
    return narrower or request


def in_csv_order(requests: Iterable[Request], rows: Iterable[Sequence[Any]]) -> list[Request]:
    """The ``requests`` (a plan's, in CSV order) that ``rows`` of (key, state, missing) name,
    each narrowed to its missing instances when a partial retrieve knows them."""
    found = {str(key): (str(state), missing) for key, state, missing in rows}
    return [narrowed(request, *found[request.key]) for request in requests if request.key in found]


def result_counts(result: RequestResult) -> tuple[int | None, int | None, int | None, int | None]:
    """(completed, failed, warning sub-operations, instances received) of a result."""
    counts = result.counts or {}
    return counts.get("completed"), counts.get("failed"), counts.get("warning"), result.received


def count_settled(items: Sequence[Item], stats: RunStats) -> None:
    """Count the settled requests of a committed batch in the run's figures."""
    for item in items:
        if isinstance(item, InstanceRecord):
            continue
        result = item[1]
        if result.state == "done":
            stats.done += 1
            stats.matches += len(result.matches)
        elif result.state == "partial":
            stats.partial += 1
        else:
            stats.failed += 1


def check_version(version: int, known: int, what: str) -> None:
    """Refuse a ledger whose schema ``version`` a newer asyncdicom wrote (this one knows ``known``)."""
    if version > known:
        msg = (
            f"Unable to use {what} as a newer asyncdicom wrote it (schema {version}, this one knows {known}); "
            "upgrade asyncdicom"
        )
        raise LedgerError(msg)


def warn_of_twins(instances: Sequence[InstanceRecord], stored: Iterable[Sequence[Any]]) -> None:
    """Warn of each instance whose SOP Instance UID is stored at another path already (``stored``:
    the ledger's (UID, path) rows for these UIDs): the archive holds two different data sets under
    one UID (identical ones are placed once)."""
    known: dict[str, set[str]] = {}
    for uid, path in stored:
        known.setdefault(str(uid), set()).add(str(path))
    for record in instances:
        paths = known.setdefault(record.sop_uid, set())
        if paths and record.path not in paths:
            log.warning(
                "SOP Instance UID %s was received twice with different content (the archive holds two data "
                "sets under one UID); both are kept",
                record.sop_uid,
            )
            emit("twin", sop_instance_uid=record.sop_uid, request=record.request_key)
        paths.add(record.path)


def announce(items: Sequence[Item]) -> None:
    """Event-log lines for settled requests and held-back instances (after their commit)."""
    for item in items:
        if isinstance(item, InstanceRecord):
            if item.state in HELD:
                emit("held-back", sop_instance_uid=item.sop_uid, kind=item.state, request=item.request_key)
            continue
        request, result = item
        emit(
            "request",
            key=request.key,
            line=request.line,
            state=result.state,
            attempts=result.attempts,
            status=f"0x{result.status:04X}" if result.status is not None else None,
            category=result.category,
            received=result.received,
            missing=len(result.missing),
            duplicates=result.duplicates,
            error=result.error,
        )


def request_row(row: Sequence[Any], folders: dict[str, set[str]], states: frozenset[str] | None) -> RequestRow | None:
    """A :class:`RequestRow` from (key, line, elements, state, status, category, error, attempts,
    completed, failed, warning, received, elapsed, updated, stored, held back, first instance),
    or None when ``states`` leaves it out."""
    (key, line, elements, state, status, category, error, attempts, done, failed, warned, received, *rest) = row
    if states is not None and state not in states:
        return None
    elapsed, updated, stored, held, first_instance = rest
    expected = None if done is None and failed is None else (done or 0) + (failed or 0) + (warned or 0)
    first = first_instance or (updated - (elapsed or 0.0) if updated else None)
    return RequestRow(
        line=int(line),
        elements={name: value or "" for name, value in json.loads(elements)},
        state=str(state),
        status=status,
        category=category,
        error=error,
        attempts=int(attempts),
        expected=expected,
        received=received,
        stored=int(stored or 0),
        held_back=int(held or 0),
        first=first,
        last=updated,
        folders=tuple(sorted(folders.get(str(key), ()))),
    )


def add_folder(folders: dict[str, set[str]], key: object, path: object) -> None:
    """Note the folder of a stored instance's ``path`` under its request ``key``."""
    folders.setdefault(str(key), set()).add(str(path).rpartition("/")[0] or ".")


def library_csv(columns: Sequence[str], rows: Iterable[tuple[int, dict[str, str]]], guard: bool) -> bytes:
    """The library CSV: one row per C-FIND match, its CSV line last (cells safe for spreadsheets)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(cells.row([*columns, "row"], guard))
    writer.writerows(cells.row([*(column_text(attrs, c) for c in columns), line], guard) for line, attrs in rows)
    return buffer.getvalue().encode("utf-8")


def requests_csv(
    columns: Sequence[str], rows: Iterable[Sequence[Any]], held: dict[str, dict[str, int]], guard: bool
) -> bytes:
    """The request CSV: each request's elements and final state (as pydicom-batch wrote it), from
    rows of (key, line, elements, state, status, completed, failed, warning, received, error)
    and the reasons its instances were held back (request key → reason → count)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    extra = ["row", "state", "status", "completed", "failed", "warning", "received", "error", "held_back", "why"]
    writer.writerow(cells.row([*columns, *extra], guard))
    for key, line, elements, state, status, completed, failed, warning, received, error in rows:
        values = {name: value or "" for name, value in json.loads(str(elements))}
        status_text = f"0x{status:04X}" if isinstance(status, int) else ""
        reasons = held.get(str(key), {})
        why = "; ".join(f"{count} × {reason}" for reason, count in sorted(reasons.items()))
        tail = [line, state, status_text, completed, failed, warning, received, error, sum(reasons.values()), why]
        writer.writerow(cells.row([*(values.get(c, "") for c in columns), *tail], guard))
    return buffer.getvalue().encode("utf-8")


async def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file, fsync and rename: never a partial file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        async with aiofiles.open(tmp, "wb") as handle:
            await handle.write(data)
            await handle.flush()
            await anyio.to_thread.run_sync(os.fsync, handle.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise output_error(exc, str(path)) from None


BATCH = 500  # results committed in one transaction at most


class Recorder:
    """A ledger writer task's inbox (see :func:`recording`)."""

    def __init__(self, send: MemoryObjectSendStream[Item], on_record: Callable[[Request], None] | None = None) -> None:
        self._send = send
        self._on_record = on_record

    async def record(self, request: Request, result: RequestResult) -> None:
        """Queue a result; it is committed with the next batch."""
        if self._on_record is not None:
            self._on_record(request)
        await self._send.send((request, result))

    async def record_instance(self, record: InstanceRecord) -> None:
        """Queue a placed instance; committed with the next batch, before later results."""
        try:
            self._send.send_nowait(record)  # thousands per minute: no trip round the loop unless full
        except anyio.WouldBlock:
            await self._send.send(record)


@asynccontextmanager
async def recording(
    commit: Callable[[list[Item]], Awaitable[Sequence[Item]]],
    stats: RunStats,
    on_record: Callable[[Request], None] | None = None,
) -> AsyncIterator[Recorder]:
    """A recorder whose items a single writer task hands to ``commit`` in batches (it returns
    what it recorded); on exit, even when cancelled, everything queued is committed first.
    ``on_record`` hears of each result as it is queued."""
    send, receive = anyio.create_memory_object_stream[Item](BATCH * 2)
    async with anyio.create_task_group() as tg:
        tg.start_soon(_writer, receive, commit, stats)
        try:
            yield Recorder(send, on_record)
        finally:
            send.close()


async def _writer(
    receive: MemoryObjectReceiveStream[Item], commit: Callable[[list[Item]], Awaitable[Sequence[Item]]], stats: RunStats
) -> None:
    with anyio.CancelScope(shield=True):
        async with receive:
            async for item in receive:
                batch = [item]
                while len(batch) < BATCH:
                    try:
                        batch.append(receive.receive_nowait())
                    except (anyio.WouldBlock, anyio.EndOfStream):
                        break
                recorded = await commit(batch)
                count_settled(recorded, stats)
                announce(recorded)  # once durable
