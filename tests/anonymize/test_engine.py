"""The interpreter end to end on datasets built here: the specification's worked examples
(§12) through real scripts, character sets, sequences, outcomes and safe mode."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from asyncdicom.anonymize.values import put
from tests.anonymize.helpers import dataset, e, rules, run


@pytest.mark.parametrize(
    ("attrs", "rule", "params", "keyword", "expected"),
    [
        ({"PatientID": "12345"}, e("00100020", "@hash(this,10)"), {}, "PatientID", "1734476027"),
        ({"AccessionNumber": "A123"}, e("00080050", "@hash(this,16)"), {}, "AccessionNumber", "2602106057595449"),
        ({"PatientName": "DOE^JOHN^Q"}, e("00100010", "@hashname(this,6,2)"), {}, "PatientName", "767339"),
        (
            {"PatientID": "12345", "OtherPatientIDs": "x"},
            e("00101000", "@hashptid(@SITEID,PatientID)"),
            {"SITEID": "1"},
            "OtherPatientIDs",
            "305277255045083278874059798461368005173",
        ),
        (
            {"PatientID": "12345", "StudyDate": "20200115"},
            e("00080020", "@hashdate(this,PatientID)"),
            {},
            "StudyDate",
            "20180510",
        ),
        (
            {"PatientID": "02004950", "PatientBirthDate": "19700101"},
            e("00100030", "@hashdate(this,PatientID)"),
            {},
            "PatientBirthDate",
            "19630421",
        ),
        (
            {"SOPInstanceUID": "1.2.840.113619.2.55.3.604688119.868.1234567890.123"},
            e("00080018", "@hashuid(@UIDROOT,this)"),
            {"UIDROOT": "1.2.840.113654.2.70.1"},
            "SOPInstanceUID",
            "1.2.840.113654.2.70.1.82564962476139398367819456866462410307",
        ),
        ({"PatientName": "DOE^JOHN^Q"}, e("00100010", "@initials(this)"), {}, "PatientName", "JQD"),
        ({"PatientName": "DOE^JOHN^Q"}, e("00100010", "@initials(this,1)"), {}, "PatientName", "KRE"),
        ({"PatientName": "^ ,"}, e("00100010", "@initials(this,-3)"), {}, "PatientName", "U"),  # X, shifted (DAT)
        ({"PatientAge": "027Y"}, e("00101010", "@round(this,5)"), {}, "PatientAge", "025Y"),
        ({"StudyDate": "20200715"}, e("00080020", "@modifydate(this,*,1,1)"), {}, "StudyDate", "20200101"),
        ({"AccessionNumber": "X"}, e("00080050", "A\\\\B"), {}, "AccessionNumber", ["A", "B"]),
        ({"StudyDescription": "x"}, e("00081030", "@param(@NOPE)"), {}, "StudyDescription", "null"),
        ({"PatientID": "12345"}, e("00100020", "@hash(this,@NOPE)"), {}, "PatientID", "(this,@NOPE)"),
        ({"StudyDescription": "x"}, e("00081030", "a\\@b@keep( )"), {}, "StudyDescription", "a@b@keep()"),
        (
            {"PatientID": "12345"},
            e("00100020", "@encrypt(this,@KEY)"),
            {"KEY": "mysecret"},
            "PatientID",
            "HHdAc/9IgN8=",
        ),
        (
            {"PatientID": "HHdAc/9IgN8="},
            e("00100020", "@decrypt(this,@KEY)"),
            {"KEY": "mysecret"},
            "PatientID",
            "12345",
        ),
        ({"PatientID": "12345"}, e("00100020", "@encrypt(this)"), {}, "PatientID", "(this)"),
    ],
)
def test_worked_examples(
    tmp_path: Path, attrs: dict[str, str], rule: str, params: dict[str, str], keyword: str, expected: object
) -> None:
    outcome, out = run(tmp_path, dataset(**attrs), rules(rule, params=params))
    assert outcome.status == "ok", outcome.reason
    assert out is not None
    value = out.data_element(keyword).value
    assert (list(value) if isinstance(expected, list) else str(value)) == expected


def test_lookup_hits_falls_back_and_quarantines(tmp_path: Path) -> None:
    """§12 row 15: ptid/02004950 = 0; a missing key quarantines unless a fallback is given."""
    table = {"ptid/02004950": "0"}
    outcome, out = run(
        tmp_path, dataset(PatientID="02004950"), rules(e("00100020", "@lookup(this,ptid)")), lookup=table
    )
    assert out is not None and out.PatientID == "0"
    outcome, out = run(tmp_path, dataset(PatientID="99"), rules(e("00100020", "@lookup(this,ptid)")), lookup=table)
    assert outcome.status == "quarantine" and "lookup" in outcome.reason and "99" not in outcome.reason
    assert not (tmp_path / "out.dcm").exists()
    outcome, out = run(tmp_path, dataset(PatientID="99"), rules(e("00100020", "@lookup(this,ptid,keep)")), lookup=table)
    assert out is not None and out.PatientID == "99"


def test_always_append_require_and_if(tmp_path: Path) -> None:
    """§12 rows 16–17: insertion with @always(), @append, @require defaults, @if isblank."""
    script = rules(
        e("00120063", "@always()@append(){CTP: @param(@PROFILENAME)}"),
        e("00120062", "@always()YES"),
        e("00080060", "@always()@require(StationName,OT)"),
        e("0040A075", "@if(this,isblank){@remove()}{Removed by CTP}"),
        e("00081070", "@if(this,isblank){@remove()}{Removed by CTP}"),
        params={"PROFILENAME": "DICOM-PS3.15E-Basic"},
    )
    ds = dataset(VerifyingObserverName="", OperatorsName="SMITH^J")
    outcome, out = run(tmp_path, ds, script)
    assert out is not None, outcome.reason
    assert out.DeidentificationMethod == "CTP: DICOM-PS3.15E-Basic"
    assert out.PatientIdentityRemoved == "YES"
    assert out.Modality == "OT"
    assert "VerifyingObserverName" not in out
    assert out.OperatorsName == "Removed by CTP"


def test_character_sets_latin1_and_utf8(tmp_path: Path) -> None:
    """Values are decoded with the dataset's character set, hashed as UTF-8 (§12 row 11) and
    written back in that character set."""
    latin = dataset(PatientName="Müller", StudyDescription="Köln")
    latin.SpecificCharacterSet = "ISO_IR 100"
    script = rules(e("00100010", "@hash(this)"), e("00081030", "@uppercase(this)"))
    outcome, out = run(tmp_path, latin, script)
    assert out is not None, outcome.reason
    assert out.get_item(0x00081030).value == "KÖLN".encode("latin_1")  # raw, before pydicom decodes it
    assert str(out.PatientName) == "302211161555340457334206795081280877087"
    assert out.StudyDescription == "KÖLN"
    utf8 = dataset(PatientName="Yamada^Tarou=山田^太郎", InstitutionName="東京病院")
    utf8.SpecificCharacterSet = "ISO_IR 192"
    outcome, out = run(tmp_path, utf8, rules(e("00080080", "@contents(this)-@contents(PatientName)")))
    assert out is not None, outcome.reason
    assert out.get_item(0x00080080).value.startswith("東京病院".encode())
    assert out.InstitutionName == "東京病院-Yamada^Tarou=山田^太郎"


def test_no_character_set_gets_iso_ir_100(tmp_path: Path) -> None:
    """As DAT: an input without (0008,0005) comes out with ISO_IR 100."""
    _, out = run(tmp_path, dataset(PatientID="1"), rules(e("00100020", "X")))
    assert out is not None and out.SpecificCharacterSet == "ISO_IR 100"


def _nested() -> Dataset:
    inner = Dataset()
    inner.PatientID = "INNER"
    inner.PatientName = "INNER^NAME"
    middle = Dataset()
    middle.AccessionNumber = "ACC-1"
    middle.OtherPatientIDsSequence = Sequence([inner])
    return dataset(
        PatientID="ROOT", PatientName="ROOT^NAME", StudyDescription="x", RequestAttributesSequence=Sequence([middle])
    )


def test_nested_sequences_need_process_at_every_level(tmp_path: Path) -> None:
    """Items are processed only under @process(); `root:` and `A::B` paths read across levels."""
    script = rules(
        e("00400275", "@process()"),
        e("00101002", "@process()"),
        e("00080050", "@hash(this,6)"),
        e("00100020", "@select(){@hash(this,4)}{@contents(root:PatientID)-@contents(this)}"),
        e("00081030", "@contents(RequestAttributesSeq::OtherPatientIDSeq::PatientName)"),
    )
    outcome, out = run(tmp_path, _nested(), script)
    assert out is not None, outcome.reason
    middle = out.RequestAttributesSequence[0]
    assert middle.AccessionNumber != "ACC-1" and len(middle.AccessionNumber) == 6
    assert middle.OtherPatientIDsSequence[0].PatientID == "ROOT-INNER"
    assert out.StudyDescription == "INNER^NAME"
    # without @process on the outer sequence nothing inside changes
    outcome, out = run(tmp_path, _nested(), rules(e("00080050", "@hash(this,6)")))
    assert out is not None and out.RequestAttributesSequence[0].AccessionNumber == "ACC-1"


def test_skip_and_quarantine_write_nothing(tmp_path: Path) -> None:
    outcome, _ = run(tmp_path, dataset(PatientID="1"), rules(e("00100020", "@skip()")))
    assert outcome.status == "skip"
    outcome, _ = run(tmp_path, dataset(PatientID="1"), rules(e("00100020", "a@b.com")))
    assert outcome.status == "quarantine" and "@" in outcome.reason
    assert not (tmp_path / "out.dcm").exists()


LONG = "X" * 70  # a person name component group DAT cannot store: it keeps the original


def test_faithful_keeps_an_unwritable_replacement_safe_quarantines(tmp_path: Path) -> None:
    """The documented difference: DAT keeps the original name; safe mode refuses the file."""
    script = rules(e("00100010", LONG))
    outcome, out = run(tmp_path, dataset(PatientName="DOE^JOHN"), script)
    assert out is not None and str(out.PatientName) == "DOE^JOHN"
    outcome, out = run(tmp_path, dataset(PatientName="DOE^JOHN"), script, mode="safe")
    assert outcome.status == "quarantine" and "(0010,0010) PatientName" in outcome.reason
    assert "DOE" not in outcome.reason
    outcome, _ = run(tmp_path, dataset(PatientID="1"), rules(e("00100020", "@hash(this,@NOPE)")), mode="safe")
    assert outcome.status == "quarantine"


names = st.text(
    alphabet=st.characters(codec="latin-1", categories=["L", "N", "P", "Zs"], exclude_characters="\\=^"),
    max_size=30,
).map(lambda s: "Qz~" + s.strip())
ids = st.text(alphabet="ABCDEFGHIJ0123456789-", min_size=1, max_size=12).map(lambda s: "Qz#" + s)
CHANGES = [
    "@hash(this,8)",
    "@hashname(this,6)",
    LONG,
    "@lookup(this,ptid,remove)",
    "@incrementdate(this,-5)",
    "@hash(this,@UNDEFINED)",
    "@contents(this,.*,REDACTED)",
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names, patient_id=ids, name_rule=st.sampled_from(CHANGES), id_rule=st.sampled_from(CHANGES))
def test_safe_mode_never_writes_an_original_name_or_id_it_was_asked_to_change(
    tmp_path: Path, name: str, patient_id: str, name_rule: str, id_rule: str
) -> None:
    ds = dataset(PatientName=name, PatientID=patient_id)
    ds.SpecificCharacterSet = "ISO_IR 100"
    script = rules(e("00100010", name_rule), e("00100020", id_rule))
    outcome, out = run(tmp_path, ds, script, mode="safe")
    if out is None:
        assert outcome.status == "quarantine"
        assert name not in outcome.reason and patient_id not in outcome.reason
        return
    for tag, original in ((0x00100010, name), (0x00100020, patient_id)):
        elem = out.get_item(tag) if tag in out else None  # raw bytes: no pydicom validation on the way
        written = bytes(elem.value or b"").rstrip(b" \0") if elem is not None else b""
        assert written != original.encode("latin_1")


def test_incremented_old_style_date_leaks_in_faithful_and_quarantines_in_safe(tmp_path: Path) -> None:
    """Spec §15.1: DAT cannot write `2011-04-02` back into a DA, so the original date stays."""
    script = rules(e("00080020", "@incrementdate(this,-3210)"))
    ds = dataset()
    with pytest.warns(UserWarning, match="Invalid value for VR DA"):  # pydicom agrees it is not a DA
        ds.add_new(0x00080020, "DA", "2020-01-15")
    _, out = run(tmp_path, ds, script)
    assert out is not None and out.get_item(0x00080020).value == b"2020-01-15"
    outcome, _ = run(tmp_path, ds, script, mode="safe")
    assert outcome.status == "quarantine" and "(0008,0020) StudyDate" in outcome.reason


def test_dateinterval_counts_julian_days_before_1582_as_dat_does(tmp_path: Path) -> None:
    """DAT's results for lenient base dates in the lookup table: ``1/1/70`` is the year 70 (in
    Java's Julian calendar), ``2/30/2020`` is 1 March, ``1/1/-5`` is 6 BC."""
    ds = dataset(PatientID="P1", PatientBirthDate="19800229", ContentDate="20200431", AcquisitionDate="20200115")
    script = rules(
        e("00100030", "@dateinterval(this,early,PatientID,@ORIGIN)"),
        e("00080023", "@dateinterval(this,leap,PatientID,@ORIGIN)"),
        e("00080022", "@dateinterval(this,bc,PatientID,@ORIGIN)"),
        params={"ORIGIN": "19700101"},
    )
    table = {"early/P1": "1/1/70", "leap/P1": "2/30/2020", "bc/P1": "1/1/-5"}
    outcome, out = run(tmp_path, ds, script, lookup=table)
    assert outcome.status == "ok" and out is not None
    assert out.PatientBirthDate == "38800301"
    assert out.ContentDate == "19700303"
    assert out.AcquisitionDate == "39950117"
    # SimpleDateFormat("yyyyMMdd") on "1980-02-": month "-0" (December before), day "2"
    ds = dataset(PatientID="P1")
    put(ds, 0x00100030, "DA", b"1980-02-29", False, True)  # an old-style date pydicom warns about
    _, out = run(
        tmp_path,
        ds,
        rules(e("00100030", "@dateinterval(this,early,PatientID,@ORIGIN)"), params={"ORIGIN": "19700101"}),
        lookup=table,
    )
    assert out is not None and out.PatientBirthDate == "38791203"


def test_initials_take_javas_first_char_of_each_word(tmp_path: Path) -> None:
    """A word starting with a character outside the BMP gives half a surrogate pair: ``?``."""
    ds = dataset(SpecificCharacterSet="ISO_IR 192", PatientName="x", SeriesDescription="𝄞𝄞𝄞")
    _, out = run(tmp_path, ds, rules(e("00100010", "@initials(SeriesDescription)")))
    assert out is not None and out.PatientName == "?"


def test_process_on_an_element_the_file_lacks_quarantines(tmp_path: Path) -> None:
    """CTP's @process reads the element's VR without a null check (``@always()@process()`` on
    a missing element throws, DAT quarantines); on a present non-sequence it does nothing."""
    outcome, _ = run(tmp_path, dataset(), rules(e("00401001", "@always()@process()")))
    assert outcome.status == "quarantine" and "(0040,1001)" in outcome.reason
    outcome, out = run(tmp_path, dataset(StudyDescription="kept"), rules(e("00081030", "@process()")))
    assert outcome.status == "ok" and out is not None and out.StudyDescription == "kept"


def test_append_asks_whether_the_element_has_a_value_not_whether_it_reads_empty(tmp_path: Path) -> None:
    """``^^`` reads as an empty name but has one value: DAT appends after it."""
    ds = dataset(PatientName="^^")
    _, out = run(tmp_path, ds, rules(e("00100010", "@append(){4}")))
    assert out is not None and out.get_item(0x00100010).value.rstrip(b" ") == b"\\4"
    _, out = run(tmp_path, dataset(PatientName=""), rules(e("00100010", "@append(){4}")))
    assert out is not None and out.PatientName == "4"


def test_greaterthan_compares_java_ints(tmp_path: Path) -> None:
    """The digits of a UID overflow a Java int, which then counts as 0 (DAT took the else branch)."""
    ds = dataset(SOPInstanceUID="1.2.840.113619.2.55", StudyDescription="x", SeriesDescription="x")
    script = rules(
        e("00081030", "@if(SOPInstanceUID,greaterthan,19){GT}{LE}"),
        e("0008103E", "@if(SOPInstanceUID,greaterthan,1){GT}{LE}"),
    )
    _, out = run(tmp_path, ds, script)
    assert out is not None and out.StudyDescription == "LE" and out.SeriesDescription == "LE"
    ds = dataset(SOPInstanceUID="1.2.3", StudyDescription="x")
    _, out = run(tmp_path, ds, rules(e("00081030", "@if(SOPInstanceUID,greaterthan,19){GT}{LE}")))
    assert out is not None and out.StudyDescription == "GT"
