"""Association negotiation PDUs read and written by hand (PS3.8 9.3.2–9.3.4).

pynetdicom's PDU classes validate every UID with regular expressions when they decode or
encode; a storage association from a PACS proposes a hundred or more presentation contexts,
which made negotiation cost more CPU than the instances it carried. These functions handle the
same bytes directly, for the requestor (:mod:`asyncdicom.net.lean`) and the acceptor
(:mod:`asyncdicom.net.scp`); the tests check them against pynetdicom's encoders and decoders.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass, field

from asyncdicom.errors import NetworkError, ProtocolError
from asyncdicom.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from asyncdicom.net.pdu import MAX_PDU, PduType

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
_ITEM = struct.Struct(">BxH")
_PDU = struct.Struct(">BxL")
_FIXED = 74  # PDU header (6), protocol version (2), reserved (2), AE titles (32), reserved (32)


@dataclass(slots=True)
class AssociateRequest:
    """What an acceptor needs from an A-ASSOCIATE-RQ."""

    called_ae: str = ""
    calling_ae: str = ""
    contexts: list[tuple[int, str, list[str]]] = field(default_factory=list)  # ID, abstract, transfer syntaxes
    max_pdu: int = 0


def _text(raw: bytes | bytearray | memoryview) -> str:
    return bytes(raw).decode("ascii", "replace").rstrip("\0 ").lstrip(" ")


def _max_length(pdu: bytes | bytearray, start: int, end: int) -> int:
    """The Maximum Length sub-item (0x51) of a user information item, or 0."""
    sub = start
    while sub + 4 <= end:
        kind, length = _ITEM.unpack_from(pdu, sub)
        if kind == 0x51 and length == 4 and sub + 8 <= end:
            return int(struct.unpack_from(">L", pdu, sub + 4)[0])
        sub += 4 + length
    return 0


def parse_associate_rq(pdu: bytes | bytearray) -> AssociateRequest:
    """The AE titles, proposed presentation contexts and maximum PDU length of an A-ASSOCIATE-RQ.

    Raises ProtocolError for a PDU too short to be one; items that run past the end are cut there."""
    if len(pdu) < _FIXED or pdu[0] != PduType.ASSOCIATE_RQ:
        msg = f"an A-ASSOCIATE-RQ of {len(pdu)} bytes, too short to be one"
        raise ProtocolError(msg)
    request = AssociateRequest(called_ae=_text(pdu[10:26]), calling_ae=_text(pdu[26:42]))
    offset = _FIXED
    while offset + 4 <= len(pdu):
        kind, length = _ITEM.unpack_from(pdu, offset)
        body, end = offset + 4, min(offset + 4 + length, len(pdu))
        if kind == 0x20 and length >= 4 and end >= body + 4:
            context_id, abstract, syntaxes = pdu[body], "", []
            sub = body + 4
            while sub + 4 <= end:
                sub_kind, sub_length = _ITEM.unpack_from(pdu, sub)
                value = _text(pdu[sub + 4 : min(sub + 4 + sub_length, end)])
                if sub_kind == 0x30:
                    abstract = value
                elif sub_kind == 0x40:
                    syntaxes.append(value)
                sub += 4 + sub_length
            request.contexts.append((context_id, abstract, syntaxes))
        elif kind == 0x50:
            request.max_pdu = _max_length(pdu, body, end)
        offset = body + length
    return request


def _item(kind: int, value: bytes) -> bytes:
    return _ITEM.pack(kind, len(value)) + value


def _uid(value: str) -> bytes:
    return value.encode("ascii")  # no padding inside PDU items (PS3.8 9.3.2.2)


@dataclass(frozen=True, slots=True)
class UserIdentity:
    """A user identity to negotiate (PS3.7 D.3.3.7): a user name, with a passcode or not. The
    passcode never appears in a repr, a log or a message."""

    username: str
    passcode: bytes = field(default=b"", repr=False)

    MAX_FIELD = 1024  # bytes of each field we send (the PDU allows 65535)

    @property
    def kind(self) -> int:
        """1: user name; 2: user name and passcode."""
        return 2 if self.passcode else 1

    def item(self) -> bytes:
        """The user identity sub-item (0x58), asking for no positive response."""
        primary = self.username.encode("utf-8")
        return _item(
            0x58,
            bytes((self.kind, 0))
            + struct.pack(">H", len(primary))
            + primary
            + struct.pack(">H", len(self.passcode))
            + self.passcode,
        )


def our_user_information(scp_roles: Sequence[str] = (), identity: UserIdentity | None = None) -> bytes:
    """User information item: our maximum receive length (:data:`~asyncdicom.net.pdu.MAX_PDU`),
    implementation class UID, SCP role selection for ``scp_roles`` (SOP classes we store over
    C-GET), version name and, when given, a user identity (PS3.7 D.3.3)."""
    roles = b"".join(
        _item(0x54, struct.pack(">H", len(uid)) + _uid(uid) + b"\x00\x01") for uid in dict.fromkeys(scp_roles)
    )
    return _item(
        0x50,
        _item(0x51, struct.pack(">L", MAX_PDU))
        + _item(0x52, _uid(IMPLEMENTATION_CLASS_UID))
        + roles
        + _item(0x55, IMPLEMENTATION_VERSION_NAME.encode("ascii"))
        + (identity.item() if identity is not None else b""),
    )


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16, b" ")


def associate_rq(
    called: str,
    calling: str,
    proposals: Sequence[tuple[str, Sequence[str]]],
    scp_roles: Sequence[str],
    identity: UserIdentity | None = None,
) -> bytes:
    """An A-ASSOCIATE-RQ proposing (abstract syntax, transfer syntaxes) as contexts 1, 3, 5…"""
    if len(proposals) > 128:
        msg = f"Unable to propose {len(proposals)} presentation contexts as an association allows 128"
        raise NetworkError(msg)
    items = [_item(0x10, _uid(APPLICATION_CONTEXT))]
    for index, (abstract, syntaxes) in enumerate(proposals):
        subs = _item(0x30, _uid(abstract)) + b"".join(_item(0x40, _uid(syntax)) for syntax in syntaxes)
        items.append(_item(0x20, bytes((2 * index + 1, 0, 0, 0)) + subs))
    items.append(our_user_information(scp_roles, identity))
    body = b"\x00\x01\x00\x00" + _ae(called) + _ae(calling) + bytes(32) + b"".join(items)
    return _PDU.pack(PduType.ASSOCIATE_RQ, len(body)) + body


def parse_associate_rj(pdu: bytes | bytearray) -> tuple[int, int, int]:
    """(result, source, reason) of an A-ASSOCIATE-RJ."""
    if len(pdu) < 10:
        return 0, 0, 0
    return pdu[7], pdu[8], pdu[9]


def associate_ac(request: AssociateRequest, results: list[tuple[int, int, str]]) -> bytes:
    """An A-ASSOCIATE-AC answering ``request``: (context ID, result, transfer syntax) per context."""
    items = [_item(0x10, _uid(APPLICATION_CONTEXT))]
    for context_id, result, syntax in results:
        items.append(_item(0x21, bytes((context_id, 0, result, 0)) + _item(0x40, _uid(syntax))))
    items.append(our_user_information())
    body = b"\x00\x01\x00\x00" + _ae(request.called_ae) + _ae(request.calling_ae) + bytes(32) + b"".join(items)
    return _PDU.pack(PduType.ASSOCIATE_AC, len(body)) + body


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ (result 1 permanent / 2 transient, source, reason: PS3.8 Table 9-21)."""
    return _PDU.pack(PduType.ASSOCIATE_RJ, 4) + bytes((0, result, source, reason))


def parse_associate_ac(pdu: bytes | bytearray) -> tuple[list[tuple[int, int, str]], int]:
    """(context ID, result, transfer syntax) of each presentation context and the peer's maximum
    PDU length, from an A-ASSOCIATE-AC PDU (PS3.8 9.3.3). Raises ProtocolError for a PDU too
    short to be one; items that run past the end are cut there."""
    if len(pdu) < _FIXED:
        msg = f"an A-ASSOCIATE-AC of {len(pdu)} bytes, too short to be one"
        raise ProtocolError(msg)
    results: list[tuple[int, int, str]] = []
    max_pdu = 0
    offset = _FIXED
    while offset + 4 <= len(pdu):
        kind, length = _ITEM.unpack_from(pdu, offset)
        body, end = offset + 4, min(offset + 4 + length, len(pdu))
        if kind == 0x21 and length >= 4 and end >= body + 4:
            context_id, result = pdu[body], pdu[body + 2]
            syntax = ""
            if end >= body + 8 and pdu[body + 4] == 0x40:
                (size,) = struct.unpack_from(">H", pdu, body + 6)
                syntax = _text(pdu[body + 8 : min(body + 8 + size, end)])
            results.append((context_id, result, syntax))
        elif kind == 0x50:
            max_pdu = _max_length(pdu, body, end)
        offset = body + length
    return results, max_pdu
