"""report, verify and status against a real retrieve from Orthanc."""

from __future__ import annotations

import csv
import io
import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from tests.cli_helpers import cli, cli_json, spawn
from tests.conftest import LoadedOrthanc, write_yaml
from tests.test_retrieve_orthanc import retrieve_config, stored, write_batch

pytestmark = pytest.mark.orthanc


def _retrieved(tmp_path: Path, orthanc: LoadedOrthanc, studies: int = 4, **request: object) -> Path:
    uids = sorted({str(ds.StudyInstanceUID) for ds in orthanc.instances})[:studies]
    rows = [{"StudyInstanceUID": uid} for uid in uids]
    write_batch(tmp_path, rows)
    doc = retrieve_config(orthanc, "c-get", rows, "STUDY", structure="StudyInstanceUID/SeriesInstanceUID")
    doc["request"].update(request)
    return write_yaml(tmp_path / "c.yml", doc)


def test_report_exports_requests_and_instances(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    config = _retrieved(tmp_path, orthanc)
    assert cli("run", config).exit_code == 0
    result, doc = cli_json("report", config)
    assert result.exit_code == 0, result.stderr
    rows = doc["rows"]
    assert [row["line"] for row in rows] == [2, 3, 4, 5]
    for row in rows:
        assert (row["state"], row["status"], row["meaning"]) == ("done", "0x0000", "success")
        assert row["expected"] == row["received"] == row["stored"] == 4 and row["held_back"] == 0
        assert row["elements"].startswith("QueryRetrieveLevel=STUDY StudyInstanceUID=")
        assert len(row["folders"].split("; ")) == 2  # two series folders
        assert row["first"] <= row["last"] and row["last"].startswith("20")
    result = cli("report", config, "--format", "csv", "--instances")
    instances = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(instances) == 16 and {i["state"] for i in instances} == {"stored"}
    assert {i["sop_uid"] for i in instances} == set(stored(tmp_path))
    assert json.loads(cli("report", config, "--format", "json", "--state", "failed,partial").stdout)["rows"] == []
    table = cli("report", config)
    assert table.exit_code == 0 and "QueryRetrieveLevel=STUDY" in table.stdout
    bad = cli("report", config, "--state", "broken")
    assert bad.exit_code == 2 and "unknown state 'broken'" in bad.stderr


def test_verify_makes_missing_and_changed_files_work_again(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    """Files deleted or changed in a finished tree went unnoticed ("complete" on the rerun); verify
    finds them, and the next run fetches exactly them again."""
    config = _retrieved(tmp_path, orthanc)
    assert cli("run", config).exit_code == 0
    files = sorted(stored(tmp_path).values())
    files[0].unlink()
    files[5].unlink()
    with files[9].open("ab") as handle:
        handle.write(b"\0\0")
    result, doc = cli_json("verify", config)
    assert result.exit_code == 3, result.stderr
    assert (doc["checked"], doc["missing"], doc["changed"]) == (16, 2, 1)
    assert cli_json("status", config)[1]["requests"]["partial"] == doc["requests"]
    result, summary = cli_json("run", config)
    assert result.exit_code == 0, result.stderr
    assert summary["instances_new"] == 3  # the missing ones and the changed one, fetched again
    assert (tmp_path / "out" / ".asyncdicom" / "changed" / files[9].relative_to(tmp_path / "out")).is_file()
    result, doc = cli_json("verify", config)
    assert (result.exit_code, doc["missing"], doc["changed"]) == (0, 0, 0)


def test_status_while_a_run_is_active(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    """status reads the ledger while a run holds it: requests by state and the last runs."""
    config = _retrieved(tmp_path, orthanc, studies=30, threads=1, throttle_time=0.2)
    process = spawn("run", config)
    ledger = tmp_path / "out" / ".asyncdicom" / "c.sqlite3"
    deadline = time.monotonic() + 60
    done = 0
    while done < 2:
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
        if ledger.exists():
            with sqlite3.connect(ledger) as db:
                try:
                    done = db.execute("SELECT COUNT(*) FROM requests WHERE state = 'done'").fetchone()[0]
                except sqlite3.OperationalError:
                    done = 0
    result, doc = cli_json("status", config)
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert result.exit_code == 0, result.stderr
    assert doc["requests"]["done"] >= 2 and doc["requests"]["pending"] > 0
    assert doc["runs"][0]["finished"] is None and doc["runs"][0]["started"].startswith("20")
    assert "running" in result.stderr


def test_verify_checksums_finds_a_change_that_keeps_the_size(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    """The first verify --checksums keeps each file's SHA-256; a later one finds a byte changed in
    place, which the size check alone cannot see."""
    config = _retrieved(tmp_path, orthanc, studies=2)
    assert cli("run", config).exit_code == 0
    result, doc = cli_json("verify", config, "--checksums")
    assert (result.exit_code, doc["checked"], doc["changed"]) == (0, 8, 0)
    with sqlite3.connect(tmp_path / "out" / ".asyncdicom" / "c.sqlite3") as db:
        assert db.execute("SELECT COUNT(*) FROM instances WHERE sha256 IS NOT NULL").fetchone()[0] == 8
    victim = sorted(stored(tmp_path).values())[3]
    content = bytearray(victim.read_bytes())
    content[-1] ^= 0xFF
    victim.write_bytes(bytes(content))
    assert cli_json("verify", config)[1]["changed"] == 0  # same size
    result, doc = cli_json("verify", config, "--checksums")
    assert (result.exit_code, doc["changed"], doc["requests"]) == (3, 1, 1)
    assert cli("run", config).exit_code == 0
    assert cli_json("verify", config, "--checksums")[1]["ok"] is True
