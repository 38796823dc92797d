"""Retrieval against dcmtk's dcmqrscp, the second real PACS: its statuses differ from Orthanc's."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from pydicom.dataset import Dataset

from tests.cli_helpers import cli_json
from tests.conftest import write_yaml
from tests.factory import study_specs, write_files
from tests.pacs_servers import Dcmqrscp, free_port
from tests.test_retrieve_orthanc import stored, write_batch

pytestmark = pytest.mark.network


@dataclass
class Qr:
    server: Dcmqrscp
    instances: list[Dataset]
    scp_port: int


@pytest.fixture(scope="module")
def qr(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Qr]:
    folder = tmp_path_factory.mktemp("dcmqrscp")
    scp_port = free_port()
    server = Dcmqrscp(folder / "pacs", peers={"ASYNCDICOM": ("localhost", scp_port)})
    written = write_files(study_specs(4, studies_per_patient=1, series=2, instances=3, prefix="Q"), folder / "data")
    server.folder.mkdir(parents=True)
    server.storage.mkdir()
    server.register(sorted((folder / "data").iterdir()))
    server.start()
    yield Qr(server, written, scp_port)
    server.stop()


def _config(tmp_path: Path, qr: Qr, kind: str, rows: list[dict[str, str]], level: str, aet: str = "ASYNCDICOM") -> Path:
    write_batch(tmp_path, rows)
    doc = {
        "pacs": {"hostname": "127.0.0.1", "port": qr.server.port, "aet": "QRSCP"},
        "local": {"port": qr.scp_port, "aet": aet},
        "request": {
            "type": kind,
            "threads": 4,
            "elements_batch_file": "batch.csv",
            "elements": [f"QueryRetrieveLevel={level}", *rows[0]],
        },
        "output": {"directory": "out", "directory_structure": "PatientID/SeriesInstanceUID"},
    }
    return write_yaml(tmp_path / "c.yml", doc)


@pytest.mark.parametrize("kind", ["c-move", "c-get"])
@pytest.mark.parametrize("level", ["STUDY", "SERIES"])
def test_retrieve(tmp_path: Path, qr: Qr, kind: str, level: str) -> None:
    """C-MOVE and C-GET from dcmqrscp store every instance once."""
    if level == "STUDY":
        rows = [{"StudyInstanceUID": uid} for uid in dict.fromkeys(str(ds.StudyInstanceUID) for ds in qr.instances)]
    else:
        rows = [
            {"StudyInstanceUID": a, "SeriesInstanceUID": b}
            for a, b in dict.fromkeys((str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)) for ds in qr.instances)
        ]
    result, summary = cli_json("run", _config(tmp_path, qr, kind, rows, level))
    assert result.exit_code == 0, result.stderr
    assert summary["done"] == len(rows)
    assert set(stored(tmp_path)) == {str(ds.SOPInstanceUID) for ds in qr.instances}


def test_unknown_destination_is_fatal(tmp_path: Path, qr: Qr) -> None:
    """dcmqrscp answers 0xA801 for an unknown move destination: the run stops with the fix (exit 1)."""
    rows = [{"StudyInstanceUID": str(qr.instances[0].StudyInstanceUID)}]
    result, summary = cli_json("run", _config(tmp_path, qr, "c-move", rows, "STUDY", aet="NOBODY"))
    assert result.exit_code == 1
    config = yaml.safe_load((tmp_path / "c.yml").read_text())
    assert summary["message"] == (
        f"the PACS does not know AE title NOBODY at {socket.gethostname()}, port {config['local']['port']} as a "
        "C-MOVE destination (0xA801): register that AE title, this host and port on the PACS; check with "
        "asyncdicom echo --move"
    )
    assert summary["pending"] == 1


def test_missing_instance_is_partial_then_only_it_is_asked_again(tmp_path: Path) -> None:
    """An instance the PACS cannot send leaves the request partial, with that UID in the ledger; the
    next run asks for that instance alone (IMAGE level) and completes the request."""
    scp_port = free_port()
    server = Dcmqrscp(tmp_path / "pacs", peers={"ASYNCDICOM": ("localhost", scp_port)})
    written = write_files(study_specs(1, studies_per_patient=1, series=1, instances=4, prefix="M"), tmp_path / "data")
    server.folder.mkdir(parents=True)
    server.storage.mkdir()
    server.register(sorted((tmp_path / "data").iterdir()))
    lost = written[2]
    stored_file = server.storage / f"{lost.SOPInstanceUID}.dcm"
    hidden = tmp_path / "hidden.dcm"
    stored_file.rename(hidden)
    server.start()
    try:
        qr = Qr(server, written, scp_port)
        rows = [{"StudyInstanceUID": str(lost.StudyInstanceUID), "SeriesInstanceUID": str(lost.SeriesInstanceUID)}]
        config = _config(tmp_path, qr, "c-get", rows, "SERIES")
        result, summary = cli_json("run", config)
        assert result.exit_code == 3
        assert (summary["partial"], summary["instances_new"]) == (1, 3)
        status = cli_json("status", config)[1]
        assert status["requests"]["partial"] == 1
        import sqlite3

        with sqlite3.connect(tmp_path / "out" / ".asyncdicom" / "c.sqlite3") as db:
            assert db.execute("SELECT missing FROM requests").fetchone()[0] == f'["{lost.SOPInstanceUID}"]'
        hidden.rename(stored_file)
        result, summary = cli_json("run", config)
        assert result.exit_code == 0, result.stderr
        assert (summary["done"], summary["partial"], summary["instances_new"], summary["duplicate_instances"]) == (
            1,
            0,
            1,
            0,
        )
        assert set(stored(tmp_path)) == {str(ds.SOPInstanceUID) for ds in written}
    finally:
        server.stop()
