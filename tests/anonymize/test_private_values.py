"""Private numeric elements as CTP reads and writes them; expected values are DAT 2021's output
for the same data (differential runs), in each transfer syntax."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from tests.anonymize.helpers import dataset, e, rules, run

GE = "0019[GEMS_ACQU_01]"
BW = "2001[BRAINWAVE: 1.2.840.113819.3]"


def text(value: object) -> str:
    return "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)


@pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian])
def test_private_numbers_read_and_written(tmp_path: Path, syntax: UID) -> None:
    ds = dataset(PatientID="x", StudyDescription="x", StudyID="x", AccessionNumber="x", InstitutionName="x")
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00191011, "SS", [-1, 5])
    ds.add_new(0x00191002, "SL", [-2, 70000])
    ds.add_new(0x001910A3, "UL", [4000000000])
    ds.add_new(0x0019105A, "FL", [1.5])
    ds.add_new(0x00191013, "SS", 7)
    ds.add_new(0x00191026, "SL", 9)
    ds.add_new(0x20010010, "LO", "BRAINWAVE: 1.2.840.113819.3")
    ds.add_new(0x20011031, "US", [65535, 2])
    ds.file_meta.TransferSyntaxUID = syntax
    script = rules(
        e("00100020", f"@contents({GE}11)"),
        e("00081030", f"@contents({GE}02)"),
        e("00200010", f"@contents({GE}A3)"),
        e("00080050", f"@contents({GE}5A)"),
        e("00080080", f"@contents({BW}31)"),
        e(f"{GE}13", "-5"),
        e(f"{GE}26", "-70000\\\\3"),
    )
    outcome, out = run(tmp_path, ds, script)
    assert outcome.status == "ok" and out is not None
    assert text(out.PatientID) == "65535\\5"  # SS read as unsigned 16-bit by CTP
    assert text(out.StudyDescription) == "-2\\70000"
    assert text(out.StudyID) == "-294967296"  # UL read as a signed Java int
    # FL: Float.toString when the file says FL; in an implicit VR file dcm4che sees UN: hex bytes
    assert text(out.AccessionNumber) == ("00\\00\\C0\\3F" if syntax == ImplicitVRLittleEndian else "1.5")
    assert text(out.InstitutionName) == "65535\\2"
    assert out[0x00191013].value == -5  # written back as SS
    # dcm4che parses the whole text as one number, fails, and CTP writes it as text
    written = out.get_item(0x00191026)
    assert written.value.rstrip(b" ") == b"-70000\\3"
    assert syntax == ImplicitVRLittleEndian or written.VR == "LO"


def _private_dataset() -> Dataset:
    ds = dataset(StudyDescription="study", PatientID="PID")
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00191018, "LO", "ras")
    ds.add_new(0x00290010, "LO", "SIEMENS CSA HEADER")
    ds.add_new(0x00291008, "CS", "IMAGE NUM 4")
    ds.add_new(0x00291010, "OB", b"\x01\x02")
    return ds


@pytest.mark.parametrize("hex_first", [True, False])
def test_two_rules_for_one_element_resolve_in_javas_properties_order(tmp_path: Path, hex_first: bool) -> None:
    """CTP builds its tag table by enumerating a java.util.Properties: the later key in that
    order wins, whatever their order in the script (DAT chose the hex rule both ways)."""
    hexed, block = e("00191018", "@hash(StudyDescription,8)"), e(f"{GE}18", "LIT")
    _, out = run(tmp_path, _private_dataset(), rules(*((hexed, block) if hex_first else (block, hexed))))
    assert out is not None and out[0x00191018].value == "59575256"


def test_private_elements_are_written_as_one_value(tmp_path: Path) -> None:
    """CTP puts a private value as one string: ``\\`` and inner padding kept; a binary VR
    takes no text, so even an empty value is written as LO."""
    script = rules(
        e("0029[SIEMENS CSA HEADER]08", "@append(){PatientID}"),
        e("0029[SIEMENS CSA HEADER]10", "@contents(NoSuch)"),
    )
    _, out = run(tmp_path, _private_dataset(), script)
    assert out is not None
    assert out.get_item(0x00291008).VR == "CS" and out.get_item(0x00291008).value == b"IMAGE NUM 4 \\PatientID"
    assert out.get_item(0x00291010).VR == "LO" and out.get_item(0x00291010).value == b""
