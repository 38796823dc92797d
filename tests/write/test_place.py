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


def test_flush_files_starts_every_writeback_then_syncs_each_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch's files only (not the whole volume): every file's writeback is started before the
    first fdatasync waits, each file is fdatasynced, each descriptor closed; a missing file is an
    OSError the pipeline reports as an output error, and nothing stays open."""
    from asyncdicom.write import place

    files = [tmp_path / f"{n}.part" for n in range(3)]
    for path in files:
        path.write_bytes(b"data")
    calls: list[tuple[str, int]] = []
    assert place._SYNC_FILE_RANGE is not None  # Linux
    real_range, real_sync = place._SYNC_FILE_RANGE, place.os.fdatasync

    def started(fd: int, offset: int, count: int, flags: int) -> int:
        calls.append(("start", fd))
        return real_range(fd, offset, count, flags)

    def synced(fd: int) -> None:
        calls.append(("sync", fd))
        real_sync(fd)

    monkeypatch.setattr(place, "_SYNC_FILE_RANGE", started)
    monkeypatch.setattr(place.os, "fdatasync", synced)
    open_before = len(list(Path("/proc/self/fd").iterdir()))
    place.flush_files(files)
    assert [kind for kind, _ in calls] == ["start"] * 3 + ["sync"] * 3
    assert len({fd for _, fd in calls}) == 3
    with pytest.raises(OSError):
        place.flush_files([*files, tmp_path / "gone"])
    assert len(list(Path("/proc/self/fd").iterdir())) == open_before
    monkeypatch.setattr(place, "_SYNC_FILE_RANGE", None)  # no sync_file_range: fdatasync alone
    calls.clear()
    place.flush_files(files)
    assert [kind for kind, _ in calls] == ["sync"] * 3


def test_a_name_this_run_gave_another_instance_is_not_read_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files named by a key several instances share (Instance Number across series): the placer
    remembers whose each path is, so the next instance goes to _1 without reading the first file
    back; the same instance again is still found to be a duplicate."""
    from asyncdicom.write import place

    (tmp_path / "spool").mkdir()
    placer = Placer(tmp_path / "out", (), "PatientID")
    first, second = generate_uid(), generate_uid()
    spooled = _spooled(tmp_path / "spool", "a.dcm", "P1", first)
    assert placer.place(spooled, read_header(spooled, placer.keywords)).name == "P1.dcm"
    compared: list[str] = []
    real = place._same_instance

    def same_instance(path: str, spooled: str | Path, sop_uid: str) -> bool:
        compared.append(sop_uid)
        return real(path, spooled, sop_uid)

    monkeypatch.setattr(place, "_same_instance", same_instance)
    spooled = _spooled(tmp_path / "spool", "b.dcm", "P1", second)
    placed = placer.place(spooled, read_header(spooled, placer.keywords))
    assert (placed.state, placed.name, compared) == (InstanceState.RENAMED, "P1_1.dcm", [])
    spooled = _spooled(tmp_path / "spool", "c.dcm", "P1", first)
    placed = placer.place(spooled, read_header(spooled, placer.keywords))
    assert (placed.state, placed.name, compared) == (InstanceState.DUPLICATE, "P1.dcm", [first])
    monkeypatch.setattr(place, "REMEMBERED", 1)  # past the bound the notes start again: read back
    spooled = _spooled(tmp_path / "spool", "d.dcm", "P1", generate_uid())
    assert placer.place(spooled, read_header(spooled, placer.keywords)).name == "P1_2.dcm"
    assert len(placer._placed) == 1
