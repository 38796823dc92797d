"""The fast top-level writer writes exactly pydicom's bytes: on every conformance case (the
anonymized output of each, written both ways) and on generated data sets."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag

from asyncdicom.anonymize import files
from asyncdicom.anonymize.encode import write_top_level
from asyncdicom.anonymize.lookup import LookupTable
from asyncdicom.anonymize.script import load

VECTORS = Path(__file__).resolve().parents[1] / "data" / "ctp-vectors"


def _both(ds: Dataset, implicit: bool, little: bool) -> tuple[bytes, bytes]:
    fast, reference = DicomBytesIO(), DicomBytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        write_top_level(fast, ds, implicit, little)
        reference.is_implicit_VR, reference.is_little_endian = implicit, little
        write_dataset(reference, ds)
    return fast.getvalue(), reference.getvalue()


def _cases() -> list[dict[str, str]]:
    with (VECTORS / "cases.csv").open(newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["expected_outcome"] == "ok"]


def test_every_conformance_case_is_written_as_pydicom_writes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Anonymize each case twice, once with pydicom's writer in place of ours: same bytes."""
    cases = _cases()
    assert len(cases) > 200
    compared = 0
    for number, case in enumerate(cases):
        table = LookupTable.load(VECTORS / case["lookup_table"]) if case["lookup_table"] else LookupTable.empty()
        anonymizer = files.Anonymizer(load(VECTORS / case["script"]), table)
        ours = tmp_path / f"{number}-ours.dcm"
        outcome = anonymizer.file(VECTORS / case["input"], ours)
        with monkeypatch.context() as patch:

            def reference(fp: DicomBytesIO, ds: Dataset, implicit: bool, little: bool) -> None:
                fp.is_implicit_VR, fp.is_little_endian = implicit, little
                write_dataset(fp, ds)

            patch.setattr(files, "write_top_level", reference)
            theirs = tmp_path / f"{number}-pydicom.dcm"
            assert anonymizer.file(VECTORS / case["input"], theirs).status == outcome.status
        if outcome.status == "ok":
            assert ours.read_bytes() == theirs.read_bytes(), case["case"]
            compared += 1
    assert compared > 200


@pytest.mark.parametrize("implicit", [False, True])
def test_untouched_file_is_copied_as_read(implicit: bool) -> None:
    """A bundled file read and written again in its own encoding: pydicom's bytes, and most
    elements still raw (the fast path was taken)."""
    from pydicom.data import get_testdata_file

    name = "MR_small_implicit.dcm" if implicit else "MR_small.dcm"
    ds = dcmread(get_testdata_file(name, download=False))
    raw = sum(isinstance(elem, RawDataElement) for elem in ds._dict.values())
    assert raw > 20
    fast, reference = _both(ds, implicit, True)
    assert fast == reference


_VRS = ["AE", "CS", "DA", "DS", "IS", "LO", "LT", "OB", "OW", "PN", "SH", "UI", "UL", "US", "UN", "UT", "XX"]


@st.composite
def _raw_elements(draw: st.DrawFn) -> list[RawDataElement]:
    count = draw(st.integers(1, 12))
    tags = draw(
        st.lists(
            st.integers(0x00080000, 0x7FE00011).filter(lambda tag: tag != 0xFFFEE000),
            min_size=count,
            max_size=count,
            unique=True,
        )
    )
    elements = []
    for tag in tags:
        vr = draw(st.sampled_from(_VRS))
        value = draw(st.binary(max_size=40) | st.sampled_from([b"", b"\0" * 70000]))
        length = len(value)
        if vr in ("OB", "UN") and draw(st.booleans()):  # undefined length, as encapsulated data
            value, length = b"\xfe\xff\x00\xe0\x00\x00\x00\x00", 0xFFFFFFFF
        elements.append(RawDataElement(Tag(tag), vr, length, value, 0, False, True))
    return elements


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    elements=_raw_elements(),
    implicit=st.booleans(),
    converted=st.integers(0, 3),
    as_read=st.booleans(),
)
def test_generated_data_sets_match_pydicom(
    elements: list[RawDataElement], implicit: bool, converted: int, as_read: bool
) -> None:
    """Raw elements of every kind (group lengths, long values, undefined lengths, odd VRs), some
    converted by use, a sequence, read in the output's encoding or not: pydicom's bytes."""
    ds = Dataset()
    for elem in elements:
        ds._dict[elem.tag] = elem
    read_implicit = implicit if as_read else not implicit
    ds.set_original_encoding(read_implicit, True, "iso8859")
    for elem in elements[:converted]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ds[elem.tag]  # converts it, as the script touching it would
        except Exception:  # a value pydicom refuses to convert: not written by either
            del ds._dict[elem.tag]
    item = Dataset()
    item.CodeValue = "1"
    ds.ReferencedImageSequence = Sequence([item])
    try:
        reference = DicomBytesIO()
        reference.is_implicit_VR, reference.is_little_endian = implicit, True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            write_dataset(reference, ds)
    except Exception as exc:  # pydicom refuses: ours must refuse with the same error
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with pytest.raises(type(exc)):
                write_top_level(DicomBytesIO(), ds, implicit, True)
        return
    fast, expected = _both(ds, implicit, True)
    assert fast == expected
