"""Fault scenarios for scripts/faults (full size) and tests/test_fault_scenarios.py (short).

Each scenario retrieves a generated data set while something goes wrong (asyncdicom killed, the
PACS frozen, restarted, refusing, aborting, out of resources, slow, the disk full, the window
closing), resumes with plain ``asyncdicom run`` until the run says complete, then checks the
output tree against what the PACS holds: every instance present once, with the PACS's pixel
data (SHA-256), nothing else in the tree. It returns tries, survived, lost, partial, stray and
the seconds from the end of the fault to a complete run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from asyncdicom.net.qrscp import Faults, QueryRetrieveSCP
from tests.cli_helpers import ledger_instances
from tests.factory import make_instance, study_specs
from tests.pacs_servers import Orthanc, free_port

ALLOWED = (".sqlite3", ".sqlite3-wal", ".sqlite3-shm", ".lock", ".jsonl", ".csv")


@dataclass
class Result:
    """One scenario's row."""

    name: str
    tries: int = 0
    survived: int = 0
    lost: int = 0
    partial: int = 0
    stray: int = 0
    twice: int = 0  # instances transferred twice (received again although stored), from the event log
    recover: list[float] = field(default_factory=list)
    note: str = ""

    @property
    def clean(self) -> bool:
        return self.survived == self.tries and not (self.lost or self.partial or self.stray)


@dataclass
class Data:
    """A generated data set: datasets, files, and the checksum of each instance's pixels."""

    datasets: list[Dataset]
    folder: Path
    expected: dict[str, str]
    studies: list[str]


def make_data(folder: Path, studies: int, per_study: int, rows: int = 64) -> Data:
    folder.mkdir(parents=True, exist_ok=True)
    datasets: list[Dataset] = []
    expected: dict[str, str] = {}
    for spec in study_specs(studies, instances=per_study, prefix="F"):
        series = generate_uid()
        for n in range(1, per_study + 1):
            ds = make_instance(spec, series, 1, n, rows=rows)
            ds.PixelData = random.Random(f"{spec.study_uid}-{n}").randbytes(rows * rows * 2)
            ds.save_as(folder / f"{len(datasets):05d}.dcm", enforce_file_format=True)
            datasets.append(ds)
            expected[str(ds.SOPInstanceUID)] = hashlib.sha256(ds.PixelData).hexdigest()
    uids = list(dict.fromkeys(str(ds.StudyInstanceUID) for ds in datasets))
    return Data(datasets, folder, expected, uids)


def verify(out: Path, data: Data) -> tuple[int, int, int]:
    """(lost, partial, stray) of an output tree against the data set."""
    seen: dict[str, int] = {}
    partial = stray = 0
    for path in out.rglob("*"):
        if path.is_dir():
            continue
        if path.suffix != ".dcm":
            inside_state = ".asyncdicom" in path.parts and "spool" not in path.parts
            if not (inside_state and path.name.endswith(ALLOWED)):
                stray += 1  # a spool leftover, a temporary file, anything else
            continue
        try:
            ds = dcmread(path)
            uid = str(ds.SOPInstanceUID)
            digest = hashlib.sha256(ds.PixelData).hexdigest()
        except Exception:
            partial += 1
            continue
        if uid not in data.expected:
            stray += 1
        elif digest != data.expected[uid]:
            partial += 1
        seen[uid] = seen.get(uid, 0) + 1
    stray += sum(count - 1 for count in seen.values())
    lost = sum(1 for uid in data.expected if uid not in seen)
    return lost, partial, stray


def config(folder: Path, port: int, aet: str, scp_port: int, kind: str, studies: list[str], **request: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "batch.csv").write_text("StudyInstanceUID\n" + "\n".join(studies) + "\n")
    schedule = request.pop("schedule", None)
    output = request.pop("output", "out")
    doc: dict[str, Any] = {
        "pacs": {"hostname": "127.0.0.1", "port": port, "aet": aet},
        "local": {"port": scp_port, "aet": "ASYNCDICOM"},
        "request": {
            "type": kind,
            "threads": 2,
            "elements_batch_file": "batch.csv",
            "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
            **request,
        },
        "output": {"directory": str(output), "directory_structure": "StudyInstanceUID"},
    }
    if schedule:
        doc["schedule"] = schedule
    path = folder / "c.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def spawn(config_path: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, NO_COLOR="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "asyncdicom", "run", str(config_path), "-q", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(config_path: Path, attempts: int = 6) -> tuple[bool, float, str]:
    """Plain reruns until one ends complete (exit 0): (complete, seconds, last stderr)."""
    started = time.monotonic()
    err = ""
    for _ in range(attempts):
        process = spawn(config_path)
        _, err = process.communicate(timeout=600)
        if process.returncode == 0:
            return True, time.monotonic() - started, err
    return False, time.monotonic() - started, err


def instances_in_ledger(out: Path) -> int:
    return ledger_instances(out / ".asyncdicom" / "c.sqlite3")


def wait_for(out: Path, count: int, process: subprocess.Popen[str], deadline: float = 120) -> bool:
    """Wait until ``count`` instances are in the ledger; False if the run ended first."""
    end = time.monotonic() + deadline
    while instances_in_ledger(out) < count:
        if process.poll() is not None or time.monotonic() > end:
            return False
        time.sleep(0.02)  # another process's progress: nothing to wait on
    return True


def transferred_twice(out: Path) -> int:
    """Instances received again although stored, over every run (the event log's request events)."""
    events = out / ".asyncdicom" / "c.events.jsonl"
    if not events.exists():
        return 0
    lines = (json.loads(line) for line in events.read_text().splitlines())
    return sum(int(e.get("duplicates") or 0) for e in lines if e["event"] == "request")


def _record(result: Result, folder: Path, data: Data, complete: bool, seconds: float, note: str = "") -> None:
    result.tries += 1
    result.twice += transferred_twice(folder / "out")
    lost, partial, stray = verify(folder / "out", data)
    result.lost += lost
    result.partial += partial
    result.stray += stray
    if complete and not (lost or partial or stray):
        result.survived += 1
    result.recover.append(seconds)
    if note and not result.note:
        result.note = note


@contextmanager
def test_pacs(data: Data, faults: Faults) -> Iterator[tuple[QueryRetrieveSCP, int]]:
    """The misbehaving test PACS, and the port it sends C-MOVE sub-operations to."""
    scp_port = free_port()
    pacs = QueryRetrieveSCP(
        data.datasets, ae_title="FAULTY", faults=faults, destinations={"ASYNCDICOM": ("127.0.0.1", scp_port)}
    )
    pacs.start()
    try:
        yield pacs, scp_port
    finally:
        pacs.stop()


@contextmanager
def orthanc(folder: Path, data: Data) -> Iterator[tuple[Orthanc, int]]:
    """Orthanc holding the data, and the port it sends C-MOVE sub-operations to."""
    scp_port = free_port()
    server = Orthanc(folder / "orthanc", modalities={"ASYNCDICOM": ("127.0.0.1", scp_port)}).start()
    try:
        server.store(data.folder)
        yield server, scp_port
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


# --- scenarios ------------------------------------------------------------------------------------


def sigkill(work: Path, data: Data, kind: str, kills: int) -> Result:
    """SIGKILL asyncdicom ``kills`` times at random moments, resuming each time; then finish."""
    result = Result(f"SIGKILL x{kills} ({kind}, Orthanc)")
    rng = random.Random(kills)
    with orthanc(work, data) as (server, scp_port):
        cfg = config(work, server.dicom_port, "ORTHANC", scp_port, kind, data.studies)
        for _ in range(kills):
            process = spawn(cfg)
            wait_for(work / "out", 1, process)
            time.sleep(rng.uniform(0.0, 0.6))
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=30)
        complete, seconds, err = finish(cfg)
        _record(result, work, data, complete, seconds, "" if complete else err[-300:])
    result.tries, result.survived = kills, kills * result.survived  # every kill was resumed from
    return result


def _outage(
    work: Path,
    data: Data,
    name: str,
    down: Callable[[Orthanc], None],
    up: Callable[[Orthanc], None],
    seconds: float,
    **request: Any,
) -> Result:
    """A C-MOVE run against Orthanc that is taken ``down`` a quarter of the way through and brought
    ``up`` again ``seconds`` later; recovery counts from then."""
    result = Result(name)
    with orthanc(work, data) as (server, scp_port):
        cfg = config(
            work, server.dicom_port, "ORTHANC", scp_port, "c-move", data.studies, unreachable_timeout=120, **request
        )
        process = spawn(cfg)
        wait_for(work / "out", len(data.expected) // 4, process)
        down(server)
        time.sleep(seconds)  # the fault lasts this long
        up(server)
        back = time.monotonic()
        process.communicate(timeout=600)
        complete, _, err = finish(cfg)
        _record(result, work, data, complete, time.monotonic() - back, "" if complete else err[-300:])
    return result


def _signal(sig: signal.Signals) -> Callable[[Orthanc], None]:
    def send(server: Orthanc) -> None:
        assert server.process is not None
        os.kill(server.process.pid, sig)

    return send


def _start(server: Orthanc) -> None:
    server.start()


def freeze(work: Path, data: Data, seconds: float) -> Result:
    """SIGSTOP Orthanc mid-run for longer than the timeouts, then SIGCONT."""
    name = f"PACS frozen {seconds:g} s (c-move, Orthanc)"
    return _outage(
        work, data, name, _signal(signal.SIGSTOP), _signal(signal.SIGCONT), seconds, timeout=2, idle_timeout=3
    )


def restart(work: Path, data: Data, down: float) -> Result:
    """Stop Orthanc mid-run and start it again ``down`` seconds later."""
    name = f"PACS restarted, {down:g} s down (c-move, Orthanc)"
    return _outage(work, data, name, Orthanc.stop, _start, down)


def with_test_pacs(work: Path, data: Data, name: str, faults: Faults, kind: str = "c-move", **request: Any) -> Result:
    """One run against the misbehaving test PACS, then plain reruns until complete."""
    result = Result(name)
    with test_pacs(data, faults) as (pacs, scp_port):
        cfg = config(work, pacs.port, "FAULTY", scp_port, kind, data.studies, **request)
        complete, seconds, err = finish(cfg)
        _record(result, work, data, complete, seconds, "" if complete else err[-300:])
    return result


STOPS_WITHIN = 15.0  # seconds from start to exit 4 on a full volume (about 1 s here; 31 s before aborting)


def disk_full(work: Path, data: Data, size_mb: int, kind: str) -> Result:
    """The output on a tmpfs of ``size_mb``: the run stops with exit 4 and a clear message, within
    seconds (a C-MOVE in flight is aborted, not left waiting for the PACS's sub-operations);
    after the tmpfs grows, a plain rerun completes."""
    result = Result(f"disk full at {size_mb} MB ({kind}, test PACS)")
    mount = work / "volume"
    mount.mkdir(parents=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mount)], check=False)
    if made.returncode != 0:
        result.note = "skipped: mounting a tmpfs needs root"
        return result
    try:
        with test_pacs(data, Faults()) as (pacs, scp_port):
            cfg = config(
                work,
                pacs.port,
                "FAULTY",
                scp_port,
                kind,
                data.studies,
                output=mount / "out",
            )
            started = time.monotonic()
            process = spawn(cfg)
            _, err = process.communicate(timeout=300)
            took = time.monotonic() - started
            clear = process.returncode == 4 and "full" in err and "Traceback" not in err and took < STOPS_WITHIN
            subprocess.run(["mount", "-o", "remount,size=512m", str(mount)], check=True)
            freed = time.monotonic()
            complete, _, err2 = finish(cfg)
            result.tries += 1
            result.twice = transferred_twice(mount / "out")
            lost, partial, stray = verify(mount / "out", data)
            result.lost, result.partial, result.stray = lost, partial, stray
            if clear and complete and not (lost or partial or stray):
                result.survived += 1
            result.recover.append(time.monotonic() - freed)
            if not clear:
                result.note = f"first run: exit {process.returncode} after {took:.1f} s: {err[-200:]}"
            elif not complete:
                result.note = err2[-300:]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    return result


def window_closes(work: Path, data: Data) -> Result:
    """The schedule window closes mid-run (outside_window: exit): exit 5 after the drain; the
    next run inside a window (here: no schedule) completes. The window ends 8 s from now (times
    to the second)."""
    result = Result("window closes mid-run (c-move, test PACS)")
    now = datetime.now().astimezone()
    end = (now + timedelta(seconds=9)).replace(microsecond=0)
    start = end - timedelta(hours=1)
    schedule = {
        "enabled": True,
        "start_time": f"{start:%H:%M:%S}",
        "end_time": f"{end:%H:%M:%S}",
        "outside_window": "exit",
        "drain_seconds": 2,
    }
    threads = 2  # the run must last past the close: about 1.5 times the time left
    per_instance = max(0.05, 1.5 * threads * (end - now).total_seconds() / len(data.expected))
    with test_pacs(data, Faults(store_delay=per_instance)) as (pacs, scp_port):
        cfg = config(
            work,
            pacs.port,
            "FAULTY",
            scp_port,
            "c-move",
            data.studies,
            schedule=schedule,
        )
        process = spawn(cfg, "--json")
        out, err = process.communicate(timeout=300)
        closed = time.monotonic()
        exited = process.returncode == 5 and '"outside-window"' in out
        pacs.faults = Faults()
        doc = yaml.safe_load(cfg.read_text())
        doc.pop("schedule")
        cfg.write_text(yaml.safe_dump(doc))
        complete, _, err2 = finish(cfg)
        _record(result, work, data, complete and exited, time.monotonic() - closed)
        if not exited:
            result.note = f"first run: exit {process.returncode}: {err[-200:]}"
            result.survived = 0
        elif not complete:
            result.note = err2[-300:]
    return result


Scenario = Callable[[Path], Result]


def scenarios(data_for: Callable[[int, int, int], Data], short: bool) -> dict[str, Scenario]:
    """Every scenario, at full size or short (for the test suite); ``data_for(studies, per study,
    rows)`` makes (or reuses) a data set."""
    kills = 2 if short else 10
    small = data_for(6, 10, 64) if short else data_for(16, 30, 64)
    storm = data_for(4, 5, 64)
    return {
        "sigkill-get": lambda w: sigkill(w, small, "c-get", kills),
        "sigkill-move": lambda w: sigkill(w, small, "c-move", kills),
        "freeze": lambda w: freeze(w, small, 5 if short else 8),
        "restart": lambda w: restart(w, small, 2 if short else 5),
        "refused": lambda w: with_test_pacs(
            w, storm, "associations refused above 1 (test PACS)", Faults(max_associations=1), threads=4
        ),
        "aborts": lambda w: with_test_pacs(
            w, small, "abort mid-move, every 3rd (test PACS)", Faults(abort_retrieve_every=3)
        ),
        "a702": lambda w: with_test_pacs(
            w, storm, "0xA702 storm, first 8 retrieves (test PACS)", Faults(busy_retrieves=8), retries=5
        ),
        "slow": lambda w: with_test_pacs(
            w,
            storm,
            "responses slower than request.timeout (test PACS)",
            Faults(store_delay=1.2),
            timeout=1,
            idle_timeout=10,
        ),
        "disk-full-get": lambda w: disk_full(w, data_for(6, 10, 256), 2 if short else 4, "c-get"),
        "disk-full-move": lambda w: disk_full(w, data_for(6, 10, 256), 2 if short else 4, "c-move"),
        "window": lambda w: window_closes(w, small),
    }
