"""Element specifications: parsing, VR validation, identifiers."""

from __future__ import annotations

import pytest

from asyncdicom.elements import ElementError, build_identifier, check_value, merge, parse_element


class TestParse:
    @pytest.mark.parametrize(
        ("text", "name", "value"),
        [
            ("PatientID", "PatientID", None),
            ("PatientID=02004950", "PatientID", "02004950"),
            ("(0008,0020)=20200101-", "StudyDate", "20200101-"),
            ("(0020,000d)", "StudyInstanceUID", None),
            ("QueryRetrieveLevel=SERIES ", "QueryRetrieveLevel", "SERIES"),
            (
                "ReferencedStudySequence[0].ReferencedSOPInstanceUID=1.2.3",
                "ReferencedStudySequence[0].ReferencedSOPInstanceUID",
                "1.2.3",
            ),
            ("PatientName=DOE^J*", "PatientName", "DOE^J*"),
            ("ModalitiesInStudy=CT\\MR", "ModalitiesInStudy", "CT\\MR"),
        ],
    )
    def test_valid_forms(self, text: str, name: str, value: str | None) -> None:
        """Every documented element form parses to its keyword path and value."""
        spec = parse_element(text)
        assert (spec.name, spec.value) == (name, value)

    @pytest.mark.parametrize(
        ("text", "message"),
        [
            (
                "Date",
                "'Date' (0040,A121) is a structured-report content item, not a query key; did you mean 'StudyDate'?",
            ),
            ("PatientNme", "'PatientNme' is not a DICOM keyword; did you mean 'PatientName'?"),
            ("(0009,0010)", "private tag (0009,0010) cannot be used as its VR is not known; use a public element"),
            ("(0008,1234)", "tag (0008,1234) is not in the DICOM dictionary; check the group and element numbers"),
            (
                "PatientID[0].StudyDate",
                "'PatientID[0]' in 'PatientID[0].StudyDate' is not a sequence, so nothing can follow it",
            ),
            (
                "QueryRetrieveLevel=series",
                "(0008,0052) 'QueryRetrieveLevel' must be one of PATIENT, STUDY, SERIES, IMAGE, not 'series'",
            ),
            (
                "StudyInstanceUID=1.2..3",
                "invalid value '1.2..3' for (0020,000D) 'StudyInstanceUID' (VR UI): a UID is digits separated by single dots",
            ),
            (
                "StudyTime=251000",
                "invalid value '251000' for (0008,0030) 'StudyTime' (VR TM): a time must be HHMMSS[.FFFFFF]",
            ),
            (
                "Modality=ct",
                "invalid value 'ct' for (0008,0060) 'Modality' (VR CS): a code string allows only A-Z, 0-9, space and underscore",
            ),
            (
                "StudyID=12345678901234567",
                "invalid value '12345678901234567' for (0020,0010) 'StudyID' (VR SH): longer than the 16 characters allowed for VR SH",
            ),
        ],
    )
    def test_invalid_forms(self, text: str, message: str) -> None:
        """Invalid names and values give an exact, helpful message."""
        with pytest.raises(ElementError) as info:
            parse_element(text)
        assert str(info.value) == message

    def test_patient_data_is_not_echoed(self) -> None:
        """A bad date or patient value is reported without showing the value itself."""
        with pytest.raises(ElementError) as info:
            parse_element("PatientBirthDate=19701399")
        assert "19701399" not in str(info.value)
        assert "<redacted>" in str(info.value)
        assert "not a calendar date" in str(info.value)


class TestValues:
    @pytest.mark.parametrize(
        ("element", "value"),
        [
            ("StudyDate", "20200229"),
            ("StudyDate", "-20200101"),
            ("StudyDate", "20200101-20201231"),
            ("StudyTime", "1200-1300"),
            ("StudyTime", "235959.123456"),
            ("AcquisitionDateTime", "20200101120000-0500"),
            ("StudyInstanceUID", "1.2.3\\4.5.6"),
            ("PatientAge", "045Y"),
            ("SeriesNumber", "-3"),
            ("AccessionNumber", "A*"),
            ("StudyDate", ""),
        ],
    )
    def test_accepted(self, element: str, value: str) -> None:
        """Values valid for their VR (ranges, lists, wildcards) are kept as given."""
        spec = parse_element(element)
        assert check_value(spec, value) == value

    @pytest.mark.parametrize(
        ("element", "value"),
        [
            ("StudyDate", "20210229"),
            ("StudyDate", "2021-01-01-"),
            ("StudyInstanceUID", "1.2.a"),
            ("SeriesNumber", "1.5"),
            ("PatientAge", "45Y"),
            ("StudyInstanceUID", "1." * 40 + "1"),
        ],
    )
    def test_rejected(self, element: str, value: str) -> None:
        """Values invalid for their VR raise ElementError."""
        with pytest.raises(ElementError):
            check_value(parse_element(element), value)


class TestIdentifier:
    def test_build_with_sequence_and_return_keys(self) -> None:
        """Identifiers carry values, empty return keys and sequence items."""
        specs = [
            parse_element(t)
            for t in (
                "QueryRetrieveLevel=STUDY",
                "PatientID=12",
                "StudyDate",
                "ReferencedStudySequence[0].ReferencedSOPInstanceUID=1.2.3",
                "SeriesNumber=4",
            )
        ]
        ds = build_identifier(specs)
        assert ds.QueryRetrieveLevel == "STUDY"
        assert ds.PatientID == "12"
        assert "StudyDate" in ds and ds.StudyDate in (None, "")
        assert ds.ReferencedStudySequence[0].ReferencedSOPInstanceUID == "1.2.3"
        assert ds.SeriesNumber == 4

    def test_merge_overrides_keep_order(self) -> None:
        """Row values override common elements in place; new ones are appended."""
        common = [parse_element("QueryRetrieveLevel=STUDY"), parse_element("PatientID")]
        merged = merge(common, [parse_element("PatientID=7"), parse_element("StudyDate=20200101")])
        assert [(s.name, s.value) for s in merged] == [
            ("QueryRetrieveLevel", "STUDY"),
            ("PatientID", "7"),
            ("StudyDate", "20200101"),
        ]


def test_column_text_finds_values_inside_sequences() -> None:
    from asyncdicom.elements import column_text

    items = '[{"00081155": {"vr": "UI", "Value": ["1.2.3"]}, "00081160": {"vr": "IS", "Value": [1, 2]}},'
    items += ' {"00081155": {"vr": "UI", "Value": ["4.5.6"]}}]'
    names = '[{"00100010": {"vr": "PN", "Value": [{"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎"}]}}]'
    attrs = {"PatientID": "P1", "SourceImageSequence": items, "OtherPatientIDsSequence": names, "Broken": "[{"}
    assert column_text(attrs, "PatientID") == "P1"
    assert column_text(attrs, "SourceImageSequence[0].ReferencedSOPInstanceUID") == "1.2.3"
    assert column_text(attrs, "SourceImageSequence[1].ReferencedSOPInstanceUID") == "4.5.6"
    assert column_text(attrs, "SourceImageSequence[0].ReferencedFrameNumber") == "1\\2"
    assert column_text(attrs, "SourceImageSequence[2].ReferencedSOPInstanceUID") == ""  # no such item
    assert column_text(attrs, "OtherPatientIDsSequence[0].PatientName") == "Yamada^Tarou=山田^太郎"
    assert column_text(attrs, "ReferencedStudySequence[0].ReferencedSOPInstanceUID") == ""  # not in the match
    assert column_text({"ReferencedStudySequence": "[{"}, "ReferencedStudySequence[0].ReferencedSOPInstanceUID") == ""


def test_uids_are_digits_and_dots_of_at_most_64_characters() -> None:
    from asyncdicom.elements import is_uid

    assert is_uid("1.2.840.10008.1.2.1")
    assert is_uid("1.2.040.5")  # a leading zero in a component: real archives hold these
    assert is_uid("1." + "2" * 62)
    for bad in ("", "1.2/../../x", "not a uid", "1..2", ".1.2", "1.2.", "1.2 ", "1." + "2" * 63, "1.2\u202e3"):
        assert not is_uid(bad), bad


def test_unusual_values_are_counted() -> None:
    """Control characters (line breaks and tabs aside), direction marks and U+FFFD are counted."""
    from asyncdicom.elements import unusual_values

    matches = [
        {"PatientID": "P1", "PatientComments": "two\nlines\tand a tab"},
        {"PatientID": "P\x001", "PatientName": "abc\u202egpj.exe"},
        {"PatientName": "Mu\ufffdller", "StudyDescription": "CT\x1b[31m"},
    ]
    assert unusual_values(matches) == 4
    assert unusual_values([]) == 0
