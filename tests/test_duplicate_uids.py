"""An archive's own duplicates: one SOP Instance UID held twice, under two patients, with
different content (issue #12). Both are kept, both are in the ledger, the request is complete,
and a warning names the UID."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from tests.cli_helpers import cli_json
from tests.conftest import write_yaml
from tests.factory import StudySpec, make_instance
from tests.pacs_servers import Orthanc, free_port

pytestmark = pytest.mark.orthanc

STUDY, SERIES, SOP = generate_uid(), generate_uid(), generate_uid()


@pytest.fixture(scope="module")
def twins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, int]]:
    folder = tmp_path_factory.mktemp("twins")
    (folder / "data").mkdir()
    for n, patient in enumerate(("TWIN1", "TWIN2")):
        spec = StudySpec(patient, f"Twin^{n}", STUDY, "ACC1", "20200101", "CT", 1, 1)
        ds = make_instance(spec, SERIES, 1, 1)
        ds.SOPInstanceUID = SOP
        ds.save_as(folder / "data" / f"{n}.dcm", enforce_file_format=True)
    scp_port = free_port()
    server = Orthanc(folder / "pacs", modalities={"ASYNCDICOM": ("127.0.0.1", scp_port)}).start()
    try:
        server.upload(sorted((folder / "data").iterdir()))
        yield server, scp_port
    finally:
        server.stop()


@pytest.mark.parametrize("kind", ["c-move", "c-get"])
@pytest.mark.parametrize("structure", ["StudyInstanceUID", "PatientID/StudyInstanceUID"])
def test_one_uid_twice_with_different_content(
    tmp_path: Path, twins: tuple[Orthanc, int], kind: str, structure: str
) -> None:
    server, scp_port = twins
    (tmp_path / "batch.csv").write_text(f"StudyInstanceUID\n{STUDY}\n")
    doc = {
        "pacs": {"hostname": "127.0.0.1", "port": server.dicom_port, "aet": "ORTHANC"},
        "local": {"port": scp_port, "aet": "ASYNCDICOM"},
        "request": {
            "type": kind,
            "elements_batch_file": "batch.csv",
            "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
        },
        "output": {"directory": "out", "directory_structure": structure},
    }
    config = write_yaml(tmp_path / "c.yml", doc)
    result, summary = cli_json("run", config)
    assert result.exit_code == 0, result.stderr
    assert (summary["done"], summary["partial"], summary["instances_new"]) == (1, 0, 2)
    assert f"SOP Instance UID {SOP} was received twice with different content" in result.stderr
    files = sorted((tmp_path / "out").rglob("*.dcm"))
    assert len(files) == 2 and files[0].read_bytes() != files[1].read_bytes()
    with sqlite3.connect(tmp_path / "out" / ".asyncdicom" / "c.sqlite3") as db:
        rows = db.execute("SELECT COUNT(*) FROM instances WHERE sop_uid = ?", (SOP,)).fetchone()[0]
    assert rows == 2
    again, summary = cli_json("run", config)  # a second run: nothing left to do, no new warning
    assert again.exit_code == 0 and summary["ran"] == 0
