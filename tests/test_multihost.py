"""One job shared by several asyncdicom processes on a PostgreSQL ledger, as cron starts them on
several hosts: against the real Orthanc (C-GET and C-FIND), with one of them SIGKILLed, with
the database restarted mid-run, and against the test PACS that counts associations."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from asyncdicom.net.qrscp import Faults, QueryRetrieveSCP
from tests.conftest import LoadedOrthanc, write_yaml
from tests.factory import study_specs, write_files
from tests.pacs_servers import free_port
from tests.postgres_server import Postgres

pytestmark = [pytest.mark.orthanc, pytest.mark.postgres]


def _config(
    folder: Path,
    name: str,
    pacs: tuple[int, str],
    postgres: Postgres,
    job: str,
    rows: list[tuple[str, str]],
    kind: str = "c-get",
    lease: float = 2,
    local: tuple[int, str] | None = None,
    url: str | None = None,
    **request: Any,
) -> Path:
    """Host ``name``'s config: the same job, its own output directory and port."""
    batch = folder / "batch.csv"
    batch.write_text("PatientID,StudyInstanceUID\n" + "".join(f"{p},{s}\n" for p, s in rows))
    output: dict[str, Any] = {"ledger_url": url or postgres.url, "job_name": job, "lease_seconds": lease}
    local = local or (free_port(), "ASYNCDICOM")
    if kind == "c-find":
        output["library_file"] = f"lib-{name}.csv"
    else:
        output.update(directory=f"out-{name}", directory_structure="PatientID/StudyInstanceUID")
    return write_yaml(
        folder / f"{name}.yml",
        {
            "pacs": {"hostname": "127.0.0.1", "port": pacs[0], "aet": pacs[1]},
            "local": {"port": local[0], "aet": local[1]},
            "request": {
                "type": kind,
                "model": "study",
                "threads": 2,
                "elements_batch_file": str(batch),
                "elements": ["QueryRetrieveLevel=STUDY", "PatientID", "StudyInstanceUID"],
                **request,
            },
            "output": output,
        },
    )


def _spawn(config: Path, postgres: Postgres) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "asyncdicom", "run", str(config), "--json", "-q"],
        cwd=config.parent,
        env={**postgres.env, "NO_COLOR": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, dict[str, Any], str]:
    out, err = process.communicate(timeout=timeout)
    assert "Traceback" not in err, err[-3000:]
    try:
        document = json.loads(out)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON (exit {process.returncode}): {err[-3000:]}") from None
    return process.returncode, document, err


def _tree(folder: Path) -> set[str]:
    """SOP Instance UIDs of the files under ``folder`` (the ledger's state folder left out)."""
    if not folder.exists():
        return set()
    return {
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID)
        for p in folder.rglob("*.dcm")
        if ".asyncdicom" not in p.parts
    }


def _studies(orthanc: LoadedOrthanc, count: int) -> tuple[list[tuple[str, str]], set[str]]:
    """The first ``count`` studies of the loaded Orthanc, and the SOP Instance UIDs they hold."""
    chosen = orthanc.studies[:count]
    rows = [(s.patient_id, s.study_uid) for s in chosen]
    wanted = {s.study_uid for s in chosen}
    uids = {str(ds.SOPInstanceUID) for ds in orthanc.instances if str(ds.StudyInstanceUID) in wanted}
    return rows, uids


def _wait_for_instances(postgres: Postgres, job: str) -> None:
    """Until the job has its first instance recorded (the schema may not exist yet)."""
    import psycopg

    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(psycopg.errors.UndefinedTable):
            if postgres.query("SELECT 1 FROM asyncdicom.instances WHERE job = %s LIMIT 1", (job,)):
                return
        assert time.monotonic() < deadline, "no instance recorded within 60 s"
        time.sleep(0.05)  # polling another process's database: no event to wait on


def _wait_for_runs(postgres: Postgres, job: str, count: int) -> None:
    """Until ``count`` runs of the job have started (their connections are open)."""
    deadline = time.monotonic() + 60
    while postgres.query("SELECT COUNT(*) FROM asyncdicom.runs WHERE job = %s", (job,))[0][0] < count:
        assert time.monotonic() < deadline, f"fewer than {count} runs started within 60 s"
        time.sleep(0.05)  # polling another process's database: no event to wait on


def _job_rows(postgres: Postgres, job: str) -> list[tuple[object, ...]]:
    return postgres.query("SELECT state, settled_by FROM asyncdicom.requests WHERE job = %s", (job,))


def test_three_hosts_share_a_cget_job(tmp_path: Path, orthanc: LoadedOrthanc, postgres: Postgres) -> None:
    """Three processes on one C-GET job: each request is done once, by one of them; their trees
    are disjoint and together hold exactly the PACS's instances; each reports its own part and
    ``report --instances`` lists every instance with the host and directory holding it."""
    job = "share-cget"
    rows, uids = _studies(orthanc, 30)
    configs = [_config(tmp_path, name, (orthanc.port, "ORTHANC"), postgres, job, rows) for name in "abc"]
    processes = [_spawn(config, postgres) for config in configs]
    results = [_finish(process) for process in processes]
    assert [code for code, _, _ in results] == [0, 0, 0], [err[-2000:] for _, _, err in results]
    trees = [_tree(tmp_path / f"out-{name}") for name in "abc"]
    assert set().union(*trees) == uids
    assert sum(len(tree) for tree in trees) == len(uids)  # no instance fetched twice
    states = _job_rows(postgres, job)
    assert len(states) == 30 and {state for state, _ in states} == {"done"}
    assert sum(doc["ran"] for _, doc, _ in results) == 30  # each request settled by exactly one run
    assert all(doc["done"] == 30 for _, doc, _ in results)  # each sees the whole job done
    for name in "abc":  # each host keeps its own event log, as with a ledger file
        events = (tmp_path / f"out-{name}" / ".asyncdicom" / f"{name}.events.jsonl").read_text().splitlines()
        assert json.loads(events[-1])["event"] == "run-finished"
    report = subprocess.run(
        [sys.executable, "-m", "asyncdicom", "report", str(configs[0]), "--instances", "--format", "json"],
        cwd=tmp_path,
        env=postgres.env,
        capture_output=True,
        text=True,
        check=True,
    )
    listed = json.loads(report.stdout)["rows"]
    assert {row["sop_uid"] for row in listed} == uids
    assert {Path(row["directory"]).name for row in listed} <= {"out-a", "out-b", "out-c"}


def test_three_hosts_share_a_cmove_job_each_with_its_own_ae_title(
    tmp_path: Path, orthanc: LoadedOrthanc, postgres: Postgres
) -> None:
    """C-MOVE by three hosts, as the README deploys it: each its own AE title and port, each
    registered at the PACS as a destination; each request done once, and each host's tree holds
    what the PACS sent to that host alone."""
    job = "share-cmove"
    rows, uids = _studies(orthanc, 24)
    configs = []
    for name in "abc":
        aet, port = f"MOVE_{name.upper()}", free_port()
        orthanc.server.add_modality(aet, "127.0.0.1", port)
        configs.append(
            _config(tmp_path, name, (orthanc.port, "ORTHANC"), postgres, job, rows, kind="c-move", local=(port, aet))
        )
    results = [_finish(process) for process in [_spawn(config, postgres) for config in configs]]
    assert [code for code, _, _ in results] == [0, 0, 0], [err[-2000:] for _, _, err in results]
    trees = [_tree(tmp_path / f"out-{name}") for name in "abc"]
    assert set().union(*trees) == uids
    assert sum(len(tree) for tree in trees) == len(uids)  # each instance moved to one host only
    assert sum(doc["ran"] for _, doc, _ in results) == 24
    states = _job_rows(postgres, job)
    assert len(states) == 24 and {state for state, _ in states} == {"done"}
    hosts = postgres.query(
        "SELECT directory, COUNT(*) FROM asyncdicom.instances WHERE job = %s GROUP BY directory", (job,)
    )
    assert {Path(str(directory)).name: count for directory, count in hosts} == {
        f"out-{name}": len(tree) for name, tree in zip("abc", trees, strict=True) if tree
    }


def test_a_host_that_loses_the_database_for_good_stops_with_exit_1(
    tmp_path: Path, orthanc: LoadedOrthanc, postgres: Postgres
) -> None:
    """The database goes away mid-run and does not come back: the host stops within its lease
    (exit 1, one JSON document naming the database, no traceback), and what it committed is
    there when the database is back; a new run finishes the job."""
    job = "db-lost"
    rows, uids = _studies(orthanc, 20)
    config = _config(tmp_path, "a", (orthanc.port, "ORTHANC"), postgres, job, rows, lease=3, max_rate=4)
    process = _spawn(config, postgres)
    _wait_for_instances(postgres, job)
    postgres.stop()
    try:
        stopped = time.monotonic()
        code, document, err = _finish(process, timeout=60)
        took = time.monotonic() - stopped
    finally:
        postgres.resume()
    assert code == 1, err[-2000:]
    assert f"Lost the ledger database 127.0.0.1:{postgres.port}" in document["error"]
    assert "stops before its leases (3 s) run out" in document["error"]
    assert took < 10  # a third of a lease between renewals, a third of patience, then the way out
    committed = postgres.query("SELECT COUNT(*) FROM asyncdicom.instances WHERE job = %s", (job,))
    assert committed[0][0] >= 1
    code, document, err = _finish(_spawn(config, postgres))
    assert code == 0, err[-2000:]
    assert _tree(tmp_path / "out-a") == uids
    assert {state for state, _ in _job_rows(postgres, job)} == {"done"}


def test_a_host_behind_a_network_cut_stops_and_another_finishes_its_work(
    tmp_path: Path, orthanc: LoadedOrthanc, postgres: Postgres
) -> None:
    """Host a reaches the database through a link that goes silent mid-run (no reset, no answer:
    packets dropped): it stops with exit 1 within its lease rather than wait for TCP to give up,
    and host b, which still reaches the database, finishes the job once a's leases run out and
    the server has ended a's transaction left open."""
    from tests.tcp_proxy import FreezingProxy

    job = "net-cut"
    rows, uids = _studies(orthanc, 12)
    proxy = FreezingProxy(postgres.port).start()
    try:
        cut = postgres.url.replace(f":{postgres.port}/", f":{proxy.port}/")
        config_a = _config(tmp_path, "a", (orthanc.port, "ORTHANC"), postgres, job, rows, lease=3, url=cut, max_rate=2)
        config_b = _config(tmp_path, "b", (orthanc.port, "ORTHANC"), postgres, job, rows, lease=3, max_rate=2)
        host_a = _spawn(config_a, postgres)
        _wait_for_instances(postgres, job)
        host_b = _spawn(config_b, postgres)
        proxy.freeze()
        frozen = time.monotonic()
        code_a, document_a, err_a = _finish(host_a, timeout=120)
        took = time.monotonic() - frozen
        code_b, _, err_b = _finish(host_b, timeout=120)
    finally:
        proxy.stop()
    assert code_a == 1, err_a[-2000:]
    assert "stops before its leases (3 s) run out" in document_a["error"]
    assert took < 6  # a third of a lease between renewals, a third of patience, then the way out
    assert code_b == 0, err_b[-2000:]
    assert {state for state, _ in _job_rows(postgres, job)} == {"done"}
    assert _tree(tmp_path / "out-a") | _tree(tmp_path / "out-b") == uids


def test_three_hosts_share_a_cfind_job_and_one_writes_the_library(
    tmp_path: Path, orthanc: LoadedOrthanc, postgres: Postgres
) -> None:
    """Three processes on one C-FIND job: every match once in the ledger, the library CSV written
    once, by the last process to finish, with every study of the job."""
    job = "share-cfind"
    rows, _ = _studies(orthanc, 40)
    configs = [  # 40 requests at 6 a second for the job: the three runs overlap
        _config(tmp_path, name, (orthanc.port, "ORTHANC"), postgres, job, rows, kind="c-find", max_rate=6)
        for name in "abc"
    ]
    results = [_finish(process) for process in [_spawn(config, postgres) for config in configs]]
    assert [code for code, _, _ in results] == [0, 0, 0], [err[-2000:] for _, _, err in results]
    written = [tmp_path / f"lib-{name}.csv" for name in "abc" if (tmp_path / f"lib-{name}.csv").exists()]
    assert len(written) == 1
    lines = written[0].read_text().splitlines()
    assert len(lines) == 41  # header + one match per study
    assert sum(doc["ran"] for _, doc, _ in results) == 40
    others = [doc for _, doc, _ in results if doc.get("library_rows") is None]
    assert len(others) == 2
    assert all(any("the last of them to finish writes" in note for note in doc["notes"]) for doc in others), [
        (doc["notes"], doc["outcome"]) for doc in others
    ]


def test_a_killed_host_s_requests_are_finished_by_the_others(
    tmp_path: Path, orthanc: LoadedOrthanc, postgres: Postgres
) -> None:
    """SIGKILL one process mid-run (it holds requests and association slots): after its lease
    the two others finish its requests, and the three trees together hold the whole job."""
    job = "killed"
    rows, uids = _studies(orthanc, 24)
    slow = {"max_rate": 4}  # the first host must still be running when it is killed
    first = _config(tmp_path, "a", (orthanc.port, "ORTHANC"), postgres, job, rows, **slow)
    victim = _spawn(first, postgres)
    deadline = time.monotonic() + 60
    while not postgres.query("SELECT 1 FROM asyncdicom.instances WHERE job = %s LIMIT 1", (job,)):
        assert victim.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    held = postgres.query("SELECT COUNT(*) FROM asyncdicom.requests WHERE job = %s AND holder IS NOT NULL", (job,))
    os.kill(victim.pid, signal.SIGKILL)
    victim.communicate()
    assert held[0][0] > 0  # it died holding requests
    others = [_config(tmp_path, name, (orthanc.port, "ORTHANC"), postgres, job, rows) for name in "bc"]
    results = [_finish(process) for process in [_spawn(config, postgres) for config in others]]
    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    assert {state for state, _ in _job_rows(postgres, job)} == {"done"}
    union = set().union(*(_tree(tmp_path / f"out-{name}") for name in "abc"))
    assert union == uids
    left = postgres.query("SELECT COUNT(*) FROM asyncdicom.slots WHERE job = %s AND holder IS NOT NULL", (job,))
    assert left == [(0,)]


def test_a_database_restart_mid_run_is_ridden_out(tmp_path: Path, orthanc: LoadedOrthanc, postgres: Postgres) -> None:
    """PostgreSQL restarts while two processes run the job: they reconnect and finish it, with
    nothing lost and nothing recorded twice."""
    job = "db-restart"
    rows, uids = _studies(orthanc, 20)
    configs = [  # a lease of 9 s: the server's restart fits in the third of it a host waits
        _config(tmp_path, name, (orthanc.port, "ORTHANC"), postgres, job, rows, lease=9, max_rate=4) for name in "ab"
    ]
    processes = [_spawn(config, postgres) for config in configs]
    _wait_for_instances(postgres, job)
    _wait_for_runs(postgres, job, 2)  # both past their start (a host that cannot connect at start stops)
    postgres.restart()
    results = [_finish(process) for process in processes]
    assert [code for code, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    assert {state for state, _ in _job_rows(postgres, job)} == {"done"}
    trees = [_tree(tmp_path / f"out-{name}") for name in "ab"]
    assert set().union(*trees) == uids
    stored = postgres.query("SELECT COUNT(*) FROM asyncdicom.instances WHERE job = %s", (job,))
    assert stored == [(len(uids),)]


def test_the_pacs_never_sees_more_associations_than_the_job_allows(tmp_path: Path, postgres: Postgres) -> None:
    """Three processes with request.threads 2 against the test PACS that counts associations:
    never more than 2 open at once, from all three together."""
    specs = study_specs(30, studies_per_patient=1, series=1, instances=1)
    datasets = write_files(specs, tmp_path / "data")
    pacs = QueryRetrieveSCP(datasets, ae_title="COUNTING", faults=Faults(delay=0.05))
    port = pacs.start()
    try:
        rows = [(s.patient_id, s.study_uid) for s in specs]
        configs = [
            _config(tmp_path, name, (port, "COUNTING"), postgres, "counted", rows, kind="c-find") for name in "abc"
        ]
        results = [_finish(process) for process in [_spawn(config, postgres) for config in configs]]
    finally:
        pacs.stop()
    assert [code for code, _, _ in results] == [0, 0, 0], [err[-2000:] for _, _, err in results]
    assert pacs.finds == 30
    assert 1 <= pacs.most_open <= 2


def _cli(config: Path, postgres: Postgres, *args: str) -> tuple[int, dict[str, Any]]:
    process = subprocess.run(
        [sys.executable, "-m", "asyncdicom", *args, str(config), "--json"],
        cwd=config.parent,
        env={**postgres.env, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    return process.returncode, json.loads(process.stdout)


def test_status_restart_and_retry_failed_work_the_same_on_postgresql(tmp_path: Path, postgres: Postgres) -> None:
    """One host on a PostgreSQL ledger, as on SQLite: failures are recorded (exit 3) and shown by
    ``status``; a plain rerun skips them; ``--retry-failed`` runs them again; ``--restart``
    runs everything again; ``report`` lists the requests."""
    specs = study_specs(6, studies_per_patient=1, series=1, instances=1)
    pacs = QueryRetrieveSCP(write_files(specs, tmp_path / "data"), ae_title="TOGGLED", faults=Faults(status=0xC001))
    port = pacs.start()
    try:
        rows = [(s.patient_id, s.study_uid) for s in specs]
        config = _config(tmp_path, "a", (port, "TOGGLED"), postgres, "status-job", rows, kind="c-find")
        code, first = _cli(config, postgres, "run")
        assert (code, first["failed"], first["done"]) == (3, 6, 0)
        code, status = _cli(config, postgres, "status")
        assert code == 0 and status["requests"]["failed"] == 6
        assert status["ledger_file"].startswith("postgresql 127.0.0.1:") and "job status-job" in status["ledger_file"]
        pacs.faults = Faults()  # the PACS recovers
        code, again = _cli(config, postgres, "run")
        assert (code, again["ran"], again["failed"]) == (3, 0, 6)  # failures stay failed unless asked
        code, retried = _cli(config, postgres, "run", "--retry-failed")
        assert (code, retried["ran"], retried["done"]) == (0, 6, 6)
        finds = pacs.finds
        code, restarted = _cli(config, postgres, "run", "--restart")
        assert (code, restarted["ran"], restarted["done"]) == (0, 6, 6)
        assert pacs.finds == finds + 6
        code, report = _cli(config, postgres, "report")
        assert code == 0 and [row["state"] for row in report["rows"]] == ["done"] * 6
    finally:
        pacs.stop()
