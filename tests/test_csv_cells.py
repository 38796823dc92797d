"""Spreadsheet-safe CSV files (#15): formula cells prefixed, line breaks quoted, control
characters replaced, plain numbers untouched; the ledger keeps the raw values; the guard can be
turned off; what a run writes is readable by its owner only by default."""

from __future__ import annotations

import csv
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from asyncdicom.ledger import open_ledger
from asyncdicom.ledger.cells import cell
from asyncdicom.models import RequestResult
from asyncdicom.stats import RunStats
from tests.conftest import write_yaml
from tests.test_ledger import _plan

HOSTILE = {
    '=HYPERLINK("http://x")': '\'=HYPERLINK("http://x")',
    "+1+cmd|' /C calc'!A0": "'+1+cmd|' /C calc'!A0",
    "-2+3": "'-2+3",
    "@SUM(A1)": "'@SUM(A1)",
    "\tTAB": "'\tTAB",
    "\rCR": "'\nCR",
    "-1\\-2": "'-1\\-2",
    "a\rb": "a\nb",
    "a\r\nb": "a\nb",
    "nul\x00esc\x1bdel\x7f": "nul\ufffdesc\ufffddel\ufffd",
    "-12.5": "-12.5",
    "+7": "+7",
    "1e-3": "1e-3",
    "-": "'-",
    "Müller^Jürgen": "Müller^Jürgen",
    "abc\u202egpj.exe": "abc\ufffdgpj.exe",  # shown as abcexe.jpg otherwise
    "\u2066x\u2069": "\ufffdx\ufffd",
    "": "",
}


@pytest.mark.parametrize(("raw", "safe"), list(HOSTILE.items()))
def test_cells(raw: str, safe: str) -> None:
    assert cell(raw) == safe


def test_without_the_guard_only_breaks_and_controls_change() -> None:
    assert cell("=1+1", guard=False) == "=1+1"
    assert cell("a\rb\x00", guard=False) == "a\nb\ufffd"


@pytest.mark.anyio
@pytest.mark.parametrize("guard", [True, False])
async def test_library_csv_is_safe_and_the_ledger_raw(tmp_path: Path, guard: bool) -> None:
    plan = _plan(tmp_path, "1\n")
    path = tmp_path / "l.sqlite3"
    values = list(HOSTILE)
    async with open_ledger(path) as ledger:
        await ledger.sync_plan(plan, digests={"csv": "a"}, restart=False, retry_failed=False)
        async with ledger.recording(RunStats(1, 0, 1)) as rec:
            matches = tuple({"PatientID": value} for value in values)
            await rec.record(plan.requests[0], RequestResult("done", len(values), 0, "success", None, matches))
        await ledger.export_library(tmp_path / "lib.csv", ("PatientID",), guard=guard)
    with (tmp_path / "lib.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    assert rows[0] == ["PatientID", "row"]
    assert len(rows) == 1 + len(values)  # no value split a row
    expected = [cell(value, guard) for value in values]
    assert [row[0] for row in rows[1:]] == expected
    assert "\r" not in (tmp_path / "lib.csv").read_text(encoding="utf-8")
    with sqlite3.connect(path) as db:
        assert [value for (value,) in db.execute("SELECT PatientID FROM library")] == values


def _find_config(tmp_path: Path, port: int, **output: object) -> Path:
    document = {
        "pacs": {"hostname": "127.0.0.1", "port": port, "aet": "ORTHANC"},
        "request": {"type": "c-find", "elements": ["QueryRetrieveLevel=STUDY", "PatientID=nobody"]},
        "output": {"library_file": "out/library.csv", **output},
    }
    return write_yaml(tmp_path / "c.yml", document)


@pytest.mark.parametrize(("permissions", "file_mode", "dir_mode"), [("private", 0o600, 0o700), ("group", 0o640, 0o750)])
def test_what_a_run_writes_is_private_by_default(
    tmp_path: Path, orthanc: object, permissions: str, file_mode: int, dir_mode: int
) -> None:
    """In a process of its own (the umask is per process): library CSV, ledger and their
    folder get the modes ``output.permissions`` says, whatever umask the shell had (022)."""
    port = orthanc.port  # type: ignore[attr-defined]
    config = _find_config(tmp_path, port, permissions=permissions)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os; os.umask(0o022); from asyncdicom.cli import main; main()",
            "run",
            str(config),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=dict(os.environ, NO_COLOR="1"),
    )
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == dir_mode
    assert stat.S_IMODE((out / "library.csv").stat().st_mode) == file_mode
    ledgers = list((out / ".asyncdicom").glob("*.sqlite3"))
    assert ledgers
    assert stat.S_IMODE(ledgers[0].stat().st_mode) == file_mode
