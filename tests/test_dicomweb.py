"""DICOMweb sources (issue #13, part): QIDO-RS for C-FIND batches against Orthanc's DICOMweb
plugin gives the same library as C-FIND on the same server; a bearer token, 401 and 429 with
Retry-After through a small proxy; the configuration's checks."""

from __future__ import annotations

import csv
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from asyncdicom.web import backend as web_backend
from tests.cli_helpers import cli, cli_json
from tests.conftest import write_yaml
from tests.factory import study_specs, write_files
from tests.pacs_servers import Orthanc
from tests.web_proxy import ProxyState, proxy

pytestmark = pytest.mark.orthanc

ELEMENTS = {
    "STUDY": [
        "PatientID",
        "PatientName",
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
        "StudyDescription",
        "ModalitiesInStudy",
    ],
    "SERIES": ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesDescription", "SeriesNumber"],
    "IMAGE": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "InstanceNumber", "ImageType"],
}


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Orthanc, list[str]]]:
    """Orthanc with its DICOMweb plugin; C-FIND reads the files too (StorageAccessOnFind), as the
    plugin does, so both answer every key."""
    folder = tmp_path_factory.mktemp("dicomweb")
    written = write_files(study_specs(6, studies_per_patient=2, series=2, instances=3, prefix="W"), folder / "data")
    server = Orthanc(folder / "pacs", dicomweb=True, extra={"StorageAccessOnFind": "Always"}).start()
    try:
        server.store(folder / "data")
        yield server, sorted({str(ds.StudyInstanceUID) for ds in written})
    finally:
        server.stop()


def _library(folder: Path, pacs: dict[str, Any], level: str, batch: list[str] | None) -> tuple[int, list[Any]]:
    folder.mkdir()
    request: dict[str, Any] = {"type": "c-find", "elements": [f"QueryRetrieveLevel={level}", *ELEMENTS[level]]}
    if batch is not None:
        (folder / "batch.csv").write_text("StudyInstanceUID\n" + "\n".join(batch) + "\n")
        request["elements_batch_file"] = "batch.csv"
    doc = {"pacs": pacs, "request": request, "output": {"directory": "out", "library_file": "library.csv"}}
    result, summary = cli_json("run", write_yaml(folder / "c.yml", doc))
    assert result.exit_code == 0, result.stderr[-3000:]
    with (folder / "library.csv").open(newline="", encoding="utf-8") as handle:
        rows = sorted(tuple(sorted((k, v) for k, v in row.items() if k != "row")) for row in csv.DictReader(handle))
    return int(summary["matches"]), rows


@pytest.mark.parametrize("batch", [False, True], ids=["universal", "by-study"])
@pytest.mark.parametrize("level", ["STUDY", "SERIES", "IMAGE"])
def test_qido_gives_the_library_cfind_gives(
    tmp_path: Path, web: tuple[Orthanc, list[str]], monkeypatch: pytest.MonkeyPatch, level: str, batch: bool
) -> None:
    """Page by page (5 results a page, so 72 instances take 15 pages), by resource path
    (studies/{uid}/series when the batch names the study), with names in UTF-8."""
    server, studies = web
    monkeypatch.setattr(web_backend, "PAGE", 5)
    rows = studies if batch else None
    dimse = {"hostname": "127.0.0.1", "port": server.dicom_port, "aet": server.aet}
    count, by_cfind = _library(tmp_path / "dimse", dimse, level, rows)
    web_count, by_qido = _library(tmp_path / "web", {"url": server.dicomweb_url}, level, rows)
    assert count == web_count == {"STUDY": 12, "SERIES": 24, "IMAGE": 72}[level]
    assert by_qido == by_cfind
    assert any("Pätient" in value for row in by_qido for key, value in row if key == "PatientName") or level != "STUDY"


def test_echo_answers_over_qido(tmp_path: Path, web: tuple[Orthanc, list[str]]) -> None:
    server, _ = web
    doc = {"pacs": {"url": server.dicomweb_url}, "request": {"type": "c-echo"}}
    result, answer = cli_json("echo", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 0 and answer["ok"] and answer["pacs"] == server.dicomweb_url


def _find_doc(url: str, auth: dict[str, str] | None = None) -> dict[str, Any]:
    pacs: dict[str, Any] = {"url": url, **({"auth": auth} if auth else {})}
    return {
        "pacs": pacs,
        "request": {"type": "c-find", "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID"]},
        "output": {"directory": "out", "library_file": "library.csv"},
    }


def test_a_bearer_token_from_a_variable_or_a_command(
    tmp_path: Path, web: tuple[Orthanc, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, _ = web
    state = ProxyState(f"http://127.0.0.1:{server.http_port}", token="s3cret-t0ken")
    with proxy(state) as url:
        monkeypatch.setenv("DICOMWEB_TOKEN", "s3cret-t0ken")
        first, summary = cli_json(
            "run", write_yaml(tmp_path / "a.yml", _find_doc(url, {"type": "bearer", "token_env": "DICOMWEB_TOKEN"}))
        )
        assert first.exit_code == 0 and summary["matches"] == 12, first.stderr[-2000:]
        command = f"{sys.executable} -c \"print('s3cret-t0ken')\""
        (tmp_path / "b").mkdir()
        second, summary = cli_json(
            "run", write_yaml(tmp_path / "b" / "b.yml", _find_doc(url, {"type": "bearer", "token_command": command}))
        )
        assert second.exit_code == 0 and summary["matches"] == 12, second.stderr[-2000:]
        monkeypatch.setenv("DICOMWEB_TOKEN", "an-expired-one")
        (tmp_path / "c").mkdir()
        refused = cli(
            "run",
            write_yaml(tmp_path / "c" / "c.yml", _find_doc(url, {"type": "bearer", "token_env": "DICOMWEB_TOKEN"})),
        )
    assert refused.exit_code == 1
    assert (
        "answered 401: the credentials were refused (an expired token, a wrong password): renew them" in refused.stderr
    )
    for result in (first, second, refused):
        assert "s3cret-t0ken" not in result.stdout + result.stderr and "an-expired-one" not in result.stderr
    assert all(status in (200, 401) for _, status, _ in state.seen)


def test_no_credentials_where_the_server_wants_them(tmp_path: Path, web: tuple[Orthanc, list[str]]) -> None:
    server, _ = web
    with proxy(ProxyState(f"http://127.0.0.1:{server.http_port}", token="x")) as url:
        result = cli("run", write_yaml(tmp_path / "c.yml", _find_doc(url)))
    assert result.exit_code == 1 and "answered 401: the server wants credentials: give pacs.auth" in result.stderr


def test_429_with_retry_after_slows_the_run_and_is_honoured(tmp_path: Path, web: tuple[Orthanc, list[str]]) -> None:
    server, _ = web
    state = ProxyState(f"http://127.0.0.1:{server.http_port}", busy=2, retry_after="1")
    with proxy(state) as url:
        result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", _find_doc(url)))
    assert result.exit_code == 0 and summary["matches"] == 12 and summary["rejections"] == 2, result.stderr[-2000:]
    times = [when for when, _, _ in state.seen]
    statuses = [status for _, status, _ in state.seen]
    assert statuses[:3] == [429, 429, 200]
    assert times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95  # Retry-After: 1 was waited for


@pytest.mark.parametrize(
    ("pacs", "request_type", "where", "text"),
    [
        ({"url": "ftp://pacs/dicom-web"}, "c-find", "pacs.url", "is not an http(s) URL"),
        ({"url": "https://me:pw@pacs/dicom-web"}, "c-find", "pacs.url", "holds a user name or password"),
        ({"url": "https://pacs/dicom-web?x=1"}, "c-find", "pacs.url", "cannot have a query"),
        ({"url": "https://pacs/dw", "hostname": "pacs"}, "c-find", "pacs.hostname", "pacs.url replaces"),
        ({"url": "https://pacs/dw"}, "c-move", "request.type", "has no C-MOVE; use c-get"),
        ({"url": "https://pacs/dw", "auth": {"type": "bearer"}}, "c-find", "pacs.auth", "token_env"),
        (
            {"url": "https://pacs/dw", "auth": {"type": "bearer", "token_env": "no spaces"}},
            "c-find",
            "pacs.auth.token_env",
            "not an environment variable",
        ),
        (
            {"url": "https://pacs/dw", "auth": {"type": "basic", "username": "u"}},
            "c-find",
            "pacs.auth.password_env",
            "required",
        ),
        (
            {"url": "https://pacs/dw", "auth": {"type": "bearer", "token_env": "T", "password": "p"}},
            "c-find",
            "pacs.auth.password",
            "unknown key",
        ),
        ({"url": "https://pacs/dw", "ca_file": "missing.pem"}, "c-find", "pacs.ca_file", "does not exist"),
        (
            {"hostname": "pacs", "port": 104, "aet": "P", "auth": {"type": "bearer", "token_env": "T"}},
            "c-find",
            "pacs.auth",
            "DICOMweb source only",
        ),
    ],
)
def test_a_dicomweb_config_is_checked(
    tmp_path: Path, pacs: dict[str, Any], request_type: str, where: str, text: str
) -> None:
    doc = {
        "pacs": pacs,
        "request": {"type": request_type, "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"]},
    }
    result, answer = cli_json("check", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 2, result.stdout
    assert answer["error"].startswith(f"{where}:") and text in answer["error"], answer["error"]


def test_patient_level_is_refused_with_advice(tmp_path: Path) -> None:
    doc = {
        "pacs": {"url": "https://pacs/dw"},
        "request": {"type": "c-find", "model": "patient", "elements": ["QueryRetrieveLevel=PATIENT", "PatientID"]},
    }
    result, answer = cli_json("check", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 2 and "QIDO-RS has no PATIENT level; ask at STUDY level" in answer["error"]


def test_token_command_failures_are_named(tmp_path: Path) -> None:
    from asyncdicom.config.schema import AuthConfig
    from asyncdicom.errors import ConfigError
    from asyncdicom.web.auth import Credentials

    for command, text in [
        ("no-such-command-here", "is not found"),
        (f'{sys.executable} -c "import sys; sys.exit(3)"', "failed (exit 3)"),
        (f'{sys.executable} -c "print()"', "did not print a token"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(text)):
            Credentials(AuthConfig(type="bearer", token_command=command)).header()
    os.environ.pop("NOT_SET_HERE", None)
    with pytest.raises(ConfigError, match="NOT_SET_HERE is not set"):
        Credentials(AuthConfig(type="bearer", token_env="NOT_SET_HERE")).header()


def test_no_patient_data_in_the_verbose_log(tmp_path: Path, web: tuple[Orthanc, list[str]]) -> None:
    """A query's values (a patient ID here) go in the URL's query; with -v they still reach no
    log line (httpx, which logs each URL at INFO, is held at WARNING)."""
    server, _ = web
    doc = _find_doc(server.dicomweb_url)
    doc["request"]["elements"] = ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID=W00003"]
    result = cli("run", write_yaml(tmp_path / "c.yml", doc), "-v")
    assert result.exit_code == 0, result.stderr[-2000:]
    assert "W00003" not in result.stderr and "HTTP Request" not in result.stderr
