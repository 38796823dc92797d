"""Malformed and hostile configs and CSV batches (#15): each must end with a clear error that
names where (key path, ``file:line``) and how to fix it, or be handled safely; never a
traceback, never a file outside the output root. Used by ``tests/test_hostile_inputs.py`` and
``scripts/hardening_report``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BASE: dict[str, Any] = {
    "pacs": {"hostname": "127.0.0.1", "port": 4242, "aet": "PACS"},
    "local": {"aet": "ASYNCDICOM", "port": 11112},
    "request": {
        "type": "c-find",
        "model": "study",
        "elements_batch_file": "batch.csv",
        "elements": ["QueryRetrieveLevel=STUDY", "PatientID", "StudyDate", "StudyInstanceUID"],
    },
    "output": {"library_file": "out/library.csv"},
}
GOOD_CSV = b"PatientID,StudyDate\nP1,20200101\n"


@dataclass(frozen=True)
class Case:
    name: str
    config: bytes | dict[str, Any] | None = None  # None: BASE; a dict: changes to BASE ({"a.b": value})
    csv: bytes = GOOD_CSV
    exit_code: int = 2
    expect: str = ""  # a fragment the message must hold (where, or what)
    files: dict[str, bytes] = field(default_factory=dict)  # more files beside the config
    config_is_folder: bool = False

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "c.yml"
        if self.config_is_folder:
            config.mkdir()
        elif isinstance(self.config, bytes):
            config.write_bytes(self.config)
        else:
            config.write_text(yaml.safe_dump(_changed(self.config or {}), sort_keys=False), encoding="utf-8")
        (folder / "batch.csv").write_bytes(self.csv)
        for name, data in self.files.items():
            (folder / name).write_bytes(data)
        return config


def _changed(changes: dict[str, Any]) -> dict[str, Any]:
    document = yaml.safe_load(yaml.safe_dump(BASE))
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        node = document
        for part in parents:
            node = node.setdefault(part, {})
        if value is _DELETE:
            node.pop(key, None)
        else:
            node[key] = value
    return dict(document)


_DELETE = object()
_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
)

CASES: list[Case] = [
    # --- YAML itself
    Case("yaml-syntax", b"pacs: {hostname: x\nrequest: [\n", expect="c.yml:"),
    Case("yaml-tab-indent", b"pacs:\n\thostname: x\n", expect="invalid YAML"),
    Case("yaml-list-document", b"- a\n- b\n", expect="expected a mapping of sections"),
    Case("yaml-empty-file", b"", expect="expected a mapping of sections"),
    Case("yaml-only-comments", b"# nothing\n", expect="expected a mapping of sections"),
    Case("yaml-scalar-document", b"just text\n", expect="expected a mapping of sections"),
    Case("yaml-not-utf8", b"pacs: {hostname: h\xe9te, port: 4242, aet: PACS}\n", expect="not UTF-8"),
    Case("yaml-nul-byte", b"pacs: {hostname: h\x00, port: 4242, aet: PACS}\n", expect="NUL byte"),
    Case("yaml-deep-nesting", b"x: " + b"[" * 5000 + b"]" * 5000 + b"\n", expect="nested too deeply"),
    Case("yaml-alias-bomb", _BOMB.encode(), expect="unknown section"),
    Case("yaml-huge-file", b"# " + b"x" * (2 * 1024 * 1024) + b"\n", expect="more than"),
    Case("yaml-binary-tag", b"pacs: !!binary aGVsbG8=\n", expect="pacs"),
    Case("yaml-python-tag", b"pacs: !!python/object:os.system ['echo pwned']\n", expect="invalid YAML"),
    # --- sections and keys
    Case("unknown-section", {"pacsx": {}}, expect="unknown section"),
    Case("unknown-key", {"pacs.hostnme": "x"}, expect="pacs.hostnme: unknown key"),
    Case("missing-pacs", {"pacs": _DELETE}, expect="pacs"),
    Case("missing-request", {"request": _DELETE}, expect="request"),
    Case("section-is-a-list", {"output": ["a"]}, expect="output"),
    # --- wrong types and values
    Case("port-text", {"pacs.port": "http"}, expect="pacs.port"),
    Case("port-too-big", {"pacs.port": 70000}, expect="pacs.port"),
    Case("port-negative", {"pacs.port": -1}, expect="pacs.port"),
    Case("port-float", {"pacs.port": 4242.5}, expect="pacs.port"),
    Case("aet-too-long", {"pacs.aet": "A" * 17}, expect="pacs.aet"),
    Case("aet-backslash", {"pacs.aet": "PA\\CS"}, expect="pacs.aet"),
    Case("aet-control", {"pacs.aet": "PA\x1bCS"}, expect="pacs.aet"),
    Case("aet-empty", {"pacs.aet": ""}, expect="pacs.aet"),
    Case("hostname-list", {"pacs.hostname": ["a", "b"]}, expect="pacs.hostname"),
    Case("type-unknown", {"request.type": "c-store"}, expect="request.type"),
    Case("model-unknown", {"request.model": "series"}, expect="request.model"),
    Case("threads-negative", {"request.threads": -1}, expect="request.threads"),
    Case("threads-huge", {"request.threads": 10**9}, expect="request.threads"),
    Case("threads-bool", {"request.threads": True}, expect="request.threads"),
    Case("timeout-zero", {"request.timeout": 0}, expect="request.timeout"),
    Case("max-rate-negative", {"request.max_rate": -5}, expect="request.max_rate"),
    Case("elements-not-list", {"request.elements": "PatientID"}, expect="request.elements"),
    Case("elements-unknown-keyword", {"request.elements": ["PatientNmae"]}, expect="PatientNmae"),
    Case("element-tag-out-of-range", {"request.elements": ["(GGGG,0010)"]}, expect="request.elements"),
    Case("element-tag-too-long", {"request.elements": ["(10000,0010)"]}, expect="request.elements"),
    Case("element-value-huge", {"request.elements": ["PatientID=" + "x" * 70000]}, expect="request.elements"),
    Case("element-date-invalid", {"request.elements": ["StudyDate=20201345"]}, expect="StudyDate"),
    Case("element-uid-invalid", {"request.elements": ["StudyInstanceUID=1.2.abc"]}, expect="StudyInstanceUID"),
    Case("element-nested-list", {"request.elements": [["PatientID"]]}, expect="request.elements"),
    Case("schedule-bad-time", {"schedule": {"enabled": True, "start_time": "25:00"}}, expect="schedule.start_time"),
    Case("schedule-bad-zone", {"schedule": {"enabled": True, "timezone": "Mars/Olympus"}}, expect="schedule.timezone"),
    Case("schedule-bad-day", {"schedule": {"enabled": True, "days": ["Funday"]}}, expect="schedule.days"),
    Case("structure-unknown", {"output.directory_structure": "PatientNmae"}, expect="directory_structure"),
    Case(
        "anonymization-missing-script",
        {"anonymization": {"enabled": True, "script": "none.script"}},
        expect="anonymization.script",
    ),
    Case("anonymization-bad-mode", {"anonymization": {"enabled": True, "mode": "loose"}}, expect="anonymization"),
    Case("allowed-hosts-bad", {"local.allowed_hosts": ["10.0.0.0/33"]}, expect="local.allowed_hosts"),
    Case(
        "allowed-hosts-too-many",
        {"local.allowed_hosts": [f"10.0.{i // 256}.{i % 256}" for i in range(300)]},
        expect="at most 256",
    ),
    Case("tls-not-mapping", {"pacs.tls": "on"}, expect="pacs.tls"),
    Case("password-in-yaml", {"pacs.password": "secret"}, expect="unknown key"),
    Case("url-with-credentials", {"pacs": {"url": "https://u:p@pacs.example/dicom-web"}}, expect="pacs.url"),
    Case("batch-missing", {"request.elements_batch_file": "nowhere.csv"}, expect="does not exist"),
    Case("config-is-folder", config_is_folder=True, expect="is a folder"),
    # --- the batch CSV
    Case("csv-empty", csv=b"", expect="empty"),
    Case("csv-header-only", csv=b"PatientID\n", expect="no rows"),
    Case("csv-unknown-column", csv=b"PatientNmae\nP1\n", expect="batch.csv"),
    Case("csv-bad-tag-column", csv=b"(ZZZZ,0010)\nP1\n", expect="batch.csv"),
    Case("csv-not-utf8", csv=b"PatientID\nM\xfcller\n", expect="batch.csv:2"),
    Case("csv-extra-values", csv=b"PatientID\nP1,P2\n", expect="batch.csv:2"),
    Case("csv-nul-byte", csv=b"PatientID\nP\x001\n", expect="batch.csv"),
    Case("csv-huge-field", csv=b"PatientID\n" + b"x" * 200_000 + b"\n", expect="batch.csv"),
    Case("csv-bad-date", csv=b"PatientID,StudyDate\nP1,2020-13-45\n", expect="batch.csv:2"),
    Case("csv-unbalanced-quote", csv=b'PatientID\n"P1\nP2\n', expect="batch.csv"),
    Case("csv-formula-cell", csv=b"PatientID\n=cmd|' /C calc'!A0\n", exit_code=0),  # a value like any other
    Case("csv-bom-crlf", csv=b"\xef\xbb\xbfPatientID\r\nP1\r\n\r\n", exit_code=0),
]


def _rows(count: int) -> bytes:
    return b"PatientID,StudyDate\n" + b"".join(b"P%09d,20200101\n" % n for n in range(count))


def slow_cases() -> list[Case]:
    """Run by scripts/hardening_report only (half a minute each); the bound is tested small."""
    return [
        Case("csv-a-million-rows", csv=_rows(1_000_000), exit_code=0, expect="1000000 requests"),
        Case("csv-a-million-and-one-rows", csv=_rows(1_000_001), expect="batch.csv:1000002: more than 1000000 rows"),
    ]
