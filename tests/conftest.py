"""Shared fixtures: anyio on asyncio, config writers, and a real Orthanc loaded with test studies."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.factory import StudySpec, study_specs, write_compressed, write_files, write_hostile
from tests.pacs_servers import Orthanc, free_port
from tests.postgres_server import Postgres

SAMPLES = Path(__file__).resolve().parent / "data" / "reference-samples"  # the ancestor's samples, copied


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def write_yaml(path: Path, document: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


def find_config(
    port: int,
    *,
    aet: str = "ORTHANC",
    elements: list[str] | None = None,
    batch: str | None = None,
    model: str = "study",
    threads: int = 4,
    library: str = "out/library.csv",
    **request: Any,
) -> dict[str, Any]:
    """A c-find config document; ``request`` adds keys to the request section."""
    req: dict[str, Any] = {"type": "c-find", "model": model, "threads": threads}
    if batch:
        req["elements_batch_file"] = batch
    req["elements"] = (
        elements if elements is not None else ["QueryRetrieveLevel=STUDY", "PatientID", "StudyInstanceUID"]
    )
    req.update(request)
    return {
        "pacs": {"hostname": "127.0.0.1", "port": port, "aet": aet},
        "local": {"port": 11112, "aet": "ASYNCDICOM"},
        "request": req,
        "output": {"library_file": library},
    }


@dataclass
class LoadedOrthanc:
    server: Orthanc
    studies: list[StudySpec]
    instances: list[Any]
    scp_port: int
    hostile: list[Any]
    compressed: list[Any]

    @property
    def port(self) -> int:
        return self.server.dicom_port

    @property
    def patients(self) -> list[str]:
        return sorted({s.patient_id for s in self.studies})


@pytest.fixture(scope="session")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LoadedOrthanc]:
    """Orthanc with 150 patients x 2 studies x 2 series x 2 instances (1200 instances)."""
    folder = tmp_path_factory.mktemp("orthanc")
    scp_port = free_port()
    server = Orthanc(folder / "pacs", modalities={"ASYNCDICOM": ("127.0.0.1", scp_port)}).start()
    specs = study_specs(150, studies_per_patient=2, series=2, instances=2)
    written = write_files(specs, folder / "data")
    hostile = write_hostile(folder / "data")
    server.store(folder / "data")
    compressed = write_compressed(folder / "compressed")
    server.upload(sorted((folder / "compressed").iterdir()))
    try:
        yield LoadedOrthanc(server, specs, written, scp_port, hostile, compressed)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A PostgreSQL cluster of the tests' own (each test names its own job in it)."""
    server = Postgres().start()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture(autouse=True)
def _no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    os.environ.pop("FORCE_COLOR", None)
