"""The lean header scan gives exactly what pydicom gives, on every bundled test file it accepts."""

from __future__ import annotations

from pathlib import Path

import pydicom.data
import pytest

from asyncdicom.write.header import scan_header
from asyncdicom.write.spool import ROUTING, read_header_with_pydicom
from tests.factory import write_hostile

KEYWORDS = sorted(
    {
        *ROUTING,
        "PatientID",
        "PatientName",
        "StudyDate",
        "StudyDescription",
        "SeriesDescription",
        "SeriesNumber",
        "InstanceNumber",
        "Modality",
        "AccessionNumber",
        "Rows",
        "SliceLocation",
        "ImageType",
        "PixelSpacing",
        "InstitutionName",
        "SpecificCharacterSet",
    }
)


def _files() -> list[Path]:
    """pydicom's bundled test files, from the installed package (never downloaded)."""
    return sorted((Path(pydicom.data.__file__).parent / "test_files").rglob("*.dcm"))


@pytest.mark.filterwarnings("ignore")
def test_scan_matches_pydicom_on_bundled_files() -> None:
    """For every bundled file the scan handles, attributes and transfer syntax equal pydicom's."""
    scanned = 0
    for path in _files():
        try:
            reference = read_header_with_pydicom(path, KEYWORDS)
        except ValueError:
            continue
        result = scan_header(path, KEYWORDS)
        if result is None:
            continue
        scanned += 1
        attrs, syntax = result
        assert (attrs, syntax) == (reference.attrs, reference.transfer_syntax), path.name
    assert scanned >= 50  # the scan really is the common path


def test_scan_matches_pydicom_on_hostile_and_non_ascii_values(tmp_path: Path) -> None:
    """Separators, backslash lists and UTF-8 names come out as pydicom reads them."""
    for ds in write_hostile(tmp_path):
        path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
        reference = read_header_with_pydicom(path, KEYWORDS)
        assert scan_header(path, KEYWORDS) == (reference.attrs, reference.transfer_syntax)
        assert reference.attrs["SeriesDescription"] == "a/b\\c:d*"
