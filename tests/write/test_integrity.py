"""A data set whose Pixel Data declares more than it carries is seen as truncated, native or
encapsulated; whole files are not (#15)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from asyncdicom.write.header import HEAD, pixel_data
from asyncdicom.write.integrity import truncated


def _check(path: Path, data: bytes) -> bool:
    path.write_bytes(data)
    return truncated(str(path), data[:HEAD], len(data))


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "SC_rgb_rle.dcm", "MR_small_implicit.dcm"],
)
def test_whole_files_are_whole_and_cut_ones_are_not(tmp_path: Path, name: str) -> None:
    data = Path(get_testdata_file(name, download=False)).read_bytes()
    found = pixel_data(data[:HEAD])
    assert found is not None
    assert not _check(tmp_path / "whole.dcm", data)
    inside = len(data) - found[0]  # cuts that end the file inside the Pixel Data or after it
    for cut in (1, 7, 100, inside // 2, inside - 1):
        assert _check(tmp_path / "cut.dcm", data[:-cut]), (name, cut)


def test_a_huge_declared_length_with_64_kb_is_truncated(tmp_path: Path) -> None:
    """3 GB declared, 64 KB carried: the hostile case of #15."""
    source = Path(get_testdata_file("CT_small.dcm", download=False))
    data = source.read_bytes()
    offset, _, _ = pixel_data(data[:HEAD]) or (0, 0, True)
    header_at = offset - 4  # explicit VR OW: the 32-bit length sits just before the value
    forged = data[:header_at] + struct.pack("<L", 3_000_000_000) + data[offset:] + b"\0" * 65536
    assert _check(tmp_path / "forged.dcm", forged)
    assert dcmread(source).PixelData  # the original reads


def test_encapsulated_data_without_its_delimiter_is_truncated(tmp_path: Path) -> None:
    data = Path(get_testdata_file("JPEG2000.dcm", download=False)).read_bytes()
    assert data.endswith(b"\xfe\xff\xdd\xe0\x00\x00\x00\x00")
    assert _check(tmp_path / "no-delimiter.dcm", data[:-8])
    assert _check(tmp_path / "garbage.dcm", data[:-8] + b"\x01\x02\x03\x04\x00\x00\x00\x00")


def test_without_pixel_data_in_the_head_nothing_is_judged(tmp_path: Path) -> None:
    assert not truncated(str(tmp_path / "none"), b"not dicom at all", 10)
    assert not truncated(str(tmp_path / "none"), b"\0" * 128 + b"DICM", 3_000_000_000)
