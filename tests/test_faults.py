"""Faults Orthanc cannot produce on demand, from the built-in pynetdicom Q/R SCP, through the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from asyncdicom.demo import demo_datasets
from asyncdicom.net.qrscp import Faults, QueryRetrieveSCP
from tests.cli_helpers import cli, cli_json, library
from tests.conftest import find_config, write_yaml
from tests.pacs_servers import free_port

pytestmark = pytest.mark.network

DATASETS = demo_datasets(patients=6, studies=2, series=1, instances=1)
PATIENTS = sorted({str(ds.PatientID) for ds in DATASETS})


@pytest.fixture
def pacs() -> Iterator[QueryRetrieveSCP]:
    scp = QueryRetrieveSCP(DATASETS, ae_title="FAULTY")
    scp.start()
    try:
        yield scp
    finally:
        scp.stop()


def _config(tmp_path: Path, pacs: QueryRetrieveSCP, rows: int = 60, **request: object) -> Path:
    lines = [f"{PATIENTS[i % len(PATIENTS)]},{i}" for i in range(rows)]
    (tmp_path / "batch.csv").write_text("PatientID,StudyID\n" + "\n".join(lines) + "\n")
    doc = find_config(
        pacs.port,
        aet="FAULTY",
        batch="batch.csv",
        elements=["QueryRetrieveLevel=STUDY", "PatientID", "StudyID", "StudyInstanceUID"],
        **request,
    )
    return write_yaml(tmp_path / "c.yml", doc)


def test_silent_pacs_is_detected_and_retried(tmp_path: Path, pacs: QueryRetrieveSCP) -> None:
    """C-FINDs the PACS never answers are aborted at the deadline and retried on a fresh association."""
    pacs.faults = Faults(silent_every=40)
    start = time.monotonic()
    result, summary = cli_json("run", _config(tmp_path, pacs, rows=120, threads=2, timeout=3))
    assert result.exit_code == 0, result.stderr
    assert (summary["done"], summary["failed"]) == (120, 0)
    assert summary["silent"] >= 2
    assert time.monotonic() - start < 30
    assert "no response for" in result.stderr


def test_aborts_are_retried(tmp_path: Path, pacs: QueryRetrieveSCP) -> None:
    """Associations aborted by the PACS mid-request are re-opened and the request retried."""
    pacs.faults = Faults(abort_every=7)
    result, summary = cli_json("run", _config(tmp_path, pacs, rows=40, threads=3))
    assert result.exit_code == 0, result.stderr
    assert (summary["done"], summary["failed"]) == (40, 0)
    assert pacs.finds >= 45  # every 7th C-FIND was aborted and sent again


def test_rejected_associations_mean_slow_down(tmp_path: Path, pacs: QueryRetrieveSCP) -> None:
    """A PACS that accepts only 2 associations slows 8 threads down; no request fails."""
    pacs.stop()
    limited = QueryRetrieveSCP(DATASETS, ae_title="FAULTY", faults=Faults(max_associations=2, delay=0.01))
    limited.start()
    try:
        result, summary = cli_json("run", _config(tmp_path, limited, rows=60, threads=8))
    finally:
        limited.stop()
    assert result.exit_code == 0, result.stderr
    assert (summary["done"], summary["failed"]) == (60, 0)
    assert summary["rejections"] >= 1
    # one line for the first refusal, then a count: not one warning per refused association
    assert result.stderr.count("PACS busy (") == 1
    assert summary["problems"]["association refused: PACS busy"] == summary["rejections"]
    if summary["rejections"] > 1:
        assert f"{summary['rejections']} × association refused: PACS busy" in result.stderr


def test_failures_exit_3_then_retry_failed(tmp_path: Path, pacs: QueryRetrieveSCP) -> None:
    """Failure statuses end the run with exit 3; plain re-runs skip them; --retry-failed runs them again."""
    pacs.faults = Faults(status=0xC001)
    config = _config(tmp_path, pacs, rows=10)
    result, summary = cli_json("run", config)
    assert result.exit_code == 3
    assert (summary["outcome"], summary["failed"]) == ("failed-requests", 10)
    status = cli_json("status", config)[1]
    assert status["failures"][0] == {"line": 2, "error": "failure status 0xC001"}
    pacs.faults = Faults()
    again = cli_json("run", config)
    assert again[0].exit_code == 3 and again[1]["ran"] == 0
    assert "10 failed earlier (skipped; --retry-failed runs them again)" in again[0].stderr
    retried = cli_json("run", config, "--retry-failed")
    assert retried[0].exit_code == 0
    assert (retried[1]["ran"], retried[1]["done"], retried[1]["failed"]) == (10, 10, 0)


def test_warning_status_counts_as_done(tmp_path: Path, pacs: QueryRetrieveSCP) -> None:
    """A warning final status settles the request as done, and status counts the warnings."""
    pacs.faults = Faults(status=0xB000)
    config = _config(tmp_path, pacs, rows=3)
    result, summary = cli_json("run", config)
    assert result.exit_code == 0
    assert summary["done"] == 3
    assert cli_json("status", config)[1]["warnings"] == 3


def test_out_of_resources_is_retried_then_fails(tmp_path: Path, pacs: QueryRetrieveSCP) -> None:
    """0xA700 is retried with back-off, then recorded as failed with its attempts."""
    pacs.faults = Faults(status=0xA700)
    config = _config(tmp_path, pacs, rows=1, retries=2)
    result, summary = cli_json("run", config)
    assert result.exit_code == 3
    assert summary["retries"] == 2
    assert pacs.finds == 3


def test_unknown_calling_ae_is_fatal(tmp_path: Path) -> None:
    """A PACS that does not know our AE title stops the run at once with exit 1; requests stay pending."""
    scp = QueryRetrieveSCP(DATASETS, ae_title="STRICT", faults=Faults(require_calling_aet=("SOMEONE",)))
    scp.start()
    try:
        config = _config(tmp_path, scp, rows=5)
        doc = find_config(scp.port, aet="STRICT", batch="batch.csv")
        config = write_yaml(config, doc)
        result = cli("run", config)
    finally:
        scp.stop()
    assert result.exit_code == 1
    assert (
        f"error: Unable to associate with STRICT@127.0.0.1:{scp.port} as the PACS rejected it permanently "
        "(calling AE title not recognised); the PACS must know our AE title 'ASYNCDICOM' (local.aet)"
    ) in result.stderr.replace("\n", "")
    assert cli_json("status", config)[1]["requests"]["pending"] == 5


@pytest.mark.parametrize("level", ["PATIENT", "STUDY"])
def test_patient_study_only_model(tmp_path: Path, pacs: QueryRetrieveSCP, level: str) -> None:
    """The Patient/Study Only model works at its two levels against a PACS that offers it."""
    (tmp_path / "batch.csv").write_text("PatientID\n" + "\n".join(PATIENTS[:3]) + "\n")
    doc = find_config(
        pacs.port,
        aet="FAULTY",
        model="psonly",
        batch="batch.csv",
        elements=[f"QueryRetrieveLevel={level}", "PatientID", "StudyInstanceUID"],
    )
    result = cli("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 0, result.stderr
    rows = library(tmp_path / "out" / "library.csv")
    assert len(rows) == (3 if level == "PATIENT" else 6)


def test_demo_command(tmp_path: Path) -> None:
    """'asyncdicom demo' runs a C-FIND and a C-GET against its built-in PACS, with no network, and
    leaves a library and a file tree."""
    result, summary = cli_json("demo", "--directory", tmp_path / "demo")
    assert result.exit_code == 0, result.stderr
    assert (summary["find"]["done"], summary["find"]["library_rows"]) == (6, 12)
    assert (summary["retrieve"]["done"], summary["retrieve"]["instances_new"]) == (12, 72)
    assert len(library(tmp_path / "demo" / "library.csv")) == 12
    files = [p for p in (tmp_path / "demo" / "images").rglob("*.dcm") if ".asyncdicom" not in p.parts]
    assert len(files) == 72
    assert "retrieved tree:" in result.stderr
    assert cli("check", tmp_path / "demo" / "demo-retrieve.yaml").exit_code == 0


def test_demo_pacs_serves_c_move(tmp_path: Path) -> None:
    """The built-in PACS also answers C-MOVE to a known destination (and 0xA801 to others)."""
    datasets = demo_datasets(patients=2, studies=1, series=1, instances=2)
    scp_port = free_port()
    scp = QueryRetrieveSCP(datasets, ae_title="MOVER", destinations={"ASYNCDICOM": ("127.0.0.1", scp_port)})
    scp.start()
    try:
        (tmp_path / "batch.csv").write_text(
            "StudyInstanceUID\n" + "\n".join(sorted({str(ds.StudyInstanceUID) for ds in datasets})) + "\n"
        )
        doc = {
            "pacs": {"hostname": "127.0.0.1", "port": scp.port, "aet": "MOVER"},
            "local": {"port": scp_port, "aet": "ASYNCDICOM"},
            "request": {
                "type": "c-move",
                "elements_batch_file": "batch.csv",
                "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
            },
            "output": {"directory": "out"},
        }
        result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    finally:
        scp.stop()
    assert result.exit_code == 0, result.stderr
    assert (summary["done"], summary["instances_new"]) == (2, 4)


@pytest.mark.parametrize("kind", ["refuses", "slows down"])
def test_auto_threads_settle_at_the_pacs_limit(tmp_path: Path, kind: str) -> None:
    """threads: auto against a PACS that refuses associations above 4, and one that serves 4 at
    full speed and slows every association down above 4: it settles within one of 4, and no
    request fails."""
    # 40 ms a C-FIND: the PACS, not the CPU both ends share here, limits the throughput
    faults = Faults(max_associations=4, delay=0.04) if kind == "refuses" else Faults(slow_above=4, delay=0.04)
    limited = QueryRetrieveSCP(DATASETS, ae_title="FAULTY", faults=faults)
    limited.start()
    try:
        result, summary = cli_json("run", _config(tmp_path, limited, rows=1000, threads="auto", max_threads=12))
    finally:
        limited.stop()
    assert result.exit_code == 0, result.stderr
    assert (summary["done"], summary["failed"], summary["threads"]) == (1000, 0, "auto")
    assert 3 <= summary["concurrency"] <= 5, summary["concurrency"]
    text = (tmp_path / "out" / ".asyncdicom" / "c.events.jsonl").read_text()
    events = [json.loads(line) for line in text.splitlines()]
    levels = [e["limit"] for e in events if e["event"] == "concurrency"]
    assert levels[0] == 3 and max(levels) <= 6  # it started at 2 and grew; it never ran away
