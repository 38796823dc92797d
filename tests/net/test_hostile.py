"""Hostile peers: six bytes must not make asyncdicom allocate gigabytes, on either side.

Every PDU's type and length are checked before its buffer exists; an association-phase PDU is
bounded by 256 KiB, a P-DATA-TF PDU by the 1 MiB we advertise; a response identifier by 1 MiB and
a library value by 64 KiB; the storage SCP serves a bounded number of connections."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import struct
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import decode, encode

from asyncdicom.elements import identifier_to_text
from asyncdicom.errors import ProtocolError
from asyncdicom.net.acse import associate_rq
from asyncdicom.net.dimse import Reply, pack_command, ui, us
from asyncdicom.net.lean import MAX_IDENTIFIER, LeanAssociation
from asyncdicom.net.pdu import HEADER, MAX_PDU, p_data
from asyncdicom.net.scp import Received, StorageSCP
from asyncdicom.write.spool import spool_opener
from tests.cli_helpers import cli_json
from tests.conftest import find_config, write_yaml
from tests.hostile import HostilePacs, first_request, peak_rss_mb, pending_find_response, read_pdu

pytestmark = pytest.mark.network

STUDY_FIND = "1.2.840.10008.5.1.4.1.2.2.1"
STUDY_GET = "1.2.840.10008.5.1.4.1.2.2.3"
CT = "1.2.840.10008.5.1.4.1.1.2"
HUGE = b"\x01\x00\xff\xff\xff\xf0"  # an A-ASSOCIATE-RQ header claiming 4 GiB


@pytest.fixture
def scp(tmp_path: Path) -> Iterator[StorageSCP]:
    def on_received(item: Received) -> Reply:
        item.file.discard()
        return 0x0000, None

    server = StorageSCP(
        ae_title="ASYNCDICOM",
        port=0,
        allowed_aets=["PEER"],
        max_associations=2,
        open_file=spool_opener(tmp_path / "spool"),
        on_received=on_received,
        host="127.0.0.1",
    )
    server.start()
    yield server
    server.stop()


def _answer(sock: socket.socket) -> bytes:
    """What the SCP sends back before it closes (empty if it just closes)."""
    sock.settimeout(5)
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk


@pytest.mark.parametrize(
    ("sent", "logged"),
    [
        (HUGE, "sent an ASSOCIATE-RQ PDU of 4294967280 bytes, more than the 262144 allowed"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "sent an HTTP request, not DICOM"),
        (b"\x04\x00\x00\x01\x00\x00", "sent an unexpected P-DATA-TF PDU"),
    ],
)
def test_storage_scp_aborts_before_allocating(
    scp: StorageSCP, caplog: pytest.LogCaptureFixture, sent: bytes, logged: str
) -> None:
    """A 4 GiB header, an HTTP request or a PDU out of turn is answered with an A-ABORT at once;
    the process does not grow (it took 2 GB per connection)."""
    before = peak_rss_mb()
    with caplog.at_level(logging.WARNING, "asyncdicom.scp"):
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", scp.port)) as sock:
                sock.sendall(sent)
                assert _answer(sock)[:1] == b"\x07"
    assert peak_rss_mb() - before < 50
    assert logged in caplog.text


def _associate(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(associate_rq("ASYNCDICOM", "PEER", [(CT, ["1.2.840.10008.1.2.1"])], []))
    kind, _ = read_pdu(sock)
    assert kind == 0x02
    return sock


def test_storage_scp_refuses_a_pdu_longer_than_it_advertised(scp: StorageSCP) -> None:
    """After negotiation a P-DATA-TF PDU of more than MAX_PDU bytes is aborted unread."""
    with _associate(scp.port) as sock:
        sock.sendall(HEADER.pack(0x04, MAX_PDU + 1))
        assert _answer(sock)[:1] == b"\x07"


def test_storage_scp_bounds_its_connections(scp: StorageSCP) -> None:
    """Idle connections beyond the bound are closed at once instead of each holding a thread."""
    sockets = [socket.create_connection(("127.0.0.1", scp.port)) for _ in range(scp.max_connections + 10)]
    try:
        deadline = time.monotonic() + 5
        closed = 0
        for sock in sockets:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            with contextlib.suppress(TimeoutError):
                closed += sock.recv(1) == b""
        assert closed >= 10
        assert len(scp._threads) <= scp.max_connections
    finally:
        for sock in sockets:
            sock.close()


def _lean(port: int, syntaxes: list[str]) -> LeanAssociation:
    return LeanAssociation.open(
        "127.0.0.1", port, called="PEER", calling="LEAN", abstract_syntaxes=syntaxes, connect_timeout=5, timeout=10
    )


def test_requestor_refuses_an_oversized_associate_answer() -> None:
    """A PACS answering the A-ASSOCIATE-RQ with a 4 GiB header gets an A-ABORT and a clear error."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    before = peak_rss_mb()

    import threading

    def serve() -> None:
        sock, _ = listener.accept()
        with sock:
            read_pdu(sock)
            sock.sendall(b"\x02\x00\xff\xff\xff\xf0")
            sock.settimeout(5)
            assert sock.recv(1) == b"\x07"

    thread = threading.Thread(target=serve)
    thread.start()
    with listener, pytest.raises(ProtocolError, match="ASSOCIATE-AC PDU of 4294967280 bytes"):
        _lean(port, [STUDY_FIND])
    thread.join(10)
    assert peak_rss_mb() - before < 50


def test_requestor_refuses_a_store_followed_by_a_huge_pdu() -> None:
    """A C-STORE command followed by a 4 GiB P-DATA-TF header during a C-GET: A-ABORT, ProtocolError."""

    def script(sock: socket.socket, contexts: dict[int, str]) -> None:
        first_request(sock)
        store = pack_command(
            [(0x0002, ui(CT)), (0x0100, us(0x0001)), (0x0110, us(1)), (0x0800, us(0x0000)), (0x1000, ui("1.2.3"))]
        )
        ct_context = next(cid for cid, uid in contexts.items() if uid == CT)
        sock.sendall(p_data(ct_context, 0x03, store, 1 << 20) + b"\x04\x00\xff\xff\xff\xf0")

    written: list[int] = []
    ended: list[bool] = []

    class File:
        def write(self, data: bytes | memoryview) -> None:
            written.append(len(data))

        def discard(self) -> None:
            pass

    class Sink:
        def begin(self, *args: str) -> File:
            return File()

        def end(self, file: object, ok: bool) -> Reply:
            ended.append(ok)
            return 0xA700, None

    with HostilePacs(script) as pacs:
        before = peak_rss_mb()
        assoc = LeanAssociation.open(
            "127.0.0.1",
            pacs.port,
            called="PEER",
            calling="LEAN",
            abstract_syntaxes=[STUDY_GET],
            connect_timeout=5,
            timeout=10,
            storage=[(CT, ("1.2.840.10008.1.2.1",))],
        )
        with pytest.raises(ProtocolError, match="P-DATA-TF PDU of 4294967280 bytes, more than the 1048576"):
            list(assoc.get(STUDY_GET, Dataset(), 1, Sink()))  # type: ignore[arg-type]
        assert peak_rss_mb() - before < 50
        assert (written, ended) == ([], [False])  # the broken-off store was ended, nothing written
        assert not assoc.alive
        deadline = time.monotonic() + 5
        while 7 not in pacs.received_after and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 7 in pacs.received_after  # the PACS was told: A-ABORT


def test_endless_find_response_is_cut_at_its_bound() -> None:
    """A C-FIND response whose data set never ends is refused past MAX_IDENTIFIER bytes."""

    def script(sock: socket.socket, contexts: dict[int, str]) -> None:
        context_id, message_id = first_request(sock)
        sock.sendall(pending_find_response(context_id, message_id, STUDY_FIND))
        fragment = p_data(context_id, 0x00, bytes(60000), 1 << 20)[:-60000] + bytes(60000)
        fragment = bytearray(fragment)
        fragment[11] = 0x00  # not the last fragment
        for _ in range(2 * MAX_IDENTIFIER // 60000):
            sock.sendall(fragment)

    with HostilePacs(script) as pacs:
        before = peak_rss_mb()
        assoc = _lean(pacs.port, [STUDY_FIND])
        with pytest.raises(ProtocolError, match=f"response identifier of more than {MAX_IDENTIFIER} bytes"):
            list(assoc.find(STUDY_FIND, Dataset(), 1))
        assert peak_rss_mb() - before < 50


def _long_value_pacs(sock: socket.socket, contexts: dict[int, str]) -> None:
    """Answers each C-FIND with one match whose PatientComments holds 100,000 characters."""
    while True:
        context_id, message_id = first_request(sock)
        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.PatientID = "P1"
        ds.PatientComments = "x" * 100_000
        with warnings.catch_warnings():  # pydicom warns that LT holds at most 10240 characters
            warnings.simplefilter("ignore")
            data = encode(ds, False, True)
        sock.sendall(pending_find_response(context_id, message_id, STUDY_FIND) + p_data(context_id, 0, data, 16378))
        final = pack_command(
            [(0x0002, ui(STUDY_FIND)), (0x0100, us(0x8020)), (0x0120, us(message_id)), (0x0800, us(0x0101)),
             (0x0900, us(0x0000))]
        )  # fmt: skip
        sock.sendall(p_data(context_id, 0x01, final, 16378))


def test_a_library_value_beyond_its_bound_fails_the_request(tmp_path: Path) -> None:
    """A match carrying a 100,000-character value fails its request, once (no retries), with a
    message naming the tag and keyword; the run exits 3 and the library holds no such value."""
    with HostilePacs(_long_value_pacs) as pacs:
        (tmp_path / "batch.csv").write_text("PatientID\nP1\n")
        doc = find_config(
            pacs.port,
            aet="PEER",
            batch="batch.csv",
            threads=1,
            elements=["QueryRetrieveLevel=STUDY", "PatientID", "PatientComments"],
        )
        result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
        assert result.exit_code == 3, result.stderr
        assert (summary["failed"], summary["retries"]) == (1, 0)
        status = cli_json("status", tmp_path / "c.yml")[1]
        assert status["failures"][0]["error"] == (
            "the PACS returned (0010,4000) PatientComments of 100000 bytes, more than the 65536 a "
            "library value may hold; leave it out of request.elements"
        )
        assert pacs.associations == 1


def test_command_set_parser_raises_only_protocol_errors() -> None:
    """A command element that runs past the end is the peer's ProtocolError, not a struct.error."""
    from asyncdicom.net.dimse import parse_command

    with pytest.raises(ProtocolError):
        parse_command(struct.pack("<HHL", 0, 0x0900, 4) + b"\x00\x00")
    with pytest.raises(ProtocolError):
        parse_command(struct.pack("<HHL", 0, 0x0900, 1) + b"\x00")


def _raw(ds: Dataset) -> Dataset:
    """``ds`` as a PACS would send it (explicit VR little endian, sequences of undefined length),
    decoded lazily as the DIMSE layer does."""
    for elem in ds:
        elem.is_undefined_length = elem.VR == "SQ"
    encoded = encode(ds, False, True)
    assert encoded is not None and b"\xff\xff\xff\xff" in encoded  # undefined lengths
    return decode(io.BytesIO(encoded), False, True)


def test_a_sequence_of_undefined_length_is_kept_and_bounded_as_a_whole() -> None:
    small = Dataset()
    small.PatientID = "P1"
    small.OtherPatientIDsSequence = [Dataset()]
    small.OtherPatientIDsSequence[0].PatientID = "OTHER"
    text = identifier_to_text(_raw(small))
    assert json.loads(text["OtherPatientIDsSequence"]) == [{"00100020": {"vr": "LO", "Value": ["OTHER"]}}]
    big = Dataset()
    big.OtherPatientIDsSequence = []
    for n in range(200):  # each value is short; the items together are not
        item = Dataset()
        item.PatientID = f"{n:063d}"
        item.IssuerOfPatientID = "x" * 64
        item.PatientComments = "y" * 300
        big.OtherPatientIDsSequence.append(item)
    with pytest.raises(ProtocolError, match=r"\(0010,1002\) OtherPatientIDsSequence with items of more than the 65536"):
        identifier_to_text(_raw(big))


def test_a_pacs_that_stops_mid_pdu_is_silent_not_closed() -> None:
    """A PDU header promising 100 bytes, 20 sent, then nothing: the kernel's receive timeout ends
    the request as a silent PACS (what to do: raise request.timeout), not as a closed association."""
    from asyncdicom.errors import SilentPeer

    def script(sock: socket.socket, contexts: dict[int, str]) -> None:
        first_request(sock)
        read_pdu(sock)  # the identifier
        sock.sendall(HEADER.pack(0x04, 100) + bytes(20))
        time.sleep(3)  # the peer stays connected and silent; the test ends first

    with HostilePacs(script) as pacs:
        assoc = LeanAssociation.open(
            "127.0.0.1", pacs.port, called="PEER", calling="LEAN", abstract_syntaxes=[STUDY_FIND],
            connect_timeout=5, timeout=0.5,
        )  # fmt: skip
        with pytest.raises(SilentPeer, match="did not answer in time"):
            list(assoc.find(STUDY_FIND, Dataset(), 1))
