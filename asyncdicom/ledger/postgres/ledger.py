"""A job's rows in the shared database: its plan, the claims and leases by which hosts share
its requests, their results, and the reports read from them."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

from asyncdicom.errors import LedgerError
from asyncdicom.events import emit
from asyncdicom.ledger import base, shared
from asyncdicom.ledger.postgres.connection import (
    CHANNEL,
    REQUESTS,
    SLOTS,
    WANTED,
    Connection,
    DatabaseLost,
    Wakeups,
    notify,
    payload,
    wait_for,
)
from asyncdicom.ledger.postgres.driver import Session
from asyncdicom.ledger.postgres.slots import SharedSlots
from asyncdicom.ledger.postgres.sql import (
    BEAT,
    CHECKSUMS,
    CLAIM,
    FORGET_HELD,
    HELD_BACK,
    MIGRATIONS,
    OUTLOOK,
    OWN_MATCH,
    RECORD,
    SCHEMA_VERSION,
    SETTLE_COLUMNS,
)
from asyncdicom.ledger.postgres.url import describe_url
from asyncdicom.models import KEPT_COMPRESSED_PREFIX, HeldBack, InstanceRecord, Request, RequestResult
from asyncdicom.plan import Plan
from asyncdicom.stats import RunStats

log = logging.getLogger("asyncdicom.ledger")
CHECKSUM_BATCH = 5000  # instances whose SHA-256 one statement keeps
ANALYZE_AFTER = 1000  # new request rows from one plan sync beyond which the table's statistics are renewed


def _rounds(settled: Sequence[tuple[Request, RequestResult]]) -> list[list[tuple[Request, RequestResult]]]:
    """``settled`` in order, cut where a request comes again (an UPDATE sets a row once)."""
    rounds: list[list[tuple[Request, RequestResult]]] = []
    seen: set[str] = set()
    for request, result in settled:
        if not rounds or request.key in seen:
            rounds.append([])
            seen.clear()
        rounds[-1].append((request, result))
        seen.add(request.key)
    return rounds


class PgLedger:
    """A job's ledger in a PostgreSQL database; use :func:`open_ledger`."""

    def __init__(self, url: str, job: str, lease: float, directory: Path | None) -> None:
        self.where = describe_url(url)
        self.job = job
        self.lease = lease
        self.host = socket.gethostname()
        self.holder = f"{self.host}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.directory = str(directory) if directory is not None else ""
        patience = max(30.0, lease)
        idle = max(10.0, lease)  # our transactions take milliseconds: one open this long has lost its host
        self.db = Connection(url, self.where, patience, idle=idle)
        # claims and renewals: a third of a lease of retries, so the run stops before its leases run out
        self.leases = Connection(url, self.where, lease / 3, bounded=True, idle=idle, on_lost=self._lost)
        self._run_id: int | None = None
        self._run_started = time.time()
        self.last_host = True  # until work() says otherwise
        self._last_beat = time.monotonic()
        self.wakeups = Wakeups(job)
        self.dry = False  # nothing claimable: the rest is held by other hosts (or done)
        self._settling: set[str] = set()  # requests whose results are queued, not committed yet
        self._slots: SharedSlots | None = None  # the job's association budget, once asked for
        self.hosts = 1  # hosts running the job, and whether another waits for a slot (last heartbeat)
        self.others_want = False

    # --- schema -------------------------------------------------------------------------------

    async def _migrate(self) -> None:
        async def migrate(conn: Session) -> None:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('asyncdicom schema'))")
            await conn.execute("CREATE SCHEMA IF NOT EXISTS asyncdicom")
            await conn.execute("CREATE TABLE IF NOT EXISTS asyncdicom.version (version INTEGER NOT NULL)")
            row = await conn.row("SELECT MAX(version) FROM asyncdicom.version")
            version = int(row[0]) if row and row[0] is not None else 0
            shared.check_version(version, SCHEMA_VERSION, f"the ledger database {self.where}")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                await conn.execute(MIGRATIONS[target])
                await conn.execute("INSERT INTO asyncdicom.version (version) VALUES (%s)", (target,))

        await self.db.run(migrate)

    async def _schema_present(self) -> bool:
        async def present(conn: Session) -> bool:
            row = await conn.row("SELECT to_regclass('asyncdicom.requests') IS NOT NULL")
            return bool(row and row[0])

        return await self.db.statement(present)

    async def get_meta(self, key: str) -> str | None:
        row = await self.db.statement(
            lambda c: c.row("SELECT value FROM asyncdicom.meta WHERE job = %s AND key = %s", (self.job, key))
        )
        return str(row[0]) if row else None

    async def remember(self, key: str, value: str) -> None:
        await self.db.statement(lambda c: self._set_meta(c, key, value))

    async def _set_meta(self, conn: Session, key: str, value: str) -> None:
        await conn.execute(
            "INSERT INTO asyncdicom.meta (job, key, value) VALUES (%s, %s, %s) "
            "ON CONFLICT (job, key) DO UPDATE SET value = excluded.value",
            (self.job, key, value),
        )

    # --- planning -----------------------------------------------------------------------------

    async def sync_plan(
        self, plan: Plan, *, digests: dict[str, str], restart: bool, retry_failed: bool
    ) -> base.SyncReport:
        """As the SQLite ledger's, for the job; refused while another host runs the job with
        other inputs, or for ``restart`` while another host runs it at all."""

        async def sync(conn: Session) -> base.SyncReport:
            job = self.job
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('asyncdicom job'), hashtext(%s))", (job,))
            meta: dict[str, str] = dict(
                await conn.rows("SELECT key, value FROM asyncdicom.meta WHERE job = %s", (job,))
            )
            first_run = "planned" not in meta
            previous = {name: meta.get(f"digest:{name}") for name in digests}
            others = await self._live_others(conn)
            if others and restart:
                msg = (
                    f"Unable to restart job {job} as {_hosts(others)} runs it now; stop it (or wait for it to end), "
                    "then restart"
                )
                raise LedgerError(msg)
            changed = [name for name, digest in digests.items() if previous[name] not in (None, digest)]
            if others and changed:
                msg = (
                    f"Unable to join job {job} as {_hosts(others)} runs it with another {', '.join(changed)}; give "
                    "every host the same config and batch file, or another output.job_name"
                )
                raise LedgerError(msg)
            if restart:
                await conn.execute("DELETE FROM asyncdicom.matches WHERE job = %s", (job,))
                await conn.execute("DELETE FROM asyncdicom.requests WHERE job = %s", (job,))
            before = await conn.row("SELECT COUNT(*) FROM asyncdicom.requests WHERE job = %s", (job,))
            await conn.execute(
                "CREATE TEMPORARY TABLE plan_rows (key TEXT PRIMARY KEY, line INTEGER, elements TEXT) ON COMMIT DROP"
            )
            await conn.copy(
                "plan_rows", ("key", "line", "elements"), ((r.key, r.line, r.to_json()) for r in plan.requests)
            )
            await conn.execute("ANALYZE plan_rows")
            # only the rows that change are written: every host's start rewrote all of the job's rows
            # (two row versions each, a million for a job of 500,000, and the claim index full of dead entries)
            await conn.execute(
                "UPDATE asyncdicom.requests r SET in_plan = FALSE WHERE r.job = %s AND r.in_plan "
                "AND NOT EXISTS (SELECT 1 FROM plan_rows p WHERE p.key = r.key)",
                (job,),
            )
            await conn.execute(
                "INSERT INTO asyncdicom.requests AS r (job, key, line, elements) SELECT %s, key, line, elements "
                "FROM plan_rows ON CONFLICT (job, key) DO UPDATE SET line = excluded.line, in_plan = TRUE "
                "WHERE r.line != excluded.line OR NOT r.in_plan",
                (job,),
            )
            after = await conn.row("SELECT COUNT(*) FROM asyncdicom.requests WHERE job = %s", (job,))
            retried = 0
            if retry_failed:
                retried = await conn.execute(
                    "UPDATE asyncdicom.requests SET state = 'pending', attempts = 0, error = NULL "
                    "WHERE job = %s AND in_plan AND state = 'failed'",
                    (job,),
                )
            continued = await conn.execute(
                "UPDATE asyncdicom.requests SET state = 'pending', attempts = 0, transient = FALSE "
                "WHERE job = %s AND in_plan AND state = 'failed' AND transient",
                (job,),
            )
            counts = await self._counts(conn)
            for name, digest in digests.items():
                await self._set_meta(conn, f"digest:{name}", digest)
            await self._set_meta(conn, "planned", str(len(plan.requests)))
            dropped = await conn.row("SELECT COUNT(*) FROM asyncdicom.requests WHERE job = %s AND NOT in_plan", (job,))
            return base.SyncReport(
                new=int(after[0] if after else 0) - int(before[0] if before else 0),
                done=counts.get("done", 0),
                failed=counts.get("failed", 0),
                pending=counts.get("pending", 0),
                dropped=int(dropped[0] if dropped else 0),
                retried=retried,
                continued=continued,
                changed=() if first_run or restart else tuple(changed),
                first_run=first_run or restart,
            )

        report = await self.db.run(sync)
        if report.new >= ANALYZE_AFTER:
            # the planner's figures for the job come from before its rows existed (autovacuum takes up
            # to a minute to look): until then it would read all the job's rows to settle a few
            await self.db.statement(lambda c: c.execute("ANALYZE asyncdicom.requests"))
        return report

    async def _live_others(self, conn: Session) -> list[str]:
        """Hosts other than this process whose heartbeat is younger than a lease."""
        rows = await conn.rows(
            "SELECT DISTINCT host FROM asyncdicom.hosts WHERE job = %s AND holder != %s "
            "AND heartbeat > now() - %s * interval '1 second' ORDER BY host",
            (self.job, self.holder, self.lease),
        )
        return [str(host) for (host,) in rows]

    async def _counts(self, conn: Session) -> dict[str, int]:
        rows = await conn.rows(
            "SELECT state, COUNT(*) FROM asyncdicom.requests WHERE job = %s AND in_plan GROUP BY state",
            (self.job,),
        )
        return {str(state): int(n) for state, n in rows}

    async def pending(self, plan: Plan) -> list[Request]:
        """Requests of the plan not settled yet (whoever holds them), in CSV order."""
        rows = await self.db.statement(
            lambda c: c.rows(
                "SELECT key, state, missing FROM asyncdicom.requests "
                "WHERE job = %s AND in_plan AND state IN ('pending', 'partial')",
                (self.job,),
            )
        )
        return shared.in_csv_order(plan.requests, rows)

    # --- sharing the work ---------------------------------------------------------------------

    @asynccontextmanager
    async def work(
        self, plan: Plan, pending: Sequence[Request], on_hosts: Callable[[int], None] | None = None
    ) -> AsyncIterator[AsyncIterator[Request]]:
        """The requests this host runs, claimed a few at a time as its workers take them, while
        a heartbeat renews its leases (and tells ``on_hosts`` how many hosts run the job). On
        exit, what it claimed and did not settle is given back at once."""
        by_key = {request.key: request for request in plan.requests}
        await self.leases.run(self._register)
        await self.leases.keep(self.wakeups.listen)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._heartbeat, on_hosts)
            try:
                yield self._claims(by_key, plan_batch(len(pending)))
            finally:
                tg.cancel_scope.cancel()
                with anyio.CancelScope(shield=True), contextlib.suppress(LedgerError):
                    await self.leases.run(self._give_back, retry=False)

    async def _register(self, conn: Session) -> None:
        await conn.execute(
            "INSERT INTO asyncdicom.hosts (job, holder, host, pid, directory) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (job, holder) DO UPDATE SET heartbeat = now()",
            (self.job, self.holder, self.host, os.getpid(), self.directory),
        )
        self._last_beat = time.monotonic()

    async def _give_back(self, conn: Session) -> None:
        """Leave the job: give back what this host holds, but for the requests whose results
        are on their way to the database (given back, another host would run them again; their
        commit clears them, and their lease covers a host that dies first); whether it was the
        last host there is decided under the job's lock, so that exactly one of several hosts
        ending together is."""
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('asyncdicom job'), hashtext(%s))", (self.job,))
        await conn.execute(
            "UPDATE asyncdicom.requests SET holder = NULL, lease_until = NULL "
            "WHERE job = %s AND holder = %s AND NOT key = ANY(%s)",
            (self.job, self.holder, list(self._settling)),
        )
        await conn.execute(
            "UPDATE asyncdicom.slots SET holder = NULL, lease_until = NULL WHERE job = %s AND holder = %s",
            (self.job, self.holder),
        )
        await conn.execute("DELETE FROM asyncdicom.hosts WHERE job = %s AND holder = %s", (self.job, self.holder))
        await notify(conn, self.job, SLOTS, REQUESTS)
        self.last_host = not await self._live_others(conn)

    async def _heartbeat(self, on_hosts: Callable[[int], None] | None) -> None:
        """Renew this host's leases every third of a lease (and learn how many hosts run the job,
        and whether one waits for a slot: sooner, at most once a second, when a host says it
        waits, so that a host beyond its share gives slots up). The lease connection gives up after
        another third: the run then stops (its associations are aborted) before its leases run
        out, so that no other host takes its requests and association slots while it still uses
        them (the PACS never sees more than the job's associations, even across a network cut)."""
        early = -math.inf  # when the last early beat was
        while True:
            wanted = self.wakeups.event(WANTED)
            with anyio.move_on_after(self.lease / 3):
                await wanted.wait()  # a host waits for a slot: is this one beyond its share?
                await anyio.sleep(max(0.0, early + 1.0 - time.monotonic()))  # at most one early beat a second
                early = time.monotonic()
            try:
                hosts = await self.leases.statement(self._beat)
            except DatabaseLost:
                raise  # said by _lost()
            except LedgerError as exc:
                raise LedgerError(self._lost(str(exc))) from None
            if on_hosts is not None:
                on_hosts(hosts)

    def _lost(self, why: str) -> str:
        """The lease connection could not reach the database in time (a renewal, a claim, a
        slot): this host stops, and its commits stop waiting (they would wait in vain)."""
        msg = (
            f"Lost the ledger database {self.where} ({why}); this host stops before its leases "
            f"({self.lease:g} s) run out, so that the other hosts take over its requests; what it "
            "committed is kept"
        )
        self.db.give_up(msg)
        return msg

    async def _beat(self, conn: Session) -> int:
        if time.monotonic() - self._last_beat > 2 * self.lease / 3:
            msg = f"its leases were last renewed more than {2 * self.lease / 3:g} s ago"
            raise LedgerError(msg)
        row = await conn.row(BEAT, {"holder": self.holder, "job": self.job, "lease": self.lease})
        self._last_beat = time.monotonic()
        self.hosts = max(1, int(row[0]) if row else 1)
        self.others_want = bool(row[1]) if row else False
        return self.hosts

    async def _claims(self, by_key: dict[str, Request], batch: int) -> AsyncIterator[Request]:
        """Claim requests whenever the last ones are taken (``batch`` first, then about half a
        second of this host's work: :func:`next_claim`), while this host holds an
        association slot (a host without one asks for one only when there is something to claim,
        and leaves the requests to the hosts that can run them meanwhile); when none is free but
        other hosts hold some, wait and look again (their leases may run out); end when none is
        left."""
        poll = min(2.0, self.lease / 4)  # for leases running out: nobody notifies of those
        slots = self._slots
        while True:
            changed = self.wakeups.event(REQUESTS)
            if slots is not None and not slots.held:
                left, claimable = await self.leases.statement(self._outlook)
                if not left and not claimable:
                    return
                if not claimable:
                    self.dry = True
                    await wait_for(changed, poll)
                    continue
                await slots.reserve()
            rows = await self.leases.statement(functools.partial(self._claim, count=batch))
            if rows:
                self.dry = False
                claimed = time.monotonic()  # its rows all taken when the loop goes on: this host's pace
                for key, state, missing in sorted(rows, key=lambda row: (by_key[row[0]].line, row[0])):
                    yield shared.narrowed(by_key[key], state, missing)
                batch = next_claim(len(rows), time.monotonic() - claimed)
                continue
            left, _ = await self.leases.statement(self._outlook)
            if not left:
                return
            self.dry = True  # this host's idle workers give their slots up at once
            if slots is not None:
                slots.give_back_idle()
            await wait_for(changed, poll)

    async def _claim(self, conn: Session, count: int) -> list[tuple[Any, ...]]:
        params = {
            "holder": self.holder,
            "lease": self.lease,
            "job": self.job,
            "since": self._run_started,
            "count": count,
        }
        rows = await conn.rows(CLAIM, params)
        if rows:
            self._last_beat = time.monotonic()
        return rows

    async def _outlook(self, conn: Session) -> tuple[bool, bool]:
        """Whether unsettled requests are held by other hosts (or by nobody but not claimable by
        this run), and whether any is claimable now."""
        row = await conn.row(OUTLOOK, {"job": self.job, "holder": self.holder, "since": self._run_started})
        return (bool(row[0]), bool(row[1])) if row else (False, False)

    def slots(self, count: int) -> SharedSlots:
        """The job's association budget of ``count`` (request.threads), shared by every host."""
        self._slots = SharedSlots(self, count)
        return self._slots

    # --- recording ----------------------------------------------------------------------------

    def recording(self, stats: RunStats) -> contextlib.AbstractAsyncContextManager[shared.Recorder]:
        """A recorder whose results a single writer task commits in batches; all before it exits."""
        return shared.recording(
            lambda items: self.db.run(lambda c: self._commit(c, items), transaction=False, bounded=True),
            stats,
            lambda request: self._settling.add(request.key),
        )

    async def _commit(self, conn: Session, items: Sequence[shared.Item]) -> list[shared.Item]:
        """Instances first, then settled requests (never over one done already, by this host or
        another); returns what was recorded. A batch is one statement (atomic by itself, one round
        trip); one that replaces held-back instances, or settles a request twice, a transaction."""
        instances = [item for item in items if isinstance(item, InstanceRecord)]
        settled = [item for item in items if not isinstance(item, InstanceRecord)]
        replaced = [i.replaces for i in instances if i.replaces]
        now = time.time()
        rounds = _rounds(settled) or [[]]  # a request settled twice in one batch: in order, one statement each
        if not replaced and len(rounds) == 1:
            rows = await conn.rows(RECORD, self._record_params(instances, rounds[0], now))
        else:
            # not pipelined: between statements the server then sees the session idle in a
            # transaction, which it ends after Connection.idle should this host be cut off (a
            # pipelined one looks busy to it and would keep its row locks)
            async with conn.transaction():
                if replaced:  # held-back instances processed again: their quarantine rows go
                    await conn.execute(FORGET_HELD, {"job": self.job, "uids": replaced})
                rows = []
                for n, part in enumerate(rounds):
                    rows += await conn.rows(RECORD, self._record_params(instances if n == 0 else [], part, now))
        taken = {str(key) for kind, key, _ in rows if kind == "settled"}
        recorded: list[shared.Item] = list(instances)
        for request, result in settled:
            if request.key in taken:
                recorded.append((request, result))
            else:  # another host settled it as done first: its result stands
                emit("request-done-elsewhere", key=request.key, line=request.line, state=result.state)
        self._settling.difference_update(request.key for request, _ in settled)  # committed
        shared.warn_of_twins(instances, [(uid, path) for kind, uid, path in rows if kind == "twin"])
        return recorded

    def _record_params(
        self, instances: Sequence[InstanceRecord], settled: Sequence[tuple[Request, RequestResult]], now: float
    ) -> dict[str, Any]:
        answers = [
            (request.key, idx, json.dumps(attrs, ensure_ascii=False))
            for request, result in settled
            for idx, attrs in enumerate(result.matches)
        ]
        return {
            **self._instance_params(instances, now),
            **self._settle_params(settled, now),
            "answer_keys": [key for key, _, _ in answers],
            "answer_idx": [idx for _, idx, _ in answers],
            "answer_attrs": [attrs for _, _, attrs in answers],
            "channel": CHANNEL,
            "payload": payload(REQUESTS, self.job),
        }

    def _instance_params(self, instances: Sequence[InstanceRecord], now: float) -> dict[str, Any]:
        return {
            "job": self.job,
            "now": now,
            "host": self.host,
            "directory": self.directory,
            "uids": [i.sop_uid for i in instances],
            "keys": [i.request_key for i in instances],
            "paths": [i.path for i in instances],
            "sizes": [i.size for i in instances],
            "syntaxes": [i.transfer_syntax for i in instances],
            "states": [i.state.value for i in instances],
            "warnings": [i.warning for i in instances],
        }

    def _settle_params(self, settled: Sequence[tuple[Request, RequestResult]], now: float) -> dict[str, Any]:
        columns: dict[str, list[Any]] = {name: [] for name in SETTLE_COLUMNS}
        for request, result in settled:
            completed, failed, warned, received = shared.result_counts(result)
            row = {
                "key": request.key,
                "state": result.state,
                "attempts": result.attempts,
                "status": result.status,
                "category": result.category,
                "error": result.error,
                "matches": len(result.matches),
                "elapsed": result.elapsed,
                "completed": completed,
                "failed_ops": failed,
                "warning_ops": warned,
                "received": received,
                "missing": json.dumps(list(result.missing)) if result.missing else None,
                "transient": result.transient,
            }
            for name in SETTLE_COLUMNS:
                columns[name].append(row[name])
        return {"job": self.job, "now": now, "holder": self.holder, **columns}

    # --- runs and reports ---------------------------------------------------------------------

    async def start_run(self) -> None:
        self._run_started = time.time()
        row = await self.db.statement(
            lambda c: c.row(
                "INSERT INTO asyncdicom.runs (job, host, started) VALUES (%s, %s, %s) RETURNING id",
                (self.job, self.host, self._run_started),
            )
        )
        self._run_id = int(row[0]) if row else None

    async def finish_run(self, outcome: str, counts: dict[str, Any]) -> None:
        if self._run_id is None:
            return
        run_id = self._run_id
        await self.db.statement(
            lambda c: c.execute(
                "UPDATE asyncdicom.runs SET finished = %s, outcome = %s, counts = %s WHERE id = %s",
                (time.time(), outcome, json.dumps(counts), run_id),
            )
        )

    async def summary(self) -> base.LedgerSummary:
        """Counts by state, the last run, and a few recent errors (no patient data)."""

        async def read(conn: Session) -> base.LedgerSummary:
            job = (self.job,)
            counts = await self._counts(conn)
            matches = await conn.row(
                "SELECT COUNT(*) FROM asyncdicom.matches m JOIN asyncdicom.requests r "
                f"ON r.job = m.job AND r.key = m.request_key WHERE m.job = %s AND r.in_plan AND {OWN_MATCH}",
                job,
            )
            last = await conn.row(
                "SELECT started, finished, outcome FROM asyncdicom.runs WHERE job = %s ORDER BY id DESC LIMIT 1",
                job,
            )
            failures = await conn.rows(
                "SELECT line, error FROM asyncdicom.requests WHERE job = %s AND in_plan AND state = 'failed' "
                "ORDER BY line LIMIT 5",
                job,
            )
            warnings = await conn.row(
                "SELECT COUNT(*) FROM asyncdicom.requests WHERE job = %s AND in_plan AND state = 'done' "
                "AND category = 'warning'",
                job,
            )
            instances = await conn.row("SELECT COUNT(*) FROM asyncdicom.instances WHERE job = %s", job)
            held = await conn.rows(HELD_BACK, {"job": self.job, "kept": f"{KEPT_COMPRESSED_PREFIX}%"})
            return base.LedgerSummary(
                held_back=tuple(base.HeldBackCount(HeldBack(kind), reason or "", int(n)) for kind, reason, n in held),
                requests=base.RequestCounts(**{state: counts.get(state, 0) for state in shared.SUMMARY_STATES}),
                instances=int(instances[0] if instances else 0),
                matches=int(matches[0] if matches else 0),
                warnings=int(warnings[0] if warnings else 0),
                last_run=None if last is None else base.LastRun(last[0], last[1], last[2]),
                failures=tuple(base.Failure(int(line), error) for line, error in failures),
            )

        return await self.db.run(read)

    async def request_rows(self, states: frozenset[str] | None = None) -> list[base.RequestRow]:
        """The plan's requests in CSV order, with their instances counted (``states`` filters)."""

        async def read(conn: Session) -> list[base.RequestRow]:
            rows = await conn.rows(
                "SELECT r.key, r.line, r.elements, r.state, r.status, r.category, r.error, r.attempts, r.completed, "
                "r.failed_ops, r.warning_ops, r.received, r.elapsed, r.updated, "
                "COUNT(i.sop_uid) FILTER (WHERE i.state IN ('stored', 'renamed', 'duplicate')), "
                "COUNT(i.sop_uid) FILTER (WHERE i.state IN ('quarantined', 'skipped')), MIN(i.received) "
                "FROM asyncdicom.requests r LEFT JOIN asyncdicom.instances i "
                "ON i.job = r.job AND i.request_key = r.key "
                "WHERE r.job = %s AND r.in_plan GROUP BY r.job, r.key ORDER BY r.line, r.key",
                (self.job,),
            )
            folders: dict[str, set[str]] = {}
            for key, path in await conn.rows(
                "SELECT request_key, path FROM asyncdicom.instances "
                "WHERE job = %s AND state IN ('stored', 'renamed', 'duplicate')",
                (self.job,),
            ):
                shared.add_folder(folders, key, path)
            made = (shared.request_row(row, folders, states) for row in rows)
            return [row for row in made if row is not None]

        return await self.db.run(read)

    async def instance_rows(self, states: frozenset[str] | None = None) -> list[base.InstanceRow]:
        """Every received instance of the job, by CSV line, with the host and output directory
        that hold it (``states`` filters by request state)."""
        rows = await self.db.statement(
            lambda c: c.rows(
                "SELECT i.sop_uid, r.line, i.path, i.size, i.transfer_syntax, i.state, i.warning, i.received, "
                "r.state, i.sha256, i.host, i.directory "
                "FROM asyncdicom.instances i LEFT JOIN asyncdicom.requests r "
                "ON r.job = i.job AND r.key = i.request_key "
                "WHERE i.job = %s AND (r.in_plan OR i.request_key IS NULL) ORDER BY r.line, i.received, i.sop_uid",
                (self.job,),
            )
        )
        return [
            base.InstanceRow(
                str(uid),
                line,
                str(path),
                int(size),
                syntax,
                str(state),
                reason,
                float(received),
                sha256,
                host,
                directory,
            )
            for uid, line, path, size, syntax, state, reason, received, request_state, sha256, host, directory in rows
            if states is None or request_state in states
        ]

    async def stored_by_request(self) -> dict[str, set[str]]:
        """SOP Instance UIDs already received (by any host) for each unfinished request of the job."""
        rows = await self.db.statement(
            lambda c: c.rows(
                "SELECT i.request_key, i.sop_uid FROM asyncdicom.instances i JOIN asyncdicom.requests r "
                "ON r.job = i.job AND r.key = i.request_key WHERE i.job = %s AND r.in_plan AND r.state != 'done'",
                (self.job,),
            )
        )
        stored: dict[str, set[str]] = {}
        for key, uid in rows:
            stored.setdefault(str(key), set()).add(str(uid))
        return stored

    async def checksums(self, items: Sequence[tuple[str, str, str]]) -> None:
        """Keep the SHA-256 of this host's stored instances: (SOP Instance UID, path under its
        output directory, hex digest); a statement for each :data:`CHECKSUM_BATCH` (one for each
        instance read every row of the job that the primary key's UID did not narrow: by path
        alone, all of them, for each)."""
        for start in range(0, len(items), CHECKSUM_BATCH):
            part = items[start : start + CHECKSUM_BATCH]
            params = {
                "job": self.job,
                "host": self.host,
                "directory": self.directory,
                "uids": [uid for uid, _, _ in part],
                "paths": [path for _, path, _ in part],
                "digests": [digest for _, _, digest in part],
            }
            await self.db.statement(functools.partial(_keep_checksums, params=params))

    async def held_back_files(self) -> list[tuple[str, str, str, str]]:
        """(SOP Instance UID, request key, quarantine path, transfer syntax) of the instances this
        host quarantined or skipped (their files are on this host)."""
        rows = await self.db.statement(
            lambda c: c.rows(
                "SELECT i.sop_uid, i.request_key, i.path, COALESCE(i.transfer_syntax, '') FROM asyncdicom.instances i "
                "JOIN asyncdicom.requests r ON r.job = i.job AND r.key = i.request_key "
                "WHERE i.job = %s AND r.in_plan AND i.state IN ('quarantined', 'skipped') AND i.host = %s "
                "AND i.directory = %s ORDER BY r.line, i.received",
                (self.job, self.host, self.directory),
            )
        )
        return [(str(a), str(b), str(c), str(d)) for a, b, c, d in rows]

    async def runs(self, limit: int = 5) -> list[base.RunRow]:
        """The job's last runs (on every host), newest first."""
        rows = await self.db.statement(
            lambda c: c.rows(
                "SELECT started, finished, outcome, counts FROM asyncdicom.runs WHERE job = %s "
                "ORDER BY id DESC LIMIT %s",
                (self.job, limit),
            )
        )
        return [base.RunRow(s, f, o, json.loads(counts) if counts else {}) for s, f, o, counts in rows]

    async def forget_instances(self, uids: Sequence[str], *, ask_again_for_them: bool) -> int:
        """As the SQLite ledger's, for this host's instances."""

        async def forget(conn: Session) -> int:
            rows = await conn.rows(
                "DELETE FROM asyncdicom.instances WHERE job = %s AND host = %s AND directory = %s "
                "AND sop_uid = ANY(%s) RETURNING sop_uid, request_key",
                (self.job, self.host, self.directory, list(uids)),
            )
            by_request: dict[str, list[str]] = {}
            for uid, key in rows:
                by_request.setdefault(str(key), []).append(str(uid))
            for key, lost in by_request.items():
                await conn.execute(
                    "UPDATE asyncdicom.requests SET state = 'partial', missing = %s, "
                    "received = GREATEST(0, COALESCE(received, 0) - %s), error = %s WHERE job = %s AND key = %s",
                    (
                        json.dumps(sorted(lost)) if ask_again_for_them else None,
                        len(lost),
                        f"{len(lost)} instances missing or changed on disk (asyncdicom verify)",
                        self.job,
                        key,
                    ),
                )
            return len(by_request)

        return await self.db.run(forget)

    async def library_rows(self) -> list[tuple[int, dict[str, str]]]:
        """(CSV line, match attributes) of every done request of the job, in CSV order."""
        rows = await self.db.statement(
            lambda c: c.rows(
                "SELECT r.line, m.attrs FROM asyncdicom.matches m JOIN asyncdicom.requests r "
                "ON r.job = m.job AND r.key = m.request_key WHERE m.job = %s AND r.in_plan AND r.state = 'done' "
                f"AND {OWN_MATCH} ORDER BY r.line, r.key, m.idx",
                (self.job,),
            )
        )
        return [(int(line), json.loads(attrs)) for line, attrs in rows]

    async def export_library(self, path: Path, columns: Sequence[str], *, guard: bool = True) -> int:
        """Write the library CSV of the whole job atomically; returns its row count."""
        rows = await self.library_rows()
        await shared.write_atomic(path, shared.library_csv(columns, rows, guard))
        return len(rows)

    async def export_requests(self, path: Path, columns: Sequence[str], *, guard: bool = True) -> int:
        """Write the request CSV of the whole job atomically; returns its row count."""

        async def read(conn: Session) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            rows = await conn.rows(
                "SELECT key, line, elements, state, status, completed, failed_ops, warning_ops, received, error "
                "FROM asyncdicom.requests WHERE job = %s AND in_plan ORDER BY line, key",
                (self.job,),
            )
            held = await conn.rows(
                "SELECT request_key, warning, COUNT(*) FROM asyncdicom.instances WHERE job = %s "
                "AND (state IN ('quarantined', 'skipped') OR (state != 'duplicate' AND warning LIKE %s)) "
                "GROUP BY request_key, warning",
                (self.job, f"{KEPT_COMPRESSED_PREFIX}%"),
            )
            return rows, held

        rows, held_rows = await self.db.run(read)
        held: dict[str, dict[str, int]] = {}
        for key, reason, count in held_rows:
            held.setdefault(str(key), {})[reason or ""] = int(count)
        await shared.write_atomic(path, shared.requests_csv(columns, rows, held, guard))
        return len(rows)

    async def close(self) -> None:
        await self.db.close()
        await self.leases.close()


async def _keep_checksums(conn: Session, params: dict[str, Any]) -> None:
    await conn.execute(CHECKSUMS, params)


def plan_batch(pending: int) -> int:
    """How many requests a host claims first, before it knows how fast it takes them."""
    return min(8, max(1, pending))


CLAIM_AHEAD = 0.5  # seconds of this host's work a claim is sized for (see next_claim)
CLAIM_MOST = 32


def next_claim(taken: int, seconds: float) -> int:
    """How many requests a host claims next, its workers having taken the last ``taken`` in
    ``seconds``: about half a second of its work, at most twice the last claim (workers that
    were idle take a claim at once, which says little of how fast they go). At the end of a job
    a host finishes at most about that much after the others (what it has claimed, nobody else
    can run), and a host that runs fewer associations than the others, or waits for a slot,
    claims fewer; a claim every half second costs the database nothing that counts, and short
    requests (C-FIND) are claimed up to 32 at a time."""
    most = min(CLAIM_MOST, 2 * max(1, taken))
    if seconds <= 0:
        return most
    return max(1, min(most, math.ceil(taken * CLAIM_AHEAD / seconds)))


def _hosts(names: Sequence[str]) -> str:
    return ("host " if len(names) == 1 else "hosts ") + ", ".join(names[:5]) + (" …" if len(names) > 5 else "")


@asynccontextmanager
async def open_ledger(
    url: str, job: str, *, lease: float = 30.0, directory: Path | None = None, readonly: bool = False
) -> AsyncIterator[PgLedger]:
    """Open the job's ledger in the database at ``url`` (creating and migrating its tables unless
    ``readonly``)."""
    ledger = PgLedger(url, job, lease, directory)
    try:
        await ledger.db.open()
        await ledger.leases.open()
        if readonly:
            if not await ledger._schema_present() or await ledger.get_meta("planned") is None:
                msg = (
                    f"Unable to read job {job} from the ledger database {ledger.where} as it has no such job "
                    "yet; run 'asyncdicom run' first"
                )
                raise LedgerError(msg)
        else:
            await ledger._migrate()
        yield ledger
    finally:
        with anyio.CancelScope(shield=True):
            await ledger.close()
