"""CSV batches → validated, de-duplicated plans with file:line errors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from asyncdicom.config import load_config
from asyncdicom.errors import ConfigError, PlanError
from asyncdicom.plan import build_plan
from tests.conftest import find_config, write_yaml


def _plan(tmp_path: Path, csv_bytes: bytes, **kwargs: object):
    (tmp_path / "batch.csv").write_bytes(csv_bytes)
    return build_plan(load_config(write_yaml(tmp_path / "c.yml", find_config(4242, batch="batch.csv", **kwargs))))


def _plan_error(tmp_path: Path, csv_bytes: bytes, **kwargs: object) -> str:
    with pytest.raises(PlanError) as info:
        _plan(tmp_path, csv_bytes, **kwargs)
    return str(info.value).replace(str(tmp_path / "batch.csv"), "batch.csv")


class TestRows:
    def test_rows_override_common_elements(self, tmp_path: Path) -> None:
        """Each row becomes one request; its values override the config's elements."""
        plan = _plan(tmp_path, b"PatientID,StudyDate\n1,20200101\n2,\n")
        assert [r.line for r in plan.requests] == [2, 3]
        first = {s.name: s.value for s in plan.requests[0].elements}
        assert first == {
            "QueryRetrieveLevel": "STUDY",
            "PatientID": "1",
            "StudyInstanceUID": None,
            "StudyDate": "20200101",
        }
        assert plan.columns == ("PatientID", "StudyInstanceUID", "StudyDate")

    def test_bom_crlf_blank_lines_and_duplicates(self, tmp_path: Path) -> None:
        """A BOM, CRLF endings and blank lines are handled; duplicate rows are removed and counted."""
        plan = _plan(tmp_path, b"\xef\xbb\xbfPatientID\r\n1\r\n\r\n2\r\n1\r\n  \r\n3\r\n")
        assert [s.value for r in plan.requests for s in r.elements if s.name == "PatientID"] == ["1", "2", "3"]
        assert [r.line for r in plan.requests] == [2, 4, 7]
        assert (plan.rows, plan.duplicates, plan.blank_lines) == (4, 1, 2)

    @pytest.mark.parametrize("header", [b'"(0010,0020)","(0008,0061)"', b"(0010,0020),(0008,0061)"])
    def test_tag_headers(self, tmp_path: Path, header: bytes) -> None:
        """Header cells may be (gggg,eeee) tags, quoted or not."""
        plan = _plan(tmp_path, header + b"\n1,CT\\MR\n")
        assert {s.name: s.value for s in plan.requests[0].elements}["ModalitiesInStudy"] == "CT\\MR"

    def test_keys_are_stable_and_distinct(self, tmp_path: Path) -> None:
        """The same row gives the same key in another run; different rows differ."""
        a = _plan(tmp_path, b"PatientID\n1\n2\n")
        b = _plan(tmp_path, b"PatientID\n2\n1\n")
        assert {r.key for r in a.requests} == {r.key for r in b.requests}
        assert len({r.key for r in a.requests}) == 2


class TestErrors:
    @pytest.mark.parametrize(
        ("data", "message"),
        [
            (b"PatientID,StudyDate\n1,20200101\n2\n", "batch.csv:3: row has 1 values but the header has 2 columns"),
            (
                b"PatientID,StudyDate\n1,20201301\n",
                "batch.csv:2: column 2: invalid value '<redacted>' for (0008,0020) 'StudyDate' (VR DA): not a calendar date",
            ),
            (
                b"StudyInstanceUID\n1.2.3\n1.2.x\n",
                "batch.csv:3: column 1: invalid value '1.2.x' for (0020,000D) 'StudyInstanceUID' (VR UI): "
                "a UID is digits separated by single dots",
            ),
            (b"PatientId\n1\n", "batch.csv:1: column 1: 'PatientId' is not a DICOM keyword; did you mean 'PatientID'?"),
            (b"patientid\n1\n", "batch.csv:1: column 1: 'patientid' is not a DICOM keyword; did you mean 'PatientID'?"),
            (
                b"PatientID;StudyDate\n1;20200101\n",
                "batch.csv:1: column 1 header 'PatientID;StudyDate' looks like several columns separated by ';'; "
                "the batch CSV is comma-separated (save it as CSV with ',' between values)",
            ),
            (
                b"PatientID,\n1,2\n",
                "batch.csv:1: column 2 of the header is empty; every column needs a keyword or (gggg,eeee) tag",
            ),
            (b"PatientID,(0010,0020)\n1,2\n", "batch.csv:1: column 2 repeats (0010,0020) 'PatientID' of column 1"),
            (
                b"PatientID=1\n1\n",
                "batch.csv:1: column 1 header 'PatientID=1' holds a value; the header names elements only",
            ),
            (b"", "batch.csv: the CSV is empty; its first line must name the columns"),
            (b"PatientID\n\n", "batch.csv: the CSV has a header but no rows"),
            (b"PatientID\n1\n\xff\xfe\n", "batch.csv:3: unable to read the CSV as it is not UTF-8; save it as UTF-8"),
            (
                b"QueryRetrieveLevel\nPATIENT\n",
                "batch.csv:2: QueryRetrieveLevel PATIENT is not allowed by the study model (request.model); "
                "use one of STUDY, SERIES, IMAGE",
            ),
        ],
    )
    def test_messages(self, tmp_path: Path, data: bytes, message: str) -> None:
        """Bad CSVs give file:line, column and the fix; patient values are never echoed."""
        assert _plan_error(tmp_path, data) == message

    def test_missing_level(self, tmp_path: Path) -> None:
        """A query without QueryRetrieveLevel is rejected before any traffic."""
        message = _plan_error(tmp_path, b"PatientID\n1\n", elements=["PatientID"])
        assert message == (
            "batch.csv:2: (0008,0052) 'QueryRetrieveLevel' is not set; "
            "add QueryRetrieveLevel=STUDY to request.elements or a column"
        )


def test_hundred_thousand_rows_plan_in_seconds(tmp_path: Path) -> None:
    """A 100k-row CSV with UIDs and dates plans well within seconds."""
    rows = "\n".join(f"1.2.840.99.{i},P{i:06d},2020{1 + i % 12:02d}{1 + i % 28:02d}" for i in range(100_000))
    start = time.perf_counter()
    plan = _plan(tmp_path, f"StudyInstanceUID,PatientID,StudyDate\n{rows}\n".encode())
    elapsed = time.perf_counter() - start
    assert len(plan.requests) == 100_000
    assert elapsed < 15, f"planning 100k rows took {elapsed:.1f} s"


def test_narrow_asks_only_for_missing_instances() -> None:
    """A request naming its series narrows to an IMAGE-level request for the missing UIDs, same key."""
    from asyncdicom.elements import parse_element
    from asyncdicom.models import Request, narrow

    series = Request(
        "k",
        3,
        tuple(
            parse_element(t)
            for t in ("QueryRetrieveLevel=SERIES", "StudyInstanceUID=1.2", "SeriesInstanceUID=1.2.3", "StudyDate")
        ),
    )
    narrowed = narrow(series, ["1.2.3.4", "1.2.3.5"])
    assert narrowed is not None
    assert (narrowed.key, narrowed.line, narrowed.level) == ("k", 3, "IMAGE")
    assert {s.name: s.value for s in narrowed.elements} == {
        "QueryRetrieveLevel": "IMAGE",
        "StudyInstanceUID": "1.2",
        "SeriesInstanceUID": "1.2.3",
        "SOPInstanceUID": "1.2.3.4\\1.2.3.5",
    }
    study = Request("s", 2, tuple(parse_element(t) for t in ("QueryRetrieveLevel=STUDY", "StudyInstanceUID=1.2")))
    assert narrow(study, ["1.2.3.4"]) is None  # the series of a missing instance is unknown
    assert narrow(series, []) is None


def test_a_list_in_a_single_patient_id_is_warned_about_by_line(tmp_path: Path) -> None:
    """A backslash in a PatientID makes the PACS read several patients: a warning names the rows,
    never the values."""
    plan = _plan(tmp_path, b"PatientID\nP1\nSECRET\\\\P2\nP3\n")
    [warning] = plan.warnings
    assert "the PatientID of 1 rows (lines 3) holds a backslash" in warning
    assert "SECRET" not in warning
    assert _plan(tmp_path, b"PatientID\nP1\nP2\n").warnings == ()


def test_a_path_that_exists_from_the_working_directory_names_both_places(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ancestor's README used ./config/... paths, relative to where the command ran: the error
    says where asyncdicom looked and where the file is."""
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "batch.csv").write_text("PatientID\n1\n")
    doc = find_config(4242, batch="config/batch.csv")
    config = write_yaml(tmp_path / "config" / "c.yml", doc)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_config(config)
    message = str(info.value)
    assert f"file {tmp_path / 'config' / 'config' / 'batch.csv'} does not exist" in message
    assert (
        f"({tmp_path / 'config'}); it exists as {tmp_path / 'config' / 'batch.csv'}, from the current directory"
        in message
    )
