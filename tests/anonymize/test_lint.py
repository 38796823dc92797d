"""What check says about a script against the batch: lookups the table cannot answer."""

from __future__ import annotations

from pathlib import Path

from tests.cli_helpers import cli_json
from tests.conftest import write_yaml

SCRIPT = """<script>
 <e en="T" t="00100020" n="PatientID">@lookup(this,ptid)</e>
 <e en="T" t="00080050" n="AccessionNumber">@lookup(this,acc,keep)</e>
 <e en="T" t="00100010" n="PatientName">@empty()</e>
</script>
"""


def test_check_names_the_csv_lines_whose_values_the_lookup_table_lacks(tmp_path: Path) -> None:
    """Two of four PatientIDs have no ptid entry: check says how many and on which CSV lines, never
    the values; a rule with a fallback (keep) and rows with wildcards are not reported."""
    (tmp_path / "anon.script").write_text(SCRIPT)
    (tmp_path / "lookup.properties").write_text("ptid/SECRET-1 = R1\nptid/SECRET-3 = R3\n")
    (tmp_path / "batch.csv").write_text(
        "PatientID,AccessionNumber\nSECRET-1,A1\nSECRET-2,A2\nSECRET-3,A3\nSECRET-4,A4\nSECRET*,A5\n"
    )
    doc = {
        "pacs": {"hostname": "127.0.0.1", "port": 4242, "aet": "PACS"},
        "request": {
            "type": "c-get",
            "elements_batch_file": "batch.csv",
            "elements": ["QueryRetrieveLevel=STUDY", "PatientID", "AccessionNumber"],
        },
        "anonymization": {"enabled": True, "script": "anon.script", "lookup_table": "lookup.properties"},
        "output": {"directory": "out"},
    }
    result, report = cli_json("check", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 0, result.stderr
    [warning] = [w for w in report["warnings"] if "lookup" in w]
    assert warning == (
        f"{tmp_path / 'lookup.properties'} has no 'ptid' entry for the PatientID of 2 requests (CSV lines 3, 5); "
        f"the rule at {tmp_path / 'anon.script'}:2 would quarantine their instances: add the entries, or a "
        "fallback such as @lookup(this,ptid,keep)"
    )
    assert "SECRET" not in result.stderr + result.stdout
