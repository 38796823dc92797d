"""The storage SCP with dcmtk storescu as the peer: allow-list, durable spool files, refusals."""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from asyncdicom.errors import NetworkError
from asyncdicom.net.dimse import Reply
from asyncdicom.net.scp import Received, StorageSCP
from asyncdicom.write.spool import spool_opener
from tests.pacs_servers import dcmtk

pytestmark = pytest.mark.network


def _scp(tmp_path: Path, on_received: Callable[[Received], Reply]) -> StorageSCP:
    """Our storage SCP on a free loopback port, accepting ORTHANC, spooling under tmp_path."""
    return StorageSCP(
        ae_title="ASYNCDICOM",
        port=0,
        allowed_aets=["ORTHANC"],
        max_associations=4,
        open_file=spool_opener(tmp_path / "spool"),
        on_received=on_received,
        host="127.0.0.1",
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
