"""asyncdicom echo --move: the way back, against Orthanc (which knows ASYNCDICOM at one port)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import cli_json
from tests.conftest import LoadedOrthanc, write_yaml
from tests.pacs_servers import free_port

pytestmark = pytest.mark.orthanc


def _config(tmp_path: Path, orthanc: LoadedOrthanc, *, aet: str = "ASYNCDICOM", port: int | None = None) -> Path:
    doc = {
        "pacs": {"hostname": "127.0.0.1", "port": orthanc.port, "aet": "ORTHANC"},
        "local": {"port": port or orthanc.scp_port, "aet": aet},
        "request": {"type": "c-move", "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"]},
        "output": {"directory": "out"},
    }
    return write_yaml(tmp_path / "c.yml", doc)


def test_the_way_back_works(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    study = orthanc.studies[0].study_uid
    result, doc = cli_json("echo", _config(tmp_path, orthanc), "--move", "--study", study)
    assert result.exit_code == 0, result.stderr
    assert doc["ok"] is True and doc["bytes"] > 0 and doc["status"] == 0
    assert "C-MOVE works" in doc["message"]
    assert not (tmp_path / "out").exists()  # nothing written


def test_an_unknown_destination_names_what_to_register(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    """Orthanc answers 0xC000 (not 0xA801) for an AE title it does not know: the message still
    names the AE title and port to register."""
    study = orthanc.studies[0].study_uid
    result, doc = cli_json("echo", _config(tmp_path, orthanc, aet="NOBODY"), "--move", "--study", study)
    assert result.exit_code == 1
    assert doc["ok"] is False and doc["status"] == 0xC000
    assert "must know AE title NOBODY with this host's address and port" in doc["message"]


def test_0xa801_says_register(tmp_path: Path) -> None:
    """A PACS that answers 0xA801 (the built-in one, which knows no destination)."""
    from asyncdicom.demo import demo_datasets
    from asyncdicom.net.qrscp import QueryRetrieveSCP

    datasets = demo_datasets(patients=1, studies=1, series=1, instances=1)
    with QueryRetrieveSCP(datasets, ae_title="DEMOPACS") as pacs:
        doc = {
            "pacs": {"hostname": "127.0.0.1", "port": pacs.port, "aet": "DEMOPACS"},
            "local": {"port": free_port(), "aet": "NOBODY"},
            "request": {"type": "c-move", "elements": ["QueryRetrieveLevel=STUDY"]},
            "output": {"directory": "out"},
        }
        study = str(datasets[0].StudyInstanceUID)
        result, out = cli_json("echo", write_yaml(tmp_path / "c.yml", doc), "--move", "--study", study)
    assert result.exit_code == 1
    assert out["status"] == 0xA801
    assert "does not know NOBODY at " in out["message"] and "register them on the PACS" in out["message"]


def test_a_wrong_port_says_the_pacs_cannot_reach_us(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    """Orthanc knows ASYNCDICOM at another port: the C-ECHO works, the C-MOVE cannot reach us."""
    study = orthanc.studies[0].study_uid
    config = _config(tmp_path, orthanc, port=free_port())
    result, doc = cli_json("echo", config, "--move", "--study", study)
    assert result.exit_code == 1
    assert "nothing arrived" in doc["message"] and "cannot reach us" in doc["message"]
    ok, _ = cli_json("echo", config)
    assert ok.exit_code == 0


def test_without_a_recent_study_it_asks_for_one(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    """The test studies are from 2010-2011: none is recent enough to pick by itself."""
    result, doc = cli_json("echo", _config(tmp_path, orthanc), "--move")
    assert result.exit_code == 1
    assert "no study from the last 30 days" in doc["message"] and "--study UID" in doc["message"]


def test_a_bad_study_uid_is_a_usage_error(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    result, doc = cli_json("echo", _config(tmp_path, orthanc), "--move", "--study", "1.2.x")
    assert result.exit_code == 2
    assert doc["ok"] is False and "--study" in doc["error"]
