"""A lean reader for the few top-level attributes that routing and paths need.

It walks the raw elements of a Part 10 file (Little Endian, explicit or implicit VR), skipping
values it does not want, and stops at the pixel data or once every wanted tag is behind it.
Anything unusual (big endian, deflated, a header larger than the first 64 KiB, malformed
lengths) returns ``None`` and the caller falls back to pydicom, which stays the reference:
the tests compare both on many files.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable
from pathlib import Path

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.valuerep import VR

_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT", b"SV", b"UV"}
_KNOWN_VRS = frozenset(vr.value.encode() for vr in VR if len(vr.value) == 2)
_TEXT_VRS = {"LO", "LT", "PN", "SH", "ST", "UC", "UT"}
_EMPTY_IS_NONE = {"IS", "DS", "US", "SS", "UL", "SL", "FL", "FD"}  # pydicom gives None for these when empty
_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
HEAD = 64 << 10  # headers are a few KiB; a longer one goes to pydicom
_TAG = struct.Struct("<HH")
_U16 = struct.Struct("<H")
_EXPLICIT = struct.Struct("<HH2sH")  # group, element, VR, 16-bit length
_U32 = struct.Struct("<L")


class _Unusual(Exception):
    """The file needs the full parser."""


def _element(buf: bytes | bytearray, offset: int, explicit: bool) -> tuple[int, bytes, int, int]:
    """(tag, VR or b'', value length, value offset) of the element at ``offset``."""
    if offset + 8 > len(buf):
        raise _Unusual
    group, element = _TAG.unpack_from(buf, offset)
    tag = group << 16 | element
    if group == 0xFFFE or not explicit:
        return tag, b"", _U32.unpack_from(buf, offset + 4)[0], offset + 8
    vr = bytes(buf[offset + 4 : offset + 6])
    if vr not in _KNOWN_VRS:  # e.g. implicit VR data under an explicit transfer syntax: pydicom copes
        raise _Unusual
    if vr in _LONG_VRS:
        if offset + 12 > len(buf):
            raise _Unusual
        return tag, vr, _U32.unpack_from(buf, offset + 8)[0], offset + 12
    return tag, vr, _U16.unpack_from(buf, offset + 6)[0], offset + 8


def _skip_undefined(buf: bytes | bytearray, offset: int, explicit: bool) -> int:
    """Offset just past an undefined-length value (sequence items or fragments) starting at ``offset``."""
    while True:
        tag, _, length, value = _element(buf, offset, False)
        if tag == 0xFFFEE0DD:  # sequence delimiter
            return value
        if tag != 0xFFFEE000:
            raise _Unusual
        if length != _UNDEFINED:
            offset = value + length
            continue
        offset = value  # an item of undefined length: elements up to the item delimiter
        while True:
            tag, _, length, value = _element(buf, offset, explicit)
            if tag == 0xFFFEE00D:
                offset = value
                break
            offset = _skip_undefined(buf, value, explicit) if length == _UNDEFINED else value + length


def _decode(raw: bytes, vr: str, encodings: list[str]) -> str:
    if vr in _NUMBERS:
        code = _NUMBERS[vr]
        size = struct.calcsize(code)
        values = struct.unpack(f"<{len(raw) // size}{code}", raw[: len(raw) // size * size])
        return "\\".join(str(v) for v in values)
    text = decode_bytes(raw, encodings, set()) if vr in _TEXT_VRS else raw.decode("ascii", "replace")
    return text.rstrip(" \0")


def scan_header(path: str | Path, keywords: Iterable[str]) -> tuple[dict[str, str], str] | None:
    """Attributes for ``keywords`` (present ones only) and the transfer syntax, or None."""
    with open(path, "rb") as handle:
        return scan_buffer(handle.read(HEAD), keywords)


def scan_buffer(
    buf: bytes | bytearray, keywords: Iterable[str], pixels: list[tuple[int, int, bool]] | None = None
) -> tuple[dict[str, str], str] | None:
    """:func:`scan_header` of a file's first bytes (None when they do not hold the whole header);
    with ``pixels``, the scan goes on to the Pixel Data and appends (value offset, declared
    length, explicit VR) of it there, when the bytes reach it."""
    wanted = _tags(tuple(keywords))
    try:
        return _scan(buf, wanted, pixels)
    except (_Unusual, struct.error, UnicodeDecodeError, LookupError, ValueError):
        if pixels is None:
            return None
    try:  # something past the wanted tags stopped the walk to the Pixel Data: the header alone
        return _scan(buf, wanted)
    except (_Unusual, struct.error, UnicodeDecodeError, LookupError, ValueError):
        return None


@functools.lru_cache(maxsize=16)
def _tags(keywords: tuple[str, ...]) -> dict[int, str]:
    return {tag: keyword for keyword in keywords if (tag := tag_for_keyword(keyword)) is not None}


@functools.lru_cache(maxsize=64)
def _encodings(raw: bytes) -> list[str]:
    """Python codecs for a Specific Character Set value (as pydicom maps them)."""
    terms = [term.strip() for term in raw.decode("ascii").strip(" \0").split("\\")]
    return convert_encodings(terms or ["ISO_IR 6"])


def _meta(buf: bytes | bytearray) -> tuple[int, str] | None:
    """Where the data set starts and its transfer syntax, from the file meta; None where the
    file has no Part 10 meta or is big endian or deflated (pydicom's business)."""
    if buf[128:132] != b"DICM":
        return None
    tag, _, length, value = _element(buf, 132, True)
    if tag != 0x00020000:
        return None
    end_meta = value + _U32.unpack_from(buf, value)[0]
    offset, syntax = value + length, ""
    while offset < end_meta:  # explicit VR little endian, always
        if offset + 8 > len(buf):
            raise _Unusual
        group, element, vr, length = _EXPLICIT.unpack_from(buf, offset)
        if vr in _LONG_VRS:
            length, value = _U32.unpack_from(buf, offset + 8)[0], offset + 12
        else:
            value = offset + 8
        if group << 16 | element == 0x00020010:
            syntax = buf[value : value + length].decode("ascii").rstrip(" \0")
        offset = value + length
    if syntax in ("", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"):
        return None
    return offset, syntax


def _scan(
    buf: bytes | bytearray, wanted: dict[int, str], pixels: list[tuple[int, int, bool]] | None = None
) -> tuple[dict[str, str], str] | None:
    meta = _meta(buf)
    if meta is None:
        return None
    offset, syntax = meta
    if syntax == "1.2.840.10008.1.2":
        return _scan_elements(buf, offset, wanted, syntax, pixels)
    return _scan_explicit(buf, offset, wanted, syntax, pixels)


def pixel_data(buf: bytes | bytearray) -> tuple[int, int, bool] | None:
    """(value offset, declared length, explicit VR) of the top-level Pixel Data in a file's
    first bytes, or None where they do not reach it (or the file is one the lean reader leaves
    to pydicom)."""
    found: list[tuple[int, int, bool]] = []
    scan_buffer(buf, (), found)
    return found[0] if found else None


def _scan_elements(
    buf: bytes | bytearray,
    offset: int,
    wanted: dict[int, str],
    syntax: str,
    pixels: list[tuple[int, int, bool]] | None = None,
) -> tuple[dict[str, str], str] | None:
    """The data set's top-level elements, one :func:`_element` call each (implicit VR)."""
    explicit = syntax != "1.2.840.10008.1.2"
    last = max(wanted, default=0) if pixels is None else _PIXEL_DATA
    encodings = ["iso8859"]
    attrs: dict[str, str] = {}
    size = len(buf)
    while offset < size:
        tag, vr, length, value = _element(buf, offset, explicit)
        if tag >= _PIXEL_DATA or tag > last:
            if tag == _PIXEL_DATA and pixels is not None:
                pixels.append((value, length, explicit))
            return attrs, syntax
        if length == _UNDEFINED:
            offset = _skip_undefined(buf, value, explicit)
            continue
        if value + length > size:
            raise _Unusual
        if tag == 0x00080005:
            encodings = list(_encodings(bytes(buf[value : value + length])))
        if tag in wanted:
            _keep(attrs, wanted[tag], vr, tag, bytes(buf[value : value + length]), encodings)
        offset = value + length
    raise _Unusual


def _scan_explicit(
    buf: bytes | bytearray,
    offset: int,
    wanted: dict[int, str],
    syntax: str,
    pixels: list[tuple[int, int, bool]] | None = None,
) -> tuple[dict[str, str], str] | None:
    """:func:`_scan_elements` for explicit VR little endian, the common case, with the element
    header read in one unpack and no call per element: the receive threads run this for every
    instance (a third of their time on small instances before)."""
    last = max(wanted, default=0) if pixels is None else _PIXEL_DATA
    encodings = ["iso8859"]
    attrs: dict[str, str] = {}
    size = len(buf)
    unpack, long_vrs, known = _EXPLICIT.unpack_from, _LONG_VRS, _KNOWN_VRS
    while offset < size:
        if offset + 8 > size:
            raise _Unusual
        group, element, vr, length = unpack(buf, offset)
        tag = group << 16 | element
        if tag >= _PIXEL_DATA or tag > last:
            if tag == _PIXEL_DATA and pixels is not None:
                pixels.append(_explicit_pixels(buf, offset, vr, length))
            return attrs, syntax
        if group == 0xFFFE or vr not in known:  # an item at the top level, or implicit VR data
            raise _Unusual
        if vr in long_vrs:
            if offset + 12 > size:
                raise _Unusual
            length = _U32.unpack_from(buf, offset + 8)[0]
            value = offset + 12
            if length == _UNDEFINED:
                offset = _skip_undefined(buf, value, True)
                continue
        else:
            value = offset + 8
        end = value + length
        if end > size:
            raise _Unusual
        if tag == 0x00080005:
            encodings = list(_encodings(bytes(buf[value:end])))
        if tag in wanted:
            _keep(attrs, wanted[tag], vr, tag, bytes(buf[value:end]), encodings)
        offset = end
    raise _Unusual


def _explicit_pixels(buf: bytes | bytearray, offset: int, vr: bytes, length: int) -> tuple[int, int, bool]:
    """(value offset, length, True) of the explicit VR Pixel Data element header at ``offset``."""
    if vr in _LONG_VRS:
        if offset + 12 > len(buf):
            raise _Unusual
        return offset + 12, _U32.unpack_from(buf, offset + 8)[0], True
    return offset + 8, length, True


def _keep(attrs: dict[str, str], keyword: str, vr: bytes, tag: int, raw: bytes, encodings: list[str]) -> None:
    """Put a wanted element's value in ``attrs`` as pydicom would give it as a string."""
    name = vr.decode("ascii") if vr else dictionary_VR(tag)
    if name in ("SQ", "OB", "OW", "UN", "AT"):
        raise _Unusual
    if raw or name not in _EMPTY_IS_NONE:
        attrs[keyword] = _decode(raw, name, encodings)
