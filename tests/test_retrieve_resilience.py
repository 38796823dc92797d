"""Retrieval under trouble: SIGKILL mid-run, the PACS stopping mid-move; reruns end complete."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread
from pydicom.dataset import Dataset

from asyncdicom.anonymize.worker import anonymize_file_named
from tests.cli_helpers import cli_json, ledger_instances, spawn
from tests.conftest import write_yaml
from tests.factory import study_specs, write_files
from tests.pacs_servers import Orthanc, free_port
from tests.test_retrieve_orthanc import stored, write_batch

pytestmark = pytest.mark.orthanc


@dataclass
class BigPacs:
    server: Orthanc
    instances: list[Dataset]
    scp_port: int
    data: Path  # the files Orthanc was given

    @property
    def studies(self) -> list[str]:
        return list(dict.fromkeys(str(ds.StudyInstanceUID) for ds in self.instances))


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigPacs]:
    """A throwaway Orthanc with 16 studies of 30 instances, which tests may stop and start."""
    folder = tmp_path_factory.mktemp("big")
    scp_port = free_port()
    server = Orthanc(folder / "pacs", modalities={"ASYNCDICOM": ("127.0.0.1", scp_port)}).start()
    written = write_files(study_specs(16, series=1, instances=30, prefix="K"), folder / "data")
    server.store(folder / "data")
    yield BigPacs(server, written, scp_port, folder / "data")
    server.stop()


def _config(tmp_path: Path, big: BigPacs, kind: str) -> Path:
    write_batch(tmp_path, [{"StudyInstanceUID": uid} for uid in big.studies])
    doc = {
        "pacs": {"hostname": "127.0.0.1", "port": big.server.dicom_port, "aet": "ORTHANC"},
        "local": {"port": big.scp_port, "aet": "ASYNCDICOM"},
        "request": {
            "type": kind,
            "threads": 2,
            "throttle_time": 0.15,
            "elements_batch_file": "batch.csv",
            "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
        },
        "output": {"directory": "out", "directory_structure": "StudyInstanceUID"},
    }
    return write_yaml(tmp_path / "c.yml", doc)


def _wait_for_instances(ledger: Path, count: int, process: object) -> None:
    deadline = time.monotonic() + 60
    while ledger_instances(ledger) < count:  # observable progress of another process
        assert getattr(process, "poll", lambda: None)() is None, "the run ended too early"
        assert time.monotonic() < deadline, "no progress"
        time.sleep(0.05)


@pytest.mark.parametrize("kind", ["c-move", "c-get"])
def test_sigkill_then_rerun_gives_the_same_files(tmp_path: Path, big: BigPacs, kind: str) -> None:
    """Killed with SIGKILL mid-run, a rerun ends with exactly the files of an uninterrupted run:
    no duplicates, no partial files, no orphan spool files."""
    config = _config(tmp_path, big, kind)
    ledger = tmp_path / "out" / ".asyncdicom" / "c.sqlite3"
    process = spawn("run", config, "-q")
    _wait_for_instances(ledger, 100, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    result, summary = cli_json("run", config)
    assert result.exit_code == 0, result.stderr
    assert summary["done"] == len(big.studies)
    assert set(stored(tmp_path)) == {str(ds.SOPInstanceUID) for ds in big.instances}
    out = tmp_path / "out"
    assert not [
        p
        for p in out.rglob("*")
        if p.is_file()
        and p.suffix not in (".dcm", ".sqlite3", ".lock", ".csv", ".jsonl")
        and not p.name.endswith(("-wal", "-shm"))
    ]
    assert not list((out / ".asyncdicom" / "spool").iterdir())
    assert ledger_instances(ledger) == len(big.instances)


def test_pacs_restart_mid_move_recovers(tmp_path: Path, big: BigPacs) -> None:
    """When the PACS goes away mid-move the run waits for it; once it is back, every request completes."""
    config = _config(tmp_path, big, "c-move")
    ledger = tmp_path / "out" / ".asyncdicom" / "c.sqlite3"
    process = spawn("run", config)
    _wait_for_instances(ledger, 60, process)
    big.server.stop()
    try:
        assert process.stderr is not None
        for line in process.stderr:  # the run reports that it is waiting for the PACS
            if "trying again in" in line:
                break
    finally:
        big.server.start()
    _, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert set(stored(tmp_path)) == {str(ds.SOPInstanceUID) for ds in big.instances}


SCRIPT = """<script>
 <p t="UIDROOT">1.2.826.0.1.3680043.10.1</p>
 <e en="T" t="00100020" n="PatientID">@hashname(this,6)</e>
 <e en="T" t="00100010" n="PatientName">@hashname(this,8)</e>
 <e en="T" t="0020000d" n="StudyInstanceUID">@hashuid(@UIDROOT,this)</e>
 <e en="T" t="0020000e" n="SeriesInstanceUID">@hashuid(@UIDROOT,this)</e>
 <e en="T" t="00080018" n="SOPInstanceUID">@hashuid(@UIDROOT,this)</e>
</script>
"""


def _whole(path: Path) -> bool:
    """Whether ``path`` is a complete DICOM file: it parses, and its pixel data is all there."""
    ds = dcmread(path)
    return len(ds.PixelData) == ds.Rows * ds.Columns * ds.SamplesPerPixel * ds.BitsAllocated // 8


def test_sigkill_mid_pipeline_leaves_no_half_file_and_a_rerun_completes(tmp_path: Path, big: BigPacs) -> None:
    """SIGKILL while instances are being anonymized and placed (worker processes busy, files
    between spool and tree): the tree holds only whole anonymized files, and a rerun ends with
    exactly the anonymized copies of every instance, no leftovers in the spool."""
    config = _config(tmp_path, big, "c-move")
    (tmp_path / "anon.script").write_text(SCRIPT)
    doc = yaml.safe_load(config.read_text())
    doc["anonymization"] = {"enabled": True, "script": "anon.script"}
    doc["request"]["throttle_time"] = 0
    write_yaml(config, doc)
    ledger = tmp_path / "out-private" / "c.sqlite3"
    process = spawn("run", config, "-q")
    _wait_for_instances(ledger, 100, process)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=30)
    out = tmp_path / "out"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and len(files) < len(big.instances)  # killed in the middle
    assert all(p.suffix == ".dcm" and _whole(p) for p in files)
    result, summary = cli_json("run", config)
    assert result.exit_code == 0, result.stderr
    assert (summary["outcome"], summary["done"]) == ("complete", len(big.studies))
    expected = set()
    for source in sorted(big.data.rglob("*.dcm")):
        status, _, uid = anonymize_file_named(
            str(tmp_path / "anon.script"), None, "faithful", str(source), str(tmp_path / "x")
        )
        assert status == "ok"
        expected.add(uid)
    assert set(stored(tmp_path)) == expected and len(expected) == len(big.instances)
    assert all(p.suffix == ".dcm" for p in out.rglob("*") if p.is_file())
    assert not list((tmp_path / "out-private" / "spool").iterdir())
    assert ledger_instances(ledger) == len(big.instances)
