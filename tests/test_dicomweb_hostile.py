"""A hostile or broken DICOMweb server (issue #13): bodies beyond their bound, answers that are
not DICOM JSON, a server that ignores offset, server errors; each ends with a clear message that
names the URL, and no traceback."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from asyncdicom.web import backend as web_backend
from asyncdicom.web import http as web_http
from asyncdicom.web.http import MAX_RETRY_AFTER, retry_after
from tests.cli_helpers import cli_json
from tests.conftest import write_yaml

pytestmark = pytest.mark.network

Answer = Callable[[str], tuple[int, dict[str, str], bytes]]


def _study(n: int) -> dict[str, Any]:
    return {"0020000D": {"vr": "UI", "Value": [f"1.2.3.{n}"]}, "00100020": {"vr": "LO", "Value": [f"P{n}"]}}


@contextmanager
def server(answer: Answer) -> Iterator[str]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            return

        def do_GET(self) -> None:
            status, headers, body = answer(self.path)
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            if "Connection" in headers:  # a body delimited by the end of the connection
                self.close_connection = True
            elif "Content-Length" not in headers:
                self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request: object, client_address: object) -> None:
            return  # a client that hangs up on a hostile answer is expected, not news

    httpd = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/dicom-web"
    finally:
        httpd.shutdown()
        httpd.server_close()


def _run(tmp_path: Path, url: str) -> tuple[Any, dict[str, Any]]:
    doc = {
        "pacs": {"url": url},
        "request": {
            "type": "c-find",
            "retries": 1,
            "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", "PatientID"],
        },
        "output": {"directory": "out", "library_file": "library.csv"},
    }
    return cli_json("run", write_yaml(tmp_path / "c.yml", doc))


JSON = {"Content-Type": "application/dicom+json"}


@pytest.mark.parametrize(
    ("answer", "text"),
    [
        (lambda path: (200, {**JSON, "Content-Length": str(10**11)}, b""), "announced a body of 100000000000 bytes"),
        (
            lambda path: (200, {**JSON, "Connection": "close"}, b"[" + b'{"00100020": {"vr": "LO"}},' * 400 + b"{}]"),
            "sent a body of more than the 4096 bytes",
        ),
        (lambda path: (200, JSON, b"<html>not json</html>"), "answered with a body that is not JSON"),
        (lambda path: (200, JSON, b'{"a": 1}'), "answered JSON that is not a list of data sets"),
        (lambda path: (200, JSON, b'[{"00100020": {"vr": "ZZ", "Value": 7}}]'), "cannot be read as DICOM JSON"),
        (lambda path: (200, JSON, json.dumps([_study(n) for n in range(5)]).encode()), "ignores offset"),
        (lambda path: (500, {}, b""), "answered 500 (server error)"),
        (lambda path: (400, {}, b""), "answered 400 (Bad Request)"),
    ],
    ids=["content-length", "too-long", "not-json", "not-a-list", "bad-vr", "ignores-offset", "500", "400"],
)
def test_a_bad_answer_fails_the_request_with_the_url_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, answer: Answer, text: str
) -> None:
    monkeypatch.setattr(web_backend, "PAGE", 5)
    monkeypatch.setattr(web_http, "MAX_JSON", 4096)
    with server(answer) as url:
        result, summary = _run(tmp_path, url)
    assert result.exit_code == 3, result.stderr[-2000:]
    assert summary["failed"] == 1 and "Traceback" not in result.stderr
    assert f"{url}/studies" in result.stderr and text in result.stderr, result.stderr[-2000:]


def test_pages_are_gathered_until_a_short_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web_backend, "PAGE", 5)
    asked: list[str] = []

    def answer(path: str) -> tuple[int, dict[str, str], bytes]:
        asked.append(path)
        offset = int(path.split("offset=")[1].split("&")[0])
        return 200, JSON, json.dumps([_study(n) for n in range(offset, min(offset + 5, 12))]).encode()

    with server(answer) as url:
        result, summary = _run(tmp_path, url)
    assert result.exit_code == 0 and summary["matches"] == 12, result.stderr[-2000:]
    assert [p.split("offset=")[1].split("&")[0] for p in asked] == ["0", "5", "10"]
    assert all("includefield=PatientID" in p and "limit=5" in p for p in asked)


def test_retry_after_is_read_and_bounded() -> None:
    assert retry_after("7") == 7.0
    assert retry_after("999999999") == MAX_RETRY_AFTER
    assert retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now=1445412500.0) == 10.0
    assert retry_after("soon") is None and retry_after("") is None


def test_a_server_capping_its_pages_is_paged_by_its_warning(tmp_path: Path) -> None:
    """A server that sends at most 3 results a page, whatever the limit, and says so with a
    ``Warning: 299`` header (PS3.18): every result is gathered, not the first page alone."""
    studies = [_study(n) for n in range(8)]

    def answer(path: str) -> tuple[int, dict[str, str], bytes]:
        offset = int(path.split("offset=")[1].split("&")[0])
        page = studies[offset : offset + 3]
        more = {"Warning": "299 pacs: There are additional results"} if offset + 3 < len(studies) else {}
        return 200, {**JSON, **more}, json.dumps(page).encode()

    with server(answer) as url:
        result, summary = _run(tmp_path, url)
    assert result.exit_code == 0 and summary["matches"] == 8, result.stderr[-2000:]
