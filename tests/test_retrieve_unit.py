"""Retriever wiring without a PACS: attribution by message ID or UIDs, refusal, placement."""

from __future__ import annotations

import shutil
from pathlib import Path

import anyio
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from asyncdicom.config import load_config
from asyncdicom.elements import parse_element
from asyncdicom.net.scp import Received
from asyncdicom.plan import Request
from asyncdicom.retrieve import Retriever
from asyncdicom.stats import RunStats
from asyncdicom.write.pipeline import InstanceRecord
from tests.conftest import write_yaml

pytestmark = pytest.mark.anyio

CT = get_testdata_file("CT_small.dcm", download=False)


class Sink:
    def __init__(self) -> None:
        self.records: list[InstanceRecord] = []

    async def record_instance(self, record: InstanceRecord) -> None:
        self.records.append(record)


def _retriever(tmp_path: Path, sink: Sink) -> Retriever:
    doc = {
        "pacs": {"hostname": "127.0.0.1", "port": 4242, "aet": "ORTHANC"},
        "request": {"type": "c-get", "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"]},
        "output": {"directory": "out", "directory_structure": "PatientID"},
    }
    return Retriever(load_config(write_yaml(tmp_path / "c.yml", doc)), sink, RunStats(1, 0, 1))


def _received(retriever: Retriever, message_id: int | None) -> Received:
    retriever.spool.mkdir(parents=True, exist_ok=True)
    path = retriever.spool / "0123456789abcdef0123456789abcdef.dcm"
    shutil.copyfile(CT, path)
    ds = dcmread(path, stop_before_pixels=True)
    return Received(
        path, ds.SOPClassUID, ds.SOPInstanceUID, "1.2.840.10008.1.2.1", "ORTHANC", message_id, path.stat().st_size
    )


def _request(study_uid: str) -> Request:
    return Request("k", 2, (parse_element("QueryRetrieveLevel=STUDY"), parse_element(f"StudyInstanceUID={study_uid}")))


@pytest.mark.parametrize("by_message_id", [True, False])
async def test_instances_are_attributed_and_placed(tmp_path: Path, by_message_id: bool) -> None:
    """An instance is attributed by Move Originator Message ID, or else by its UIDs, then placed."""
    sink = Sink()
    retriever = _retriever(tmp_path, sink)
    study = str(dcmread(CT).StudyInstanceUID)
    async with retriever.running():
        flight = retriever.tracker.open(_request(study if not by_message_id else "9.9.9"))
        item = _received(retriever, flight.message_id if by_message_id else None)
        status = await anyio.to_thread.run_sync(retriever.on_received, item)
        await flight.wait_idle()
        retriever.tracker.close(flight)
    assert status == 0x0000
    assert flight.received == {item.sop_instance}
    assert [(r.sop_uid, r.request_key, r.state) for r in sink.records] == [(item.sop_instance, "k", "stored")]
    assert (tmp_path / "out" / sink.records[0].path).is_file()


async def test_instances_of_no_request_are_refused(tmp_path: Path) -> None:
    """A C-STORE that belongs to no request in flight is refused and its spool file removed."""
    sink = Sink()
    retriever = _retriever(tmp_path, sink)
    async with retriever.running():
        flight = retriever.tracker.open(_request("9.9.9"))
        item = _received(retriever, None)
        status = await anyio.to_thread.run_sync(retriever.on_received, item)
        retriever.tracker.close(flight)
    assert status == 0xC000
    assert not item.path.exists()
    assert sink.records == []
    assert retriever.tracker.refused == 1
