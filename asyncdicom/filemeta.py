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
