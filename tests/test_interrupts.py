"""Signals mid-retrieve against a slow built-in PACS (each C-STORE delayed, so requests are surely in
flight): the drain, the second signal, and resuming by asking only for what is missing."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from asyncdicom.demo import demo_datasets
from asyncdicom.net.qrscp import Faults, QueryRetrieveSCP
from tests.cli_helpers import cli_json, ledger_instances, spawn
from tests.conftest import write_yaml
from tests.pacs_servers import free_port

pytestmark = pytest.mark.network

PER_STUDY = 20
DATASETS = demo_datasets(patients=4, studies=2, series=2, instances=PER_STUDY // 2)
STUDIES = list(dict.fromkeys(str(ds.StudyInstanceUID) for ds in DATASETS))
ALL = {str(ds.SOPInstanceUID) for ds in DATASETS}


@pytest.fixture
def slow() -> Iterator[QueryRetrieveSCP]:
    port = free_port()
    pacs = QueryRetrieveSCP(
        DATASETS, ae_title="SLOWPACS", faults=Faults(store_delay=0.03), destinations={"ASYNCDICOM": ("127.0.0.1", port)}
    )
    pacs.start()
    pacs.scp_port = port  # type: ignore[attr-defined]
    try:
        yield pacs
    finally:
        pacs.stop()


def _config(
    tmp_path: Path, pacs: QueryRetrieveSCP, kind: str, drain: float, threads: int = 2, **request: object
) -> Path:
    (tmp_path / "batch.csv").write_text("StudyInstanceUID\n" + "\n".join(STUDIES) + "\n")
    doc = {
        "pacs": {"hostname": "127.0.0.1", "port": pacs.port, "aet": "SLOWPACS"},
        "local": {"port": pacs.scp_port, "aet": "ASYNCDICOM"},  # type: ignore[attr-defined]
        "request": {
            "type": kind,
            "threads": threads,
            "elements_batch_file": "batch.csv",
            "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
            **request,
        },
        "schedule": {"drain_seconds": drain},
        "output": {"directory": "out", "directory_structure": "StudyInstanceUID"},
    }
    return write_yaml(tmp_path / "c.yml", doc)


def _ledger_instances(tmp_path: Path) -> int:
    return ledger_instances(tmp_path / "out" / ".asyncdicom" / "c.sqlite3")


def _cut_requests(tmp_path: Path) -> int:
    """Pending requests with instances stored: those cut mid-way."""
    with sqlite3.connect(f"file:{tmp_path / 'out/.asyncdicom/c.sqlite3'}?mode=ro", uri=True) as db:
        query = (
            "SELECT COUNT(DISTINCT i.request_key) FROM instances i JOIN requests r ON r.key = i.request_key "
            "WHERE r.state = 'pending'"
        )
        return int(db.execute(query).fetchone()[0])


def _mid_request(tmp_path: Path, process: subprocess.Popen[str]) -> None:
    """Wait until some instances are stored and a request is about half done (with one thread: at
    least 8 instances, a quarter of a second, before it ends)."""
    deadline = time.monotonic() + 60
    while not ((n := _ledger_instances(tmp_path)) > PER_STUDY and 3 <= n % PER_STUDY <= 12):
        assert process.poll() is None, "the run ended too early"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.02)


def _stored(tmp_path: Path) -> set[str]:
    return {p.stem for p in (tmp_path / "out").rglob("*.dcm")}


@pytest.mark.parametrize("kind", ["c-move", "c-get"])
def test_interrupted_requests_resume_asking_only_for_what_is_missing(
    tmp_path: Path, slow: QueryRetrieveSCP, kind: str
) -> None:
    """SIGINT with no drain time aborts the requests in flight, which stay pending (not failed);
    the rerun asks only for their missing instances, so none is transferred twice (before: the
    whole of every interrupted request was asked again)."""
    config = _config(tmp_path, slow, kind, drain=0, threads=1)
    process = spawn("run", config, "--json")
    _mid_request(tmp_path, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    first = json.loads(out)
    assert first["outcome"] == "interrupted" and (first["partial"], first["failed"]) == (0, 0)
    before = _ledger_instances(tmp_path)
    assert _cut_requests(tmp_path) >= 1, "no request was cut mid-way"
    result, summary = cli_json("run", config)
    assert result.exit_code == 0, result.stderr
    assert summary["duplicate_instances"] == 0, "instances were transferred twice"
    assert summary["instances_new"] == len(ALL) - before
    assert "asking for the rest" in result.stderr
    assert _stored(tmp_path) == ALL


def test_first_sigint_drains_the_requests_in_flight(tmp_path: Path, slow: QueryRetrieveSCP) -> None:
    """The first SIGINT starts no new request but lets those in flight finish: they end done, and
    the instances still arriving for them are stored, not refused."""
    config = _config(tmp_path, slow, "c-move", drain=60)
    process = spawn("run", config, "--json")
    _mid_request(tmp_path, process)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=90)
    assert process.returncode == 130, err
    summary = json.loads(out)
    assert "refused" not in err and "no request in flight" not in err
    assert summary["outcome"] == "interrupted" and (summary["partial"], summary["failed"]) == (0, 0)
    assert 0 < summary["done"] < len(STUDIES)
    assert _ledger_instances(tmp_path) == summary["done"] * PER_STUDY  # what started has finished whole


def test_second_sigint_aborts_at_once_and_still_reports(tmp_path: Path, slow: QueryRetrieveSCP) -> None:
    """A second SIGINT aborts the requests in flight without waiting for the drain; the summary is
    still printed, and a rerun completes."""
    config = _config(tmp_path, slow, "c-move", drain=600)
    process = spawn("run", config, "--json")
    _mid_request(tmp_path, process)
    process.send_signal(signal.SIGINT)
    assert process.stderr is not None
    for line in process.stderr:  # the first signal is acknowledged before the second is sent
        if "no new request starts" in line:
            break
    process.send_signal(signal.SIGINT)
    started = time.monotonic()
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert time.monotonic() - started < 30  # not the 600 s drain
    assert json.loads(out)["outcome"] == "interrupted"
    result, _ = cli_json("run", config)
    assert result.exit_code == 0, result.stderr
    assert _stored(tmp_path) == ALL


def test_a_retrieve_that_keeps_delivering_is_never_cut_by_the_timeout(tmp_path: Path, slow: QueryRetrieveSCP) -> None:
    """request.timeout (0.25 s) is shorter than every gap between instances (0.3 s): the retrieve
    is still never cut, because it keeps delivering (request.idle_timeout is what counts)."""
    slow.faults = Faults(store_delay=0.3)
    config = _config(tmp_path, slow, "c-move", drain=0, threads=1, timeout=0.25, idle_timeout=5)
    (tmp_path / "batch.csv").write_text("StudyInstanceUID\n" + STUDIES[0] + "\n")
    result, summary = cli_json("run", config)
    assert result.exit_code == 0, result.stderr
    assert (summary["done"], summary["retries"], summary["silent"]) == (1, 0, 0)
    assert summary["instances_new"] == PER_STUDY


@pytest.mark.parametrize("kind", ["c-move", "c-get"])
def test_an_idle_retrieve_is_aborted_and_resumed_for_its_missing_instances(
    tmp_path: Path, slow: QueryRetrieveSCP, kind: str
) -> None:
    """The PACS freezes after 7 instances: with no response and no instance for
    request.idle_timeout the association is aborted, and the retry asks only for the 13 missing."""
    slow.faults = Faults(stall_after=7)
    config = _config(tmp_path, slow, kind, drain=0, threads=1, idle_timeout=1)
    (tmp_path / "batch.csv").write_text("StudyInstanceUID\n" + STUDIES[0] + "\n")
    result, summary = cli_json("run", config)
    assert result.exit_code == 0, result.stderr
    assert "no response and no instance for" in result.stderr
    assert (summary["done"], summary["duplicate_instances"], summary["instances_new"]) == (1, 0, PER_STUDY)
    assert summary["silent"] == 1 and summary["retries"] == 1
    text = (tmp_path / "out" / ".asyncdicom" / "c.events.jsonl").read_text()
    events = [json.loads(line) for line in text.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "run-started" and kinds[-1] == "run-finished"
    assert {"silent", "retry", "request"} <= set(kinds)
    request = next(e for e in events if e["event"] == "request")
    assert (request["state"], request["attempts"], request["line"]) == ("done", 2, 2)
    assert events[-1]["exit_code"] == 0 and events[-1]["outcome"] == "complete"
    assert "DEMO" not in text  # the demo patients' names and IDs: no patient data in events


@pytest.mark.parametrize("kind", ["c-move", "c-get"])
def test_the_bandwidth_cap_holds(tmp_path: Path, kind: str) -> None:
    """request.max_megabytes_per_second: 1 MB/s: 24 instances of 128 KiB (3 MB) take at least
    (bytes - the 1 MiB burst) / 1 MB/s; nothing is lost."""
    from tests.factory import make_instance, study_specs

    spec = study_specs(1, instances=24)[0]
    datasets = [make_instance(spec, "1.2.3.4", 1, n, rows=256) for n in range(1, 25)]
    port = free_port()
    pacs = QueryRetrieveSCP(datasets, ae_title="SLOWPACS", destinations={"ASYNCDICOM": ("127.0.0.1", port)})
    pacs.start()
    pacs.scp_port = port  # type: ignore[attr-defined]
    try:
        config = _config(tmp_path, pacs, kind, drain=0, threads=2, max_megabytes_per_second=1)
        (tmp_path / "batch.csv").write_text(f"StudyInstanceUID\n{spec.study_uid}\n")
        started = time.monotonic()
        result, summary = cli_json("run", config)
        elapsed = time.monotonic() - started
    finally:
        pacs.stop()
    assert result.exit_code == 0, result.stderr
    assert summary["instances_new"] == 24
    received = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*.dcm"))
    assert received > 3_000_000
    assert elapsed >= (received - (1 << 20)) / 1_000_000


def test_the_storage_scp_listens_only_while_the_window_is_open(tmp_path: Path, slow: QueryRetrieveSCP) -> None:
    """Outside the window (outside_window: wait) the run waits without a listening storage SCP;
    a SIGINT during the wait ends it at once with 130, nothing sent."""
    import socket
    from datetime import datetime, timedelta

    opens = datetime.now().astimezone() + timedelta(hours=2)
    config = _config(tmp_path, slow, "c-move", drain=60)
    doc = yaml.safe_load(config.read_text())
    doc["schedule"].update(
        {"enabled": True, "start_time": f"{opens:%H:%M}", "end_time": f"{opens + timedelta(hours=1):%H:%M}"}
    )
    write_yaml(config, doc)
    process = spawn("run", config, "--json", "-v")
    assert process.stderr is not None
    for line in process.stderr:
        if "waiting until" in line:
            break
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", slow.scp_port), timeout=5):  # type: ignore[attr-defined]
        pass
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert json.loads(out)["instances_new"] == 0 and slow.retrieves == 0
