"""C-GET that learns its presentation contexts (issue #12): a 12-lead ECG, a class outside the
fixed proposal, is retrieved whole from Orthanc once its SOP class is known from a C-FIND."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from asyncdicom.net.storage import AS_STORED, COMMON_IMAGES, OTHER_CLASSES, learned_contexts
from tests.cli_helpers import cli_json
from tests.conftest import write_yaml
from tests.pacs_servers import Orthanc

pytestmark = pytest.mark.orthanc

ECG = "1.2.840.10008.5.1.4.1.1.9.1.1"


def test_ecg_is_not_in_the_fixed_proposal() -> None:
    """What makes this test worth having: without learning, the ECG has no context."""
    assert ECG not in COMMON_IMAGES + OTHER_CLASSES


def test_learned_contexts_come_first_and_fit() -> None:
    contexts = learned_contexts([ECG, "1.2.840.10008.5.1.4.1.1.2"])
    assert contexts[0][0] == ECG and len(contexts) == 126
    assert sum(1 for uid, _ in contexts if uid == ECG) == 1 + len(AS_STORED)  # uncompressed, then one per syntax


@pytest.fixture(scope="module")
def ecg_pacs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, str, Path]]:
    folder = tmp_path_factory.mktemp("ecg")
    source = get_testdata_file("waveform_ecg.dcm")
    assert source is not None
    copy = folder / "ecg.dcm"
    shutil.copy(source, copy)
    server = Orthanc(folder / "pacs").start()
    try:
        server.upload([copy])
        yield server, str(dcmread(copy).StudyInstanceUID), copy
    finally:
        server.stop()


def test_cget_of_a_class_outside_the_fixed_proposal(tmp_path: Path, ecg_pacs: tuple[Orthanc, str, Path]) -> None:
    server, study, source = ecg_pacs
    (tmp_path / "batch.csv").write_text(f"StudyInstanceUID\n{study}\n")
    doc = {
        "pacs": {"hostname": "127.0.0.1", "port": server.dicom_port, "aet": "ORTHANC"},
        "request": {
            "type": "c-get",
            "elements_batch_file": "batch.csv",
            "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
        },
        "output": {"directory": "out"},
    }
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 0, result.stderr
    assert (summary["done"], summary["instances_new"]) == (1, 1)
    stored = dcmread(next((tmp_path / "out").rglob("*.dcm")))
    original = dcmread(source)
    assert stored.SOPClassUID == ECG
    assert stored.WaveformSequence[0].WaveformData == original.WaveformSequence[0].WaveformData
