"""Reading a plain Part 10 file fast: the data set pydicom's ``dcmread(force=True)`` returns,
built in one pass over the file's bytes.

Measured on 512×512 CT instances: ``dcmread`` costs about 0.6 ms per file, of which reading the
bytes is under 0.1 ms; the rest is its element generator's per-element overhead (a read, a
tell and several checks per element, twice over for the file meta). Here the common case — a
preamble, an explicit VR little endian file meta, then an explicit or implicit VR little endian
data set of defined lengths that ends where the file ends — is parsed with one ``struct``
unpack per element into the same :class:`RawDataElement` values, file meta and encodings.
Anything else (no preamble, a command set, big endian, deflate, undefined lengths, an element
pydicom would read differently, a truncated file) returns None and the caller uses
``dcmread``: what a file means is still decided by pydicom (tested: the same data set as
``dcmread`` for every conformance input, every file bundled with pydicom, and generated files).
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import BinaryIO, cast

from pydicom.charset import default_encoding
from pydicom.dataelem import DataElement, RawDataElement, empty_value_for_VR
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filereader import ENCODED_VR
from pydicom.tag import BaseTag
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian, PrivateTransferSyntaxes
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32

_EXPLICIT = struct.Struct("<HH2sH").unpack_from
_IMPLICIT = struct.Struct("<HHL").unpack_from
_LENGTH = struct.Struct("<L").unpack_from
_LONG = frozenset(vr.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
_VR_NAMES = {code: code.decode(default_encoding) for code in ENCODED_VR}  # the VRs pydicom knows
_START = 132  # preamble and "DICM"
_WINDOW = 65536  # bytes read at a time for element headers and small values
_UNDEFINED = 0xFFFFFFFF
_SPECIFIC_CHARACTER_SET = 0x00080005


class _Unusual(Exception):
    """The file is not the plain case: pydicom reads it."""


def read_plain(source: Path | BinaryIO) -> FileDataset | None:
    """The data set ``dcmread(source, force=True)`` would return, or None if ``source`` is not
    a plain file (a stream is left where it was)."""
    if isinstance(source, Path):
        with source.open("rb", buffering=0) as fp:
            return _attempt(_Bytes(fp, 0, os.fstat(fp.fileno()).st_size), str(source))
    start = source.tell()
    size = source.seek(0, os.SEEK_END) - start
    try:
        return _attempt(_Bytes(source, start, size), source)
    finally:
        source.seek(start)


def _attempt(data: _Bytes, origin: str | BinaryIO) -> FileDataset | None:
    try:
        return _read(data, origin)
    except Exception:
        return None


class _Bytes:
    """The file's bytes, read a window at a time; a value larger than the window is read on its
    own, straight into the bytes object that holds it (one copy, as pydicom reads it)."""

    def __init__(self, fp: BinaryIO, start: int, size: int) -> None:
        self._fp, self.start, self.size = fp, start, size
        self._base = 0  # where the window starts, from ``start``
        self._window = b""

    def at(self, offset: int, count: int) -> tuple[bytes, int]:
        """The window and the index in it of the ``count`` bytes at ``offset``."""
        index = offset - self._base
        if index < 0 or index + count > len(self._window):
            self._fp.seek(self.start + offset)
            self._window, self._base, index = self._fp.read(max(count, _WINDOW)), offset, 0
            if len(self._window) < count:
                raise _Unusual
        return self._window, index

    def value(self, offset: int, length: int) -> bytes:
        index = offset - self._base
        if index >= 0 and index + length <= len(self._window):
            return self._window[index : index + length]
        self._fp.seek(self.start + offset)
        value = self._fp.read(length)
        if len(value) < length:
            raise _Unusual
        return value


def _read(data: _Bytes, origin: str | BinaryIO) -> FileDataset:
    if data.size < _START + 8:
        raise _Unusual
    head, _ = data.at(0, _START)
    if head[128:_START] != b"DICM":
        raise _Unusual
    meta_elements, offset = _elements(data, _START, implicit=False, group=2)
    if not meta_elements or offset + 8 > data.size:
        raise _Unusual
    file_meta = FileMetaDataset(cast("dict[BaseTag, RawDataElement | DataElement]", meta_elements))
    file_meta.set_original_encoding(False, True, default_encoding)
    try:  # as pydicom does: the first element converted (an odd one makes it read the meta again)
        file_meta[next(iter(meta_elements))]
    except NotImplementedError as exc:
        raise _Unusual from exc
    syntax = file_meta.get("TransferSyntaxUID")
    if not isinstance(syntax, UID) or syntax in PrivateTransferSyntaxes or not syntax.is_transfer_syntax:
        raise _Unusual
    if syntax == ImplicitVRLittleEndian:
        implicit = True
    elif syntax == ExplicitVRLittleEndian or (syntax.is_compressed and syntax.is_little_endian):
        implicit = False
    else:  # big endian and deflated
        raise _Unusual
    window, index = data.at(offset, 8)
    if window[index : index + 2] == b"\0\0":
        raise _Unusual  # a command set (group 0000) before the data set
    if (not (0x40 < window[index + 4] < 0x5B and 0x40 < window[index + 5] < 0x5B)) != implicit:
        raise _Unusual  # pydicom would switch encodings, with a warning
    elements, _ = _elements(data, offset, implicit=implicit, group=None)
    # pydicom wraps the elements in a Dataset first, whose own encodings FileDataset does not keep
    read = FileDataset(
        origin, cast("dict[BaseTag, RawDataElement | DataElement]", elements), head[:128], file_meta, implicit, True
    )
    read.set_original_encoding(implicit, True, read._character_set)
    return read


def _elements(
    data: _Bytes, offset: int, *, implicit: bool, group: int | None
) -> tuple[dict[BaseTag, RawDataElement], int]:
    """Elements from ``offset`` to the end (or of ``group`` only, if given) and where they end;
    raises :class:`_Unusual` at anything the plain case does not have."""
    elements: dict[BaseTag, RawDataElement] = {}
    size = data.size
    while offset < size:
        window, index = data.at(offset, min(12, size - offset))
        if offset + 8 > size:
            raise _Unusual
        if implicit:
            number, element, length = _IMPLICIT(window, index)
            vr: str | None = None
            offset += 8
        else:
            number, element, code, length = _EXPLICIT(window, index)
            if group is not None and number != group:
                break
            vr = _VR_NAMES.get(code)
            if vr is None:
                raise _Unusual
            offset += 8
            if code in _LONG:
                if offset + 4 > size:
                    raise _Unusual
                (length,) = _LENGTH(window, index + 8)
                offset += 4
        tag = number << 16 | element
        if length == _UNDEFINED or tag == 0xFFFEE00D or offset + length > size:
            raise _Unusual
        value = data.value(offset, length) if length else cast("bytes | None", empty_value_for_VR(vr, raw=True))
        key = BaseTag(tag)
        elements[key] = RawDataElement(key, vr, length, value, data.start + offset, implicit, True)
        offset += length
    return elements, offset
