"""Retriever wiring without a PACS: attribution by message ID or UIDs, refusal, placement."""

from __future__ import annotations

import itertools
from pathlib import Path

import anyio
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from asyncdicom.config import load_config
from asyncdicom.elements import parse_element
from asyncdicom.models import InstanceRecord, Request
from asyncdicom.net.scp import Received
from asyncdicom.retrieve import Retriever
from asyncdicom.stats import RunStats
from asyncdicom.write.spool import SpoolWriter
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


def _received(retriever: Retriever, message_id: int | None, cut: int = 0) -> Received:
    """What the storage SCP hands over: a complete spool file (or ``cut`` bytes short), still open."""
    retriever.spool.mkdir(parents=True, exist_ok=True)
    ds = dcmread(CT, stop_before_pixels=True)
    syntax = "1.2.840.10008.1.2.1"
    writer = SpoolWriter(retriever.spool, transfer_syntax=syntax)
    data = Path(CT).read_bytes()
    writer.write(data[: len(data) - cut])
    return Received(writer, ds.SOPClassUID, ds.SOPInstanceUID, syntax, "ORTHANC", message_id)


def _answer(retriever: Retriever, item: Received) -> int:
    """The SCP thread: status, answer, then the follow-up."""
    status, then = retriever.on_received(item)
    if then is not None:
        then()
    return status


def _request(study_uid: str) -> Request:
    return Request("k", 2, (parse_element("QueryRetrieveLevel=STUDY"), parse_element(f"StudyInstanceUID={study_uid}")))


@pytest.mark.parametrize("by_message_id", [True, False])
async def test_instances_are_attributed_and_placed(tmp_path: Path, by_message_id: bool) -> None:
    """An instance is attributed by Move Originator Message ID among requests its UIDs answer
    (two overlapping requests here: the ID picks the second), or else by its UIDs, then placed."""
    sink = Sink()
    retriever = _retriever(tmp_path, sink)
    study = str(dcmread(CT).StudyInstanceUID)
    async with retriever.running():
        first = retriever.tracker.open(_request(study))
        flight = retriever.tracker.open(_request(study)) if by_message_id else first
        item = _received(retriever, flight.message_id if by_message_id else None)
        status = await anyio.to_thread.run_sync(_answer, retriever, item)
        await retriever.pipeline.settle(flight)
        retriever.tracker.close(flight)
        retriever.tracker.close(first)
    assert status == 0x0000
    assert flight.received == {item.sop_instance}
    assert [(r.sop_uid, r.request_key, r.state) for r in sink.records] == [(item.sop_instance, "k", "stored")]
    assert (tmp_path / "out" / sink.records[0].path).is_file()


async def test_a_guessed_message_id_does_not_attribute_a_foreign_instance(tmp_path: Path) -> None:
    """A sender that uses the message ID of a move in flight, for an instance its request does
    not cover, is refused: the instance is not stored and does not count for that request."""
    sink = Sink()
    retriever = _retriever(tmp_path, sink)
    async with retriever.running():
        flight = retriever.tracker.open(_request("9.9.9"))
        item = _received(retriever, flight.message_id)
        status = await anyio.to_thread.run_sync(_answer, retriever, item)
        retriever.tracker.close(flight)
    assert status == 0xC000
    assert (flight.arrived, flight.received, sink.records) == (0, set(), [])
    assert retriever.tracker.refused == 1


def test_message_ids_are_not_sequential() -> None:
    from asyncdicom.write.tracker import Tracker

    tracker = Tracker()
    ids = [tracker.open(_request(f"1.2.{n}")).message_id for n in range(40)]
    assert len(set(ids)) == 40
    steps = {b - a for a, b in itertools.pairwise(ids)}
    assert len(steps) > 10  # not 1, 2, 3…: not guessable from the last one seen


async def test_a_truncated_data_set_is_refused_not_stored(tmp_path: Path) -> None:
    """An instance whose pixel data is shorter than it declares is refused (the PACS hears it),
    not stored, and does not count for its request (#15)."""
    sink = Sink()
    retriever = _retriever(tmp_path, sink)
    study = str(dcmread(CT).StudyInstanceUID)
    async with retriever.running():
        flight = retriever.tracker.open(_request(study))
        item = _received(retriever, flight.message_id, cut=1000)
        status = await anyio.to_thread.run_sync(_answer, retriever, item)
        retriever.tracker.close(flight)
    assert status == 0xC000
    assert (flight.arrived, sink.records, list(retriever.spool.iterdir())) == (0, [], [])
    assert retriever.tracker.refused == 1


async def test_instances_of_no_request_are_refused(tmp_path: Path) -> None:
    """A C-STORE that belongs to no request in flight is refused and its spool file removed."""
    sink = Sink()
    retriever = _retriever(tmp_path, sink)
    async with retriever.running():
        flight = retriever.tracker.open(_request("9.9.9"))
        item = _received(retriever, None)
        status = await anyio.to_thread.run_sync(_answer, retriever, item)
        retriever.tracker.close(flight)
    assert status == 0xC000
    assert list(retriever.spool.iterdir()) == []
    assert sink.records == []
    assert retriever.tracker.refused == 1


def test_worker_processes_follow_the_cores_this_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """One per usable core but one (for receiving and writing), never fewer than two."""
    from asyncdicom import retrieve

    for cores, expected in ((1, 2), (2, 2), (3, 2), (8, 7)):
        monkeypatch.setattr(retrieve.os, "sched_getaffinity", lambda _pid, n=cores: set(range(n)))
        assert retrieve.worker_processes() == expected
