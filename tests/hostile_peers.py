"""Scripted hostile PACS for the end-to-end suite (#15): a raw-socket peer that answers C-FINDs
and C-GETs as a PACS would, except for the one thing each case makes it do wrong.

A :class:`Behaviour` decides how the association is answered and what is sent for each C-FIND
and C-GET; the defaults behave (no matches, no instances), so a case overrides one step."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom.dsutils import encode

from asyncdicom.net.acse import AssociateRequest, associate_ac, parse_associate_rq
from asyncdicom.net.dimse import pack_command, ui, us
from asyncdicom.net.pdu import HEADER, p_data
from tests.hostile import Listener, read_pdu

EXPLICIT = "1.2.840.10008.1.2.1"
CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY = generate_uid()  # the study every case's request asks for
SERIES = generate_uid()


@dataclass
class Request:
    """A DIMSE request as the peer read it."""

    context_id: int
    command: int
    message_id: int
    sop_class: str
    data: bytes


def _elements(command: bytes) -> dict[int, bytes]:
    """The (0000,xxxx) elements of an Implicit VR Little Endian command set."""
    out: dict[int, bytes] = {}
    offset = 0
    while offset + 8 <= len(command):
        _, element, length = struct.unpack_from("<HHL", command, offset)
        out[element] = command[offset + 8 : offset + 8 + length]
        offset += 8 + length
    return out


def read_request(sock: socket.socket) -> Request:
    """Read a command set and its data set (if one follows)."""
    command, data = b"", b""
    while True:
        kind, pdu = read_pdu(sock)
        if kind != 0x04:
            raise ConnectionError(f"PDU type {kind}")
        offset = 6
        while offset < len(pdu):
            length, context_id, control = struct.unpack_from(">LBB", pdu, offset)
            fragment = pdu[offset + 6 : offset + 4 + length]
            offset += 4 + length
            if control & 0x01:
                command += fragment
                if control & 0x02:
                    fields = _elements(command)
                    if struct.unpack("<H", fields.get(0x0800, b"\x01\x01"))[0] == 0x0101:
                        return _request(context_id, fields, b"")
            else:
                data += fragment
                if control & 0x02:
                    return _request(context_id, _elements(command), data)


def _request(context_id: int, fields: dict[int, bytes], data: bytes) -> Request:
    return Request(
        context_id,
        struct.unpack("<H", fields[0x0100])[0],
        struct.unpack("<H", fields.get(0x0110, b"\0\0"))[0],
        fields.get(0x0002, b"").rstrip(b"\0").decode("ascii", "replace"),
        data,
    )


def response(request: Request, field_: int, status: int, data_set: bool = False, **counts: int) -> bytes:
    """A response command set to ``request`` (``counts``: remaining, completed, failed, warning)."""
    fields = [
        (0x0002, ui(request.sop_class)),
        (0x0100, us(field_)),
        (0x0120, us(request.message_id)),
        (0x0800, us(0x0001 if data_set else 0x0101)),
        (0x0900, us(status)),
    ]
    for name, element in (("remaining", 0x1020), ("completed", 0x1021), ("failed", 0x1022), ("warning", 0x1023)):
        if name in counts:
            fields.append((element, us(counts[name])))
    return p_data(request.context_id, 0x01, pack_command(fields), 16378)


def find_done(sock: socket.socket, request: Request) -> None:
    sock.sendall(response(request, 0x8020, 0x0000))


def get_done(sock: socket.socket, request: Request, completed: int = 0) -> None:
    sock.sendall(response(request, 0x8010, 0x0000, remaining=0, completed=completed, failed=0, warning=0))


def encoded(ds: Dataset) -> bytes:
    """``ds`` as Explicit VR Little Endian bytes (pydicom's encoder, as a PACS would send)."""
    with warnings.catch_warnings():  # pydicom warns of the very values the cases send on purpose
        warnings.simplefilter("ignore")
        data = encode(ds, False, True)
    assert data is not None
    return data


def instance(sop_uid: str | None = None, study: str = STUDY, **values: object) -> Dataset:
    """A small CT instance of the requested study (8×8 pixels), with ``values`` set."""
    ds = Dataset()
    ds.SOPClassUID = CT
    with warnings.catch_warnings():  # a UID that is not one, on purpose
        warnings.simplefilter("ignore")
        ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.PatientID = "P1"
    ds.PatientName = "Hostile^Case"
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = SERIES
    ds.Modality = "CT"
    ds.InstanceNumber = 1
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(128)
    with warnings.catch_warnings():  # a UID that is not one, on purpose
        warnings.simplefilter("ignore")
        for keyword, value in values.items():
            setattr(ds, keyword, value)
    if any(isinstance(value, str) and not value.isascii() for value in values.values()):
        ds.SpecificCharacterSet = "ISO_IR 192"
    return ds


def store_command(context_id: int, message_id: int, sop_uid: str, sop_class: str = CT) -> bytes:
    command = pack_command(
        [
            (0x0002, ui(sop_class)),
            (0x0100, us(0x0001)),
            (0x0110, us(message_id)),
            (0x0700, us(0)),
            (0x0800, us(0x0000)),
            (0x1000, ui(sop_uid)),
        ]
    )
    return p_data(context_id, 0x01, command, 16378)


def storage_context(contexts: dict[int, str], sop_class: str = CT) -> int:
    return next(cid for cid, uid in contexts.items() if uid == sop_class)


def c_store(sock: socket.socket, contexts: dict[int, str], data: bytes, sop_uid: str, message_id: int = 7) -> int:
    """A C-STORE sub-operation of ``data`` on the CT context: the status answered (-1: none)."""
    cid = storage_context(contexts)
    sock.sendall(store_command(cid, message_id, sop_uid) + p_data(cid, 0x00, data, 16378))
    try:
        kind, pdu = read_pdu(sock)
    except (OSError, ConnectionError):
        return -1
    if kind != 0x04:
        return -1
    fields = _elements(pdu[12:])
    return int(struct.unpack("<H", fields.get(0x0900, b"\xff\xff"))[0])


Handler = Callable[[socket.socket, Request, dict[int, str]], None]
Answer = Callable[[socket.socket, AssociateRequest], dict[int, str] | None]


def accept_all(sock: socket.socket, request: AssociateRequest) -> dict[int, str]:
    """Accept every proposed context (Explicit VR Little Endian when offered)."""
    results, contexts = [], {}
    for context_id, abstract, syntaxes in request.contexts:
        results.append((context_id, 0, EXPLICIT if EXPLICIT in syntaxes else syntaxes[0]))
        contexts[context_id] = abstract
    sock.sendall(associate_ac(request, results))
    return contexts


@dataclass
class Behaviour:
    """How the peer answers: the association, each C-FIND, each C-GET (defaults behave)."""

    answer: Answer = accept_all
    find: Handler = lambda sock, request, contexts: find_done(sock, request)
    get: Handler = lambda sock, request, contexts: get_done(sock, request)
    raw: Callable[[socket.socket, bytes], None] | None = None  # replaces everything after the A-ASSOCIATE-RQ


class HostilePeer(Listener):
    """A listening socket serving :class:`Behaviour` on each connection, in daemon threads."""

    def __init__(self, behaviour: Behaviour) -> None:
        super().__init__()
        self.behaviour = behaviour

    def _serve(self, sock: socket.socket) -> None:
        behaviour = self.behaviour
        with sock, contextlib.suppress(OSError, ConnectionError):
            sock.settimeout(60)
            _, pdu = read_pdu(sock)
            if behaviour.raw is not None:
                behaviour.raw(sock, pdu)
                return
            contexts = behaviour.answer(sock, parse_associate_rq(pdu))
            if contexts is None:
                return
            while True:
                try:
                    request = read_request(sock)
                except ConnectionError:
                    return  # released or aborted
                if request.command & 0x8000:  # a response of ours (to a C-STORE sent without c_store)
                    continue
                if request.command == 0x0020:
                    behaviour.find(sock, request, contexts)
                elif request.command == 0x0010:
                    behaviour.get(sock, request, contexts)
                elif request.command == 0x0030:
                    sock.sendall(response(request, 0x8030, 0x0000))


def trickle(sock: socket.socket, data: bytes, every: float) -> None:
    """Send ``data`` one byte at a time, ``every`` seconds apart, until the peer hangs up."""
    for byte in data:
        sock.sendall(bytes((byte,)))
        time.sleep(every)


def pdu_header(kind: int, length: int) -> bytes:
    return HEADER.pack(kind, length)
