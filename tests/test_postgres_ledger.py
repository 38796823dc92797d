"""The PostgreSQL ledger against a real PostgreSQL started by the tests: the SQLite ledger's
behaviour per job, leases that hosts share, results recorded once, the shared association
budget, a restarted server, and the config keys that choose it."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any, cast

import anyio
import anyio.abc
import psycopg
import pytest

from asyncdicom.config import load_config
from asyncdicom.errors import ConfigError, LedgerError
from asyncdicom.ledger import open_ledger
from asyncdicom.ledger.base import Ledger
from asyncdicom.ledger.postgres.connection import REQUESTS, WANTED
from asyncdicom.ledger.postgres.ledger import ANALYZE_AFTER, PgLedger, next_claim
from asyncdicom.ledger.postgres.ledger import open_ledger as open_pg
from asyncdicom.ledger.postgres.slots import SharedSlots
from asyncdicom.ledger.postgres.sql import CLAIM, FORGET_HELD, MIGRATIONS, RECORD, SCHEMA_VERSION, SETTLE_COLUMNS
from asyncdicom.models import InstanceRecord, InstanceState, RequestResult
from asyncdicom.plan import Plan, build_plan
from asyncdicom.stats import RunStats
from tests.conftest import find_config, write_yaml
from tests.postgres_server import PASSWORD, Postgres

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]

Opener = Callable[..., AbstractAsyncContextManager[Any]]


def _plan(tmp_path: Path, rows: str) -> Plan:
    (tmp_path / "batch.csv").write_text("PatientID\n" + rows)
    return build_plan(load_config(write_yaml(tmp_path / "c.yml", find_config(4242, batch="batch.csv"))))


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """Opens this test's ledger, in a file or as a job of its own in the tests' PostgreSQL."""
    if request.param == "sqlite":
        return lambda: open_ledger(tmp_path / "l.sqlite3")
    server: Postgres = request.getfixturevalue("postgres")
    job = f"t-{tmp_path.name}"[:64]
    return lambda: open_pg(server.url, job, lease=3.0, directory=tmp_path / "out")


@pytest.fixture(autouse=True)
def _password(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.postgres_server import PASSWORD

    monkeypatch.setenv("PGPASSWORD", PASSWORD)


def _done(patient: str) -> RequestResult:
    return RequestResult("done", 1, 0, "success", None, ({"PatientID": patient},))


async def test_sync_resume_restart_and_retry(tmp_path: Path, opener: Opener) -> None:
    """On either ledger: done requests stay done, failures are retried only when asked, restart forgets all."""
    plan = _plan(tmp_path, "1\n2\n3\n")
    stats = RunStats(3, 0, 1)
    async with opener() as ledger:
        first = await ledger.sync_plan(plan, digests={"csv": "a"}, restart=False, retry_failed=False)
        assert (first.new, first.first_run) == (3, True)
        async with ledger.recording(stats) as rec:
            await rec.record(plan.requests[0], _done("1"))
            await rec.record(plan.requests[1], RequestResult("failed", 2, 0xC000, "failure", "failure status 0xC000"))
        assert (stats.done, stats.failed, stats.matches) == (1, 1, 1)
        again = await ledger.sync_plan(plan, digests={"csv": "a"}, restart=False, retry_failed=False)
        assert (again.new, again.done, again.failed, again.pending, again.changed) == (0, 1, 1, 1, ())
        assert [r.key for r in await ledger.pending(plan)] == [plan.requests[2].key]
        retry = await ledger.sync_plan(plan, digests={"csv": "a"}, restart=False, retry_failed=True)
        assert retry.retried == 1
        assert len(await ledger.pending(plan)) == 2
        restart = await ledger.sync_plan(plan, digests={"csv": "a"}, restart=True, retry_failed=False)
        assert (restart.new, restart.done) == (3, 0)


async def test_transient_failures_and_changed_csv(tmp_path: Path, opener: Opener) -> None:
    """On either ledger: a transient failure is pending again on the next run; a changed CSV keeps
    done rows, adds new ones and drops removed ones from the library."""
    old = _plan(tmp_path, "1\n2\n")
    async with opener() as ledger:
        await ledger.sync_plan(old, digests={"csv": "a"}, restart=False, retry_failed=False)
        async with ledger.recording(RunStats(2, 0, 1)) as rec:
            await rec.record(old.requests[0], RequestResult("failed", 4, None, "network", "aborted", transient=True))
            await rec.record(old.requests[1], _done("x"))
        again = await ledger.sync_plan(old, digests={"csv": "a"}, restart=False, retry_failed=False)
        assert (again.continued, again.done, again.pending) == (1, 1, 1)
        new = _plan(tmp_path, "2\n3\n")
        sync = await ledger.sync_plan(new, digests={"csv": "b"}, restart=False, retry_failed=False)
        assert (sync.changed, sync.new, sync.dropped, sync.done) == (("csv",), 1, 1, 1)
        assert await ledger.export_library(tmp_path / "lib.csv", ("PatientID",)) == 1
        summary = await ledger.summary()
        assert (summary.requests.done, summary.requests.pending, summary.matches) == (1, 1, 1)
    assert (tmp_path / "lib.csv").read_text() == "PatientID,row\nx,2\n"


async def test_instances_reports_and_forgetting(tmp_path: Path, opener: Opener) -> None:
    """On either ledger: instance rows, request rows with their folders, held-back counts, the
    request CSV, and verify's forgetting of a lost file."""
    plan = _plan(tmp_path, "1\n2\n")
    first, second = plan.requests
    async with opener() as ledger:
        await ledger.sync_plan(plan, digests={}, restart=False, retry_failed=False)
        async with ledger.recording(RunStats(2, 0, 1)) as rec:
            await rec.record_instance(
                InstanceRecord("1.2.3.1", first.key, "1/a.dcm", 10, "1.2.840.10008.1.2.1", InstanceState.STORED)
            )
            await rec.record_instance(
                InstanceRecord(
                    "1.2.3.2",
                    first.key,
                    "1/b.dcm",
                    10,
                    "1.2.840.10008.1.2.1",
                    InstanceState.QUARANTINED,
                    "the script said so",
                )
            )
            await rec.record_instance(
                InstanceRecord("1.2.3.1", first.key, "1/a.dcm", 10, "1.2.840.10008.1.2.1", InstanceState.STORED)
            )  # again: one row
            await rec.record(first, dataclasses.replace(_done("1"), received=2))
            await rec.record(second, RequestResult("failed", 1, 0xA701, "failure", "out of resources"))
        rows = await ledger.request_rows()
        assert [(r.line, r.state, r.stored, r.held_back, r.folders) for r in rows] == [
            (2, "done", 1, 1, ("1",)),
            (3, "failed", 0, 0, ()),
        ]
        assert [r.state for r in await ledger.request_rows(frozenset({"failed"}))] == ["failed"]
        instances = await ledger.instance_rows()
        assert sorted((i.sop_uid, i.state) for i in instances) == [("1.2.3.1", "stored"), ("1.2.3.2", "quarantined")]
        summary = await ledger.summary()
        assert summary.held_back_total == 1 and summary.instances == 2
        assert summary.failures[0].line == 3
        assert await ledger.export_requests(tmp_path / "req.csv", ("PatientID",)) == 2
        assert "1 × the script said so" in (tmp_path / "req.csv").read_text()
        assert await ledger.forget_instances(["1.2.3.1"], ask_again_for_them=True) == 1
        assert [r.state for r in await ledger.request_rows()] == ["partial", "failed"]
        assert await ledger.stored_by_request() == {first.key: {"1.2.3.2"}}
        await ledger.checksums([("1.2.3.2", "1/b.dcm", "ab" * 32), ("1.2.3.2", "1/elsewhere.dcm", "cd" * 32)])
        assert [(i.sop_uid, i.sha256) for i in await ledger.instance_rows()] == [("1.2.3.2", "ab" * 32)]
        await ledger.remember("plan", "{}")
        assert await ledger.get_meta("plan") == "{}"


async def test_a_uid_stored_elsewhere_before_is_a_twin_and_the_same_path_again_is_not(
    tmp_path: Path, opener: Opener, caplog: pytest.LogCaptureFixture
) -> None:
    """On either ledger, across batches: an instance whose UID a committed row holds at another
    path is warned of once; the same UID at the same path again is not."""
    plan = _plan(tmp_path, "1\n")
    (first,) = plan.requests
    syntax = "1.2.840.10008.1.2.1"
    async with opener() as ledger:
        await ledger.sync_plan(plan, digests={}, restart=False, retry_failed=False)
        async with ledger.recording(RunStats(1, 0, 1)) as rec:
            await rec.record_instance(InstanceRecord("7.7", first.key, "1/a.dcm", 10, syntax, InstanceState.STORED))
        with caplog.at_level("WARNING", logger="asyncdicom.ledger"):
            async with ledger.recording(RunStats(1, 0, 1)) as rec:
                await rec.record_instance(InstanceRecord("7.7", first.key, "1/a.dcm", 10, syntax, InstanceState.STORED))
                await rec.record_instance(InstanceRecord("7.7", first.key, "1/b.dcm", 9, syntax, InstanceState.STORED))
        assert caplog.text.count("received twice with different content") == 1
        assert sorted(i.path for i in await ledger.instance_rows()) == ["1/a.dcm", "1/b.dcm"]


async def _schema(postgres: Postgres, tmp_path: Path, name: str) -> str:
    """The ledger's schema in the tests' database, and a job name of this test's for statements run by hand."""
    job = f"{name}-{tmp_path.name}"[:64]
    async with open_pg(postgres.url, job, lease=3.0, directory=tmp_path / "out"):
        pass
    return job


def _node(plan: list[str], marker: str) -> list[str]:
    """The lines of the first node of an EXPLAIN whose own line holds ``marker``: that line and
    its details (Index Cond, Filter, Rows Removed), up to the next node."""
    start = next(n for n, line in enumerate(plan) if marker in line)
    end = next((n for n in range(start + 1, len(plan)) if "->" in plan[n]), len(plan))
    return plan[start:end]


def _reads_by_key(plan: list[str], marker: str, index: str, condition: str) -> None:
    """The node of ``plan`` at ``marker`` reads ``index`` by ``condition`` and nothing beside."""
    lookup = _node(plan, marker)
    assert f"using {index}" in lookup[0] and condition in "\n".join(lookup), "\n".join(plan)
    assert not [line for line in lookup if "Removed" in line], "\n".join(plan)


def _batch_params(job: str, uids: list[str]) -> dict[str, object]:
    """The parameters of a batch of stored instances and nothing else for :data:`RECORD`."""
    n = len(uids)
    return {
        "job": job, "now": 0.0, "host": "h", "directory": "/out", "uids": uids, "keys": ["k"] * n,
        "paths": [f"{uid}.dcm" for uid in uids], "sizes": [1] * n, "syntaxes": [None] * n,
        "states": ["stored"] * n, "warnings": [None] * n, "holder": "h", "channel": "c", "payload": "p",
        **{name: [] for name in (*SETTLE_COLUMNS, "answer_keys", "answer_idx", "answer_attrs")},
    }  # fmt: skip


async def test_the_twin_lookup_reads_the_primary_key_whatever_the_statistics(
    tmp_path: Path, postgres: Postgres
) -> None:
    """Each batch of instances looks its UIDs up by the primary key, before the job's rows have
    statistics (the planner scanned every instance of the job for each batch), and in a job
    newer than the statistics of the table (the planner, expecting one row of the job, read
    all of them for each UID by the index of request keys: quadratic in the job's size)."""
    job = await _schema(postgres, tmp_path, "plan")
    uids = [f"1.2.{n}" for n in range(40)]
    postgres.query(RECORD, _batch_params(job, uids))
    plan = "\n".join(str(row[0]) for row in postgres.query("EXPLAIN " + RECORD, _batch_params(job, uids)))
    assert "using instances_pkey on instances i" in plan, plan
    assert "instances_by_request" not in plan and "Seq Scan on instances i" not in plan, plan
    postgres.query("ANALYZE asyncdicom.instances")  # statistics of the table as it was: then a new job
    newer = f"{job}-new"[:64]
    for start in range(0, 600, 50):
        postgres.query(RECORD, _batch_params(newer, [f"1.3.{n}" for n in range(start, start + 50)]))
    lookups = [f"1.4.{n}" for n in range(50)]
    plan = [
        str(row[0]) for row in postgres.query("EXPLAIN (ANALYZE, COSTS OFF) " + RECORD, _batch_params(newer, lookups))
    ]
    _reads_by_key(plan, "on instances i", "instances_pkey", "sop_uid = w.uid")  # the twin lookup


async def test_a_settle_reads_only_its_requests_matches_whatever_the_statistics(
    tmp_path: Path, postgres: Postgres
) -> None:
    """Settling two requests of a query job newer than the table's statistics reads those
    requests' matches, not every match of the job (the planner, expecting one match of the job,
    read all of them for each batch: quadratic in the job's size); earlier matches beyond the new
    ones go, the others are overwritten."""
    job = await _schema(postgres, tmp_path, "matches")
    for name in (f"{job}-older", job):
        postgres.query(
            "INSERT INTO asyncdicom.requests (job, key, line, elements) SELECT %s, 'k' || g, g, '{}' "
            "FROM generate_series(1, 600) g",
            (name,),
        )
        postgres.query(
            "INSERT INTO asyncdicom.matches (job, request_key, idx, attrs) SELECT %s, 'k' || g, i, '{}' "
            "FROM generate_series(1, 600) g, generate_series(0, 9) i",
            (name,),
        )
        if name != job:
            postgres.query("ANALYZE asyncdicom.matches")  # statistics of the table as it was: then a new job
    params = _batch_params(job, [])
    params |= {name: [None, None] for name in SETTLE_COLUMNS}
    params |= {"key": ["k7", "k300"], "state": ["done", "done"], "attempts": [1, 1], "transient": [False, False]}
    params |= {"answer_keys": ["k7", "k300", "k300"], "answer_idx": [0, 0, 1], "answer_attrs": ['{"a": 1}'] * 3}
    plan = [str(row[0]) for row in postgres.query("EXPLAIN (ANALYZE, COSTS OFF) " + RECORD, params)]
    _reads_by_key(plan, "on matches m", "matches_pkey", "request_key = s.key")  # earlier matches
    assert "loops=2" in _node(plan, "on matches m")[0], "\n".join(plan)  # once for each request
    rows = postgres.query(
        "SELECT request_key, COUNT(*), COUNT(*) FILTER (WHERE attrs = '{\"a\": 1}') FROM asyncdicom.matches "
        "WHERE job = %s AND request_key IN ('k7', 'k300', 'k8') GROUP BY request_key ORDER BY request_key",
        (job,),
    )
    assert rows == [("k300", 2, 2), ("k7", 1, 1), ("k8", 10, 0)]


async def test_held_back_rows_replaced_are_found_by_the_primary_key(tmp_path: Path, postgres: Postgres) -> None:
    """The rows of held-back instances processed again are deleted by one key lookup per UID,
    in a job newer than the table's statistics too (the planner read every instance of the job
    for each batch), and only theirs."""
    job = await _schema(postgres, tmp_path, "held")
    postgres.query(RECORD, _batch_params(f"{job}-older", [f"1.6.{n}" for n in range(600)]))
    postgres.query("ANALYZE asyncdicom.instances")  # statistics of the table as it was: then a new job
    postgres.query(RECORD, _batch_params(job, [f"1.6.{n}" for n in range(600)]))
    params = {"job": job, "uids": ["1.6.7", "1.6.300"]}
    plan = [str(row[0]) for row in postgres.query("EXPLAIN (ANALYZE, COSTS OFF) " + FORGET_HELD, params)]
    _reads_by_key(plan, "on instances i", "instances_pkey", "sop_uid = u.uid")
    left = postgres.query("SELECT job, COUNT(*) FROM asyncdicom.instances WHERE job LIKE %s GROUP BY job", (f"{job}%",))
    assert sorted(left) == [(job, 598), (f"{job}-older", 600)]


async def test_a_claim_reads_only_what_it_takes(tmp_path: Path, postgres: Postgres) -> None:
    """A claim of 5 in a job of 5000 open requests (pending and partial) reads a handful of
    index entries, not every open request of the job (as one OR in its condition made it do)."""
    job = await _schema(postgres, tmp_path, "claim")
    postgres.query(
        "INSERT INTO asyncdicom.requests (job, key, line, elements, state) "
        "SELECT %s, 'k' || g, g, '{}', CASE WHEN g %% 2 = 0 THEN 'pending' ELSE 'partial' END "
        "FROM generate_series(1, 5000) g",
        (job,),
    )
    postgres.query("ANALYZE asyncdicom.requests")
    params = {"job": job, "holder": "me", "lease": 30, "count": 5, "since": 1.0}
    plan = [str(row[0]) for row in postgres.query("EXPLAIN (ANALYZE, COSTS OFF) " + CLAIM, params)]
    read = [int(line.split("rows=")[1].split()[0]) for line in plan if "requests_claim" in line and "rows=" in line]
    assert read and max(read) <= 64, "\n".join(plan)  # an incremental sort reads groups of 32
    claimed = postgres.query("SELECT key FROM asyncdicom.requests WHERE job = %s AND holder = 'me'", (job,))
    assert sorted(str(key) for (key,) in claimed) == ["k10", "k2", "k4", "k6", "k8"]  # pending first, by line
    params["since"] = 1e12  # and partial requests to ask again once no pending one is left
    postgres.query("UPDATE asyncdicom.requests SET state = 'done' WHERE job = %s AND state = 'pending'", (job,))
    postgres.query(CLAIM, params)
    claimed = postgres.query("SELECT COUNT(*) FROM asyncdicom.requests WHERE job = %s AND holder = 'me'", (job,))
    assert claimed == [(10,)]


async def test_a_plan_sync_writes_only_the_rows_that_change(tmp_path: Path, postgres: Postgres) -> None:
    """Starting a host on a planned job rewrites none of its rows (each start wrote two versions of
    every row); a request dropped from the batch, or back in it, is the only row written."""
    job = f"resync-{tmp_path.name}"[:64]

    def versions() -> dict[str, str]:
        rows = postgres.query("SELECT key, xmin::text FROM asyncdicom.requests WHERE job = %s", (job,))
        return {str(key): str(xmin) for key, xmin in rows}

    three, two = _plan(tmp_path, "1\n2\n3\n"), _plan(tmp_path, "1\n2\n")
    async with open_pg(postgres.url, job, lease=3.0, directory=tmp_path / "out") as ledger:
        await ledger.sync_plan(three, digests={}, restart=False, retry_failed=False)
        first = versions()
        await ledger.sync_plan(three, digests={}, restart=False, retry_failed=False)
        assert versions() == first
        dropped = three.requests[2].key
        report = await ledger.sync_plan(two, digests={}, restart=False, retry_failed=False)
        assert report.dropped == 1
        assert {k: v for k, v in versions().items() if v != first[k]}.keys() == {dropped}
        again = versions()
        report = await ledger.sync_plan(three, digests={}, restart=False, retry_failed=False)
        assert report.dropped == 0 and len(await ledger.pending(three)) == 3
        assert {k: v for k, v in versions().items() if v != again[k]}.keys() == {dropped}


async def test_a_plan_of_many_new_requests_renews_the_statistics(tmp_path: Path, postgres: Postgres) -> None:
    """A plan sync that adds many requests analyzes the table at once: the planner does not wait
    for autovacuum to learn of the job's rows (it read all of them to settle a few meanwhile)."""

    def analyzed() -> int:
        rows = postgres.query(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relid = 'asyncdicom.requests'::regclass"
        )
        return int(str(rows[0][0]))

    async with open_pg(postgres.url, f"few-{tmp_path.name}"[:64], lease=3.0, directory=tmp_path / "out") as few:
        before = analyzed()
        await few.sync_plan(_plan(tmp_path, "1\n2\n"), digests={}, restart=False, retry_failed=False)
        assert analyzed() == before
    many = _plan(tmp_path, "".join(f"{n}\n" for n in range(ANALYZE_AFTER)))
    async with open_pg(postgres.url, f"many-{tmp_path.name}"[:64], lease=3.0, directory=tmp_path / "out") as ledger:
        await ledger.sync_plan(many, digests={}, restart=False, retry_failed=False)
        assert analyzed() == before + 1
        await ledger.sync_plan(many, digests={}, restart=False, retry_failed=False)  # nothing new: no more
        assert analyzed() == before + 1


@asynccontextmanager
async def _host(server: Postgres, job: str, tmp_path: Path, name: str, lease: float = 3.0) -> AsyncIterator[PgLedger]:
    async with open_pg(server.url, job, lease=lease, directory=tmp_path / name) as ledger:
        yield ledger


@asynccontextmanager
async def _two_hosts(
    server: Postgres, tmp_path: Path, name: str, rows: str, slots: int
) -> AsyncIterator[tuple[Plan, str, PgLedger, PgLedger, SharedSlots, SharedSlots]]:
    """Hosts a and b on one job of ``rows``, planned, with a budget of ``slots`` associations."""
    plan = _plan(tmp_path, rows)
    job = f"{name}-{tmp_path.name}"[:64]
    async with _host(server, job, tmp_path, "a") as a, _host(server, job, tmp_path, "b") as b:
        for ledger in (a, b):
            await ledger.sync_plan(plan, digests={}, restart=False, retry_failed=False)
        a_slots, b_slots = a.slots(slots), b.slots(slots)
        await a_slots.prepare()
        yield plan, job, a, b, a_slots, b_slots


@asynccontextmanager
async def _a_holds_them_all(
    server: Postgres, tmp_path: Path, name: str, slots: int
) -> AsyncIterator[tuple[PgLedger, PgLedger, SharedSlots, SharedSlots, anyio.abc.TaskGroup]]:
    """Hosts a and b working on one job of ``slots`` association slots, all of them held by a's
    workers (owners 0, 1, …), and a task group for more workers."""
    async with (
        _two_hosts(server, tmp_path, name, "1\n2\n", slots) as (plan, _, a, b, a_slots, b_slots),
        a.work(plan, await a.pending(plan)),
        b.work(plan, await b.pending(plan)),
        a_slots.running(),
        b_slots.running(),
        anyio.create_task_group() as tg,
    ):
        for worker in range(slots):
            await a_slots.acquire(worker)
        yield a, b, a_slots, b_slots, tg


async def _take_all(ledger: Ledger, plan: Plan, taken: list[str], hold: float = 0.0) -> None:
    """Run the job as a host would: take each request claimed and record it done."""
    pending = await ledger.pending(plan)
    async with ledger.recording(RunStats(len(plan.requests), 0, 1)) as rec, ledger.work(plan, pending) as requests:
        async for request in requests:
            taken.append(request.key)
            await anyio.sleep(hold)
            await rec.record(request, _done("x"))


async def test_three_hosts_share_a_job_each_request_once(tmp_path: Path, postgres: Postgres) -> None:
    """Three hosts on one job: every request is claimed by exactly one of them, and all are done."""
    plan = _plan(tmp_path, "".join(f"{n}\n" for n in range(60)))
    job = f"share-{tmp_path.name}"[:64]
    taken: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    async with (
        _host(postgres, job, tmp_path, "a") as a,
        _host(postgres, job, tmp_path, "b") as b,
        _host(postgres, job, tmp_path, "c") as c,
    ):
        for ledger in (a, b, c):
            await ledger.sync_plan(plan, digests={"csv": "same"}, restart=False, retry_failed=False)
        async with anyio.create_task_group() as tg:
            for name, ledger in (("a", a), ("b", b), ("c", c)):
                tg.start_soon(_take_all, ledger, plan, taken[name], 0.01)
        summary = await a.summary()
    every = taken["a"] + taken["b"] + taken["c"]
    assert sorted(every) == sorted(r.key for r in plan.requests)  # each once, none left out
    assert all(taken.values()), taken  # all three took a share
    assert summary.requests.done == 60
    holders = postgres.query("SELECT COUNT(DISTINCT settled_by) FROM asyncdicom.requests WHERE job = %s", (job,))
    assert holders == [(3,)]


async def test_a_dead_hosts_requests_go_to_another_after_its_lease(tmp_path: Path, postgres: Postgres) -> None:
    """A host that claimed requests and stopped renewing them (killed) loses them after its lease:
    another host, waiting meanwhile, claims and finishes them."""
    plan = _plan(tmp_path, "1\n2\n3\n")
    job = f"dead-{tmp_path.name}"[:64]
    async with _host(postgres, job, tmp_path, "a", lease=2.0) as dead:
        await dead.sync_plan(plan, digests={}, restart=False, retry_failed=False)
        claimed = await dead.leases.run(lambda conn: dead._claim(conn, 2))  # then nothing more: no heartbeat
        assert len(claimed) == 2
        async with _host(postgres, job, tmp_path, "b", lease=2.0) as alive:
            taken: list[str] = []
            with anyio.fail_after(20):
                start = anyio.current_time()
                await _take_all(alive, plan, taken)
            waited = anyio.current_time() - start
            assert sorted(taken) == sorted(r.key for r in plan.requests)
            assert waited >= 1.5  # the two claimed requests waited for the lease to run out
            assert (await alive.summary()).requests.done == 3


async def test_a_result_never_overwrites_done(tmp_path: Path, postgres: Postgres) -> None:
    """Two hosts ran one request (a lease ran out mid-request): the first done stands; the later
    failure from the other host is not recorded over it."""
    plan = _plan(tmp_path, "1\n")
    job = f"once-{tmp_path.name}"[:64]
    async with _host(postgres, job, tmp_path, "a") as a, _host(postgres, job, tmp_path, "b") as b:
        await a.sync_plan(plan, digests={}, restart=False, retry_failed=False)
        stats_a, stats_b = RunStats(1, 0, 1), RunStats(1, 0, 1)
        async with a.recording(stats_a) as rec:
            await rec.record(plan.requests[0], _done("1"))
        async with b.recording(stats_b) as rec:
            await rec.record(plan.requests[0], RequestResult("failed", 1, None, "network", "aborted"))
        assert (stats_a.done, stats_b.failed) == (1, 0)  # b's result was not recorded
        assert (await b.summary()).requests.done == 1
        assert postgres.query("SELECT settled_by FROM asyncdicom.requests WHERE job = %s", (job,)) == [(a.holder,)]


async def test_the_association_budget_is_shared_by_the_hosts(tmp_path: Path, postgres: Postgres) -> None:
    """Slots of one job across hosts: never more held than the budget; a released slot goes to
    a waiting host; a dead host's slots come back after its lease."""
    job = f"slots-{tmp_path.name}"[:64]
    owners = [object() for _ in range(4)]
    async with _host(postgres, job, tmp_path, "a", lease=2.0) as a, _host(postgres, job, tmp_path, "b", lease=2.0) as b:
        slots_a, slots_b = a.slots(2), b.slots(2)
        await slots_a.prepare()
        async with slots_a.running(), slots_b.running():
            await slots_a.acquire(owners[0])
            await slots_b.acquire(owners[1])
            with anyio.move_on_after(0.5) as waited:
                await slots_a.acquire(owners[2])
            assert waited.cancelled_caught  # the budget of 2 is spent
            got = anyio.Event()

            async def third() -> None:
                await slots_a.acquire(owners[2])
                got.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(third)
                await anyio.sleep(0.2)
                assert not got.is_set()
                slots_b.release(owners[1])  # b gives its slot back: a's waiting worker gets it
                with anyio.fail_after(5):
                    await got.wait()
            held = postgres.query("SELECT COUNT(*) FROM asyncdicom.slots WHERE job = %s AND holder IS NOT NULL", (job,))
            assert held == [(2,)]
        # a's slots are held in the table with no heartbeat renewing them: b gets one after the lease
        async with slots_b.running():
            with anyio.fail_after(10):
                await slots_b.acquire(owners[3])


async def test_a_restarted_server_is_met_with_a_reconnection(tmp_path: Path, postgres: Postgres) -> None:
    """The server restarts between two commits: the next commit reconnects and lands."""
    plan = _plan(tmp_path, "1\n2\n")
    job = f"restart-{tmp_path.name}"[:64]
    async with _host(postgres, job, tmp_path, "a") as ledger:
        await ledger.sync_plan(plan, digests={}, restart=False, retry_failed=False)
        async with ledger.recording(RunStats(2, 0, 1)) as rec:
            await rec.record(plan.requests[0], _done("1"))
        await anyio.to_thread.run_sync(postgres.restart)
        async with ledger.recording(RunStats(2, 0, 1)) as rec:
            await rec.record(plan.requests[1], _done("2"))
        assert (await ledger.summary()).requests.done == 2


async def test_restart_is_refused_while_another_host_runs_the_job(tmp_path: Path, postgres: Postgres) -> None:
    """--restart would forget what a running host is doing: refused, naming the host; so is
    joining the job with another batch file."""
    plan = _plan(tmp_path, "1\n")
    job = f"busy-{tmp_path.name}"[:64]
    async with _host(postgres, job, tmp_path, "a") as a, _host(postgres, job, tmp_path, "b") as b:
        await a.sync_plan(plan, digests={"csv": "one"}, restart=False, retry_failed=False)
        async with a.work(plan, await a.pending(plan)):
            with pytest.raises(LedgerError, match=r"Unable to restart job .* as host .* runs it now"):
                await b.sync_plan(plan, digests={"csv": "one"}, restart=True, retry_failed=False)
            with pytest.raises(LedgerError, match=r"runs it with another csv; give every host the same"):
                await b.sync_plan(plan, digests={"csv": "two"}, restart=False, retry_failed=False)
        assert a.last_host


async def test_the_password_comes_from_a_pgpass_file(
    tmp_path: Path, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without PGPASSWORD, the password is read from the passfile (~/.pgpass, or PGPASSFILE),
    as libpq reads it; with a wrong one there, a clear error names what to check."""
    from tests.postgres_server import PASSWORD, USER

    passfile = tmp_path / "pgpass"
    monkeypatch.delenv("PGPASSWORD")
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    passfile.write_text(f"127.0.0.1:{postgres.port}:*:{USER}:{PASSWORD}\n")
    passfile.chmod(0o600)
    async with open_pg(postgres.url, f"pass-{tmp_path.name}"[:64]) as ledger:
        assert await ledger.get_meta("planned") is None
    passfile.write_text(f"127.0.0.1:{postgres.port}:*:{USER}:not-it\n")
    with pytest.raises(LedgerError, match=r"password authentication failed.*PGPASSWORD or ~/\.pgpass") as caught:
        async with open_pg(postgres.url, "job"):
            pass
    assert "not-it" not in str(caught.value)


async def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    """Nothing listens at the ledger URL: a LedgerError naming host, port and database, and what to check."""
    from tests.pacs_servers import free_port

    url = f"postgresql://nobody@127.0.0.1:{free_port()}/research"
    with pytest.raises(
        LedgerError, match=r"Unable to reach the ledger database 127\.0\.0\.1:\d+/research as .*PGPASSWORD"
    ):
        async with open_pg(url, "job"):
            pass


@pytest.mark.parametrize(
    ("output", "where", "message"),
    [
        ({"ledger_url": "postgresql://u:secret@db/x"}, "output.ledger_url", "holds a password"),
        ({"ledger_url": "postgresql://u@db/x?password=secret"}, "output.ledger_url", "holds a password"),
        ({"ledger_url": "mysql://u@db/x"}, "output.ledger_url", "not a postgresql:// URL"),
        ({"ledger_url": "postgresql://u@[::1/x"}, "output.ledger_url", "is not a URL (Invalid IPv6 URL)"),
        ({"ledger_url": "postgresql://u@db"}, "output.ledger_url", "names no database"),
        ({"ledger_url": "postgresql://u@db:99999/x"}, "output.ledger_url", "port is out of range"),
        ({"ledger_url": "postgresql://u@db/x", "ledger_file": "l.sqlite3"}, "output.ledger_url", "not both"),
        ({"job_name": "../etc"}, "output.job_name", "is not a job name"),
        ({"job_name": "x" * 65}, "output.job_name", "is not a job name"),
        ({"lease_seconds": 1}, "output.lease_seconds", "out of range"),
    ],
)
def test_ledger_keys_are_checked(tmp_path: Path, output: dict[str, object], where: str, message: str) -> None:
    """Bad ledger keys are config errors naming the key and the fix; a password is never accepted."""
    document = find_config(4242)
    document["output"].update(output)
    with pytest.raises(ConfigError) as caught:
        load_config(write_yaml(tmp_path / "c.yml", document))
    assert caught.value.where == where
    assert message in str(caught.value)
    assert "secret" not in str(caught.value)


def test_the_job_is_named_after_the_config_file(tmp_path: Path) -> None:
    """Without output.job_name, the config file's name is the job's (the same config on several hosts is one job)."""
    document = find_config(4242)
    document["output"]["ledger_url"] = "postgresql://asyncdicom@db.example.org/research"
    config = load_config(write_yaml(tmp_path / "lung ct.yml", document))
    assert (config.output.job_name, config.output.lease_seconds) == ("lung-ct", 30.0)
    document["output"]["job_name"] = "lung-ct-2026"
    assert load_config(write_yaml(tmp_path / "c.yml", document)).output.job_name == "lung-ct-2026"


async def test_a_host_cut_off_from_the_database_stops_before_its_leases_run_out(
    tmp_path: Path, postgres: Postgres
) -> None:
    """The database goes away while a host holds a request: its heartbeat gives up within two
    thirds of a lease and the host stops, before the lease runs out and another host could take
    its request (and its association slots) while it still uses them."""
    plan = _plan(tmp_path, "1\n2\n")
    job = f"cut-{tmp_path.name}"[:64]
    lease = 3.0
    try:
        async with _host(postgres, job, tmp_path, "a", lease=lease) as ledger:
            await ledger.sync_plan(plan, digests={}, restart=False, retry_failed=False)
            cut = 0.0

            async def hold_one() -> None:
                nonlocal cut
                async with ledger.work(plan, await ledger.pending(plan)) as requests:
                    async for _ in requests:  # one request in hand, then the database is gone
                        await anyio.to_thread.run_sync(postgres.stop)
                        cut = anyio.current_time()
                        await anyio.sleep(60)  # only the heartbeat's error ends this

            with pytest.raises(BaseException) as caught:  # a LedgerError, or a group holding one
                await hold_one()
            stopped = anyio.current_time() - cut
    finally:
        await anyio.to_thread.run_sync(postgres.restart)
    from asyncdicom.errors import leaves

    errors = [leaf for leaf in leaves(caught.value) if isinstance(leaf, LedgerError)]
    assert errors and "stops before its leases (3 s) run out" in str(errors[0])
    assert stopped < lease  # the lease, renewed at most a third of a lease before the cut, still held


async def test_a_host_leaving_keeps_the_requests_whose_results_are_not_committed_yet(
    tmp_path: Path, postgres: Postgres
) -> None:
    """A host settles its last request and leaves the job before the writer has committed the
    result: that request is not given back (another host would run it again); the commit then
    settles it, and nothing else stays held."""
    plan = _plan(tmp_path, "1\n2\n")
    job = f"leave-{tmp_path.name}"[:64]
    async with _host(postgres, job, tmp_path, "a") as a:
        await a.sync_plan(plan, digests={}, restart=False, retry_failed=False)
        pending = await a.pending(plan)
        async with a.recording(RunStats(2, 0, 1)) as rec, a.db._lock:  # the writer's commit waits for the lock
            async with a.work(plan, pending) as requests:
                async for request in requests:
                    await rec.record(request, _done("1"))
                    break  # the second request is claimed but never run
            held = postgres.query(
                "SELECT key, holder IS NOT NULL, state FROM asyncdicom.requests WHERE job = %s ORDER BY line",
                (job,),
            )
        assert held == [(plan.requests[0].key, True, "pending"), (plan.requests[1].key, False, "pending")]
        after = postgres.query("SELECT state, holder FROM asyncdicom.requests WHERE job = %s ORDER BY line", (job,))
        assert after == [("done", None), ("pending", None)]


async def test_a_host_without_a_slot_claims_nothing(tmp_path: Path, postgres: Postgres) -> None:
    """While another host holds the job's only association slot, a host claims no request (it
    could not run them, and the other host could); once the slot is given back, it takes the
    slot and claims."""
    async with (
        _two_hosts(postgres, tmp_path, "noslot", "1\n2\n3\n", 1) as (plan, job, _, b, a_slots, b_slots),
        a_slots.running(),
        b_slots.running(),
    ):
        await a_slots.acquire("worker")
        async with b.work(plan, await b.pending(plan)) as requests:
            got: list[str] = []

            async def first() -> None:
                got.append((await requests.__anext__()).key)

            async with anyio.create_task_group() as tg:
                tg.start_soon(first)
                with anyio.fail_after(10):
                    for _ in range(2):  # it asks for a slot twice, in vain
                        await b_slots.refused.wait()
                held = postgres.query(
                    "SELECT COUNT(*) FROM asyncdicom.requests WHERE job = %s AND holder IS NOT NULL", (job,)
                )
                assert held == [(0,)]
                a_slots.release("worker")  # back to the database, with a notification
            assert got == [plan.requests[0].key]
            assert b_slots.held == 1


def test_a_host_claims_about_half_a_second_of_its_work() -> None:
    """After its first claim, a host claims what its workers take in about half a second, as fast
    as they took the last claim: at the end of a job no host is left with much more than that
    while the others are done (claims of eight left one host of the bench a second of work
    alone, its 1200 instances against the other's 800); at most twice the last claim (idle
    workers take a claim at once), short requests up to 32 at a time."""
    assert next_claim(8, 2.0) == 2  # series of a quarter of a second each
    assert next_claim(8, 0.5) == 8
    assert next_claim(3, 0.1) == 6  # would be 15: twice the last at most
    assert next_claim(2, 0.0) == 4  # taken at once by idle workers
    assert next_claim(16, 0.001) == 32  # C-FINDs
    assert next_claim(32, 0.0) == 32
    assert next_claim(1, 60.0) == 1  # at least one


async def test_a_host_with_nothing_to_claim_does_not_ask_for_a_slot(tmp_path: Path, postgres: Postgres) -> None:
    """Host a holds the job's only slot and every request; host b, with nothing it could claim,
    waits for requests without asking for a slot (it would only take it from a, to find nothing),
    and ends when a has settled them."""
    async with _two_hosts(postgres, tmp_path, "dry", "1\n2\n", 1) as (plan, _, a, b, a_slots, b_slots):
        refused = b_slots.refused
        got: list[str] = []
        async with (
            a_slots.running(),
            b_slots.running(),
            a.recording(RunStats(2, 0, 1)) as rec,
            a.work(plan, await a.pending(plan)) as a_requests,
        ):
            first = await a_requests.__anext__()  # a took the slot and claimed both

            async def run_b() -> None:
                async with b.work(plan, await b.pending(plan)) as b_requests:
                    got.extend([request.key async for request in b_requests])

            with anyio.fail_after(20):  # b ends once a's commit tells it that nothing is left
                async with anyio.create_task_group() as tg:
                    tg.start_soon(run_b)
                    second = await a_requests.__anext__()
                    for request in (first, second):
                        await rec.record(request, _done("x"))
            assert got == []
        assert not refused.is_set() and b_slots.held == 0


async def test_a_host_beyond_its_share_gives_slots_to_a_host_that_waits(tmp_path: Path, postgres: Postgres) -> None:
    """A job of four slots: host a, alone at first, holds all four; host b asks for two and is
    refused, and says it waits; a hears it, is then beyond its share (two of four for two hosts)
    and gives the slots its workers release to the job, not to its own waiting worker, until it
    holds its share: b gets two."""
    async with _a_holds_them_all(postgres, tmp_path, "share-slots", 4) as (a, _, a_slots, b_slots, tg):
        assert a_slots.held == 4 and not a_slots.over_share()
        got: list[str] = []
        two = anyio.Event()

        async def take(slots: SharedSlots, owner: str) -> None:
            await slots.acquire(owner)
            got.append(owner)
            if len(got) == 2:
                two.set()

        tg.start_soon(take, a_slots, "a's own")
        with anyio.fail_after(10):
            await a_slots.refused.wait()  # none free: a's own worker waits
        for owner in ("b1", "b2"):
            tg.start_soon(take, b_slots, owner)
        with anyio.fail_after(10):
            while not a_slots.over_share():  # b says it waits; a hears it at its next beat
                await a.wakeups.event(WANTED).wait()
        assert a.others_want and a.hosts == 2 and a_slots.share == 2
        a_slots.release(0)
        a_slots.release(1)
        with anyio.fail_after(10):
            await two.wait()
        assert sorted(got) == ["b1", "b2"]  # a's own waiting worker got none
        assert (a_slots.held, a_slots.over_share()) == (2, False)
        tg.cancel_scope.cancel()


async def test_a_host_beyond_its_share_hears_at_once_that_another_waits(tmp_path: Path, postgres: Postgres) -> None:
    """Leases of 30 s (a beat every 10 s): host a holds both slots; b asks and is refused; a
    hears it by notification and beats at once, so it knows within a moment that it is beyond
    its share (it beat a second later, running two associations while b idled: a fourth of the
    bench's job)."""
    plan = _plan(tmp_path, "1\n2\n")
    job = f"at-once-{tmp_path.name}"[:64]
    async with _host(postgres, job, tmp_path, "a", lease=30) as a, _host(postgres, job, tmp_path, "b", lease=30) as b:
        for ledger in (a, b):
            await ledger.sync_plan(plan, digests={}, restart=False, retry_failed=False)
        a_slots, b_slots = a.slots(2), b.slots(2)
        await a_slots.prepare()
        async with (
            a.work(plan, await a.pending(plan)),
            b.work(plan, await b.pending(plan)),
            a_slots.running(),
            b_slots.running(),
            anyio.create_task_group() as tg,
        ):
            for worker in range(2):
                await a_slots.acquire(worker)
            assert not a_slots.over_share()
            refused = b_slots.refused
            tg.start_soon(b_slots.acquire, "b")
            with anyio.fail_after(10):
                await refused.wait()
            since = time.monotonic()
            with anyio.fail_after(10):
                while not a_slots.over_share():
                    await a.wakeups.event(WANTED).wait()
            assert time.monotonic() - since < 0.9
            tg.cancel_scope.cancel()


async def test_a_host_served_a_slot_still_waits_while_another_of_its_workers_does(
    tmp_path: Path, postgres: Postgres
) -> None:
    """Host b, two workers waiting for the job's two slots held by a: one is served when a frees a
    slot, and b still says it waits (its other worker does): otherwise a host at its share could
    take the next slot freed before b's worker asks again (a flaky case of the test above)."""

    def b_waits(b: PgLedger) -> bool:
        rows = postgres.query(
            "SELECT wants_until > now() FROM asyncdicom.hosts WHERE job = %s AND holder = %s", (b.job, b.holder)
        )
        return bool(rows[0][0])

    async with _a_holds_them_all(postgres, tmp_path, "still-waits", 2) as (_, b, a_slots, b_slots, tg):
        served = anyio.Event()

        async def take(owner: str) -> None:
            await b_slots.acquire(owner)
            served.set()

        for owner in ("b1", "b2"):
            tg.start_soon(take, owner)
        with anyio.fail_after(10):
            await b_slots.refused.wait()
        assert b_waits(b)
        a_slots.release(0)
        with anyio.fail_after(10):
            await served.wait()
        assert b_slots.held == 1 and b_waits(b)
        tg.cancel_scope.cancel()


async def test_a_slot_freed_while_a_worker_asks_the_database_goes_to_that_worker(
    tmp_path: Path, postgres: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Host a holds the job's two slots; a third worker of a asks the database for one, and while
    it asks, a worker releases its slot: the slot goes to the asking worker, not back to the job
    (where another host could take it, leaving a with requests claimed and no slot to run them:
    seen in the bench, a host idle for seconds at the end of a job)."""
    async with _a_holds_them_all(postgres, tmp_path, "asking", 2) as (_, _, a_slots, _, tg):
        asking, go, served = anyio.Event(), anyio.Event(), anyio.Event()
        given: list[int] = []
        take, give = a_slots._take, a_slots._give_to_job

        async def paused_take(conn: Any) -> int | None:
            asking.set()
            await go.wait()
            return await take(conn)

        def spied_give(n: int) -> None:
            given.append(n)
            give(n)

        monkeypatch.setattr(a_slots, "_take", paused_take)
        monkeypatch.setattr(a_slots, "_give_to_job", spied_give)

        async def third() -> None:
            await a_slots.acquire("third")
            served.set()

        tg.start_soon(third)
        with anyio.fail_after(10):
            await asking.wait()
        a_slots.release(0)
        go.set()
        with anyio.fail_after(10):
            await served.wait()
        assert given == [] and a_slots.held == 2
        tg.cancel_scope.cancel()


async def test_a_host_hears_what_another_frees_by_notification(tmp_path: Path, postgres: Postgres) -> None:
    """A host's listener wakes the waiters of what another host of the same job frees (here: a
    slot given back wakes those waiting for a slot, not those waiting for requests), and nobody
    for another job's notifications."""
    from asyncdicom.ledger.postgres.connection import SLOTS, Connection, Wakeups

    job = f"hear-{tmp_path.name}"[:64]
    async with _host(postgres, job, tmp_path, "a") as a:
        wakeups = Wakeups(job)
        listener = Connection(postgres.url, "test", 10)
        await listener.open()
        await listener.keep(wakeups.listen)
        assert wakeups.wakes == 3  # listening: every waiter looks again
        heard = wakeups.wakes
        slot_freed, requests_freed = wakeups.event(SLOTS), wakeups.event(REQUESTS)
        postgres.query("SELECT pg_notify('asyncdicom', 'slots:another-job')")
        slots = a.slots(1)
        await slots.prepare()
        async with slots.running():
            await slots.acquire("worker")
            slots.release("worker")  # given back to the database, with a notification
            with anyio.fail_after(10):
                await slot_freed.wait()
        assert wakeups.wakes == heard + 1  # the other job's notification woke nobody
        assert not requests_freed.is_set()
        await listener.close()


def test_statements_keep_psycopg_parameters_for_the_driver() -> None:
    """The ledger's statements are written with psycopg's parameters (the tests run them through
    psycopg too); the driver numbers them for the server: a name used twice is one parameter,
    ``%%`` a percent sign, and names and positions are never mixed."""
    from asyncdicom.ledger.postgres.driver import _bind

    assert _bind("SELECT %(a)s, %(b)s, %(a)s LIKE 'x%%'", {"b": 2, "a": 1}) == ("SELECT $1, $2, $1 LIKE 'x%'", [1, 2])
    assert _bind("SELECT %s, %s", ("x", "y")) == ("SELECT $1, $2", ("x", "y"))
    assert _bind("SELECT 'x%'", None) == ("SELECT 'x%'", ())  # no parameters: the text as it is
    with pytest.raises(ValueError, match="mixes named and positional"):
        _bind("SELECT %(a)s, %s", {"a": 1})


async def test_a_refused_value_is_not_named_in_the_error(postgres: Postgres) -> None:
    """A statement refused for one of its values (the server's data error, or the client's: a
    value of the wrong type for a parameter) is reported by its kind, without the value (a UID
    or a path may hold patient data), and not as a lost server (no retry)."""
    from asyncdicom.ledger.postgres.driver import DriverError, Lost, connect

    session = await connect(postgres.url, connect_timeout=10, application_name="test")
    try:
        for sql, kind in (
            ("SELECT %s::text::integer", "invalid input syntax for type integer"),  # the server's
            ("SELECT %s::integer", "invalid input for query argument $1"),  # the client's
        ):
            with pytest.raises(DriverError) as caught:
                await session.rows(sql, ("PAT-12345",))
            assert not isinstance(caught.value, Lost)
            assert str(caught.value) == kind
    finally:
        await session.close()


async def test_the_lease_connection_listens_again_after_a_reconnect(tmp_path: Path, postgres: Postgres) -> None:
    """The connection that hears the other hosts LISTENs again when it reconnects (here: the
    server ended its session): a notification sent after that still wakes the host's waiters."""
    from asyncdicom.ledger.postgres.connection import SLOTS, Connection, Wakeups

    job = f"relisten-{tmp_path.name}"[:64]
    wakeups = Wakeups(job)
    listener = Connection(postgres.url, "test", 10)
    await listener.open()
    try:
        await listener.keep(wakeups.listen)
        first = await listener.statement(lambda s: s.row("SELECT pg_backend_pid()"))
        assert first is not None
        postgres.query("SELECT pg_terminate_backend(%s)", (first[0],))
        again = await listener.statement(lambda s: s.row("SELECT pg_backend_pid()"))
        assert again is not None and again != first  # a new session
        freed = wakeups.event(SLOTS)
        postgres.query("SELECT pg_notify('asyncdicom', %s)", (f"slots:{job}",))
        with anyio.fail_after(10):
            await freed.wait()
    finally:
        await listener.close()


async def test_one_commit_of_everything_at_once(
    tmp_path: Path, postgres: Postgres, caplog: pytest.LogCaptureFixture
) -> None:
    """One batch holding instances (two data sets under one UID, a held-back one processed again),
    a request settled twice (failed, then done: its attempts add up, its matches are the last's)
    and a request another host settled done already (left as it is): committed as one."""
    plan = _plan(tmp_path, "1\n2\n")
    first, second = plan.requests
    job = f"batch-{tmp_path.name}"[:64]
    syntax = "1.2.840.10008.1.2.1"
    async with _host(postgres, job, tmp_path, "a") as a:
        await a.sync_plan(plan, digests={}, restart=False, retry_failed=False)
        held = InstanceRecord("9.9", first.key, "1/held.dcm", 5, syntax, InstanceState.QUARANTINED, "script")
        await a.db.run(lambda c: a._commit(c, [held]), transaction=False)
        postgres.query(
            "UPDATE asyncdicom.requests SET state = 'done', settled_by = 'elsewhere' WHERE job = %s AND key = %s",
            (job, second.key),
        )
        items: list[Any] = [
            InstanceRecord("1.1", first.key, "1/a.dcm", 10, syntax, InstanceState.STORED),
            InstanceRecord("1.1", first.key, "1/b.dcm", 10, syntax, InstanceState.STORED),
            InstanceRecord("9.9", first.key, "1/held-now.dcm", 5, syntax, InstanceState.STORED, replaces="9.9"),
            (first, RequestResult("failed", 1, 0xC000, "failure", "refused")),
            (first, dataclasses.replace(_done("1"), attempts=1, matches=({"PatientID": "1"}, {"PatientID": "1b"}))),
            (second, RequestResult("failed", 1, None, "network", "aborted")),
        ]
        with caplog.at_level("WARNING", logger="asyncdicom.ledger"):
            recorded = await a.db.run(lambda c: a._commit(c, items), transaction=False)
        assert "received twice with different content" in caplog.text
        assert len(recorded) == 5  # the second request's late failure is not among them
        rows = postgres.query(
            "SELECT key, state, attempts, matches, settled_by FROM asyncdicom.requests WHERE job = %s ORDER BY line",
            (job,),
        )
        assert rows == [(first.key, "done", 2, 2, a.holder), (second.key, "done", 0, None, "elsewhere")]
        matches = postgres.query(
            "SELECT attrs FROM asyncdicom.matches WHERE job = %s AND request_key = %s ORDER BY idx", (job, first.key)
        )
        assert [json.loads(str(attrs)) for (attrs,) in matches] == [{"PatientID": "1"}, {"PatientID": "1b"}]
        instances = postgres.query(
            "SELECT sop_uid, path, state FROM asyncdicom.instances WHERE job = %s ORDER BY sop_uid, path", (job,)
        )
        assert instances == [
            ("1.1", "1/a.dcm", "stored"),
            ("1.1", "1/b.dcm", "stored"),
            ("9.9", "1/held-now.dcm", "stored"),
        ]


class _Counting:
    """A session that counts the statements sent through it."""

    def __init__(self, conn: Any) -> None:
        self.conn, self.sent = conn, 0

    async def execute(self, *args: Any, **kwargs: Any) -> Any:
        self.sent += 1
        return await self.conn.execute(*args, **kwargs)

    async def rows(self, *args: Any, **kwargs: Any) -> Any:
        self.sent += 1
        return await self.conn.rows(*args, **kwargs)

    async def row(self, *args: Any, **kwargs: Any) -> Any:
        self.sent += 1
        return await self.conn.row(*args, **kwargs)

    def transaction(self) -> Any:
        self.sent += 2  # BEGIN and COMMIT
        return self.conn.transaction()


async def test_a_batch_of_results_is_one_statement(tmp_path: Path, postgres: Postgres) -> None:
    """A batch of instances and settled requests is committed by one statement (one round trip,
    atomic by itself): a request's new matches replace its earlier ones, however many; a request
    another host settled done first keeps that result, and the job's hosts are told."""
    plan = _plan(tmp_path, "1\n2\n3\n")
    first, second, third = plan.requests
    job = f"one-{tmp_path.name}"[:64]
    syntax = "1.2.840.10008.1.2.1"
    async with _host(postgres, job, tmp_path, "a") as a, _host(postgres, job, tmp_path, "b") as b:
        await a.sync_plan(plan, digests={}, restart=False, retry_failed=False)
        three = tuple({"PatientID": f"1{n}"} for n in range(3))
        partial = RequestResult("partial", 1, 0xB000, "warning", "some failed", three)
        await a.db.run(lambda c: a._commit(c, [(first, partial), (third, partial)]), transaction=False)
        postgres.query(
            "UPDATE asyncdicom.requests SET state = 'done', settled_by = 'elsewhere' WHERE job = %s AND key = %s",
            (job, second.key),
        )
        await b.leases.keep(b.wakeups.listen)
        requests = b.wakeups.event(REQUESTS)
        items: list[Any] = [
            InstanceRecord("1.1", first.key, "1/a.dcm", 10, syntax, InstanceState.STORED),
            (first, dataclasses.replace(_done("1"), attempts=1, matches=({"PatientID": "1"},))),
            (second, RequestResult("failed", 1, None, "network", "aborted")),
            (third, RequestResult("done", 1, 0, "success", None, ())),
        ]
        counting = _Counting(None)

        async def commit(conn: Any) -> list[Any]:
            counting.conn = conn
            return await a._commit(cast(Any, counting), items)

        recorded = await a.db.run(commit, transaction=False)
        assert counting.sent == 1
        with anyio.fail_after(10):
            await requests.wait()  # told at commit
        assert [item[0].key if isinstance(item, tuple) else item.sop_uid for item in recorded] == [
            "1.1", first.key, third.key
        ]  # fmt: skip
        rows = postgres.query(
            "SELECT key, state, attempts, matches, settled_by FROM asyncdicom.requests WHERE job = %s ORDER BY line",
            (job,),
        )
        assert rows == [
            (first.key, "done", 2, 1, a.holder),
            (second.key, "done", 0, None, "elsewhere"),
            (third.key, "done", 2, 0, a.holder),
        ]
        matches = postgres.query(
            "SELECT request_key, idx, attrs FROM asyncdicom.matches WHERE job = %s ORDER BY request_key, idx", (job,)
        )
        assert [(key, idx, json.loads(str(attrs))) for key, idx, attrs in matches] == [
            (first.key, 0, {"PatientID": "1"})
        ]  # the first's three earlier matches became its one new one; the third's are gone
        assert postgres.query("SELECT COUNT(*) FROM asyncdicom.instances WHERE job = %s", (job,)) == [(1,)]


async def test_checksums_are_kept_by_one_statement_for_thousands(tmp_path: Path, postgres: Postgres) -> None:
    """verify --checksums keeps 3000 digests with one statement, each on its own row (a statement
    for each instance read every row of the job for each)."""
    job = await _schema(postgres, tmp_path, "sums")
    uids = [f"1.5.{n}" for n in range(3000)]
    async with open_pg(postgres.url, job, lease=3.0, directory=tmp_path / "out") as ledger:
        params = _batch_params(job, uids) | {"host": ledger.host, "directory": ledger.directory}
        postgres.query(RECORD, params)
        counting = _Counting(None)
        statement = ledger.db.statement

        async def counted(work: Any, **kwargs: Any) -> Any:
            async def run(conn: Any) -> Any:
                counting.conn = conn
                return await work(counting)

            return await statement(run, **kwargs)

        ledger.db.statement = counted  # type: ignore[method-assign]
        await ledger.checksums([(uid, f"{uid}.dcm", f"{n:064x}") for n, uid in enumerate(uids)])
        assert counting.sent == 1
    rows = postgres.query("SELECT sop_uid, sha256 FROM asyncdicom.instances WHERE job = %s", (job,))
    assert sorted((str(sha), str(uid)) for uid, sha in rows) == sorted((f"{n:064x}", uid) for n, uid in enumerate(uids))


async def test_a_database_of_an_older_schema_is_migrated(tmp_path: Path, postgres: Postgres) -> None:
    """A ledger database written by asyncdicom at schema 3 is brought to the current schema when
    a host opens it: its instances indexed by request key first (schema 4), its matches saying
    whose they are (schema 5), its rows kept."""
    name = f"older_{tmp_path.name}".lower()[:60]
    postgres.query(f'CREATE DATABASE "{name}"')
    url = postgres.url.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(url, password=PASSWORD, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA asyncdicom")
        conn.execute("CREATE TABLE asyncdicom.version (version INTEGER NOT NULL)")
        for version in (1, 2, 3):  # an older schema: the last migrations run when a host opens it
            conn.execute(MIGRATIONS[version])
            conn.execute("INSERT INTO asyncdicom.version (version) VALUES (%s)", (version,))
        conn.execute("INSERT INTO asyncdicom.meta (job, key, value) VALUES ('old', 'planned', '1')")
    try:
        async with open_pg(url, "old", lease=3.0, directory=tmp_path / "out") as ledger:
            assert await ledger.get_meta("planned") == "1"
        with psycopg.connect(url, password=PASSWORD) as conn:
            versions = conn.execute("SELECT version FROM asyncdicom.version ORDER BY version").fetchall()
            indexes = conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'instances'").fetchall()
            holder = conn.execute(
                "SELECT 1 FROM information_schema.columns WHERE table_name = 'matches' AND column_name = 'holder'"
            ).fetchall()
        assert [v for (v,) in versions] == list(range(1, SCHEMA_VERSION + 1))
        assert sorted(str(i) for (i,) in indexes) == ["instances_by_request", "instances_pkey"] and holder == [(1,)]
    finally:
        postgres.query(f'DROP DATABASE "{name}" WITH (FORCE)')


async def test_two_hosts_settling_one_request_at_once_leave_the_last_ones_matches(
    tmp_path: Path, postgres: Postgres
) -> None:
    """Host a (lease lost, still finishing) and host b settle one query request at the same
    moment: a with five matches, uncommitted while b's statement waits for its row; once both
    are committed the job's library and counts hold b's three matches, not a's last two beside
    them (b's statement could not see the rows a inserted)."""
    plan = _plan(tmp_path, "1\n")
    (request,) = plan.requests
    job = f"race-{tmp_path.name}"[:64]
    async with _host(postgres, job, tmp_path, "a") as a, _host(postgres, job, tmp_path, "b") as b:
        await a.sync_plan(plan, digests={}, restart=False, retry_failed=False)
        five = RequestResult(
            "partial", 1, 0xB000, "warning", "some failed", tuple({"PatientID": f"a{n}"} for n in range(5))
        )
        three = RequestResult("done", 1, 0, "success", None, tuple({"PatientID": f"b{n}"} for n in range(3)))
        async with await psycopg.AsyncConnection.connect(postgres.url, password=PASSWORD) as held:
            await held.execute(RECORD, a._record_params([], [(request, five)], 0.0))  # a's, not committed
            async with anyio.create_task_group() as tg:
                tg.start_soon(lambda: b.db.run(lambda c: b._commit(c, [(request, three)]), transaction=False))
                waiting = "SELECT COUNT(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s"
                with anyio.fail_after(10):
                    # the server's state: no event tells of it
                    while postgres.query(waiting, ("%settled AS%",)) != [(1,)]:  # noqa: ASYNC110
                        await anyio.sleep(0.02)
                await held.commit()
        assert await b.library_rows() == [(2, {"PatientID": f"b{n}"}) for n in range(3)]
        assert (await b.summary()).matches == 3


async def test_a_schema_written_by_a_newer_asyncdicom_is_refused(tmp_path: Path, postgres: Postgres) -> None:
    """The database's schema is newer than this asyncdicom knows: refused, saying to upgrade."""
    async with _host(postgres, "schema-check", tmp_path, "a"):
        pass  # the schema exists
    postgres.query("INSERT INTO asyncdicom.version (version) VALUES (99)")
    try:
        with pytest.raises(LedgerError, match=r"the ledger database 127\.0\.0\.1:\d+/asyncdicom as a newer asyncdicom"):
            async with _host(postgres, "schema-check", tmp_path, "a"):
                pass
    finally:
        postgres.query("DELETE FROM asyncdicom.version WHERE version = 99")
