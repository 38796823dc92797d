"""The fast reader returns what ``dcmread(force=True)`` returns, or leaves the file to it: on
every conformance input, every file bundled with pydicom, and generated (and damaged) files."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import pydicom.data
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless

from asyncdicom.anonymize.decode import read_plain

VECTORS = Path(__file__).resolve().parents[1] / "data" / "ctp-vectors"
BUNDLED = Path(pydicom.data.__file__).parent / "test_files"  # never downloaded


def _same(fast: Dataset, slow: Dataset) -> None:
    assert list(fast._dict) == list(slow._dict)
    for tag, elem in slow._dict.items():
        other = fast._dict[tag]
        assert type(other) is type(elem), tag
        if isinstance(elem, RawDataElement):
            assert other == elem, tag  # every field: VR, length, value, position, encoding
        else:
            assert (other.VR, other.value) == (elem.VR, elem.value), tag
    assert fast.original_encoding == slow.original_encoding
    assert fast.original_character_set == slow.original_character_set


def _check(source: Path | bytes) -> bool:
    """Compare with dcmread; whether the fast path took the file."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            slow: Any = dcmread(io.BytesIO(source) if isinstance(source, bytes) else source, force=True)
        except Exception:
            slow = None
        fast = read_plain(io.BytesIO(source) if isinstance(source, bytes) else source)
    if fast is None:
        return False
    assert slow is not None
    _same(fast, slow)
    _same(fast.file_meta, slow.file_meta)
    assert fast.preamble == slow.preamble
    assert (fast.is_implicit_VR, fast.is_little_endian) == (slow.is_implicit_VR, slow.is_little_endian)
    return True


def test_conformance_inputs_and_bundled_files_read_as_pydicom_reads_them() -> None:
    files = sorted((VECTORS / "inputs").iterdir()) + sorted(BUNDLED.glob("*.dcm"))
    assert len(files) > 100
    taken = sum(_check(path) for path in files)
    assert taken >= 30  # the plain case is common, and the rest is left to pydicom


def test_a_stream_is_left_where_it_was() -> None:
    path = BUNDLED / "CT_small.dcm"
    stream = io.BytesIO(b"junk" + path.read_bytes())
    stream.seek(4)
    read = read_plain(stream)
    assert read is not None
    assert stream.tell() == 4
    assert read[0x7FE00010].value == dcmread(path)[0x7FE00010].value


_TAGS = st.integers(0x00080000, 0x7FE00011)
_VRS = st.sampled_from(["CS", "LO", "OB", "OW", "UN", "UT", "SQ", "US", "UL", "DS", "PN", "UI", "SH"])


@st.composite
def _files(draw: st.DrawFn) -> bytes:
    ds = Dataset()
    for tag in draw(st.lists(_TAGS, max_size=10, unique=True)):
        vr = draw(_VRS)
        value = draw(st.binary(max_size=30))
        if vr == "SQ":
            value = b""
        ds._dict[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)  # type: ignore[assignment]
    if draw(st.booleans()):
        ds._dict[0x00080005] = RawDataElement(0x00080005, "CS", 10, b"ISO_IR 192", 0, False, True)  # type: ignore[assignment,arg-type]
    syntax = draw(st.sampled_from([ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless, JPEG2000Lossless]))
    meta = FileMetaDataset()
    meta.TransferSyntaxUID = syntax
    meta.MediaStorageSOPClassUID = "1.2.3"
    meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    read = FileDataset("x", ds, preamble=b"\0" * 128, file_meta=meta)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            read.save_as(
                buffer, implicit_vr=syntax == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True
            )
        except Exception:
            return b""
    data = buffer.getvalue()
    damage = draw(st.sampled_from(["none", "cut", "flip", "append"]))
    if damage == "cut" and data:
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif damage == "flip" and data:
        where = draw(st.integers(0, len(data) - 1))
        data = data[:where] + bytes([data[where] ^ draw(st.integers(1, 255))]) + data[where + 1 :]
    elif damage == "append":
        data += draw(st.binary(min_size=1, max_size=12))
    return data


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_files())
def test_generated_and_damaged_files_read_as_pydicom_reads_them(data: bytes) -> None:
    _check(data)


def test_the_fast_path_is_taken_for_plain_files_and_refused_for_odd_ones() -> None:
    path = BUNDLED / "CT_small.dcm"
    data = path.read_bytes()
    assert _check(data)
    assert read_plain(io.BytesIO(data[:-3])) is None  # truncated: pydicom decides
    assert read_plain(io.BytesIO(data[128:])) is None  # no preamble
    assert read_plain(io.BytesIO(b"")) is None
