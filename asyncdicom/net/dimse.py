"""DIMSE and PDU pieces on the hot path, coded by hand (PS3.7 Annex E, PS3.8 9.3).

Command sets are a fixed handful of group 0000 elements in Implicit VR Little Endian, and
P-DATA-TF PDUs are a list of PDV items: packing and parsing them directly costs a fraction of
building pydicom datasets for them. Association negotiation is :mod:`asyncdicom.net.acse`.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from asyncdicom.errors import AssociationAborted

HEADER = struct.Struct(">BxL")


@dataclass(slots=True)
class Command:
    field: int = 0
    status: int = 0xFFFF
    has_dataset: bool = False
    comment: str | None = None
    message_id: int = 0
    sop_class: str = ""
    sop_instance: str = ""
    counts: dict[str, int] | None = None
    move_message_id: int | None = None


COUNT_NAMES = {0x1020: "remaining", 0x1021: "completed", 0x1022: "failed", 0x1023: "warning"}


Reply = tuple[int, Callable[[], None] | None]
"""A C-STORE status, and work to run after the response is sent (so the peer is not kept waiting)."""


class StoreSink(Protocol):
    """Where a C-STORE sub-operation received over C-GET goes, fragment by fragment."""

    def begin(self, sop_class: str, sop_instance: str, transfer_syntax: str) -> StoreFile:
        """Open the file that the data set fragments are written to."""

    def end(self, file: StoreFile, ok: bool) -> Reply:
        """The data set is complete (``ok``) or broken off: the C-STORE status to answer, and what
        to do once it is answered (or the answer failed)."""


class StoreFile(Protocol):
    def write(self, data: bytes | memoryview) -> None: ...

    def discard(self) -> None: ...


# --- command sets and PDVs (PS3.7 E, PS3.8 9.3.5): the hot path, coded by hand -------------------

ELEMENT = struct.Struct("<HHL")
US = struct.Struct("<H")
PDV = struct.Struct(">LBB")


def ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def us(value: int) -> bytes:
    return US.pack(value)


def ae(title: str) -> bytes:
    return title.encode("ascii").ljust(16)


def pack_command(fields: list[tuple[int, bytes]]) -> bytes:
    """A group 0000 command set, Implicit VR Little Endian, with its group length first."""
    body = b"".join(ELEMENT.pack(0, element, len(value)) + value for element, value in fields)
    return ELEMENT.pack(0, 0, 4) + struct.pack("<L", len(body)) + body


def text(value: bytes) -> str:
    return value.decode("ascii", "replace").rstrip(" \0")


def parse_command(raw: bytes) -> Command:
    command = Command()
    offset = 0
    while offset + 8 <= len(raw):
        _, element, length = ELEMENT.unpack_from(raw, offset)
        value = raw[offset + 8 : offset + 8 + length]
        offset += 8 + length
        if element == 0x0900:
            command.status = US.unpack(value)[0]
        elif element == 0x0100:
            command.field = US.unpack(value)[0]
        elif element == 0x0800:
            command.has_dataset = US.unpack(value)[0] != 0x0101
        elif element == 0x0902:
            command.comment = text(value) or None
        elif element == 0x0110:
            command.message_id = US.unpack(value)[0]
        elif element == 0x0002:
            command.sop_class = text(value)
        elif element == 0x1031 and length == 2:
            command.move_message_id = US.unpack(value)[0]
        elif element == 0x1000:
            command.sop_instance = text(value)
        elif element in COUNT_NAMES and length == 2:
            command.counts = command.counts or {}
            command.counts[COUNT_NAMES[element]] = US.unpack(value)[0]
    return command


def p_data(context_id: int, control: int, data: bytes, chunk: int) -> bytes:
    """P-DATA-TF PDUs carrying ``data`` in fragments of at most ``chunk`` bytes; the last one flagged."""
    out = []
    for start in range(0, max(len(data), 1), chunk):
        fragment = data[start : start + chunk]
        last = 0x02 if start + chunk >= len(data) else 0x00
        item = PDV.pack(len(fragment) + 2, context_id, control | last) + fragment
        out.append(HEADER.pack(0x04, len(item)) + item)
    return b"".join(out)


def pdvs(pdu: bytes | bytearray) -> Iterator[tuple[int, int, memoryview]]:
    """(context ID, message control header, fragment) of every PDV item of a P-DATA-TF PDU."""
    view = memoryview(pdu)
    offset = 6
    while offset + 6 <= len(pdu):
        length, context_id, control = PDV.unpack_from(pdu, offset)
        yield context_id, control, view[offset + 6 : offset + 4 + length]
        offset += 4 + length


def use_kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking, with receives and sends that give up after ``seconds``
    (SO_RCVTIMEO/SO_SNDTIMEO, raising OSError like a Python timeout would).

    A Python timeout costs a poll() before every recv(); with the kernel's timeout a whole PDU
    body arrives in one recv(MSG_WAITALL): fewer system calls, and fewer GIL hand-overs
    between the receive threads."""
    if not (hasattr(socket, "SO_RCVTIMEO") and hasattr(socket, "MSG_WAITALL")) or struct.calcsize("l") != 8:
        sock.settimeout(seconds)
        return
    sock.settimeout(None)
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


_WAITALL = getattr(socket, "MSG_WAITALL", 0)


def _fill(sock: socket.socket, view: memoryview) -> None:
    got, size = 0, len(view)
    while got < size:
        n = sock.recv_into(view[got:], size - got, _WAITALL)
        if n == 0:
            msg = "connection closed"
            raise AssociationAborted(msg)
        got += n


def read_pdu(sock: socket.socket) -> tuple[int, bytearray]:
    """One whole PDU: its type and all its bytes (header included, as pynetdicom decodes them),
    read into one buffer without further copies."""
    header = bytearray(6)
    _fill(sock, memoryview(header))
    kind, length = HEADER.unpack(header)
    pdu = bytearray(6 + length)
    pdu[:6] = header
    _fill(sock, memoryview(pdu)[6:])
    return kind, pdu


def release_rq() -> bytes:
    """A-RELEASE-RQ (PS3.8 9.3.6)."""
    return HEADER.pack(0x05, 4) + bytes(4)


def release_rp() -> bytes:
    """A-RELEASE-RP (PS3.8 9.3.7)."""
    return HEADER.pack(0x06, 4) + bytes(4)


def abort_rq() -> bytes:
    """A-ABORT from the service user, no reason given (PS3.8 9.3.8)."""
    return HEADER.pack(0x07, 4) + bytes(4)
