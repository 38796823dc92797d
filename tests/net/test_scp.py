"""The storage SCP with dcmtk storescu as the peer: allow-list, durable spool files, refusals."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from asyncdicom.errors import NetworkError
from asyncdicom.net.dimse import Reply
from asyncdicom.net.scp import Received, StorageSCP
from asyncdicom.write.spool import spool_opener
from tests.pacs_servers import dcmtk

pytestmark = pytest.mark.network


def _scp(tmp_path: Path, on_received: Callable[[Received], Reply], **limits: Any) -> StorageSCP:
    """Our storage SCP on a free loopback port, accepting ORTHANC, spooling under tmp_path."""
    return StorageSCP(
        ae_title="ASYNCDICOM",
        port=0,
        allowed_aets=["ORTHANC"],
        max_associations=4,
        open_file=spool_opener(tmp_path / "spool"),
        on_received=on_received,
        host="127.0.0.1",
        **limits,
    )


@pytest.fixture
def received(tmp_path: Path) -> Iterator[tuple[StorageSCP, list[Received]]]:
    got: list[Received] = []

    def on_received(item: Received) -> Reply:
        got.append(item)
        item.file.commit()
        return 0x0000, None

    scp = _scp(tmp_path, on_received)
    scp.start()
    yield scp, got
    scp.stop()


def _storescu(port: int, calling: str, *files: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [dcmtk("storescu"), "-aet", calling, "-aec", "ASYNCDICOM", "127.0.0.1", str(port), *files],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_allowed_peer_stores_durable_identical_bytes(
    tmp_path: Path, received: tuple[StorageSCP, list[Received]]
) -> None:
    """A C-STORE from the allowed AE lands in the spool with the same data set, fully described."""
    scp, got = received
    source = get_testdata_file("CT_small.dcm", download=False)
    result = _storescu(scp.port, "ORTHANC", source)
    assert result.returncode == 0, result.stderr
    assert len(got) == 1
    item = got[0]
    original = dcmread(source)
    assert (item.sop_instance, item.calling_ae, item.move_message_id) == (original.SOPInstanceUID, "ORTHANC", None)
    path = item.file.final
    assert path.parent == tmp_path / "spool" and path.suffix == ".dcm"
    assert item.file.size == path.stat().st_size
    assert dcmread(path).PixelData == original.PixelData
    assert item.transfer_syntax == original.file_meta.TransferSyntaxUID
    assert not list((tmp_path / "spool").glob("*.part"))


def test_follow_up_runs_after_the_answer_even_when_refused(tmp_path: Path) -> None:
    """The receiver's follow-up runs once the C-STORE is answered; a refusal reaches the peer."""
    calls: list[str] = []

    def on_received(item: Received) -> Reply:
        item.file.discard()
        return 0xC000, lambda: calls.append(item.sop_instance)

    scp = _scp(tmp_path, on_received)
    scp.start()
    try:
        result = _storescu(scp.port, "ORTHANC", "-v", get_testdata_file("CT_small.dcm", download=False))
    finally:
        scp.stop()  # joins the association threads: their follow-ups have run
    assert "Received Store Response (Error: CannotUnderstand)" in result.stderr, result.stderr  # 0xC000
    assert calls == [str(dcmread(get_testdata_file("CT_small.dcm", download=False)).SOPInstanceUID)]
    assert list((tmp_path / "spool").iterdir()) == []


def test_other_calling_ae_is_rejected(tmp_path: Path, received: tuple[StorageSCP, list[Received]]) -> None:
    """An association from an AE title not on the allow-list is rejected; nothing is stored."""
    scp, got = received
    result = _storescu(scp.port, "INTRUDER", get_testdata_file("CT_small.dcm", download=False))
    assert result.returncode != 0
    assert "Association Rejected" in result.stderr
    assert got == []
    assert list((tmp_path / "spool").glob("*.dcm")) == []


def test_port_in_use_is_a_clear_error(tmp_path: Path, received: tuple[StorageSCP, list[Received]]) -> None:
    """A second SCP on a busy port says which setting to change."""
    scp, _ = received
    other = StorageSCP(
        ae_title="X",
        port=scp.port,
        allowed_aets=["ORTHANC"],
        max_associations=1,
        open_file=spool_opener(tmp_path / "other"),
        on_received=lambda item: (0, None),
        host="127.0.0.1",
    )
    with pytest.raises(
        NetworkError, match=rf"Unable to listen on 127.0.0.1:{scp.port} as .*; choose another port \(local.port\)"
    ):
        other.start()


def test_bind_address_is_where_it_listens(tmp_path: Path) -> None:
    """local.bind_address: the SCP listens on that address only; one not on this machine is named."""
    scp = _scp(tmp_path, lambda item: (0, None))
    scp.host = "127.0.0.2"
    scp.start()
    try:
        assert scp._listener is not None
        assert scp._listener.getsockname()[0] == "127.0.0.2"
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", scp.port), timeout=2)
    finally:
        scp.stop()
    elsewhere = _scp(tmp_path, lambda item: (0, None))
    elsewhere.host = "192.0.2.1"  # TEST-NET-1: never an address of this machine
    with pytest.raises(NetworkError, match=r"give an address of this machine \(local.bind_address\)"):
        elsewhere.start()


# --- the locked-down SCP (#15) -----------------------------------------------------------------


def _locked(tmp_path: Path, got: list[Received], **limits: Any) -> StorageSCP:
    def on_received(item: Received) -> Reply:
        got.append(item)
        item.file.commit()
        return 0x0000, None

    scp = _scp(tmp_path, on_received, **limits)
    scp.start()
    return scp


def test_the_pacs_ae_title_from_a_host_not_allowed_is_refused(tmp_path: Path) -> None:
    """local.allowed_hosts: a peer using the PACS's AE title from elsewhere is refused at once
    (counted, nothing read from it); from an allowed range it stores."""
    got: list[Received] = []
    ct = get_testdata_file("CT_small.dcm", download=False)
    scp = _locked(tmp_path, got, allowed_hosts=["10.0.0.0/8", "192.0.2.7"])
    try:
        assert _storescu(scp.port, "ORTHANC", ct).returncode != 0
        assert scp.refusals["not in local.allowed_hosts"] == 1
    finally:
        scp.stop()
    assert got == []
    scp = _locked(tmp_path, got, allowed_hosts=["127.0.0.0/8"])
    try:
        assert _storescu(scp.port, "ORTHANC", ct).returncode == 0
    finally:
        scp.stop()
    assert len(got) == 1


def test_only_storage_and_verification_contexts_are_accepted(tmp_path: Path) -> None:
    from pynetdicom import AE
    from pynetdicom.sop_class import (
        CTImageStorage,
        ModalityWorklistInformationFind,
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
        Verification,
    )

    got: list[Received] = []
    scp = _locked(tmp_path, got)
    ae = AE(ae_title="ORTHANC")
    for context in (
        Verification,
        CTImageStorage,
        "1.3.12.2.1107.5.9.1",  # a vendor's private storage class
        StudyRootQueryRetrieveInformationModelFind,
        StudyRootQueryRetrieveInformationModelMove,
        ModalityWorklistInformationFind,
    ):
        ae.add_requested_context(context)
    try:
        assoc = ae.associate("127.0.0.1", scp.port, ae_title="ASYNCDICOM")
        assert assoc.is_established
        accepted = {str(context.abstract_syntax) for context in assoc.accepted_contexts}
        assoc.release()
    finally:
        scp.stop()
    assert accepted == {str(Verification), str(CTImageStorage), "1.3.12.2.1107.5.9.1"}


def test_an_instance_over_the_size_limit_aborts_its_association(tmp_path: Path) -> None:
    """local.max_instance_megabytes: a larger instance is cut off as it arrives (its spool file
    removed, the association aborted, the refusal counted); a smaller one is stored."""
    got: list[Received] = []
    scp = _locked(tmp_path, got, max_instance_bytes=20_000)
    try:
        small = get_testdata_file("MR_small.dcm", download=False)  # ~10 KB
        large = get_testdata_file("CT_small.dcm", download=False)  # ~39 KB
        assert _storescu(scp.port, "ORTHANC", small).returncode == 0
        assert _storescu(scp.port, "ORTHANC", large).returncode != 0
        assert scp.refusals["instance larger than local.max_instance_megabytes"] == 1
    finally:
        scp.stop()
    assert [item.sop_instance for item in got] == [str(dcmread(small).SOPInstanceUID)]
    assert len(list((tmp_path / "spool").iterdir())) == 1


def test_connections_per_host_are_bounded(tmp_path: Path) -> None:
    """One address may hold at most max_per_host connections at once; more are closed at once."""
    got: list[Received] = []
    scp = _locked(tmp_path, got, max_per_host=2)
    held = [socket.create_connection(("127.0.0.1", scp.port), timeout=5) for _ in range(2)]
    try:
        extra = socket.create_connection(("127.0.0.1", scp.port), timeout=5)
        extra.settimeout(5)
        assert extra.recv(1) == b""  # closed by the SCP without reading anything
        extra.close()
        assert scp.refusals["2 connections from that address open already"] == 1
    finally:
        for sock in held:
            sock.close()
        scp.stop()
