"""The ledger: an aiosqlite database of every request, its state and its C-FIND matches.

It is the commit point: a request is done only once its row (and its matches) are committed.
WAL mode, one writer task, batched commits, ``PRAGMA user_version`` migrations, and a lock
file so that two runs (say, overlapping cron jobs) never share a ledger.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO, Any

import aiosqlite
import anyio

from asyncdicom.elements import column_text
from asyncdicom.errors import LedgerError, OutputError, output_error
from asyncdicom.ledger import shared
from asyncdicom.ledger.base import (
    Failure,
    HeldBackCount,
    InstanceRow,
    LastRun,
    LedgerSummary,
    RequestCounts,
    RequestRow,
    RunRow,
    SyncReport,
)
from asyncdicom.models import (
    KEPT_COMPRESSED_PREFIX,
    HeldBack,
    InstanceRecord,
    Request,
    RequestState,
)
from asyncdicom.plan import Plan
from asyncdicom.stats import RunStats

SCHEMA_VERSION = 5

_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE requests (
        key TEXT PRIMARY KEY,
        line INTEGER NOT NULL,
        elements TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed')),
        in_plan INTEGER NOT NULL DEFAULT 1,
        attempts INTEGER NOT NULL DEFAULT 0,
        status INTEGER,
        category TEXT,
        error TEXT,
        matches INTEGER,
        elapsed REAL,
        updated REAL
    );
    CREATE INDEX requests_state ON requests (in_plan, state);
    CREATE TABLE matches (
        request_key TEXT NOT NULL REFERENCES requests (key) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        attrs TEXT NOT NULL,
        PRIMARY KEY (request_key, idx)
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY,
        started REAL NOT NULL,
        finished REAL,
        outcome TEXT,
        counts TEXT
    );
    """,
    # 2: retrieval. Requests may be 'partial' and carry sub-operation counts; one row per instance.
    2: """
    CREATE TABLE requests_v2 (
        key TEXT PRIMARY KEY,
        line INTEGER NOT NULL,
        elements TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'failed', 'partial')),
        in_plan INTEGER NOT NULL DEFAULT 1,
        attempts INTEGER NOT NULL DEFAULT 0,
        status INTEGER,
        category TEXT,
        error TEXT,
        matches INTEGER,
        elapsed REAL,
        updated REAL,
        completed INTEGER,
        failed_ops INTEGER,
        warning_ops INTEGER,
        received INTEGER,
        missing TEXT
    );
    INSERT INTO requests_v2 (key, line, elements, state, in_plan, attempts, status, category, error, matches,
                             elapsed, updated)
        SELECT key, line, elements, state, in_plan, attempts, status, category, error, matches, elapsed, updated
        FROM requests;
    DROP TABLE requests;
    ALTER TABLE requests_v2 RENAME TO requests;
    CREATE INDEX requests_state ON requests (in_plan, state);
    CREATE TABLE instances (
        sop_uid TEXT PRIMARY KEY,
        request_key TEXT,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        transfer_syntax TEXT,
        state TEXT NOT NULL,
        received REAL NOT NULL,
        warning TEXT
    );
    CREATE INDEX instances_request ON instances (request_key);
    """,
    # 3: verify --checksums keeps each stored file's SHA-256 once it has computed it
    3: """
    ALTER TABLE instances ADD COLUMN sha256 TEXT;
    """,
    # 4: a failure that may not recur (PACS busy, aborted, silent) is continued by a plain rerun
    4: """
    ALTER TABLE requests ADD COLUMN transient INTEGER NOT NULL DEFAULT 0;
    """,
    # 5: an archive may hold two different data sets under one SOP Instance UID: both are kept,
    # each with its own row (one row per UID and path)
    5: """
    CREATE TABLE instances_v5 (
        sop_uid TEXT NOT NULL,
        request_key TEXT,
        path TEXT NOT NULL,
        size INTEGER NOT NULL,
        transfer_syntax TEXT,
        state TEXT NOT NULL,
        received REAL NOT NULL,
        warning TEXT,
        sha256 TEXT,
        PRIMARY KEY (sop_uid, path)
    );
    INSERT INTO instances_v5 SELECT sop_uid, request_key, path, size, transfer_syntax, state, received, warning,
        sha256 FROM instances;
    DROP TABLE instances;
    ALTER TABLE instances_v5 RENAME TO instances;
    CREATE INDEX instances_request ON instances (request_key);
    CREATE INDEX instances_path ON instances (path);
    """,
}


_HELD_BACK = """
    SELECT CASE WHEN i.state IN ('quarantined', 'skipped') THEN i.state ELSE 'kept compressed' END AS kind,
           i.warning, COUNT(*)
    FROM instances i LEFT JOIN requests r ON r.key = i.request_key
    WHERE (r.in_plan = 1 OR i.request_key IS NULL)
      AND (i.state IN ('quarantined', 'skipped') OR (i.state != 'duplicate' AND i.warning LIKE ?))
    GROUP BY kind, i.warning ORDER BY COUNT(*) DESC, kind, i.warning
"""
log = logging.getLogger("asyncdicom.ledger")

_SUMMARY_STATES = (RequestState.DONE, RequestState.FAILED, RequestState.PENDING, RequestState.PARTIAL)


class _Lock:
    """An exclusive, non-blocking lock file next to the ledger."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = self.path.open("a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            msg = (
                f"Unable to open the ledger {self.path.with_suffix('')} as another asyncdicom run "
                "is using it; wait for that run to end, or give this run its own output.ledger_file"
            )
            raise LedgerError(msg) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


class Ledger:
    """An open ledger database; use :func:`open_ledger`."""

    def __init__(self, db: aiosqlite.Connection, path: Path) -> None:
        self.db = db
        self.path = path
        self._run_id: int | None = None

    # --- schema -------------------------------------------------------------------------------

    async def _migrate(self) -> None:
        async with self.db.execute("PRAGMA user_version") as cursor:
            row = await cursor.fetchone()
        version = int(row[0]) if row else 0
        shared.check_version(version, SCHEMA_VERSION, f"the ledger {self.path}")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # foreign keys off while tables are rebuilt, so no cascade fires
            await self.db.executescript(
                f"PRAGMA foreign_keys = OFF; BEGIN; {_MIGRATIONS[target]} PRAGMA user_version = {target}; COMMIT; "
                "PRAGMA foreign_keys = ON;"
            )

    async def get_meta(self, key: str) -> str | None:
        async with self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)) as cursor:
            row = await cursor.fetchone()
        return str(row[0]) if row else None

    async def _set_meta(self, key: str, value: str) -> None:
        await self.db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    # --- planning -----------------------------------------------------------------------------

    async def sync_plan(self, plan: Plan, *, digests: dict[str, str], restart: bool, retry_failed: bool) -> SyncReport:
        """Bring the ledger in line with the plan; returns what was already known.

        ``digests`` fingerprint the inputs (CSV, query settings, elements); the report names
        those that changed since the last run.
        """
        db = self.db
        first_run = await self.get_meta("planned") is None
        previous = {name: await self.get_meta(f"digest:{name}") for name in digests}
        if restart:
            await db.execute("DELETE FROM matches")
            await db.execute("DELETE FROM requests")
        await db.execute("UPDATE requests SET in_plan = 0")
        async with db.execute("SELECT COUNT(*) FROM requests") as cursor:
            before = (await cursor.fetchone() or (0,))[0]
        await db.executemany(
            "INSERT INTO requests (key, line, elements) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET line = excluded.line, in_plan = 1",
            ((r.key, r.line, r.to_json()) for r in plan.requests),
        )
        async with db.execute("SELECT COUNT(*) FROM requests") as cursor:
            after = (await cursor.fetchone() or (0,))[0]
        retried = 0
        if retry_failed:
            cursor = await db.execute(
                "UPDATE requests SET state = 'pending', attempts = 0, error = NULL "
                "WHERE in_plan = 1 AND state = 'failed'"
            )
            retried = cursor.rowcount
        cursor = await db.execute(  # failures that may not recur are tried again without being asked
            "UPDATE requests SET state = 'pending', attempts = 0, transient = 0 "
            "WHERE in_plan = 1 AND state = 'failed' AND transient = 1"
        )
        continued = cursor.rowcount
        counts = await self._counts()
        for name, digest in digests.items():
            await self._set_meta(f"digest:{name}", digest)
        await self._set_meta("planned", str(len(plan.requests)))
        await db.commit()
        async with db.execute("SELECT COUNT(*) FROM requests WHERE in_plan = 0") as cursor:
            dropped = (await cursor.fetchone() or (0,))[0]
        return SyncReport(
            new=after - before,
            done=counts.get("done", 0),
            failed=counts.get("failed", 0),
            pending=counts.get("pending", 0),
            dropped=dropped,
            retried=retried,
            continued=continued,
            changed=()
            if first_run or restart
            else tuple(n for n, d in digests.items() if previous[n] not in (None, d)),
            first_run=first_run or restart,
        )

    async def _counts(self) -> dict[str, int]:
        async with self.db.execute("SELECT state, COUNT(*) FROM requests WHERE in_plan = 1 GROUP BY state") as cursor:
            return {str(state): int(n) for state, n in await cursor.fetchall()}

    async def pending(self, plan: Plan) -> list[Request]:
        """Requests of the plan still to run, in CSV order.

        A partly retrieved request whose missing instances are known asks for those alone.
        """
        async with self.db.execute(
            "SELECT key, state, missing FROM requests WHERE in_plan = 1 AND state IN ('pending', 'partial')"
        ) as cursor:
            return shared.in_csv_order(plan.requests, await cursor.fetchall())

    @asynccontextmanager
    async def work(
        self, plan: Plan, pending: Sequence[Request], on_hosts: Callable[[int], None] | None = None
    ) -> AsyncIterator[AsyncIterator[Request]]:
        """``pending`` as they are: one host runs the job (the lock file says so)."""

        async def each() -> AsyncIterator[Request]:
            for request in pending:
                yield request

        yield each()

    last_host = True  # one host runs the job

    def slots(self, count: int) -> None:
        """None: the run's own limiter is the whole budget."""
        return None

    # --- recording ----------------------------------------------------------------------------

    def recording(self, stats: RunStats) -> contextlib.AbstractAsyncContextManager[shared.Recorder]:
        """A recorder whose results a single writer task commits in batches; on exit (even when
        cancelled) everything recorded so far is committed first."""
        return shared.recording(self._commit, stats)

    async def _commit(self, items: Sequence[shared.Item]) -> Sequence[shared.Item]:
        """One transaction: instances first (in arrival order), then settled requests."""
        now = time.time()
        db = self.db
        instances = [item for item in items if isinstance(item, InstanceRecord)]
        batch = [item for item in items if not isinstance(item, InstanceRecord)]
        await db.executemany(  # a held-back instance processed again: its quarantine row goes
            "DELETE FROM instances WHERE sop_uid = ?", ((i.replaces,) for i in instances if i.replaces)
        )
        await self._warn_of_twins(instances)
        await db.executemany(
            "INSERT OR IGNORE INTO instances (sop_uid, request_key, path, size, transfer_syntax, state, received, "
            "warning) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            ((i.sop_uid, i.request_key, i.path, i.size, i.transfer_syntax, i.state, now, i.warning) for i in instances),
        )
        await db.executemany(
            "UPDATE requests SET state = ?, attempts = attempts + ?, status = ?, category = ?, "
            "error = ?, matches = ?, elapsed = ?, updated = ?, completed = ?, failed_ops = ?, warning_ops = ?, "
            "received = ?, missing = ?, transient = ? WHERE key = ?",
            (
                (
                    res.state,
                    res.attempts,
                    res.status,
                    res.category,
                    res.error,
                    len(res.matches),
                    res.elapsed,
                    now,
                    *shared.result_counts(res),
                    json.dumps(list(res.missing)) if res.missing else None,
                    int(res.transient),
                    req.key,
                )
                for req, res in batch
            ),
        )
        await db.executemany("DELETE FROM matches WHERE request_key = ?", ((req.key,) for req, _ in batch))
        await db.executemany(
            "INSERT INTO matches (request_key, idx, attrs) VALUES (?, ?, ?)",
            (
                (req.key, idx, json.dumps(attrs, ensure_ascii=False))
                for req, res in batch
                for idx, attrs in enumerate(res.matches)
            ),
        )
        await db.commit()
        return items

    async def _warn_of_twins(self, instances: Sequence[InstanceRecord]) -> None:
        """Warn of instances whose SOP Instance UID is already stored at another path: the archive
        holds two different data sets under one UID (identical ones are placed once)."""
        uids = list({i.sop_uid for i in instances})
        stored: list[Sequence[Any]] = []
        for start in range(0, len(uids), 500):
            chunk = uids[start : start + 500]
            marks = ", ".join("?" * len(chunk))
            async with self.db.execute(f"SELECT sop_uid, path FROM instances WHERE sop_uid IN ({marks})", chunk) as cur:
                stored += await cur.fetchall()
        shared.warn_of_twins(instances, stored)

    # --- runs and reports ---------------------------------------------------------------------

    async def start_run(self) -> None:
        cursor = await self.db.execute("INSERT INTO runs (started) VALUES (?)", (time.time(),))
        self._run_id = cursor.lastrowid
        await self.db.commit()

    async def finish_run(self, outcome: str, counts: dict[str, Any]) -> None:
        if self._run_id is None:
            return
        await self.db.execute(
            "UPDATE runs SET finished = ?, outcome = ?, counts = ? WHERE id = ?",
            (time.time(), outcome, json.dumps(counts), self._run_id),
        )
        await self.db.commit()

    async def summary(self) -> LedgerSummary:
        """Counts by state, the last run, and a few recent errors (no patient data)."""
        counts = await self._counts()
        async with self.db.execute(
            "SELECT COUNT(*) FROM matches m JOIN requests r ON r.key = m.request_key WHERE r.in_plan = 1"
        ) as cursor:
            matches = (await cursor.fetchone() or (0,))[0]
        async with self.db.execute("SELECT started, finished, outcome FROM runs ORDER BY id DESC LIMIT 1") as cursor:
            last = await cursor.fetchone()
        async with self.db.execute(
            "SELECT line, error FROM requests WHERE in_plan = 1 AND state = 'failed' ORDER BY line LIMIT 5"
        ) as cursor:
            failures = tuple(Failure(int(line), error) for line, error in await cursor.fetchall())
        async with self.db.execute(
            "SELECT COUNT(*) FROM requests WHERE in_plan = 1 AND state = 'done' AND category = 'warning'"
        ) as cursor:
            warnings = (await cursor.fetchone() or (0,))[0]
        async with self.db.execute("SELECT COUNT(*) FROM instances") as cursor:
            instances = (await cursor.fetchone() or (0,))[0]
        async with self.db.execute(_HELD_BACK, (f"{KEPT_COMPRESSED_PREFIX}%",)) as cursor:
            held_back = tuple(
                HeldBackCount(HeldBack(kind), reason or "", int(count))
                for kind, reason, count in await cursor.fetchall()
            )
        return LedgerSummary(
            held_back=held_back,
            requests=RequestCounts(**{state.value: counts.get(state, 0) for state in _SUMMARY_STATES}),
            instances=int(instances),
            matches=int(matches),
            warnings=int(warnings),
            last_run=None if last is None else LastRun(last[0], last[1], last[2]),
            failures=failures,
        )

    async def request_rows(self, states: frozenset[str] | None = None) -> list[RequestRow]:
        """The plan's requests in CSV order, with their instances counted (``states`` filters)."""
        async with self.db.execute(
            "SELECT r.key, r.line, r.elements, r.state, r.status, r.category, r.error, r.attempts, r.completed, "
            "r.failed_ops, r.warning_ops, r.received, r.elapsed, r.updated, "
            "SUM(i.state IN ('stored', 'renamed', 'duplicate')), SUM(i.state IN ('quarantined', 'skipped')), "
            "MIN(i.received) FROM requests r LEFT JOIN instances i ON i.request_key = r.key "
            "WHERE r.in_plan = 1 GROUP BY r.key ORDER BY r.line, r.key"
        ) as cursor:
            rows = list(await cursor.fetchall())
        async with self.db.execute(
            "SELECT request_key, path FROM instances WHERE state IN ('stored', 'renamed', 'duplicate')"
        ) as cursor:
            folders: dict[str, set[str]] = {}
            for key, path in await cursor.fetchall():
                shared.add_folder(folders, key, path)
        rows_out = (shared.request_row(row, folders, states) for row in rows)
        return [row for row in rows_out if row is not None]

    async def instance_rows(self, states: frozenset[str] | None = None) -> list[InstanceRow]:
        """Every received instance of the plan, by CSV line (``states`` filters by request state)."""
        async with self.db.execute(
            "SELECT i.sop_uid, r.line, i.path, i.size, i.transfer_syntax, i.state, i.warning, i.received, r.state, "
            "i.sha256 "
            "FROM instances i LEFT JOIN requests r ON r.key = i.request_key "
            "WHERE r.in_plan = 1 OR i.request_key IS NULL ORDER BY r.line, i.received, i.sop_uid"
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            InstanceRow(str(uid), line, str(path), int(size), syntax, str(state), reason, float(received), sha256)
            for uid, line, path, size, syntax, state, reason, received, request_state, sha256 in rows
            if states is None or request_state in states
        ]

    async def stored_by_request(self) -> dict[str, set[str]]:
        """SOP Instance UIDs already received for each unfinished request of the plan (an
        interrupted request resumes by asking for the rest)."""
        stored: dict[str, set[str]] = {}
        async with self.db.execute(
            "SELECT i.request_key, i.sop_uid FROM instances i JOIN requests r ON r.key = i.request_key "
            "WHERE r.in_plan = 1 AND r.state != 'done'"
        ) as cursor:
            async for key, uid in cursor:
                stored.setdefault(str(key), set()).add(str(uid))
        return stored

    async def remember(self, key: str, value: str) -> None:
        """Keep ``value`` in the ledger's meta table under ``key`` (e.g. the last plan)."""
        await self._set_meta(key, value)
        await self.db.commit()

    async def checksums(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Keep the SHA-256 of stored instances: (SOP Instance UID, path under the output directory,
        hex digest)."""
        await self.db.executemany(
            "UPDATE instances SET sha256 = ? WHERE path = ? AND sop_uid = ?", ((d, p, u) for u, p, d in items)
        )
        await self.db.commit()

    async def held_back_files(self) -> list[tuple[str, str, str, str]]:
        """(SOP Instance UID, request key, quarantine path, transfer syntax) of every instance of
        the plan the anonymizer quarantined or skipped."""
        async with self.db.execute(
            "SELECT i.sop_uid, i.request_key, i.path, COALESCE(i.transfer_syntax, '') FROM instances i "
            "JOIN requests r ON r.key = i.request_key "
            "WHERE r.in_plan = 1 AND i.state IN ('quarantined', 'skipped') ORDER BY r.line, i.received"
        ) as cursor:
            return [(str(a), str(b), str(c), str(d)) for a, b, c, d in await cursor.fetchall()]

    async def runs(self, limit: int = 5) -> list[RunRow]:
        """The last runs, newest first."""
        async with self.db.execute(
            "SELECT started, finished, outcome, counts FROM runs ORDER BY id DESC LIMIT ?", (limit,)
        ) as cursor:
            rows = await cursor.fetchall()
        return [
            RunRow(started, finished, outcome, json.loads(counts) if counts else {})
            for started, finished, outcome, counts in rows
        ]

    async def forget_instances(self, uids: Sequence[str], *, ask_again_for_them: bool) -> int:
        """Drop instances found missing or changed on disk and make their requests partial, so the
        next run fetches them (by UID when ``ask_again_for_them``, else whole); how many requests."""
        by_request: dict[str, list[str]] = {}
        for start in range(0, len(uids), 500):
            chunk = list(uids[start : start + 500])
            marks = ", ".join("?" * len(chunk))
            async with self.db.execute(
                f"SELECT sop_uid, request_key FROM instances WHERE sop_uid IN ({marks})", chunk
            ) as cursor:
                for uid, key in await cursor.fetchall():
                    by_request.setdefault(str(key), []).append(str(uid))
            await self.db.execute(f"DELETE FROM instances WHERE sop_uid IN ({marks})", chunk)
        for key, lost in by_request.items():
            missing = json.dumps(sorted(lost)) if ask_again_for_them else None
            await self.db.execute(
                "UPDATE requests SET state = 'partial', missing = ?, received = MAX(0, COALESCE(received, 0) - ?), "
                "error = ? WHERE key = ?",
                (missing, len(lost), f"{len(lost)} instances missing or changed on disk (asyncdicom verify)", key),
            )
        await self.db.commit()
        return len(by_request)

    async def library_rows(self) -> list[tuple[int, dict[str, str]]]:
        """(CSV line, match attributes) of every done request of the plan, in CSV order."""
        async with self.db.execute(
            "SELECT r.line, m.attrs FROM matches m JOIN requests r ON r.key = m.request_key "
            "WHERE r.in_plan = 1 AND r.state = 'done' ORDER BY r.line, r.key, m.idx"
        ) as cursor:
            return [(int(line), json.loads(attrs)) for line, attrs in await cursor.fetchall()]

    async def export_library(self, path: Path, columns: Sequence[str], *, guard: bool = True) -> int:
        """Write the library CSV atomically and refresh the ``library`` table; returns the row
        count. Cells are made safe for spreadsheets (:mod:`.cells`); the table keeps raw values."""
        rows = await self.library_rows()
        await self._refresh_library_table(columns, rows)
        await shared.write_atomic(path, shared.library_csv(columns, rows, guard))
        return len(rows)

    async def export_requests(self, path: Path, columns: Sequence[str], *, guard: bool = True) -> int:
        """Write one CSV row per request of the plan with its final state (as pydicom-batch did),
        in cells safe for spreadsheets (:mod:`.cells`)."""
        async with self.db.execute(
            "SELECT key, line, elements, state, status, completed, failed_ops, warning_ops, received, error "
            "FROM requests WHERE in_plan = 1 ORDER BY line, key"
        ) as cursor:
            rows = list(await cursor.fetchall())
        held: dict[str, dict[str, int]] = {}
        async with self.db.execute(
            "SELECT request_key, warning, COUNT(*) FROM instances "
            "WHERE state IN ('quarantined', 'skipped') OR (state != 'duplicate' AND warning LIKE ?) "
            "GROUP BY request_key, warning",
            (f"{KEPT_COMPRESSED_PREFIX}%",),
        ) as cursor:
            for key, reason, count in await cursor.fetchall():
                held.setdefault(key, {})[reason or ""] = int(count)
        await shared.write_atomic(path, shared.requests_csv(columns, rows, held, guard))
        return len(rows)

    async def _refresh_library_table(self, columns: Sequence[str], rows: Iterable[tuple[int, dict[str, str]]]) -> None:
        quoted = ", ".join(f'"{c}" TEXT' for c in columns)
        await self.db.execute("DROP TABLE IF EXISTS library")
        await self.db.execute(f'CREATE TABLE library ({quoted}{", " if quoted else ""}"row" INTEGER)')
        marks = ", ".join("?" * (len(columns) + 1))
        await self.db.executemany(
            f"INSERT INTO library VALUES ({marks})",
            ([*(column_text(attrs, c) for c in columns), line] for line, attrs in rows),
        )
        await self.db.commit()

    async def close(self) -> None:
        await self.db.close()


@asynccontextmanager
async def open_ledger(path: Path, *, readonly: bool = False) -> AsyncIterator[Ledger]:
    """Open (creating and migrating if needed) the ledger at ``path``, holding its lock."""
    if readonly and not await anyio.Path(path).exists():
        msg = f"Unable to read the ledger {path} as it does not exist; run 'asyncdicom run' first"
        raise LedgerError(msg)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = _Lock(path.with_name(path.name + ".lock"))
    if not readonly:
        lock.acquire()
    try:
        try:
            db = await aiosqlite.connect(path)
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = FULL")
            await db.execute("PRAGMA foreign_keys = ON")
            await db.execute("PRAGMA busy_timeout = 5000")
        except aiosqlite.Error as exc:
            if _volume_full(exc):
                raise _full_error(path) from None
            msg = f"Unable to open the ledger {path} as {exc}; move it away to start afresh"
            raise LedgerError(msg) from None
        ledger = Ledger(db, path)
        try:
            if not readonly:
                await ledger._migrate()
            yield ledger
        except aiosqlite.DatabaseError as exc:
            if _volume_full(exc):  # the volume, not the ledger: what the run stored is kept
                raise _full_error(path) from None
            msg = f"Unable to use the ledger {path} as {exc}; move it away to start afresh"
            raise LedgerError(msg) from None
        finally:
            with anyio.CancelScope(shield=True):
                await ledger.close()
    finally:
        lock.release()


def _volume_full(exc: BaseException) -> bool:
    """Whether SQLite failed because the volume is full (SQLITE_FULL), not the ledger broken."""
    return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


def _full_error(path: Path) -> OutputError:
    """The run's output-volume-full error (exit 4, as for a received file), naming the ledger."""
    return output_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), f"the ledger {path.name}")
