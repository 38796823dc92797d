"""Upper layer PDUs on a blocking socket (PS3.8 9.3): types, limits, one reader, the small packers.

Every byte a peer sends is hostile: the reader checks a PDU's type and length against what the
association's phase allows *before* it allocates anything, so a peer (or an HTTP client on
``local.port``) claiming a 4 GB PDU costs six bytes of memory and gets an A-ABORT.
Negotiation PDUs are :mod:`asyncdicom.net.acse`; DIMSE messages are :mod:`asyncdicom.net.dimse`.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Iterator
from enum import IntEnum

from asyncdicom.errors import AssociationAborted, ProtocolError
from asyncdicom.net.pace import Pacer

HEADER = struct.Struct(">BxL")
PDV = struct.Struct(">LBB")

MAX_PDU = 1 << 20
"""The largest P-DATA-TF PDU we receive (our Maximum Length sub-item, PS3.8 D.1): 1 MiB.
DCMTK-based senders use at most 128 KiB; a bigger PDU only costs memory."""
MAX_NEGOTIATION_PDU = 256 * 1024
"""The largest association-phase PDU we accept or expect: 128 presentation contexts offering
every transfer syntax there is, with user information, fit in about 100 KiB."""
MIN_PDU = 4
"""No PDU body is shorter: release and abort bodies are 4 bytes."""


class PduType(IntEnum):
    """PDU types (PS3.8 Table 9-11)."""

    ASSOCIATE_RQ = 0x01
    ASSOCIATE_AC = 0x02
    ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    RELEASE_RQ = 0x05
    RELEASE_RP = 0x06
    ABORT = 0x07


_TYPES = {int(kind): kind for kind in PduType}


def _name(kind: PduType) -> str:
    return kind.name.replace("_", "-")


NEGOTIATION = frozenset({PduType.ASSOCIATE_RQ, PduType.ASSOCIATE_AC, PduType.ASSOCIATE_RJ})
CONTROL_LENGTH = {PduType.ASSOCIATE_RJ: 4, PduType.RELEASE_RQ: 4, PduType.RELEASE_RP: 4, PduType.ABORT: 4}


def describe(header: bytes | bytearray) -> str:
    """What a header that is not a DICOM PDU looks like, for an error message (no payload)."""
    if bytes(header[:4]) in (b"GET ", b"POST", b"HEAD", b"PUT ", b"OPTI", b"HTTP"):
        return "an HTTP request, not DICOM"
    if header[:1] == b"\x16":
        return "a TLS handshake, not plain DICOM"
    if header[:1] == b"\x15" and header[1:2] == b"\x03":
        return "a TLS alert, not plain DICOM (it expects DICOM TLS)"
    return f"a PDU of unknown type 0x{header[0]:02X}"


_WAITALL = getattr(socket, "MSG_WAITALL", 0)


def fill(sock: socket.socket, view: memoryview) -> None:
    """Receive exactly ``len(view)`` bytes into ``view``; AssociationAborted if the peer closes."""
    got, size = 0, len(view)
    flags = 0 if isinstance(sock, ssl.SSLSocket) else _WAITALL  # TLS records are read one at a time
    while got < size:
        n = sock.recv_into(view[got:], size - got, flags)
        if n == 0:
            msg = "connection closed"
            raise AssociationAborted(msg)
        got += n


READ_AHEAD = 64 * 1024
"""What one receive may take from the socket beyond the bytes asked for. A small instance's
PDUs (command, data set) then cost one system call, not one per header and one per body: on
20,000 instances of 1 KB, five fewer receives each, and as many fewer hand-overs of the GIL."""


class PduReader:
    """Reads whole PDUs from one association's socket, within the limits of its phase.

    ``expected`` names the PDU types the current phase allows; ``max_pdu`` bounds a P-DATA-TF
    PDU's length (what we advertised), :data:`MAX_NEGOTIATION_PDU` every other PDU's.
    A violation raises :class:`ProtocolError` before any buffer for the body exists. Bytes are
    received :data:`READ_AHEAD` at a time into a buffer of that fixed size; a body larger than
    what is buffered is received straight into its own buffer.
    """

    __slots__ = (
        "_ahead",
        "_ahead_view",
        "_end",
        "_header",
        "_header_view",
        "_sock",
        "_start",
        "max_pdu",
        "pacer",
        "peer",
    )

    def __init__(self, sock: socket.socket, peer: str, max_pdu: int = MAX_PDU, pacer: Pacer | None = None) -> None:
        self._sock = sock
        self.peer = peer
        self.max_pdu = max_pdu
        self.pacer = pacer  # a cap on received bytes per second, paid before each P-DATA-TF body is read
        self._header = bytearray(6)
        self._header_view = memoryview(self._header)
        self._ahead = bytearray(READ_AHEAD)
        self._ahead_view = memoryview(self._ahead)
        self._start = self._end = 0  # the unread bytes in _ahead

    def _fill(self, view: memoryview) -> None:
        """Exactly ``len(view)`` bytes into ``view``: the buffered ones first, then a receive of
        up to :data:`READ_AHEAD` bytes into the buffer (or, for what does not fit it, straight
        into ``view``). AssociationAborted if the peer closes."""
        got, size = 0, len(view)
        while got < size:
            if self._start == self._end:
                if size - got >= READ_AHEAD:
                    fill(self._sock, view[got:])
                    return
                n = self._sock.recv_into(self._ahead_view, READ_AHEAD)
                if n == 0:
                    msg = "connection closed"
                    raise AssociationAborted(msg)
                self._start, self._end = 0, n
            take = min(size - got, self._end - self._start)
            view[got : got + take] = self._ahead_view[self._start : self._start + take]
            self._start += take
            got += take

    def read(self, expected: frozenset[PduType] | None = None) -> tuple[PduType, bytearray]:
        """The next PDU: its type and all its bytes, header included, in one buffer."""
        self._fill(self._header_view)
        kind, length = HEADER.unpack(self._header)
        pdu_type = _TYPES.get(kind)
        if pdu_type is None:
            msg = f"{self.peer} sent {describe(self._header)}; the association was aborted"
            raise ProtocolError(msg)
        if expected is not None and pdu_type not in expected and pdu_type is not PduType.ABORT:
            msg = f"{self.peer} sent an unexpected {_name(pdu_type)} PDU; the association was aborted"
            raise ProtocolError(msg)
        limit = self.max_pdu if pdu_type is PduType.P_DATA_TF else MAX_NEGOTIATION_PDU
        if length > limit:
            name = _name(pdu_type)
            article = "an" if name[0] in "AEIOU" else "a"
            msg = (
                f"{self.peer} sent {article} {name} PDU of {length} bytes, more than the {limit} allowed; "
                "the association was aborted"
            )
            raise ProtocolError(msg)
        if length < MIN_PDU or length != CONTROL_LENGTH.get(pdu_type, length):
            msg = f"{self.peer} sent a {_name(pdu_type)} PDU of malformed length {length}"
            raise ProtocolError(msg)
        if self.pacer is not None and pdu_type is PduType.P_DATA_TF:
            self.pacer.take(6 + length)
        pdu = bytearray(6 + length)
        pdu[:6] = self._header
        self._fill(memoryview(pdu)[6:])
        return pdu_type, pdu


def pdvs(pdu: bytes | bytearray, peer: str = "the peer") -> Iterator[tuple[int, int, memoryview]]:
    """(context ID, message control header, fragment) of every PDV item of a P-DATA-TF PDU.

    Raises ProtocolError for an item whose length runs past the PDU or is too short to hold
    its header (PS3.8 9.3.5.1)."""
    view = memoryview(pdu)
    offset, end = 6, len(pdu)
    while offset < end:
        if offset + 6 > end:
            msg = f"{peer} sent a P-DATA-TF PDU with a truncated PDV item"
            raise ProtocolError(msg)
        length, context_id, control = PDV.unpack_from(pdu, offset)
        if length < 2 or offset + 4 + length > end:
            msg = f"{peer} sent a PDV item of length {length} that does not fit its P-DATA-TF PDU"
            raise ProtocolError(msg)
        yield context_id, control, view[offset + 6 : offset + 4 + length]
        offset += 4 + length


def p_data(context_id: int, control: int, data: bytes, chunk: int) -> bytes:
    """P-DATA-TF PDUs carrying ``data`` in fragments of at most ``chunk`` bytes; the last one flagged."""
    out = []
    for start in range(0, max(len(data), 1), chunk):
        fragment = data[start : start + chunk]
        last = 0x02 if start + chunk >= len(data) else 0x00
        item = PDV.pack(len(fragment) + 2, context_id, control | last) + fragment
        out.append(HEADER.pack(PduType.P_DATA_TF, len(item)) + item)
    return b"".join(out)


def fragment_size(peer_max_pdu: int) -> int:
    """The largest PDV fragment a PDU within the peer's maximum length can carry (0: unlimited,
    sent in fragments of :data:`MAX_PDU`)."""
    limit = peer_max_pdu if peer_max_pdu > 0 else MAX_PDU
    return max(limit - 6, 1)  # the PDV item's length (4), context ID and control header (2)


def release_rq() -> bytes:
    """A-RELEASE-RQ (PS3.8 9.3.6)."""
    return HEADER.pack(PduType.RELEASE_RQ, 4) + bytes(4)


def release_rp() -> bytes:
    """A-RELEASE-RP (PS3.8 9.3.7)."""
    return HEADER.pack(PduType.RELEASE_RP, 4) + bytes(4)


def abort_rq(source: int = 0, reason: int = 0) -> bytes:
    """A-ABORT (PS3.8 9.3.8): from the service user (source 0) or provider (2, with a reason:
    2 unexpected PDU, 4 unrecognised PDU parameter, 6 invalid PDU parameter value)."""
    return HEADER.pack(PduType.ABORT, 4) + bytes((0, 0, source, reason))
