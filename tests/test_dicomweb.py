"""DICOMweb sources (issue #13, part): QIDO-RS for C-FIND batches against Orthanc's DICOMweb
plugin gives the same library as C-FIND on the same server; a bearer token, 401 and 429 with
Retry-After through a small proxy; the configuration's checks."""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from asyncdicom.filemeta import read_meta
from asyncdicom.web import backend as web_backend
from tests.cli_helpers import cli, cli_json, ledger_instances, spawn
from tests.conftest import write_yaml
from tests.factory import make_instance, study_specs, write_compressed, write_files
from tests.interop_compare import file_differences
from tests.pacs_servers import Orthanc
from tests.test_retrieve_anonymize import SCRIPT
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
    plugin does, so both answer every key. Yields the server and its 12 plain studies' UIDs; a
    13th study (patient COMPRESSED) holds pydicom's compressed files."""
    folder = tmp_path_factory.mktemp("dicomweb")
    written = write_files(study_specs(6, studies_per_patient=2, series=2, instances=3, prefix="W"), folder / "data")
    COMPRESSED.extend(write_compressed(folder / "compressed"))
    server = Orthanc(folder / "pacs", dicomweb=True, extra={"StorageAccessOnFind": "Always"}).start()
    try:
        server.store(folder / "data")
        server.upload(sorted((folder / "compressed").iterdir()))
        yield server, sorted({str(ds.StudyInstanceUID) for ds in written})
    finally:
        server.stop()
        COMPRESSED.clear()


COMPRESSED: list[Dataset] = []


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
    plain = {"STUDY": 12, "SERIES": 24, "IMAGE": 72}[level]
    extra = 0 if batch else {"STUDY": 1, "SERIES": len(COMPRESSED), "IMAGE": len(COMPRESSED)}[level]
    assert count == web_count == plain + extra
    if level == "STUDY":  # the compressed study's instances disagree on study attributes (each
        # comes from another file): which one a server reads them from is its choice
        mixed = str(COMPRESSED[0].StudyInstanceUID)
        by_cfind, by_qido = (
            [row for row in rows if ("StudyInstanceUID", mixed) not in row] for rows in (by_cfind, by_qido)
        )
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
        assert first.exit_code == 0 and summary["matches"] == 13, first.stderr[-2000:]
        command = f"{sys.executable} -c \"print('s3cret-t0ken')\""
        (tmp_path / "b").mkdir()
        second, summary = cli_json(
            "run", write_yaml(tmp_path / "b" / "b.yml", _find_doc(url, {"type": "bearer", "token_command": command}))
        )
        assert second.exit_code == 0 and summary["matches"] == 13, second.stderr[-2000:]
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


@pytest.mark.parametrize("busy", [429, 503])
def test_busy_with_retry_after_slows_the_run_and_is_honoured(
    tmp_path: Path, web: tuple[Orthanc, list[str]], busy: int
) -> None:
    server, _ = web
    state = ProxyState(f"http://127.0.0.1:{server.http_port}", busy=2, busy_status=busy, retry_after="1")
    with proxy(state) as url:
        result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", _find_doc(url)))
    assert result.exit_code == 0 and summary["matches"] == 13 and summary["rejections"] == 2, result.stderr[-2000:]
    times = [when for when, _, _ in state.seen]
    statuses = [status for _, status, _ in state.seen]
    assert statuses[:3] == [busy, busy, 200]
    assert times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95  # Retry-After: 1 was waited for


@pytest.mark.parametrize(
    ("pacs", "request_type", "where", "text"),
    [
        ({"url": "ftp://pacs/dicom-web"}, "c-find", "pacs.url", "is not an http(s) URL"),
        ({"url": "https://[::1/dicom-web"}, "c-find", "pacs.url", "is not a URL (Invalid IPv6 URL)"),
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
            {"url": "https://pacs/dw", "auth": {"type": "basic", "username": "u:x", "password_env": "P"}},
            "c-find",
            "pacs.auth.username",
            "no colon",
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


def _get_doc(
    url: str, level: str = "STUDY", keys: tuple[str, ...] = ("StudyInstanceUID",), **request: Any
) -> dict[str, Any]:
    """A c-get config for ``url`` reading batch.csv at ``level`` with ``keys``; ``request`` adds keys."""
    return {
        "pacs": {"url": url},
        "request": {
            "type": "c-get",
            "elements_batch_file": "batch.csv",
            "elements": [f"QueryRetrieveLevel={level}", *keys],
            **request,
        },
        "output": {"directory": "out"},
    }


def _retrieve(folder: Path, pacs: dict[str, Any], studies: list[str], level: str = "STUDY") -> dict[str, Path]:
    folder.mkdir()
    (folder / "batch.csv").write_text("StudyInstanceUID\n" + "\n".join(studies) + "\n")
    doc = {
        "pacs": pacs,
        "request": {
            "type": "c-get",
            "threads": 2,
            "elements_batch_file": "batch.csv",
            "elements": [f"QueryRetrieveLevel={level}", "StudyInstanceUID"],
        },
        "output": {"directory": "out", "directory_structure": "StudyInstanceUID/SeriesInstanceUID"},
    }
    result, summary = cli_json("run", write_yaml(folder / "c.yml", doc))
    assert result.exit_code == 0, result.stderr[-3000:]
    assert summary["done"] == len(studies), summary
    files = [p for p in (folder / "out").rglob("*.dcm") if ".asyncdicom" not in p.parts]
    return {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files}


def _data_set(path: Path) -> bytes:
    """A file's data set, after its File Meta (which differs by the Source AE Title C-GET has)."""
    file = path.read_bytes()
    found = read_meta(file)
    assert found is not None
    return file[found[1] :]


def test_wado_rs_gives_the_files_c_get_gives(tmp_path: Path, web: tuple[Orthanc, list[str]]) -> None:
    """Every study by WADO-RS and by C-GET from the same Orthanc: the same instances, their data
    sets byte for byte (both write what they receive after a File Meta of our own), compressed
    ones as stored."""
    server, studies = web
    every = [*studies, str(COMPRESSED[0].StudyInstanceUID)]
    by_get = _retrieve(
        tmp_path / "dimse", {"hostname": "127.0.0.1", "port": server.dicom_port, "aet": "ORTHANC"}, every
    )
    by_wado = _retrieve(tmp_path / "web", {"url": server.dicomweb_url}, every)
    assert len(by_wado) == 72 + len(COMPRESSED)
    assert set(by_wado) == set(by_get)
    compressed = {str(ds.SOPInstanceUID) for ds in COMPRESSED}
    plain = [uid for uid in by_get if uid not in compressed]
    assert [uid for uid in plain if _data_set(by_get[uid]) != _data_set(by_wado[uid])] == []
    # compressed ones: as stored, element by element equal (Orthanc sends its stored file by
    # WADO-RS, group lengths included, and re-encodes for C-GET)
    assert {uid: found for uid in compressed if (found := file_differences(by_wado[uid], by_get[uid]))} == {}
    for ds in COMPRESSED:
        kept = dcmread(by_wado[str(ds.SOPInstanceUID)], stop_before_pixels=True)
        assert kept.file_meta.TransferSyntaxUID == ds.file_meta.TransferSyntaxUID


def test_an_answer_cut_mid_stream_leaves_no_file_and_is_asked_again(
    tmp_path: Path, web: tuple[Orthanc, list[str]]
) -> None:
    """The first two WADO-RS answers are cut in the middle of their body: the instances that were
    whole are kept, the one cut leaves no file (in the tree or the spool), and what was missing is
    asked for again; the run ends with exactly the files of an uncut run."""
    server, studies = web
    state = ProxyState(f"http://127.0.0.1:{server.http_port}", cut=2)
    with proxy(state) as url:
        by_wado = _retrieve(tmp_path / "cut", {"url": url}, studies[:4])
    assert len(by_wado) == 4 * 6
    assert sum(1 for _, status, _ in state.seen if status == -200) == 2
    spool = tmp_path / "cut" / "out" / ".asyncdicom"
    assert not [p for p in spool.rglob("*") if p.is_file() and p.suffix not in (".sqlite3", ".jsonl", ".lock", "")]
    again = _retrieve(tmp_path / "whole", {"url": server.dicomweb_url}, studies[:4])
    assert {uid: _data_set(path) for uid, path in by_wado.items()} == {uid: _data_set(p) for uid, p in again.items()}


def test_sigkill_mid_run_then_a_rerun_gives_exactly_the_files(tmp_path: Path, web: tuple[Orthanc, list[str]]) -> None:
    server, studies = web
    state = ProxyState(f"http://127.0.0.1:{server.http_port}", delay=0.3)
    (tmp_path / "batch.csv").write_text("StudyInstanceUID\n" + "\n".join(studies) + "\n")
    with proxy(state) as url:
        doc = {
            "pacs": {"url": url},
            "request": {
                "type": "c-get",
                "threads": 2,
                "elements_batch_file": "batch.csv",
                "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
            },
            "output": {"directory": "out", "directory_structure": "StudyInstanceUID/SeriesInstanceUID"},
        }
        config = write_yaml(tmp_path / "c.yml", doc)
        process = spawn("run", config, "-q")
        ledger = tmp_path / "out" / ".asyncdicom" / "c.sqlite3"
        deadline = time.monotonic() + 60
        while ledger_instances(ledger) < 12:  # another process's progress: nothing to wait on but its ledger
            assert process.poll() is None and time.monotonic() < deadline, "the run ended or stalled"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
        result, summary = cli_json("run", config)
    assert result.exit_code == 0, result.stderr[-3000:]
    files = [p for p in (tmp_path / "out").rglob("*.dcm") if ".asyncdicom" not in p.parts]
    uids = [str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files]
    assert len(uids) == len(set(uids)) == 72
    assert not list((tmp_path / "out" / ".asyncdicom" / "spool").glob("*.part"))
    assert summary["done"] == 12 and summary["pending"] == 0  # every study done, counting those done before


def test_wado_rs_instances_go_through_the_same_pipeline(tmp_path: Path, web: tuple[Orthanc, list[str]]) -> None:
    """Decompression and anonymization apply to WADO-RS instances as to C-GET ones: the compressed
    study comes decompressed and anonymized, but for the one file no decoder reads (held back)."""
    server, _ = web
    study = str(COMPRESSED[0].StudyInstanceUID)
    (tmp_path / "batch.csv").write_text(f"StudyInstanceUID\n{study}\n")
    doc = {
        **_get_doc(server.dicomweb_url),
        "anonymization": {"enabled": True, "script": "anon.script", "lookup_table": "lookup.properties"},
    }
    doc["output"]["decompress"] = True
    (tmp_path / "anon.script").write_text(SCRIPT)
    (tmp_path / "lookup.properties").write_text("ptid/COMPRESSED = RESEARCH-7\n")
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 3, result.stderr[-3000:]  # one instance held back: work left
    assert summary["outcome"] == "instances-held-back" and summary["instances_new"] == len(COMPRESSED)
    files = [p for p in (tmp_path / "out").rglob("*.dcm") if ".asyncdicom" not in p.parts]
    syntaxes = sorted(str(dcmread(p, stop_before_pixels=True).file_meta.TransferSyntaxUID) for p in files)
    assert syntaxes.count("1.2.840.10008.1.2.1") == len(COMPRESSED) - 1
    assert {str(dcmread(p, stop_before_pixels=True).PatientID) for p in files} == {"RESEARCH-7"}


def test_wado_rs_by_series(tmp_path: Path, web: tuple[Orthanc, list[str]]) -> None:
    """SERIES-level rows: one WADO-RS request per series, each complete."""
    server, studies = web
    base = server.dicomweb_url
    with urllib.request.urlopen(f"{base}/studies/{studies[0]}/series", timeout=30) as response:
        series = [item["0020000E"]["Value"][0] for item in json.loads(response.read())]
    assert len(series) == 2
    (tmp_path / "batch.csv").write_text(
        "StudyInstanceUID,SeriesInstanceUID\n" + "".join(f"{studies[0]},{uid}\n" for uid in series)
    )
    doc = {
        "pacs": {"url": base},
        "request": {
            "type": "c-get",
            "elements_batch_file": "batch.csv",
            "elements": ["QueryRetrieveLevel=SERIES", "StudyInstanceUID", "SeriesInstanceUID"],
        },
        "output": {"directory": "out", "directory_structure": "SeriesInstanceUID"},
    }
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 0 and (summary["done"], summary["instances_new"]) == (2, 6), result.stderr[-2000:]
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == sorted(series)


def test_the_bandwidth_cap_holds_for_wado_rs(tmp_path: Path) -> None:
    """request.max_megabytes_per_second: 1 MB/s over WADO-RS: 24 instances of 128 KiB (3 MB) take
    at least (bytes - the 1 MiB burst) / 1 MB/s; nothing is lost."""
    spec = study_specs(1, instances=24, prefix="CAP")[0]
    (tmp_path / "data").mkdir()
    for n in range(1, 25):
        make_instance(spec, "1.2.3.4", 1, n, rows=256).save_as(tmp_path / "data" / f"{n}.dcm", enforce_file_format=True)
    server = Orthanc(tmp_path / "pacs", dicomweb=True).start()
    try:
        server.store(tmp_path / "data")
        (tmp_path / "batch.csv").write_text(f"StudyInstanceUID\n{spec.study_uid}\n")
        doc = _get_doc(server.dicomweb_url, max_megabytes_per_second=1)
        started = time.monotonic()
        result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert result.exit_code == 0 and summary["instances_new"] == 24, result.stderr[-2000:]
    received = sum(p.stat().st_size for p in (tmp_path / "out").rglob("*.dcm"))
    assert received > 3_000_000
    assert elapsed >= (received - (1 << 20)) / 1_000_000


def test_wado_rs_of_instances_named_without_their_series(tmp_path: Path, web: tuple[Orthanc, list[str]]) -> None:
    """IMAGE-level rows naming the study and the instance only: QIDO-RS finds each instance's
    series, and only those instances come; one the server does not know leaves the row partial."""
    server, studies = web
    with urllib.request.urlopen(f"{server.dicomweb_url}/studies/{studies[1]}/instances", timeout=30) as response:
        held = [item["00080018"]["Value"][0] for item in json.loads(response.read())]
    wanted = held[:2]
    (tmp_path / "batch.csv").write_text(
        f"StudyInstanceUID,SOPInstanceUID\n{studies[1]},{wanted[0]}\\{wanted[1]}\n{studies[1]},1.2.3.999\n"
    )
    doc = _get_doc(server.dicomweb_url, "IMAGE", ("StudyInstanceUID", "SOPInstanceUID"), retries=0)
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 3, result.stderr[-2000:]
    assert (summary["done"], summary["instances_new"]) == (1, 2)
    assert summary["partial"] + summary["failed"] == 1
    files = [p for p in (tmp_path / "out").rglob("*.dcm") if ".asyncdicom" not in p.parts]
    assert sorted(str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in files) == sorted(wanted)


def test_an_answer_that_keeps_streaming_is_not_cut(tmp_path: Path, web: tuple[Orthanc, list[str]]) -> None:
    """request.timeout bounds each silence, not an answer's length: a WADO-RS answer sent in 16
    pieces 0.2 s apart (3.2 s in all) with a 1 s timeout arrives whole, with no retry."""
    server, studies = web
    state = ProxyState(f"http://127.0.0.1:{server.http_port}", trickle=0.2)
    (tmp_path / "batch.csv").write_text(f"StudyInstanceUID\n{studies[0]}\n")
    with proxy(state) as url:
        doc = _get_doc(url, timeout=1)
        started = time.monotonic()
        result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 0, result.stderr[-2000:]
    assert (summary["instances_new"], summary["retries"]) == (6, 0)
    assert time.monotonic() - started > 3.0  # it did take longer than the timeout, in pieces


def test_a_csv_row_at_patient_level_fails_with_advice(tmp_path: Path, web: tuple[Orthanc, list[str]]) -> None:
    """A row may set its own level; QIDO-RS has no PATIENT level, so that row fails and says why."""
    server, _ = web
    (tmp_path / "batch.csv").write_text("QueryRetrieveLevel,PatientID\nPATIENT,W00001\nSTUDY,W00001\n")
    doc = {
        "pacs": {"url": server.dicomweb_url},
        "request": {
            "type": "c-find",
            "model": "patient",
            "elements_batch_file": "batch.csv",
            "elements": ["StudyInstanceUID"],
        },
        "output": {"directory": "out", "library_file": "library.csv"},
    }
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 3 and (summary["done"], summary["failed"]) == (1, 1), result.stderr[-2000:]
    assert "QIDO-RS has no PATIENT level; ask at STUDY level" in result.stderr
