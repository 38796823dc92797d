"""Batch C-FIND through the CLI against a real Orthanc (Debian package) on loopback."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.cli_helpers import cli, cli_json, library, spawn
from tests.conftest import LoadedOrthanc, find_config, write_yaml
from tests.pacs_servers import dcmtk, free_port

pytestmark = pytest.mark.orthanc


def _batch(tmp_path: Path, header: str, rows: list[str]) -> str:
    (tmp_path / "batch.csv").write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return "batch.csv"


class TestModelsAndLevels:
    @pytest.mark.parametrize(
        ("model", "level", "returns", "per_patient"),
        [
            ("patient", "PATIENT", ["PatientName"], 1),
            ("patient", "STUDY", ["StudyInstanceUID"], 2),
            ("patient", "SERIES", ["StudyInstanceUID", "SeriesInstanceUID"], 4),
            ("patient", "IMAGE", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"], 8),
            ("study", "STUDY", ["NumberOfStudyRelatedInstances", "StudyDate", "StudyInstanceUID"], 2),
            ("study", "SERIES", ["StudyInstanceUID", "SeriesInstanceUID", "Modality"], 4),
            ("study", "IMAGE", ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"], 8),
        ],
    )
    def test_level(
        self, tmp_path: Path, orthanc: LoadedOrthanc, model: str, level: str, returns: list[str], per_patient: int
    ) -> None:
        """Every model and level returns exactly the matching patients, studies, series or images."""
        patients = orthanc.patients[:5]
        doc = find_config(
            orthanc.port,
            model=model,
            batch=_batch(tmp_path, "PatientID", patients),
            elements=[f"QueryRetrieveLevel={level}", "PatientID", *returns],
        )
        result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
        assert result.exit_code == 0, result.stderr
        rows = library(tmp_path / "out" / "library.csv")
        assert len(rows) == 5 * per_patient
        assert Counter(r["PatientID"] for r in rows) == dict.fromkeys(patients, per_patient)
        key = returns[-1]
        expected = {str(ds.get(key)) for ds in orthanc.instances if ds.PatientID in patients}
        assert {r[key] for r in rows} == expected
        assert summary["done"] == 5 and summary["library_rows"] == 5 * per_patient
        if "NumberOfStudyRelatedInstances" in returns:  # computed by Orthanc: 2 series x 2 instances
            assert {r["NumberOfStudyRelatedInstances"] for r in rows} == {"4"}

    def test_unsupported_model_is_fatal(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """Orthanc does not offer the retired Patient/Study Only model: exit 1, with the fix, nothing failed."""
        doc = find_config(
            orthanc.port,
            model="psonly",
            batch=_batch(tmp_path, "PatientID", orthanc.patients[:2]),
            elements=["QueryRetrieveLevel=PATIENT", "PatientID"],
        )
        config = write_yaml(tmp_path / "c.yml", doc)
        result = cli("run", config)
        assert result.exit_code == 1
        assert (
            f"error: Unable to use ORTHANC@127.0.0.1:{orthanc.port} as it does not accept 'Patient/Study Only "
            "Query/Retrieve Information Model - FIND' (1.2.840.10008.5.1.4.1.2.3.1); try another request.model "
            "(patient or study)"
        ) in result.stderr.replace("\n", "")
        assert cli_json("status", config)[1]["requests"] == {"done": 0, "failed": 0, "pending": 2, "partial": 0}

    def test_non_ascii_names_round_trip(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """Person names in ISO_IR 192 come back decoded in the library (UTF-8 CSV)."""
        doc = find_config(
            orthanc.port,
            model="patient",
            batch=_batch(tmp_path, "PatientID", orthanc.patients[:1]),
            elements=["QueryRetrieveLevel=PATIENT", "PatientID", "PatientName"],
        )
        assert cli("run", write_yaml(tmp_path / "c.yml", doc)).exit_code == 0
        assert library(tmp_path / "out" / "library.csv")[0]["PatientName"] == "Tést^Pätient00000"


def _uid_batch(tmp_path: Path, orthanc: LoadedOrthanc) -> str:
    """300 rows: every study by StudyInstanceUID, and every study again by AccessionNumber."""
    rows = [f"{s.study_uid}," for s in orthanc.studies] + [f",{s.accession}" for s in orthanc.studies]
    return _batch(tmp_path, "StudyInstanceUID,AccessionNumber", rows)


class TestBatch:
    def test_hundreds_of_rows(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """A 600-row batch finds each study twice, with the row number of its request."""
        doc = find_config(
            orthanc.port,
            batch=_uid_batch(tmp_path, orthanc),
            threads=8,
            elements=["QueryRetrieveLevel=STUDY", "PatientID", "StudyInstanceUID", "AccessionNumber"],
        )
        result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
        assert result.exit_code == 0, result.stderr
        assert (summary["planned"], summary["done"], summary["failed"]) == (600, 600, 0)
        rows = library(tmp_path / "out" / "library.csv")
        assert list(rows[0]) == ["PatientID", "StudyInstanceUID", "AccessionNumber", "row"]
        assert Counter(r["StudyInstanceUID"] for r in rows) == {s.study_uid: 2 for s in orthanc.studies}
        by_row = {int(r["row"]): r["StudyInstanceUID"] for r in rows}
        assert by_row[2] == orthanc.studies[0].study_uid
        assert by_row[302] == orthanc.studies[0].study_uid
        assert [int(r["row"]) for r in rows] == sorted(int(r["row"]) for r in rows)

    def test_rerun_skips_and_restart_redoes(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """Re-running skips finished requests without a prompt; --restart runs them all again."""
        doc = find_config(orthanc.port, batch=_batch(tmp_path, "PatientID", orthanc.patients[:20]))
        config = write_yaml(tmp_path / "c.yml", doc)
        first = cli_json("run", config)[1]
        second = cli_json("run", config)[1]
        third = cli_json("run", config, "--restart")[1]
        assert (first["ran"], second["ran"], second["skipped"], third["ran"]) == (20, 0, 20, 20)
        assert first["library_rows"] == second["library_rows"] == third["library_rows"] == 40

    def test_changed_csv_runs_only_new_rows(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """After the CSV changes, only new rows run, removed rows leave the library, and the user is told."""
        doc = find_config(orthanc.port, batch=_batch(tmp_path, "PatientID", orthanc.patients[:10]))
        config = write_yaml(tmp_path / "c.yml", doc)
        assert cli("run", config).exit_code == 0
        _batch(tmp_path, "PatientID", orthanc.patients[5:15])
        result, summary = cli_json("run", config)
        assert result.exit_code == 0
        assert (summary["ran"], summary["skipped"]) == (5, 5)
        assert (
            "the batch CSV changed since the last run: 5 new requests; 5 earlier requests are no longer in it"
            in result.stderr
        )
        assert {r["PatientID"] for r in library(tmp_path / "out" / "library.csv")} == set(orthanc.patients[5:15])

    def test_changed_query_settings_rerun(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """Changing the element list makes every request new; changing threads does not."""
        doc = find_config(orthanc.port, batch=_batch(tmp_path, "PatientID", orthanc.patients[:4]))
        config = write_yaml(tmp_path / "c.yml", doc)
        assert cli_json("run", config)[1]["ran"] == 4
        doc["request"]["threads"] = 2
        assert cli_json("run", write_yaml(config, doc))[1]["ran"] == 0
        doc["request"]["elements"].append("StudyDate")
        result, summary = cli_json("run", write_yaml(config, doc))
        assert summary["ran"] == 4
        assert "request.elements changed since the last run: requests whose elements changed run again" in result.stderr
        assert "StudyDate" in library(tmp_path / "out" / "library.csv")[0]


def _done_count(ledger: Path) -> int:
    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM requests WHERE state = 'done'").fetchone()[0])
    except sqlite3.Error:
        return 0


class TestInterrupt:
    def test_ctrl_c_then_resume(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """Ctrl-C exits 130 with a consistent ledger and library; the next run finishes the rest exactly once."""
        doc = find_config(orthanc.port, batch=_uid_batch(tmp_path, orthanc), threads=2, throttle_time=0.02)
        config = write_yaml(tmp_path / "c.yml", doc)
        ledger = tmp_path / "out" / ".asyncdicom" / "c.sqlite3"
        process = spawn("run", config, "--json")
        deadline = time.monotonic() + 60
        while _done_count(ledger) < 20:  # wait for observable progress in the ledger
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert "SIGINT received: no new request starts; requests in flight get 60 s to finish" in err
        import json

        partial = json.loads(out)
        assert partial["outcome"] == "interrupted" and 20 <= partial["done"] < 600
        partial_rows = library(tmp_path / "out" / "library.csv")
        assert len(partial_rows) == partial["done"]  # one study per request: no half-written rows
        assert not list((tmp_path / "out").glob(".*.part"))

        result, summary = cli_json("run", config)
        assert result.exit_code == 0, result.stderr
        assert summary["skipped"] == partial["done"]
        assert summary["ran"] == 600 - partial["done"]
        rows = library(tmp_path / "out" / "library.csv")
        assert len(rows) == 600
        assert Counter(r["StudyInstanceUID"] for r in rows) == {s.study_uid: 2 for s in orthanc.studies}

    def test_sigterm_is_handled_like_ctrl_c(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """SIGTERM (as sent by cron timeouts or systemd) stops cleanly with exit code 130."""
        doc = find_config(orthanc.port, batch=_uid_batch(tmp_path, orthanc), threads=1, throttle_time=0.05)
        config = write_yaml(tmp_path / "c.yml", doc)
        process = spawn("run", config)
        ledger = tmp_path / "out" / ".asyncdicom" / "c.sqlite3"
        deadline = time.monotonic() + 60
        while _done_count(ledger) < 3:
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
        assert process.returncode == 130, err
        assert cli_json("status", config)[1]["requests"]["pending"] > 0


class TestCommands:
    def test_echo(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """echo verifies the PACS: success line on stderr, JSON on stdout."""
        config = write_yaml(tmp_path / "c.yml", find_config(orthanc.port))
        result, doc = cli_json("echo", config)
        assert result.exit_code == 0
        assert result.stderr.startswith(f"C-ECHO ORTHANC@127.0.0.1:{orthanc.port}: success in ")
        assert (doc["status"], doc["ok"]) == (0, True)

    def test_echo_unreachable(self, tmp_path: Path) -> None:
        """An unreachable PACS is exit code 1 with the host, port and what to check."""
        port = free_port()
        doc = find_config(port)
        doc["request"]["connect_timeout"] = 2
        result = cli("echo", write_yaml(tmp_path / "c.yml", doc))
        assert result.exit_code == 1
        assert result.stderr.strip() == (
            f"error: Unable to connect to ORTHANC@127.0.0.1:{port} as the connection was refused: nothing "
            f"listens on port {port}; check pacs.port, and that the PACS is running"
        )

    def test_run_type_c_echo(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """request.type c-echo makes 'run' do a C-ECHO."""
        doc = find_config(orthanc.port)
        doc["request"] = {"type": "c-echo"}
        assert cli("run", write_yaml(tmp_path / "c.yml", doc)).exit_code == 0

    def test_status_after_run(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """status summarises the ledger without touching the network."""
        config = write_yaml(
            tmp_path / "c.yml", find_config(orthanc.port, batch=_batch(tmp_path, "PatientID", orthanc.patients[:3]))
        )
        assert cli("run", config).exit_code == 0
        result, doc = cli_json("status", config)
        assert result.exit_code == 0
        assert doc["requests"] == {"done": 3, "failed": 0, "pending": 0, "partial": 0}
        assert doc["matches"] == 6
        assert doc["last_run"]["outcome"] == "complete"

    def test_status_without_ledger(self, tmp_path: Path) -> None:
        """status before any run says so, exit 1."""
        result = cli("status", write_yaml(tmp_path / "c.yml", find_config(4242)))
        assert result.exit_code == 1
        assert "does not exist; run 'asyncdicom run' first" in result.stderr

    def test_json_stdout_is_one_document(self, tmp_path: Path, orthanc: LoadedOrthanc) -> None:
        """With --json, stdout holds exactly one JSON document and nothing for people."""
        config = write_yaml(tmp_path / "c.yml", find_config(orthanc.port, batch=_batch(tmp_path, "PatientID", ["x"])))
        process = spawn("run", config, "--json")
        out, err = process.communicate(timeout=60)
        import json

        assert json.loads(out)["schema"] == 1
        assert "plan: 1 requests" in err
        assert process.returncode == 0


class TestBadInput:
    def test_bad_config_exit_2_before_network(self, tmp_path: Path) -> None:
        """A config error is one line on stderr, exit 2, and no connection is attempted."""
        doc = find_config(free_port())
        doc["request"]["treads"] = 4
        result = cli("run", write_yaml(tmp_path / "c.yml", doc))
        assert result.exit_code == 2
        assert result.stderr == "error: request.treads: unknown key; did you mean 'threads'?\n"
        assert result.stdout == ""

    def test_bad_csv_exit_2(self, tmp_path: Path) -> None:
        """A bad CSV row is reported with file:line and column, exit 2."""
        _batch(tmp_path, "StudyInstanceUID", ["1.2.3", "1.2.3.x"])
        result = cli("run", write_yaml(tmp_path / "c.yml", find_config(free_port(), batch="batch.csv")))
        assert result.exit_code == 2
        assert result.stderr.replace("\n", "") == (
            f"error: {tmp_path / 'batch.csv'}:3: column 1: invalid value '1.2.3.x' for (0020,000D) "
            "'StudyInstanceUID' (VR UI): a UID is digits separated by single dots"
        )

    def test_check_needs_no_network(self, tmp_path: Path) -> None:
        """check validates config and CSV with the PACS unreachable."""
        _batch(tmp_path, "PatientID", ["1", "2", "1"])
        result, doc = cli_json("check", write_yaml(tmp_path / "c.yml", find_config(free_port(), batch="batch.csv")))
        assert result.exit_code == 0
        assert (doc["requests"], doc["duplicates"]) == (2, 1)

    def test_missing_config_file(self, tmp_path: Path) -> None:
        """A missing config file is a usage error."""
        result = cli("run", tmp_path / "nope.yml")
        assert result.exit_code == 2
        assert result.stderr == f"error: {tmp_path / 'nope.yml'}: config file not found\n"


def test_same_matches_as_dcmtk_findscu(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    """dcmtk findscu, as an interop peer, finds the same studies for a patient as asyncdicom."""
    patient = orthanc.patients[7]
    doc = find_config(orthanc.port, batch=_batch(tmp_path, "PatientID", [patient]))
    assert cli("run", write_yaml(tmp_path / "c.yml", doc)).exit_code == 0
    ours = {r["StudyInstanceUID"] for r in library(tmp_path / "out" / "library.csv")}
    out = subprocess.run(
        [
            dcmtk("findscu"),
            "-S",
            "-aec",
            "ORTHANC",
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            f"PatientID={patient}",
            "-k",
            "StudyInstanceUID",
            "127.0.0.1",
            str(orthanc.port),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    theirs = {
        line.split("[")[1].split("]")[0].rstrip("\x00") for line in out.stderr.splitlines() if "(0020,000d)" in line
    }
    assert theirs == ours and len(ours) == 2
