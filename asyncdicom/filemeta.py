"""A Part 10 file's start: preamble, ``DICM`` and the File Meta Information group, encoded
directly (Explicit VR Little Endian, with its group length)."""

from __future__ import annotations

import struct

PREAMBLE = b"\0" * 128 + b"DICM"


def _element(group_element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    tag = struct.pack("<HH", group_element >> 16, group_element & 0xFFFF)
    if vr == b"OB":
        return tag + vr + b"\0\0" + struct.pack("<L", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def _text(value: str) -> bytes:
    return value.encode("utf-8", "replace")  # UIDs are ASCII; anything else is written as DAT does


def file_start(
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str,
    implementation: tuple[str, str],
    source_ae: str = "",
) -> bytes:
    """Preamble, ``DICM`` and the meta group; ``implementation`` is (class UID, version name)."""
    body = b"".join(
        [
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", _text(sop_class)),
            _element(0x00020003, b"UI", _text(sop_instance)),
            _element(0x00020010, b"UI", _text(transfer_syntax)),
            _element(0x00020012, b"UI", _text(implementation[0])),
            _element(0x00020013, b"SH", _text(implementation[1])),
            *([_element(0x00020016, b"AE", _text(source_ae))] if source_ae else []),
        ]
    )
    return PREAMBLE + _element(0x00020000, b"UL", struct.pack("<L", len(body))) + body


MAX_META = 64 * 1024  # bytes of File Meta Information a received file may carry
_LONG_VRS = (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV")
META_KEYS = {0x00020002: "sop_class", 0x00020003: "sop_instance", 0x00020010: "transfer_syntax"}


def read_meta(head: bytes | bytearray) -> tuple[dict[str, str], int] | None:
    """The SOP class, SOP instance and transfer syntax UIDs of a Part 10 file's start, and where
    its data set begins; None while ``head`` is too short to tell. ValueError for a start that is
    not a Part 10 file or meta information longer than :data:`MAX_META`."""
    if len(head) < 132:
        return None
    if head[128:132] != b"DICM":
        msg = "not a DICOM Part 10 file (no DICM after the preamble)"
        raise ValueError(msg)
    found: dict[str, str] = {}
    offset = 132
    while True:
        if offset - 132 > MAX_META:
            msg = f"File Meta Information longer than {MAX_META} bytes"
            raise ValueError(msg)
        if len(head) < offset + 8:
            return None
        group, element = struct.unpack_from("<HH", head, offset)
        if group != 0x0002:
            break
        vr = bytes(head[offset + 4 : offset + 6])
        if vr in _LONG_VRS:
            if len(head) < offset + 12:
                return None
            (length,) = struct.unpack_from("<L", head, offset + 8)
            start = offset + 12
        else:
            (length,) = struct.unpack_from("<H", head, offset + 6)
            start = offset + 8
        if length > MAX_META:
            msg = f"a File Meta element of {length} bytes"
            raise ValueError(msg)
        if len(head) < start + length:
            return None
        key = META_KEYS.get((group << 16) | element)
        if key:
            found[key] = bytes(head[start : start + length]).decode("ascii", "replace").rstrip("\0 ")
        offset = start + length
    missing = [key for key in META_KEYS.values() if not found.get(key)]
    if missing:
        msg = f"File Meta Information without {', '.join(missing)}"
        raise ValueError(msg)
    return found, offset
