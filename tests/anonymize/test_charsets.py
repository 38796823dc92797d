"""Specific Character Set as DAT (dcm4che 1.4) applies it. Expected bytes are what DAT 2021 wrote
for the same input and script (Java 17, UTF-8 default charset), observed in differential runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from asyncdicom.anonymize.charset import Charset, CharsetError, from_value
from asyncdicom.anonymize.values import put
from tests.anonymize.helpers import dataset, e, rules, run


def raw(ds: Dataset | None, tag: int) -> bytes:
    assert ds is not None
    value = ds.get_item(tag).value
    if isinstance(value, str):  # pydicom has already converted the charset element
        value = value.encode("ascii")
    assert isinstance(value, bytes)
    return value.rstrip(b" \0")


def test_non_text_vrs_are_read_with_the_charset_and_written_as_utf8(tmp_path: Path) -> None:
    """A CS holding Latin-1 bytes in a UTF-8 data set reads as U+FFFD; a CS written into a
    Latin-1 data set is UTF-8 (Java's getBytes())."""
    ds = dataset(SpecificCharacterSet="ISO_IR 192", PatientName="x")
    put(ds, 0x00180015, "CS", b"\xc9T\xca ", False, True)  # pydicom refuses to set these bytes
    _, out = run(tmp_path, ds, rules(e("00100010", "@always()@contents(BodyPartExamined)")))
    assert raw(out, 0x00100010) == "\ufffdT\ufffd".encode()
    ds = dataset()
    put(ds, 0x00180015, "CS", b"\xc9T\xca ", False, True)  # no (0008,0005): ISO_IR 100
    _, out = run(tmp_path, ds, rules(e("00180015", "@lowercase(this)")))
    assert raw(out, 0x00180015) == "étê".encode()
    assert raw(out, 0x00080005) == b"ISO_IR 100"


@pytest.mark.parametrize("declared", ["ISO_IR 6", "GBK"])
def test_a_charset_dcm4che_does_not_know_becomes_iso_ir_100(tmp_path: Path, declared: str) -> None:
    """Values are then read and written as Latin-1, and elements no rule touches keep their
    bytes (pydicom must not transcode them for the new charset)."""
    ds = dataset(SpecificCharacterSet=declared, PatientName="x", InstitutionName="x")
    ds[0x00100010].value = "Müller^Jörg".encode("latin-1")
    ds[0x00080080].value = "王^小".encode("gbk")
    _, out = run(tmp_path, ds, rules(e("00100010", "@lowercase(this)")))
    assert raw(out, 0x00080005) == b"ISO_IR 100"
    assert raw(out, 0x00100010) == "müller^jörg".encode("latin-1")
    assert raw(out, 0x00080080) == "王^小".encode("gbk")


def test_iso_2022_values_are_decoded_but_written_in_the_first_charset(tmp_path: Path) -> None:
    """With ``\\ISO 2022 IR 87`` dcm4che decodes the kanji but encodes with US-ASCII: ``?``."""
    ds = dataset(SpecificCharacterSet=["", "ISO 2022 IR 87"], PatientName="x", StudyDescription="x")
    ds[0x00100010].value = b"Yamada^Taro=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"
    _, out = run(tmp_path, ds, rules(e("00081030", "@contents(PatientName)")))
    assert raw(out, 0x00081030) == b"Yamada^Taro=??^??"
    assert raw(out, 0x00100010) == b"Yamada^Taro=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"  # untouched


def test_a_script_that_sets_the_charset_changes_how_later_values_are_written(tmp_path: Path) -> None:
    ds = dataset(SpecificCharacterSet="ISO_IR 192", PatientName="x")
    ds[0x00100010].value = "Müller^Jörg".encode()
    script = rules(e("00080005", "ISO_IR 100"), e("00100010", "@uppercase(this)"))
    _, out = run(tmp_path, ds, script)
    assert raw(out, 0x00100010) == "MÜLLER^JÖRG".encode("latin-1")
    script = rules(e("00080005", "@remove()"), e("00100010", "@uppercase(this)"))
    ds = dataset(PatientName="x")
    ds[0x00100010].value = "Müller^Jörg".encode("latin-1")
    _, out = run(tmp_path, ds, script)
    assert raw(out, 0x00100010) == "MÜLLER^JÖRG".encode()  # no charset left: the JVM default


def test_an_item_with_its_own_charset_is_read_and_written_with_it(tmp_path: Path) -> None:
    own, inherits = Dataset(), Dataset()
    own.SpecificCharacterSet = "ISO_IR 100"
    own.CodeValue, own.CodeMeaning = "A", "x"
    own[0x00080104].value = "Größe".encode("latin-1")
    inherits.CodeValue, inherits.CodeMeaning = "B", "x"
    inherits[0x00080104].value = "Größe".encode()
    ds = dataset(SpecificCharacterSet="ISO_IR 192", ProcedureCodeSequence=Sequence([own, inherits]))
    script = rules(e("00081032", "@process()"), e("00080104", "@uppercase(this)"))
    _, out = run(tmp_path, ds, script)
    assert out is not None
    items = out.ProcedureCodeSequence
    assert raw(items[0], 0x00080104) == "GRÖSSE".encode("latin-1")
    assert raw(items[1], 0x00080104) == "GRÖSSE".encode()


def test_the_charset_model() -> None:
    assert from_value("ISO_IR 100 ") == Charset("ISO-8859-1")
    assert from_value("\\ISO 2022 IR 87") == Charset("US-ASCII", iso2022=True)
    assert from_value("ISO_IR 6") is None and from_value("") is None
    x0201 = Charset("JIS_X0201")
    assert x0201.decode(b"\\~\xb1\x80") == "\\~\uff71\ufffd"  # Java reads 5C and 7E as ASCII
    assert x0201.encode("\u00a5\uff71\u00e9") == b"\\\xb1?"
    jis = Charset("US-ASCII", iso2022=True)
    assert jis.decode(b"\x1b$B;3ED\x1b(Bx") == "山田x"
    with pytest.raises(CharsetError):  # an odd byte after ESC $ B: dcm4che throws, the value reads as null
        jis.decode(b"\x1b$B;3E")
    assert Charset("JIS0208").encode("A山") == b"!);3"  # unmappable: FULLWIDTH QUESTION MARK
