"""Is a received data set whole? A peer can send a complete-looking data set whose Pixel Data
declares more bytes than it carries (3 GB declared, 64 KB sent, then the last fragment): it
must not be stored as a good file, nor its request marked done.

The file's first bytes (kept in memory while it was received) give the Pixel Data's position
and declared length; from there the rest of the file is walked on disk, header by header
(encapsulated fragments up to their sequence delimiter, then any trailing elements): every
value must end within the file.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from asyncdicom.write.header import pixel_data

_UNDEFINED = 0xFFFFFFFF
_ITEM = 0xFFFEE000
_DELIMITER = 0xFFFEE0DD
_IMPLICIT = struct.Struct("<HHL")
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}


class _Broken(Exception):
    """A header or value runs past the end of the file."""


def truncated(path: str, head: bytes | bytearray, size: int, found: tuple[int, int, bool] | None = None) -> bool:
    """Whether the file at ``path`` (``size`` bytes, starting with ``head``) ends inside its
    Pixel Data or an element after it (``found``: where its Pixel Data is, if a header scan
    saw it already). False where the head does not reach the Pixel Data (nothing to judge by:
    the anonymizer and the placement read such files with pydicom)."""
    found = found or pixel_data(head)
    if found is None:
        return False
    offset, length, explicit = found
    if length != _UNDEFINED and offset + length >= size:  # the usual case: Pixel Data last, no file read
        return offset + length > size
    try:
        with open(path, "rb") as handle:
            offset = _fragments(handle, offset, size) if length == _UNDEFINED else offset + length
            while offset < size:  # elements after the Pixel Data (padding, private tags)
                _, length, value = _header(handle, offset, size, explicit)
                if length == _UNDEFINED:
                    return False  # a trailing sequence: no longer the Pixel Data's business
                offset = value + length
            return offset > size
    except _Broken:
        return True


def _fragments(handle: BinaryIO, offset: int, size: int) -> int:
    """Offset just past the sequence delimiter of encapsulated Pixel Data starting at ``offset``
    (each step moves forward by at least 8 bytes: at most size / 8 steps)."""
    while True:
        tag, length, value = _header(handle, offset, size, False)
        if tag == _DELIMITER:
            return value
        if tag != _ITEM or length == _UNDEFINED:
            raise _Broken
        offset = value + length


def _header(handle: BinaryIO, offset: int, size: int, explicit: bool) -> tuple[int, int, int]:
    """(tag, length, value offset) of the element header at ``offset``."""
    if offset + 8 > size:
        raise _Broken
    handle.seek(offset)
    raw = handle.read(12)
    group, element, length = _IMPLICIT.unpack_from(raw)
    tag = group << 16 | element
    if not explicit or group == 0xFFFE:
        return tag, length, offset + 8
    vr = raw[4:6]
    if vr in _LONG_VRS:
        if offset + 12 > size:
            raise _Broken
        return tag, struct.unpack_from("<L", raw, 8)[0], offset + 12
    return tag, struct.unpack_from("<H", raw, 6)[0], offset + 8
