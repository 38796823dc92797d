"""Placing: the same instance twice is stored once; one UID with other content is kept beside it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from asyncdicom.models import InstanceState
from asyncdicom.write.place import Placer
from asyncdicom.write.spool import read_header
from tests.factory import StudySpec, make_instance


def _spooled(folder: Path, name: str, patient: str, sop: str) -> Path:
    spec = StudySpec(patient, "Doe^J", "1.2.3", "A1", "20200101", "CT", 1, 1)
    ds = make_instance(spec, "1.2.3.4", 1, 1)
    ds.SOPInstanceUID = sop
    path = folder / name
    ds.save_as(path, enforce_file_format=True)
    return path


def test_same_bytes_once_other_bytes_beside(tmp_path: Path) -> None:
    (tmp_path / "spool").mkdir()
    placer = Placer(tmp_path / "out", ("StudyInstanceUID",), "SOPInstanceUID")
    sop = generate_uid()
    states = []
    for name, patient in (("a.dcm", "P1"), ("b.dcm", "P1"), ("c.dcm", "P2")):
        spooled = _spooled(tmp_path / "spool", name, patient, sop)
        header = read_header(spooled, placer.keywords)
        placed = placer.place(spooled, header)
        states.append((placed.state, placed.name))
    assert states == [
        (InstanceState.STORED, f"{sop}.dcm"),
        (InstanceState.DUPLICATE, f"{sop}.dcm"),  # identical: stored once
        (InstanceState.RENAMED, f"{sop}_1.dcm"),  # same UID, other content: kept beside it
    ]
    assert not list((tmp_path / "spool").iterdir())


def test_flush_volume_syncs_the_file_system_or_each_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One syncfs for a batch where the C library has it; otherwise one fsync per file; an error
    is an OSError the pipeline reports as an output error."""
    from asyncdicom.write import place

    files = [tmp_path / f"{n}.part" for n in range(3)]
    for path in files:
        path.write_bytes(b"data")
    assert place._SYNCFS is not None  # Linux
    place.flush_volume(tmp_path, files)
    synced: list[int] = []
    monkeypatch.setattr(place, "_SYNCFS", None)
    monkeypatch.setattr(place.os, "fsync", synced.append)
    place.flush_volume(tmp_path, files)
    assert len(synced) == len(files)
    monkeypatch.undo()
    with pytest.raises(OSError):
        place.flush_volume(tmp_path / "gone", files)
