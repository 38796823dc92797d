"""Lookup tables (Java .properties) and script loading with line numbers."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncdicom.anonymize import dictionary, properties
from asyncdicom.anonymize.lint import warnings
from asyncdicom.anonymize.lookup import LookupFailed, LookupTable, LookupTableError
from asyncdicom.anonymize.script import ScriptError, load, parse

TABLE = """# comment
! another comment
ptid/PID-0001 = ANON-0001
ptid/PID\\ 0005 = ANON-0005
name/Müller\\=x : trailing   \\
    continued
path/a\\\\b=one\\ttab
ptid/dup = first
ptid/dup = second
alias/x = @ptid/PID-0001
loop/a = @loop/a
uni/\\u00e9 = e-acute
"""


def test_properties_syntax(tmp_path: Path) -> None:
    """Comments, escaped spaces and separators, continuation lines, \\t and \\u escapes,
    last duplicate wins, values trimmed on lookup."""
    path = tmp_path / "t.properties"
    path.write_text(TABLE, encoding="utf-8")
    table = LookupTable.load(path)
    assert table.lookup("ptid", "PID-0001") == "ANON-0001"
    assert table.lookup("ptid", "PID 0005") == "ANON-0005"
    assert table.lookup("name", "Müller=x") == "trailing   continued"
    assert table.entries["path/a\\b"] == "one\ttab"
    assert table.lookup("ptid", "dup") == "second"
    assert table.lookup(" alias ", " x ") == "ANON-0001"  # indirection, trimmed key parts
    assert table.lookup("uni", "é") == "e-acute"
    with pytest.raises(LookupFailed):
        table.lookup("ptid", "PID-0002")
    with pytest.raises(LookupFailed, match="indirections"):
        table.lookup("loop", "a")
    with pytest.raises(LookupFailed, match="empty"):
        LookupTable.empty().lookup("ptid", "x")


def test_lookup_table_errors_say_where(tmp_path: Path) -> None:
    bad = tmp_path / "bad.properties"
    bad.write_text("a/1 = x\nb/2 = \\u12G4\n", encoding="utf-8")
    with pytest.raises(LookupTableError, match=r"bad.properties:2 .*\\uXXXX"):
        LookupTable.load(bad)
    latin = tmp_path / "latin.properties"
    latin.write_bytes(b"a/1 = x\nb/M\xfcller = y\n")
    with pytest.raises(LookupTableError, match=r"latin.properties:2 as it is not UTF-8"):
        LookupTable.load(latin)
    with pytest.raises(LookupTableError, match="does not exist"):
        LookupTable.load(tmp_path / "missing.properties")


def test_properties_error_keeps_earlier_entries() -> None:
    with pytest.raises(properties.PropertiesError) as info:
        properties.parse("a=1\nb=\\u12\n")
    assert [e.key for e in info.value.entries] == ["a"] and info.value.line == 2


XML = """<script>
 <p t="UIDROOT">1.2.3</p>
 <p t="SPACED"> padded </p>
 <e en="T" t="00100020" n="PatientID">  @hash(this,10)  </e>
 <e en="F" t="00100010" n="PatientName">@remove()</e>
 <e en="T" t="0009[GEMS_IDEN_01]01" n="GEPriv">@remove()</e>
 <e en="T" t="50xx0010" n="Wild">@remove()</e>
 <e en="T" t="00080080" n="InstitutionName">@newuid()</e>
 <k en="T" t="0018">keep</k>
 <k en="T" t="safeprivateelements">safe</k>
 <r en="T" t="privategroups">x</r>
 <r en="T" t="bogus">x</r>
 <r en="F" t="overlays">x</r>
</script>
"""


def test_xml_script_rules_params_flags_and_warnings() -> None:
    script = parse(XML, "s.script")
    assert script.params == {"UIDROOT": "1.2.3", "SPACED": " padded "}
    rules = {rule.spec: rule for rule in script.rules.values()}
    assert rules["0010,0020"].script == "@hash(this,10)" and rules["0010,0020"].line == 4
    assert "0010,0010" not in rules  # disabled
    assert "0009,[GEMS_IDEN_01]01" in rules
    assert script.keep_groups == [0x0018] and script.keep_safe_private
    assert script.rpg and not script.rol and not script.rue
    text = "\n".join(warnings(script))
    assert "s.script:7: the rule for '50xx,0010'" in text
    assert "s.script:8: @newuid() is not a CTP function" in text
    assert "s.script:12: <r t='bogus'>" in text


def test_malformed_xml_is_an_error_with_its_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.script"
    path.write_text("<script>\n <e en='T' t='00100010'>@remove()</e>\n <e en='T' t='00100020'>@hash(this</script>\n")
    with pytest.raises(ScriptError, match=r"bad.script:3 as its XML is malformed"):
        load(path)
    with pytest.raises(ScriptError, match=r"does not exist|No such file"):
        load(tmp_path / "missing.script")


def test_legacy_properties_script() -> None:
    script = parse(
        "param.PROJ=Legacy\nset.[0010,0010]PatientName=@hashname(this,6)\n#set.[0008,0080]X=@remove()\n"
        "keep.group0018=\nremove.privategroups=\nset.[0008,0050]AccessionNumber=A\\\\\\\\B\n",
        "legacy.script",
    )
    assert script.params == {"PROJ": "Legacy"}
    assert {rule.spec: rule.script for rule in script.rules.values()} == {
        "0010,0010": "@hashname(this,6)",
        "0008,0050": "A\\\\B",
    }
    assert script.keep_groups == [0x18] and script.rpg


def test_dcm4che_names_are_generated_data() -> None:
    """dcm4che-1.4 keywords, not pydicom's: the table came from dictionary.xml."""
    assert dictionary.standard_tag("DeIdentificationMethodCodeSeq") == 0x00120064
    assert dictionary.standard_tag("DeidentificationMethodCodeSequence") == 0
    assert dictionary.standard_tag("PPSStartDate") == 0x00400244
    assert dictionary.standard_tag("OverlayData") == 0x60003000
    assert dictionary.standard_tag("(0010,0010)") == dictionary.standard_tag("[00100010]") == 0x00100010
    assert dictionary.standard_tag("100010") == 0x00100010
    assert dictionary.dictionary_vr(0x00100010) == "PN"
    assert dictionary.private_entry(0x00191002, "gems_acqu_01") is not None
    assert sum(1 for vr, code in dictionary.private_tags().values() if code == "K") == 500
