"""pydicom's bundled test files as a PACS's holdings, for the interop matrix (issue #12).

Every bundled file that is a DICOM file with the four UIDs a Q/R SCP indexes by is used. Many
of them are the same instance in other transfer syntaxes (MR_small, MR_small_bigendian,
MR_small_jp2klossless, …) and share a SOP Instance UID; those after the first get a new one
derived from their file name, written in their own transfer syntax, so every encoding reaches
the peers. Nothing is downloaded: only the files inside the installed pydicom package are read.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pydicom.data
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import generate_uid

REQUIRED = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
BROKEN = {  # bundled on purpose to test readers; no archive stores them, so no peer is asked to
    "SC_rgb_jpeg.dcm": "encoded in implicit VR while its transfer syntax says explicit VR (Orthanc answers 400)",
    "rtplan_truncated.dcm": "cut off in the middle of an element (Orthanc answers 400, dcmqrscp cannot send it)",
}


@dataclass(frozen=True)
class Holding:
    """One file a peer may hold: where it is, what it is, and the name it came from."""

    path: Path
    name: str  # the bundled file's name
    sop_uid: str
    study_uid: str
    sop_class: str
    syntax: str


def bundled_files() -> list[Path]:
    """The files inside the installed pydicom package's data folder."""
    root = Path(pydicom.data.__file__).parent
    return sorted(path for path in root.rglob("*") if path.is_file() and path.suffix in (".dcm", ""))


def _read(path: Path) -> Dataset | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = dcmread(path)
    except (InvalidDicomError, OSError, ValueError, TypeError, EOFError, KeyError, AttributeError):
        return None
    if any(keyword not in ds or not str(ds[keyword].value).strip() for keyword in REQUIRED):
        return None
    if "TransferSyntaxUID" not in getattr(ds, "file_meta", Dataset()):
        return None
    return ds


def holdings(folder: Path) -> list[Holding]:
    """Copies of the usable bundled files in ``folder``, one SOP Instance UID each."""
    folder.mkdir(parents=True, exist_ok=True)
    seen: set[str] = set()
    held: list[Holding] = []
    for number, source in enumerate(bundled_files()):
        ds = _read(source) if source.name not in BROKEN else None
        if ds is None:
            continue
        target = folder / f"{number:03d}-{source.stem}.dcm"
        if str(ds.SOPInstanceUID) in seen:
            ds.SOPInstanceUID = generate_uid(entropy_srcs=[source.name])
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    ds.save_as(target, enforce_file_format=False)
                except (ValueError, TypeError, AttributeError, NotImplementedError):
                    continue
        else:
            target.write_bytes(source.read_bytes())
        seen.add(str(ds.SOPInstanceUID))
        held.append(
            Holding(
                target,
                source.name,
                str(ds.SOPInstanceUID),
                str(ds.StudyInstanceUID),
                str(ds.SOPClassUID),
                str(ds.file_meta.TransferSyntaxUID),
            )
        )
    return held
