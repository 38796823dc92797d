"""The lean requestor association against pynetdicom's own SCP: wire compatibility and aborts."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest
from pydicom.dataset import Dataset

from asyncdicom.demo import demo_datasets
from asyncdicom.errors import AssociationAborted, SilentPeer
from asyncdicom.net.lean import LeanAssociation
from asyncdicom.net.qrscp import Faults, QueryRetrieveSCP

pytestmark = pytest.mark.network

STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
VERIFICATION = "1.2.840.10008.1.1"
DATASETS = demo_datasets(patients=3, studies=2, series=1, instances=1)


@pytest.fixture
def scp() -> Iterator[QueryRetrieveSCP]:
    server = QueryRetrieveSCP(DATASETS, ae_title="PEER")
    server.start()
    yield server
    server.stop()


def _open(port: int, syntaxes: list[str] | None = None) -> LeanAssociation:
    return LeanAssociation.open(
        "127.0.0.1",
        port,
        called="PEER",
        calling="LEAN",
        abstract_syntaxes=syntaxes or [VERIFICATION, STUDY_FIND],
        connect_timeout=5,
        timeout=10,
    )


def _query(**values: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = ""
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def test_echo_find_and_release(scp: QueryRetrieveSCP) -> None:
    """C-ECHO and C-FIND work over one association with TCP_NODELAY set; release is clean."""
    assoc = _open(scp.port)
    assert assoc._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    assert assoc.echo(1) == 0
    responses = list(assoc.find(STUDY_FIND, _query(PatientID=str(DATASETS[0].PatientID)), 2))
    assert [r.status for r in responses] == [0xFF00, 0xFF00, 0x0000]
    assert {str(r.dataset.StudyInstanceUID) for r in responses[:2]} == {
        str(ds.StudyInstanceUID) for ds in DATASETS if ds.PatientID == DATASETS[0].PatientID
    }
    assoc.release()
    assert not assoc.alive


def test_large_identifier_is_fragmented_to_the_peer_limit() -> None:
    """An identifier larger than the peer's maximum PDU is split into fragments it accepts."""
    server = QueryRetrieveSCP(DATASETS, ae_title="PEER", faults=Faults(max_pdu=4096))
    server.start()
    try:
        assoc = _open(server.port)
        assert assoc._peer_max_pdu == 4096
        uids = [f"1.2.840.99.{i}.{'1' * 40}" for i in range(150)] + [str(DATASETS[0].StudyInstanceUID)]
        ds = _query()
        ds.StudyInstanceUID = uids
        responses = list(assoc.find(STUDY_FIND, ds, 1))
        assert [r.status for r in responses] == [0xFF00, 0x0000]
        assert responses[0].dataset.StudyInstanceUID == DATASETS[0].StudyInstanceUID
        assoc.release()
    finally:
        server.stop()


def test_abort_wakes_a_blocked_request() -> None:
    """abort(silent=True) from another thread ends a request the PACS never answers, at once."""
    server = QueryRetrieveSCP(DATASETS, ae_title="PEER", faults=Faults(silent_every=1))
    server.start()
    try:
        assoc = _open(server.port)
        errors: list[BaseException] = []

        def blocked() -> None:
            try:
                list(assoc.find(STUDY_FIND, _query(), 1))
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=blocked)
        thread.start()
        assert server.started.wait(10), "the request never reached the SCP"
        assoc.abort(silent=True)
        thread.join(5)
        assert not thread.is_alive()
        assert len(errors) == 1 and isinstance(errors[0], SilentPeer)
    finally:
        server.stop()


def test_peer_abort_is_reported(scp: QueryRetrieveSCP) -> None:
    """A PACS that aborts mid-request raises AssociationAborted and marks the association dead."""
    scp.faults = Faults(abort_every=1)
    assoc = _open(scp.port)
    with pytest.raises(AssociationAborted):
        list(assoc.find(STUDY_FIND, _query(), 1))
    assert not assoc.alive


def test_rejected_context_is_absent(scp: QueryRetrieveSCP) -> None:
    """Abstract syntaxes the peer does not accept are missing from the negotiated contexts."""
    assoc = _open(scp.port, [VERIFICATION, "1.2.840.10008.5.1.4.31"])  # Modality Worklist FIND: not offered
    assert set(assoc.contexts) == {VERIFICATION}
    assoc.release()
