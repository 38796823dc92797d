"""DIMSE messages over P-DATA-TF PDUs (PS3.7 Annex E, PS3.8 9.3.5), coded by hand.

Command sets are a fixed handful of group 0000 elements in Implicit VR Little Endian: packing
and parsing them directly costs a fraction of building pydicom datasets for them. One reader,
:class:`MessageReader`, turns an association's PDUs into DIMSE events for both roles (the
requestor in :mod:`asyncdicom.net.lean`, the acceptor in :mod:`asyncdicom.net.scp`): whole
command sets (bounded), and data set fragments as they arrive (streamed, never accumulated
here). Malformed bytes raise :class:`~asyncdicom.errors.ProtocolError` only.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Protocol

from asyncdicom.errors import ProtocolError
from asyncdicom.net.pdu import PduReader, PduType, fragment_size, p_data, pdvs

MAX_COMMAND = 64 * 1024
"""The largest command set we reassemble: a real one is under 300 bytes."""


class CommandField(IntEnum):
    """DIMSE command fields (PS3.7 E.1)."""

    C_STORE_RQ = 0x0001
    C_STORE_RSP = 0x8001
    C_GET_RQ = 0x0010
    C_GET_RSP = 0x8010
    C_FIND_RQ = 0x0020
    C_FIND_RSP = 0x8020
    C_MOVE_RQ = 0x0021
    C_MOVE_RSP = 0x8021
    C_ECHO_RQ = 0x0030
    C_ECHO_RSP = 0x8030
    C_CANCEL_RQ = 0x0FFF


class Status(IntEnum):
    """The DIMSE statuses asyncdicom sends or acts on by name (PS3.7 C, PS3.4 C.4)."""

    SUCCESS = 0x0000
    CANCEL = 0xFE00
    PENDING = 0xFF00
    PENDING_WARNING = 0xFF01
    OUT_OF_RESOURCES = 0xA700
    MOVE_DESTINATION_UNKNOWN = 0xA801
    UNABLE_TO_PROCESS = 0xC000


PENDING = (Status.PENDING, Status.PENDING_WARNING)


class Tag(IntEnum):
    """Group 0000 elements (PS3.7 E.1-1)."""

    GROUP_LENGTH = 0x0000
    AFFECTED_SOP_CLASS = 0x0002
    COMMAND_FIELD = 0x0100
    MESSAGE_ID = 0x0110
    MESSAGE_ID_RESPONDED_TO = 0x0120
    MOVE_DESTINATION = 0x0600
    PRIORITY = 0x0700
    DATA_SET_TYPE = 0x0800
    STATUS = 0x0900
    ERROR_COMMENT = 0x0902
    AFFECTED_SOP_INSTANCE = 0x1000
    REMAINING = 0x1020
    COMPLETED = 0x1021
    FAILED = 0x1022
    WARNING = 0x1023
    MOVE_ORIGINATOR_AE = 0x1030
    MOVE_ORIGINATOR_MESSAGE_ID = 0x1031


NO_DATA_SET = 0x0101
PRIORITY_LOW = 0x0002  # a research batch should not push ahead of clinical work
COUNT_NAMES = {Tag.REMAINING: "remaining", Tag.COMPLETED: "completed", Tag.FAILED: "failed", Tag.WARNING: "warning"}


@dataclass(slots=True)
class Command:
    """The fields of a command set that asyncdicom reads."""

    field: int = 0
    status: int = 0xFFFF
    has_dataset: bool = False
    comment: str | None = None
    message_id: int = 0
    sop_class: str = ""
    sop_instance: str = ""
    counts: dict[str, int] | None = None
    move_message_id: int | None = None
    responded_to: int | None = None  # (0000,0120) Message ID Being Responded To


Reply = tuple[int, Callable[[], None] | None]
"""A C-STORE status, and work to run after the response is sent (so the peer is not kept waiting)."""


class StoreFile(Protocol):
    """Where one received data set is written, fragment by fragment."""

    def write(self, data: bytes | memoryview) -> None: ...

    def discard(self) -> None: ...


OpenFile = Callable[[str, str, str, str], StoreFile]
"""(SOP class, SOP instance, transfer syntax, calling AE) → a new file for a received data set."""


class StoreSink(Protocol):
    """Where a C-STORE sub-operation received over C-GET goes, fragment by fragment."""

    def begin(self, sop_class: str, sop_instance: str, transfer_syntax: str) -> StoreFile:
        """Open the file that the data set fragments are written to."""

    def end(self, file: StoreFile, ok: bool) -> Reply:
        """The data set is complete (``ok``) or broken off: the C-STORE status to answer, and what
        to do once it is answered (or the answer failed)."""


# --- command sets ---------------------------------------------------------------------------------

ELEMENT = struct.Struct("<HHL")
US = struct.Struct("<H")


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


# plain ints for the parser: comparing with IntEnum members costs a subclass check each time
_STATUS, _FIELD, _DATA_SET_TYPE = int(Tag.STATUS), int(Tag.COMMAND_FIELD), int(Tag.DATA_SET_TYPE)
_MESSAGE_ID, _MOVE_MESSAGE_ID = int(Tag.MESSAGE_ID), int(Tag.MOVE_ORIGINATOR_MESSAGE_ID)
_RESPONDED_TO = int(Tag.MESSAGE_ID_RESPONDED_TO)
_SOP_CLASS, _SOP_INSTANCE, _COMMENT = (
    int(Tag.AFFECTED_SOP_CLASS),
    int(Tag.AFFECTED_SOP_INSTANCE),
    int(Tag.ERROR_COMMENT),
)
_COUNTS = {int(tag): name for tag, name in COUNT_NAMES.items()}
_OPTIONAL = frozenset({_MOVE_MESSAGE_ID, *_COUNTS})  # ignored when not 2 bytes long, as peers may send them empty
_NUMBERS = frozenset({_STATUS, _FIELD, _DATA_SET_TYPE, _MESSAGE_ID, _RESPONDED_TO, *_OPTIONAL})


def parse_command(raw: bytes) -> Command:
    """The command set's fields; ProtocolError for an element that runs past the end or a
    number of the wrong size."""
    command = Command()
    offset, end = 0, len(raw)
    unpack_element, unpack_us = ELEMENT.unpack_from, US.unpack
    while offset < end:
        if offset + 8 > end:
            msg = "a command set that ends inside an element header"
            raise ProtocolError(msg)
        group, element, length = unpack_element(raw, offset)
        if group != 0 or offset + 8 + length > end:
            msg = f"a command set element ({group:04X},{element:04X}) that does not fit the command set"
            raise ProtocolError(msg)
        value = raw[offset + 8 : offset + 8 + length]
        offset += 8 + length
        if element == 0 and length == 4:  # the group length: what follows it, exactly
            declared = int.from_bytes(value, "little")
            if declared != end - offset:
                msg = f"a command set whose group length (0000,0000) says {declared} bytes where {end - offset} follow"
                raise ProtocolError(msg)
            continue
        if element in _NUMBERS:
            if length != 2:
                if element in _OPTIONAL:
                    continue
                msg = f"a command element (0000,{element:04X}) of {length} bytes where 2 are required"
                raise ProtocolError(msg)
            number = unpack_us(value)[0]
            if element == _STATUS:
                command.status = number
            elif element == _FIELD:
                command.field = number
            elif element == _DATA_SET_TYPE:
                command.has_dataset = number != NO_DATA_SET
            elif element == _MESSAGE_ID:
                command.message_id = number
            elif element == _RESPONDED_TO:
                command.responded_to = number
            elif element == _MOVE_MESSAGE_ID:
                command.move_message_id = number
            else:
                command.counts = command.counts or {}
                command.counts[_COUNTS[element]] = number
        elif element == _SOP_CLASS:
            command.sop_class = text(value)
        elif element == _SOP_INSTANCE:
            command.sop_instance = text(value)
        elif element == _COMMENT:
            command.comment = text(value) or None
    return command


def response(command: Command, field: CommandField, status: int) -> bytes:
    """The response command set to ``command`` (no data set): C-STORE-RSP or C-ECHO-RSP."""
    fields = [
        (Tag.AFFECTED_SOP_CLASS, ui(command.sop_class)),
        (Tag.COMMAND_FIELD, us(field)),
        (Tag.MESSAGE_ID_RESPONDED_TO, us(command.message_id)),
        (Tag.DATA_SET_TYPE, us(NO_DATA_SET)),
        (Tag.STATUS, us(status)),
    ]
    if command.sop_instance:
        fields.append((Tag.AFFECTED_SOP_INSTANCE, ui(command.sop_instance)))
    return pack_command([(int(tag), value) for tag, value in fields])


def check_store(event: CommandEvent, abstract_of: Mapping[int, str], peer: str) -> None:
    """ProtocolError unless a C-STORE came on a presentation context we accepted
    (``abstract_of``: context ID → abstract syntax), for that context's SOP class (PS3.7 9.1.1)."""
    abstract = abstract_of.get(event.context_id)
    if abstract is None:
        msg = f"{peer} sent a C-STORE on presentation context {event.context_id}, never accepted"
        raise ProtocolError(msg)
    if event.command.sop_class != abstract:
        sop_class = event.command.sop_class[:64]
        msg = f"{peer} sent a C-STORE of SOP class {sop_class!r} on the presentation context for {abstract}"
        raise ProtocolError(msg)


# --- one reader for both roles ----------------------------------------------------------------


@dataclass(slots=True)
class CommandEvent:
    """A whole command set arrived on presentation context ``context_id``."""

    context_id: int
    command: Command


@dataclass(slots=True)
class DataEvent:
    """A fragment of a data set (valid until the next event); ``last`` ends the data set."""

    context_id: int
    fragment: memoryview
    last: bool


@dataclass(slots=True)
class OtherPdu:
    """A PDU other than P-DATA-TF (release or abort): the role decides what it means."""

    kind: PduType


Event = CommandEvent | DataEvent | OtherPdu
_MESSAGE_PHASE = frozenset({PduType.P_DATA_TF, PduType.RELEASE_RQ, PduType.RELEASE_RP, PduType.ABORT})


class MessageReader:
    """DIMSE events from an established association: command sets reassembled within
    :data:`MAX_COMMAND`, data set fragments passed on as they arrive (the caller streams or
    bounds them), anything else as :class:`OtherPdu`."""

    __slots__ = ("_command", "_pdus", "peer")

    def __init__(self, pdus: PduReader) -> None:
        self._pdus = pdus
        self.peer = pdus.peer
        self._command = bytearray()

    def events(self) -> Generator[Event, None, None]:
        """Every event until the caller stops; the PDU buffer is dropped as soon as it is spent."""
        command = self._command
        while True:
            kind, pdu = self._pdus.read(_MESSAGE_PHASE)
            if kind is not PduType.P_DATA_TF:
                command.clear()
                yield OtherPdu(kind)
                continue
            for context_id, control, fragment in pdvs(pdu, self.peer):
                if control & 0x01:
                    if len(command) + len(fragment) > MAX_COMMAND:
                        command.clear()
                        msg = f"{self.peer} sent a command set of more than {MAX_COMMAND} bytes"
                        raise ProtocolError(msg)
                    command += fragment
                    if control & 0x02:
                        parsed = parse_command(bytes(command))
                        command.clear()
                        yield CommandEvent(context_id, parsed)
                else:
                    yield DataEvent(context_id, fragment, bool(control & 0x02))
            del pdu

    def reset(self) -> None:
        """Forget a partly received command set (after a failed request)."""
        self._command = bytearray()


class BoundedBuffer:
    """A data set that must be kept whole (a C-FIND identifier), refused beyond ``limit`` bytes."""

    __slots__ = ("data", "limit", "what")

    def __init__(self, limit: int, what: str) -> None:
        self.data = bytearray()
        self.limit = limit
        self.what = what

    def add(self, fragment: memoryview) -> None:
        if len(self.data) + len(fragment) > self.limit:
            self.data = bytearray()
            msg = f"{self.what} of more than {self.limit} bytes"
            raise ProtocolError(msg)
        self.data += fragment


def send_message(sock: socket.socket, context_id: int, command: bytes, dataset: bytes | None, peer_max: int) -> None:
    """Send a command set (and data set) as P-DATA-TF PDUs within the peer's maximum length."""
    chunk = fragment_size(peer_max)
    pdus = [p_data(context_id, 0x01, command, chunk)]
    if dataset is not None:
        pdus.append(p_data(context_id, 0x00, dataset, chunk))
    sock.sendall(b"".join(pdus))


def use_kernel_timeouts(sock: socket.socket, seconds: float) -> None:
    """Make ``sock`` blocking, with receives and sends that give up after ``seconds``
    (SO_RCVTIMEO/SO_SNDTIMEO, raising OSError like a Python timeout would).

    A Python timeout costs a poll() before every recv(); with the kernel's timeout a whole PDU
    body arrives in one recv(MSG_WAITALL): fewer system calls, and fewer GIL hand-overs
    between the receive threads."""
    if (
        not (hasattr(socket, "SO_RCVTIMEO") and hasattr(socket, "MSG_WAITALL"))
        or struct.calcsize("l") != 8
        or isinstance(sock, ssl.SSLSocket)  # a TLS record read cut by the kernel would look like a failure
    ):
        sock.settimeout(seconds)
        return
    sock.settimeout(None)
    whole = int(seconds)
    value = struct.pack("ll", whole, int((seconds - whole) * 1_000_000))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
