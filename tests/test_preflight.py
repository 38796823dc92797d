"""asyncdicom plan: what a batch covers, asked of a real Orthanc and of the built-in PACS."""

from __future__ import annotations

from pathlib import Path

import pytest

from asyncdicom.demo import demo_datasets
from asyncdicom.net.qrscp import QueryRetrieveSCP
from tests.cli_helpers import cli, cli_json
from tests.conftest import LoadedOrthanc, write_yaml
from tests.test_retrieve_orthanc import retrieve_config, write_batch


@pytest.mark.orthanc
def test_plan_counts_with_the_pacs_numbers_and_lists_rows_that_match_nothing(
    tmp_path: Path, orthanc: LoadedOrthanc
) -> None:
    """Orthanc returns Number of Study Related Instances: the plan sums them; a UID that matches
    nothing is listed by CSV line; the estimate uses the earlier run's sizes and rate."""
    uids = sorted({str(ds.StudyInstanceUID) for ds in orthanc.instances})[:5]
    rows = [{"StudyInstanceUID": uid} for uid in uids] + [{"StudyInstanceUID": "1.2.3.999"}]
    write_batch(tmp_path, rows)
    doc = retrieve_config(orthanc, "c-get", rows, "STUDY")
    config = write_yaml(tmp_path / "c.yml", doc)
    result, planned = cli_json("plan", config)
    assert result.exit_code == 0, result.stderr
    assert (planned["requests"], planned["studies"], planned["series"], planned["instances"]) == (6, 5, 10, 20)
    assert planned["unmatched_lines"] == [7] and planned["counted_below"] == 0
    assert "assumed" in planned["bytes_basis"] and planned["seconds"] is None
    assert "1 requests match nothing: CSV lines 7" in result.stderr
    result, sampled = cli_json("plan", config, "--sample", "2")
    assert result.exit_code == 0, result.stderr
    assert "retrieving 2 requests as a sample" in sampled["rate_basis"] and sampled["seconds"] > 0
    assert sampled["bytes_basis"] == "the mean size of the 8 instances of a sample retrieve"
    assert not list(tmp_path.glob(".asyncdicom-sample-*"))  # the sample's files are gone
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").rglob("*.dcm"))
    assert cli("run", config).exit_code == 3  # the unmatched request fails
    result, again = cli_json("plan", config)
    assert again["bytes_basis"] == "the mean size of the 20 instances this ledger holds"
    assert again["seconds"] is not None and "as measured by this ledger's last 1 runs" in again["rate_basis"]


def test_plan_counts_one_level_down_without_the_numbers(tmp_path: Path) -> None:
    """The built-in PACS gives no Number of Series Related Instances: a SERIES-level plan counts
    IMAGE-level matches instead, and says so."""
    datasets = demo_datasets(patients=2, studies=1, series=2, instances=3)
    pacs = QueryRetrieveSCP(datasets, ae_title="DEMO")
    pacs.start()
    try:
        pairs = sorted({(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)) for ds in datasets})
        (tmp_path / "batch.csv").write_text(
            "StudyInstanceUID,SeriesInstanceUID\n" + "\n".join(f"{a},{b}" for a, b in pairs) + "\n"
        )
        doc = {
            "pacs": {"hostname": "127.0.0.1", "port": pacs.port, "aet": "DEMO"},
            "request": {
                "type": "c-get",
                "elements_batch_file": "batch.csv",
                "elements": ["QueryRetrieveLevel=SERIES", "StudyInstanceUID", "SeriesInstanceUID"],
            },
            "schedule": {"enabled": True, "start_time": "19:00", "end_time": "06:00"},
            "output": {"directory": "out"},
        }
        result, planned = cli_json("plan", write_yaml(tmp_path / "c.yml", doc))
    finally:
        pacs.stop()
    assert result.exit_code == 0, result.stderr
    assert (planned["studies"], planned["series"], planned["instances"]) == (2, 4, 12)
    assert planned["counted_below"] == 4 and planned["unmatched_lines"] == []
    assert planned["window"] == "a window of 11.0 h a day; the duration is unknown"
