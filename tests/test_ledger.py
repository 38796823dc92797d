"""The ledger: schema, lock, plan sync, batched commits, library export."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from asyncdicom.config import load_config
from asyncdicom.errors import LedgerError
from asyncdicom.ledger import open_ledger
from asyncdicom.ledger.sqlite import SCHEMA_VERSION
from asyncdicom.models import RequestResult
from asyncdicom.plan import Plan, build_plan
from asyncdicom.stats import RunStats
from tests.conftest import find_config, write_yaml

pytestmark = pytest.mark.anyio


def _plan(tmp_path: Path, rows: str) -> Plan:
    (tmp_path / "batch.csv").write_text("PatientID\n" + rows)
    return build_plan(load_config(write_yaml(tmp_path / "c.yml", find_config(4242, batch="batch.csv"))))


async def test_new_ledger_has_current_schema(tmp_path: Path) -> None:
    """A new ledger is created in WAL mode at the current schema version."""
    path = tmp_path / "l.sqlite3"
    async with open_ledger(path):
        pass
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A ledger written by a newer asyncdicom is refused with a clear message."""
    path = tmp_path / "l.sqlite3"
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(LedgerError, match="as a newer asyncdicom wrote it"):
        async with open_ledger(path):
            pass


async def test_second_run_is_locked_out(tmp_path: Path) -> None:
    """Two runs never share a ledger: the second gets a clear error."""
    path = tmp_path / "l.sqlite3"
    async with open_ledger(path):
        with pytest.raises(LedgerError, match="another asyncdicom run is using it"):
            async with open_ledger(path):
                pass
    async with open_ledger(path):  # released again
        pass


async def test_changed_csv_keeps_done_rows_and_drops_removed(tmp_path: Path) -> None:
    """A changed CSV: unchanged rows stay done, new rows are pending, removed rows leave the library."""
    old = _plan(tmp_path, "1\n2\n")
    path = tmp_path / "l.sqlite3"
    async with open_ledger(path) as ledger:
        await ledger.sync_plan(old, digests={"csv": "a"}, restart=False, retry_failed=False)
        async with ledger.recording(RunStats(2, 0, 1)) as rec:
            for request in old.requests:
                await rec.record(request, RequestResult("done", 1, 0, "success", None, ({"PatientID": "x"},)))
        new = _plan(tmp_path, "2\n3\n")
        sync = await ledger.sync_plan(new, digests={"csv": "b"}, restart=False, retry_failed=False)
        assert (sync.changed, sync.new, sync.dropped, sync.done) == (("csv",), 1, 1, 1)
        rows = await ledger.export_library(tmp_path / "lib.csv", ("PatientID",))
        assert rows == 1
    assert (tmp_path / "lib.csv").read_text() == "PatientID,row\nx,2\n"
    assert not list(tmp_path.glob(".lib.csv*.part"))
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT PatientID, row FROM library").fetchall() == [("x", 2)]


async def test_migration_from_schema_1_keeps_everything(tmp_path: Path) -> None:
    """A ledger written at schema 1 (the first release) is migrated to the current schema in place:
    requests and matches survive, the new columns and the instances table appear."""
    from asyncdicom.ledger.sqlite import _MIGRATIONS

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(_MIGRATIONS[1] + "PRAGMA user_version = 1;")
        db.execute("INSERT INTO requests (key, line, elements, state, matches) VALUES ('k', 2, '[]', 'done', 1)")
        db.execute("INSERT INTO matches (request_key, idx, attrs) VALUES ('k', 0, '{\"PatientID\": \"1\"}')")
    async with open_ledger(path) as ledger:
        summary = await ledger.summary()
    assert summary.requests.done == 1
    assert summary.matches == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        columns = {row[1] for row in db.execute("PRAGMA table_info(requests)")}
        assert {"completed", "failed_ops", "warning_ops", "received", "missing"} <= columns
        assert db.execute("SELECT COUNT(*) FROM instances").fetchone()[0] == 0
        db.execute("UPDATE requests SET state = 'partial'")  # the widened CHECK constraint


def test_a_full_volume_while_the_ledger_writes_is_the_output_volume_full(tmp_path: Path) -> None:
    """SQLite's "database or disk is full" (SQLITE_FULL) is the output volume, not a broken
    ledger: the run's disk-full error (exit 4: free space and run again), not "move it away"."""
    import anyio

    from asyncdicom.errors import DiskFull

    full = sqlite3.OperationalError("database or disk is full")
    full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
    broken = sqlite3.DatabaseError("database disk image is malformed")
    broken.sqlite_errorcode = sqlite3.SQLITE_CORRUPT  # type: ignore[attr-defined]

    async def use(error: Exception) -> None:
        async with open_ledger(tmp_path / "c.sqlite3"):
            raise error

    with pytest.raises(DiskFull, match=r"Unable to write the ledger c\.sqlite3 as the output volume is full"):
        anyio.run(use, full)
    with pytest.raises(LedgerError, match="move it away to start afresh"):
        anyio.run(use, broken)
