"""User identity negotiation (#15): a pynetdicom test PACS that checks the user name and passcode
(PS3.7 D.3.3.7), the passcode from an environment variable or a file and never in the YAML or
any output, and a clear message when the PACS rejects the identity."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from tests.cli_helpers import cli
from tests.conftest import write_yaml
from tests.pacs_servers import free_port

SECRET = "s3cret-Pässword"


class Checking:
    """A verification SCP that accepts one user name and passcode, and records what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, bytes, bytes | None]] = []
        self.lock = threading.Lock()
        self.port = free_port()
        ae = AE(ae_title="CHECKING")
        ae.add_supported_context(Verification)
        self.server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_USER_ID, self._check)]
        )

    def _check(self, event: Any) -> tuple[bool, bytes | None]:
        with self.lock:
            self.seen.append((event.user_id_type, event.primary_field, event.secondary_field))
        if event.primary_field != b"extractor":
            return False, None
        if event.user_id_type == 1:
            return True, None
        return event.secondary_field == SECRET.encode("utf-8"), None


@pytest.fixture
def checking() -> Iterator[Checking]:
    server = Checking()
    try:
        yield server
    finally:
        server.server.shutdown()


def _config(port: int, **pacs: Any) -> dict[str, Any]:
    return {
        "pacs": {"hostname": "127.0.0.1", "port": port, "aet": "CHECKING", **pacs},
        "local": {"aet": "ASYNCDICOM"},
        "request": {"type": "c-echo"},
    }


def _echo(tmp_path: Path, document: dict[str, Any], exit_code: int, *args: str) -> str:
    result = cli("echo", write_yaml(tmp_path / "c.yml", document), *args)
    output = result.stdout + result.stderr
    assert result.exit_code == exit_code, output
    assert "Traceback" not in output
    assert SECRET not in output  # never said, not even at -vv
    return output


def test_username_and_passcode_from_the_environment(
    tmp_path: Path, checking: Checking, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACS_PASSWORD", SECRET)
    _echo(tmp_path, _config(checking.port, username="extractor", password_env="PACS_PASSWORD"), 0, "-vv")
    assert checking.seen == [(2, b"extractor", SECRET.encode("utf-8"))]


def test_passcode_from_a_file_first_line(tmp_path: Path, checking: Checking) -> None:
    secret = tmp_path / "pacs.pass"
    secret.write_text(SECRET + "\n")
    secret.chmod(0o600)
    _echo(tmp_path, _config(checking.port, username="extractor", password_file=str(secret)), 0)
    assert checking.seen == [(2, b"extractor", SECRET.encode("utf-8"))]


def test_username_alone(tmp_path: Path, checking: Checking) -> None:
    _echo(tmp_path, _config(checking.port, username="extractor"), 0)
    assert [(kind, user, secondary or None) for kind, user, secondary in checking.seen] == [(1, b"extractor", None)]


def test_without_identity_nothing_is_sent(tmp_path: Path, checking: Checking) -> None:
    _echo(tmp_path, _config(checking.port), 0)
    assert checking.seen == []


def test_a_rejected_identity_is_said_clearly(
    tmp_path: Path, checking: Checking, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PACS_PASSWORD", "Wr0ngPass!")
    output = _echo(tmp_path, _config(checking.port, username="extractor", password_env="PACS_PASSWORD"), 1)
    assert "rejected" in output
    assert "pacs.username" in output
    assert "Wr0ngPass!" not in output
    assert checking.seen == [(2, b"extractor", b"Wr0ngPass!")]


@pytest.mark.parametrize(
    ("pacs", "env", "expected"),
    [
        ({"username": "extractor", "password_env": "NOT_SET_ANYWHERE"}, {}, "pacs.password_env"),
        ({"username": "extractor", "password_env": "EMPTY"}, {"EMPTY": ""}, "not set or empty"),
        ({"password_env": "PACS_PASSWORD"}, {"PACS_PASSWORD": "x"}, "needs a user name"),
        ({"username": "extractor", "password": "inline"}, {}, "unknown key"),
        ({"username": "extractor", "password_file": "missing.pass"}, {}, "does not exist"),
        ({"username": "extractor", "password_file": "empty.pass"}, {}, "is empty"),
        ({"username": "extractor", "password_file": "huge.pass"}, {}, "longer than a passcode"),
        (
            {"username": "extractor", "password_env": "PACS_PASSWORD", "password_file": "empty.pass"},
            {"PACS_PASSWORD": "x"},
            "not both",
        ),
        ({"username": "x" * 2000}, {}, "longer than 1024 bytes"),
        ({"username": "extractor", "password_env": "LONG"}, {"LONG": "p" * 2000}, "longer than 1024 bytes"),
        ({"username": ["a"]}, {}, "pacs.username"),
    ],
)
def test_identity_mistakes_are_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pacs: dict[str, Any], env: dict[str, str], expected: str
) -> None:
    (tmp_path / "empty.pass").write_text("")
    (tmp_path / "huge.pass").write_bytes(b"p" * 5000)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    result = cli("check", write_yaml(tmp_path / "c.yml", _config(104, **pacs)))
    output = result.stdout + result.stderr
    assert result.exit_code == 2, output
    assert expected in output, output
    assert "Traceback" not in output


def test_identity_is_for_dimse_peers_only(tmp_path: Path) -> None:
    document = {
        "pacs": {"url": "https://pacs.example/dicom-web", "username": "extractor"},
        "request": {"type": "c-find", "elements": ["QueryRetrieveLevel=STUDY", "PatientID=1"]},
    }
    result = cli("check", write_yaml(tmp_path / "c.yml", document))
    assert result.exit_code == 2
    assert "pacs.auth" in result.stdout + result.stderr


def test_the_request_item_is_encoded_as_ps3_7_says() -> None:
    from asyncdicom.net.acse import UserIdentity

    item = UserIdentity("extractor", b"pw").item()
    assert item == b"\x58\x00\x00\x11" + b"\x02\x00" + b"\x00\x09extractor" + b"\x00\x02pw"
    assert UserIdentity("u").item() == b"\x58\x00\x00\x07\x01\x00\x00\x01u\x00\x00"
    assert "pw" not in repr(UserIdentity("extractor", b"pw"))


def test_a_run_stops_at_a_rejected_identity_instead_of_retrying(
    tmp_path: Path, checking: Checking, monkeypatch: pytest.MonkeyPatch
) -> None:
    """pynetdicom refuses an identity "transiently, no reason given": the run must not take that for
    a busy PACS and retry for ever; it stops at once with exit 1."""
    monkeypatch.setenv("PACS_PASSWORD", "Wr0ngPass!")
    document = _config(checking.port, username="extractor", password_env="PACS_PASSWORD")
    document["request"] = {"type": "c-find", "elements": ["QueryRetrieveLevel=STUDY", "PatientID=1"], "retries": 5}
    document["output"] = {"library_file": "out/library.csv"}
    result = cli("run", write_yaml(tmp_path / "c.yml", document))
    output = result.stdout + result.stderr
    assert result.exit_code == 1, output
    assert "pacs.username" in output
    assert len(checking.seen) <= 2  # not retried
