"""Anonymization during a real retrieve from Orthanc: names rendered from the anonymized data,
quarantined instances kept out of the output tree and recorded with their reason."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.cli_helpers import cli, cli_json, library
from tests.conftest import LoadedOrthanc, write_yaml
from tests.test_retrieve_orthanc import retrieve_config, write_batch

pytestmark = pytest.mark.network

SCRIPT = """<script>
 <p t="UIDROOT">1.2.826.0.1.3680043.10.1</p>
 <e en="T" t="00100020" n="PatientID">@lookup(this,ptid)</e>
 <e en="T" t="00100010" n="PatientName">@hashname(this,8)</e>
 <e en="T" t="0020000d" n="StudyInstanceUID">@hashuid(@UIDROOT,this)</e>
 <e en="T" t="0020000e" n="SeriesInstanceUID">@hashuid(@UIDROOT,this)</e>
 <e en="T" t="00080018" n="SOPInstanceUID">@hashuid(@UIDROOT,this)</e>
 <r en="T" t="privategroups">Remove private groups</r>
</script>
"""


@pytest.mark.parametrize("kind", ["c-get", "c-move"])
def test_retrieve_anonymizes_before_placing_and_quarantines_misses(
    tmp_path: Path, orthanc: LoadedOrthanc, kind: str
) -> None:
    first, second = orthanc.studies[0], orthanc.studies[2]
    assert first.patient_id != second.patient_id
    (tmp_path / "anon.script").write_text(SCRIPT)
    (tmp_path / "lookup.properties").write_text(f"ptid/{first.patient_id} = RESEARCH-1\n")
    rows = [{"StudyInstanceUID": first.study_uid}, {"StudyInstanceUID": second.study_uid}]
    write_batch(tmp_path, rows)
    doc = retrieve_config(orthanc, kind, rows, "STUDY", structure="PatientID/StudyInstanceUID")
    doc["anonymization"] = {"enabled": True, "script": "anon.script", "lookup_table": "lookup.properties"}
    doc["output"]["database_file"] = "retrieved.csv"  # beside the anonymized tree: it holds the batch's UIDs
    write_yaml(tmp_path / "c.yml", doc)
    result, summary = cli_json("run", tmp_path / "c.yml")
    per_study = first.series * first.instances
    # a night whose instances were held back is not a plain success (it was exit 0, "complete")
    assert result.exit_code == 3, result.stderr
    assert summary["outcome"] == "instances-held-back"
    assert summary["quarantined_instances"] == per_study
    assert summary["instances_new"] == per_study
    assert summary["held_back_instances"] == per_study
    [group] = summary["held_back"]
    assert (group["kind"], group["count"]) == ("quarantined", per_study) and "lookup" in group["reason"]
    # one line per reason, not one per instance; no original identifier in what is printed
    assert result.stderr.count(group["reason"]) == 2  # the first instance's warning and the summary line
    assert f"{per_study} × quarantined: {group['reason']}" in result.stderr
    originals = [str(ds.SOPInstanceUID) for ds in orthanc.instances if ds.StudyInstanceUID == second.study_uid]
    assert not any(uid in result.stderr for uid in originals) and second.patient_id not in result.stderr
    requests = {row["StudyInstanceUID"]: row for row in library(tmp_path / "retrieved.csv")}
    assert requests[second.study_uid]["held_back"] == str(per_study)
    assert requests[second.study_uid]["why"] == f"{per_study} × {group['reason']}"
    assert requests[first.study_uid]["held_back"] == "0"
    status = cli_json("status", tmp_path / "c.yml")[1]
    assert status["held_back_total"] == per_study
    assert status["last_run"]["outcome"] == "instances-held-back"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", status["last_run"]["finished"])
    files = sorted(p for p in (tmp_path / "out").rglob("*.dcm") if ".asyncdicom" not in p.parts)
    assert len(files) == per_study
    for path in files:
        relative = path.relative_to(tmp_path / "out").parts
        assert relative[0] == "RESEARCH-1"  # rendered from the anonymized dataset
        assert relative[1].startswith("1.2.826.0.1.3680043.10.1.")
        ds = dcmread(path)
        assert ds.PatientID == "RESEARCH-1" and str(ds.PatientName) != first.patient_name
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    text = "\n".join(str(p) for p in (tmp_path / "out").rglob("*"))
    assert first.patient_id not in text and second.patient_id not in text
    quarantine = tmp_path / "out-quarantine"
    held = sorted(quarantine.glob("*.dcm"))
    assert len(held) == per_study
    assert {dcmread(p).PatientID for p in held} == {second.patient_id}  # originals, out of the tree
    # nothing in the output tree holds an original identifier: ledger and spool live beside it
    originals_all = [str(ds.SOPInstanceUID).encode() for ds in orthanc.instances if ds.StudyInstanceUID in
                     (first.study_uid, second.study_uid)] + [first.patient_id.encode(), second.patient_id.encode(), first.study_uid.encode(), second.study_uid.encode()]  # fmt: skip
    for path in (p for p in (tmp_path / "out").rglob("*") if p.is_file()):
        content = path.read_bytes()
        assert not any(identifier in content for identifier in originals_all), path
    with sqlite3.connect(tmp_path / "out-private" / "c.sqlite3") as db:
        states = db.execute("SELECT state, warning, COUNT(*) FROM instances GROUP BY state, warning").fetchall()
    assert ("stored", None, per_study) in states
    assert any(s == "quarantined" and "lookup" in (w or "") and n == per_study for s, w, n in states)
    assert not list((tmp_path / "out-private" / "spool").iterdir())
    assert not (tmp_path / "out" / ".asyncdicom").exists()
    # the table fixed, run --retry-failed anonymizes the held-back instances from the quarantine,
    # without asking the PACS again, and the counts stay right
    (tmp_path / "lookup.properties").write_text(
        f"ptid/{first.patient_id} = RESEARCH-1\nptid/{second.patient_id} = RESEARCH-2\n"
    )
    result, summary = cli_json("run", tmp_path / "c.yml", "--retry-failed")
    assert result.exit_code == 0, result.stderr
    assert (summary["outcome"], summary["ran"], summary["held_back_instances"]) == ("complete", 0, 0)
    assert summary["instances_new"] == per_study and summary["instances"] == 2 * per_study
    files = list((tmp_path / "out").rglob("*.dcm"))
    assert len(files) == 2 * per_study
    assert sorted({p.relative_to(tmp_path / "out").parts[0] for p in files}) == ["RESEARCH-1", "RESEARCH-2"]
    assert not list(quarantine.glob("*.dcm"))
    requests = {row["StudyInstanceUID"]: row for row in library(tmp_path / "retrieved.csv")}
    assert requests[second.study_uid]["held_back"] == "0"


def test_bad_script_is_a_config_error_before_any_traffic(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    (tmp_path / "anon.script").write_text("<script>\n<e en='T' t='00100010'>@remove()</script>\n")
    rows = [{"StudyInstanceUID": orthanc.studies[0].study_uid}]
    write_batch(tmp_path, rows)
    doc = retrieve_config(orthanc, "c-get", rows, "STUDY")
    doc["anonymization"] = {"enabled": True, "script": "anon.script"}
    write_yaml(tmp_path / "c.yml", doc)
    result = cli("run", tmp_path / "c.yml")
    assert result.exit_code == 2
    assert "anonymization.script" in result.output and "anon.script:2" in result.output
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.dcm"))


def test_check_lists_what_dat_would_ignore(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    (tmp_path / "anon.script").write_text(
        "<script>\n <e en='T' t='50xx0010' n='x'>@remove()</e>\n <e en='T' t='00100020'>@newuid()</e>\n</script>\n"
    )
    rows = [{"StudyInstanceUID": orthanc.studies[0].study_uid}]
    write_batch(tmp_path, rows)
    doc = retrieve_config(orthanc, "c-get", rows, "STUDY")
    doc["anonymization"] = {"enabled": True, "script": "anon.script"}
    write_yaml(tmp_path / "c.yml", doc)
    result, report = cli_json("check", tmp_path / "c.yml")
    assert result.exit_code == 0, result.stderr
    text = "\n".join(report["warnings"])
    assert "anon.script:2: the rule for '50xx,0010' names no element" in text
    assert "anon.script:3: @newuid() is not a CTP function" in text
