"""C-GET of SOP classes beyond one association (issue #12): a study of more classes than 126
presentation contexts is asked for in parts whose classes fit; a class the PACS refuses is named,
with what to do, in the ledger, the request CSV and the summary."""

from __future__ import annotations

import csv
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, EncapsulatedPDFStorage, generate_uid

from asyncdicom.net.qrscp import Faults, QueryRetrieveSCP
from asyncdicom.net.storage import CLASS_ROOM
from tests.cli_helpers import cli_json
from tests.conftest import write_yaml
from tests.factory import StudySpec, make_instance

STUDY = generate_uid()
CLASSES = [f"1.2.826.0.1.3680043.10.1234.{n}" for n in range(1, 141)]  # private classes, one instance each


def _study(classes: list[str], per_series: int) -> list[Dataset]:
    spec = StudySpec("SPLIT1", "Split^Test", STUDY, "ACC9", "20200101", "OT", 1, 1)
    series = [generate_uid() for _ in range(0, len(classes), per_series)]
    datasets = []
    for n, sop_class in enumerate(classes):
        ds = make_instance(spec, series[n // per_series], n // per_series + 1, n + 1)
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
        datasets.append(ds)
    return datasets


def _config(tmp_path: Path, port: int) -> Path:
    (tmp_path / "batch.csv").write_text(f"StudyInstanceUID\n{STUDY}\n")
    doc = {
        "pacs": {"hostname": "127.0.0.1", "port": port, "aet": "PEER"},
        "request": {
            "type": "c-get",
            "elements_batch_file": "batch.csv",
            "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
        },
        "output": {"directory": "out", "library_file": "requests.csv"},
    }
    return write_yaml(tmp_path / "c.yml", doc)


def test_more_classes_than_one_association_takes_are_asked_for_in_parts(tmp_path: Path) -> None:
    assert len(CLASSES) > CLASS_ROOM  # what makes the split necessary
    datasets = _study(CLASSES, per_series=70)
    with QueryRetrieveSCP(datasets, ae_title="PEER") as pacs:
        result, summary = cli_json("run", _config(tmp_path, pacs.port), "-v")
        retrieves = pacs.retrieves
    assert result.exit_code == 0, result.stderr[-3000:]
    assert (summary["done"], summary["instances_new"]) == (1, len(CLASSES))
    assert "140 SOP classes, asked for in" in result.stderr
    assert retrieves >= 2  # one C-GET could not have carried them all
    stored = {str(ds.SOPClassUID) for ds in (_read(path) for path in (tmp_path / "out").rglob("*.dcm"))}
    assert stored == set(CLASSES)


def _read(path: Path) -> Dataset:
    return dcmread(path, stop_before_pixels=True)


@pytest.fixture
def refusing() -> Iterator[QueryRetrieveSCP]:
    datasets = _study([CTImageStorage, CTImageStorage, EncapsulatedPDFStorage], per_series=3)
    with QueryRetrieveSCP(datasets, ae_title="PEER", faults=Faults(refuse_classes=(EncapsulatedPDFStorage,))) as pacs:
        yield pacs


def test_a_refused_class_is_named_with_what_to_do(tmp_path: Path, refusing: QueryRetrieveSCP) -> None:
    result, summary = cli_json("run", _config(tmp_path, refusing.port))
    assert result.exit_code == 3, result.stderr[-3000:]
    assert (summary["partial"], summary["instances_new"]) == (1, 2)
    assert summary["refused_classes"] == {EncapsulatedPDFStorage: 1}
    why = f"the PACS accepted no presentation context for Encapsulated PDF Storage ({EncapsulatedPDFStorage})"
    assert why in result.stderr and "c-move" in result.stderr
    with sqlite3.connect(tmp_path / "out" / ".asyncdicom" / "c.sqlite3") as db:
        (error,) = db.execute("SELECT error FROM requests").fetchone()
    assert why in error and "request.type c-move" in error
    with open(summary["library_file"], newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1 and why in rows[0]["error"]
