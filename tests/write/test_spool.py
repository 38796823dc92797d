"""Spool files and placement: durable, atomic, never overwriting another instance."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.filewriter import dcmwrite

from asyncdicom.write.place import place
from asyncdicom.write.spool import SpoolWriter, file_meta, read_header, sweep


def _spool_copy(spool: Path, source: Path) -> Path:
    """What the receive path produces: our file meta + the data set bytes as received."""
    ds = dcmread(source)
    raw = source.read_bytes()
    body = raw[raw.index(b"DICM") + 4 :]
    group_length = int.from_bytes(body[8:12], "little")
    data = body[12 + group_length :]
    writer = SpoolWriter(spool, file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ds.file_meta.TransferSyntaxUID, "PACS"))
    writer.write(data)
    return writer.commit()


@pytest.fixture
def ct() -> Path:
    return Path(get_testdata_file("CT_small.dcm", download=False))


def test_spooled_file_reads_back_identically(tmp_path: Path, ct: Path) -> None:
    """Hand-packed file meta + received bytes make a valid file with the same data set."""
    path = _spool_copy(tmp_path, ct)
    copy, original = dcmread(path), dcmread(ct)
    assert copy.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
    assert copy.file_meta.SourceApplicationEntityTitle == "PACS"
    assert copy.PixelData == original.PixelData
    assert copy.SOPInstanceUID == original.SOPInstanceUID
    assert not list(tmp_path.glob("*.part"))


def test_place_stores_then_recognises_duplicates(tmp_path: Path, ct: Path) -> None:
    """The first copy is stored; the same instance again is a duplicate and its spool file goes."""
    spool, root = tmp_path / "spool", tmp_path / "out"
    spool.mkdir()
    first = _spool_copy(spool, ct)
    header = read_header(first, ("PatientID",))
    placed = place(first, root, ("PatientID",), "SOPInstanceUID", header)
    assert placed.state == "stored"
    assert placed.path == (root / header.attrs["PatientID"] / f"{header.sop_instance_uid}.dcm").resolve()
    second = _spool_copy(spool, ct)
    again = place(second, root, ("PatientID",), "SOPInstanceUID", read_header(second, ("PatientID",)))
    assert (again.state, again.path) == ("duplicate", placed.path)
    assert list(spool.iterdir()) == []


def test_place_never_overwrites_another_instance(tmp_path: Path, ct: Path) -> None:
    """A different instance rendering to the same path is stored beside it with a suffix."""
    spool, root = tmp_path / "spool", tmp_path / "out"
    spool.mkdir()
    other = dcmread(ct)
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4"
    other_path = tmp_path / "other.dcm"
    dcmwrite(other_path, other)
    a = _spool_copy(spool, ct)
    b = _spool_copy(spool, other_path)
    first = place(a, root, (), "PatientID", read_header(a, ("PatientID",)))
    second = place(b, root, (), "PatientID", read_header(b, ("PatientID",)))
    assert second.state == "renamed"
    assert second.path.name == f"{first.path.stem}_1.dcm"
    assert dcmread(first.path).SOPInstanceUID != dcmread(second.path).SOPInstanceUID


def test_sweep_removes_partial_files(tmp_path: Path, ct: Path) -> None:
    """At start-up partial spool files are deleted and complete ones are returned for placing."""
    complete = _spool_copy(tmp_path, ct)
    (tmp_path / "abc.part").write_bytes(b"half")
    assert sweep(tmp_path) == [complete]
    assert sorted(p.name for p in tmp_path.iterdir()) == [complete.name]
