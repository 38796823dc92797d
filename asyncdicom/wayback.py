"""``asyncdicom echo --move``: does the way back work? The PACS is asked to C-MOVE one instance to
our storage SCP, and we say whether it arrived.

C-ECHO only proves that we can reach the PACS. A C-MOVE also needs the PACS to reach us: it must
know ``local.aet`` with this host's address and ``local.port``. The instance is found with
C-FINDs (a recent study unless one is given, its first series, its first instance), received
into memory, counted and dropped: nothing is written to disk.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from datetime import date, timedelta

import anyio

from asyncdicom.config import Config
from asyncdicom.config.load import tls_files
from asyncdicom.elements import ElementSpec, parse_path
from asyncdicom.errors import AsyncDicomError, NetworkError
from asyncdicom.models import Request
from asyncdicom.net.base import DicomBackend, DicomSession
from asyncdicom.net.dimse import Reply, Status
from asyncdicom.net.scp import Received, StorageSCP
from asyncdicom.net.tls import server_context

RECENT_DAYS = 30


@dataclass(frozen=True)
class WayBack:
    """What ``echo --move`` found."""

    ok: bool
    message: str
    seconds: float = 0.0
    status: int | None = None
    bytes: int = 0


class _Counted:
    """A StoreFile that only counts (the instance is dropped)."""

    def __init__(self) -> None:
        self.size = 0

    def write(self, data: bytes | memoryview) -> None:
        self.size += len(data)

    def discard(self) -> None:
        """Nothing to remove."""


class _Arrivals:
    def __init__(self) -> None:
        self.count = 0
        self.bytes = 0
        self.calling: set[str] = set()
        self.lock = threading.Lock()

    def open(self, sop_class: str, sop_instance: str, syntax: str, calling: str) -> _Counted:
        return _Counted()

    def received(self, item: Received) -> Reply:
        file = item.file
        assert isinstance(file, _Counted)
        with self.lock:
            self.count += 1
            self.bytes += file.size
            self.calling.add(item.calling_ae)
        return Status.SUCCESS, None


def _query(level: str, keys: list[tuple[str, str | None]]) -> Request:
    specs = (ElementSpec(parse_path("QueryRetrieveLevel"), level), *(ElementSpec(parse_path(k), v) for k, v in keys))
    return Request("echo-move", 0, specs)


async def _first(session: DicomSession, query: Request, keyword: str) -> str | None:
    outcome = await anyio.to_thread.run_sync(session.find, query)
    for match in outcome.matches:
        if value := match.get(keyword, "").strip():
            return value
    return None


async def find_instance(find: DicomSession, model: str, study: str | None) -> tuple[Request | None, str]:
    """An IMAGE-level C-MOVE request for one instance (of ``study``, else of a recent study), or
    None and why not; the C-FINDs go over ``find``'s one association."""
    if model == "psonly":
        return None, "request.model psonly has no image level; use study or patient"
    if study is None:
        since = (date.today() - timedelta(days=RECENT_DAYS)).strftime("%Y%m%d")
        keys: list[tuple[str, str | None]] = [("StudyDate", f"{since}-"), ("StudyInstanceUID", None)]
        if model == "patient":
            return None, "with request.model patient, name a study with --study UID (the patient root needs it)"
        study = await _first(find, _query("STUDY", keys), "StudyInstanceUID")
        if study is None:
            return None, f"the PACS has no study from the last {RECENT_DAYS} days to send; name one with --study UID"
    patient: list[tuple[str, str | None]] = []
    if model == "patient":
        pid = await _first(find, _query("STUDY", [("StudyInstanceUID", study), ("PatientID", None)]), "PatientID")
        patient = [("PatientID", pid)] if pid else []
    series = await _first(
        find,
        _query("SERIES", [*patient, ("StudyInstanceUID", study), ("SeriesInstanceUID", None)]),
        "SeriesInstanceUID",
    )
    if series is None:
        return None, "the PACS found no series in that study"
    keys = [*patient, ("StudyInstanceUID", study), ("SeriesInstanceUID", series), ("SOPInstanceUID", None)]
    instance = await _first(find, _query("IMAGE", keys), "SOPInstanceUID")
    if instance is None:
        return None, "the PACS found no instance in that study's first series"
    return _query("IMAGE", [*keys[:-1], ("SOPInstanceUID", instance)]), ""


async def check(config: Config, find: DicomBackend, move: DicomBackend, study: str | None = None) -> WayBack:
    """Ask the PACS to send one instance to our storage SCP; report whether it came."""
    local = config.local
    ours = f"{local.aet} at {socket.gethostname()}, port {local.port}"
    finder = find.session()
    try:
        request, why = await find_instance(finder, config.request.model, study)
    except NetworkError as exc:
        return WayBack(False, f"the C-FIND for an instance to send failed: {exc}")
    finally:
        await anyio.to_thread.run_sync(finder.close)
    if request is None:
        return WayBack(False, why)
    arrivals = _Arrivals()
    scp = StorageSCP(
        ae_title=local.aet,
        port=local.port,
        allowed_aets=local.allowed_aets,
        max_associations=4,
        open_file=arrivals.open,
        on_received=arrivals.received,
        host=local.bind_address,
        tls=server_context(tls_files(local.tls, "local.tls")) if local.tls else None,
        allowed_hosts=local.allowed_hosts,
        max_instance_bytes=int(local.max_instance_megabytes * 1_000_000),
        max_per_host=local.max_associations_per_host,
        sop_classes=config.request.sop_classes,
    )
    try:
        await anyio.to_thread.run_sync(scp.start)
    except NetworkError as exc:
        return WayBack(False, f"our storage SCP could not listen: {exc}")
    started = time.monotonic()
    session = move.session()
    try:
        outcome = await anyio.to_thread.run_sync(session.retrieve, request, 1, None)
    except AsyncDicomError as exc:
        return WayBack(False, f"the C-MOVE failed: {exc}")
    finally:
        await anyio.to_thread.run_sync(session.close)
        await anyio.to_thread.run_sync(scp.stop)
    elapsed = time.monotonic() - started
    status = outcome.status
    if arrivals.count:
        return WayBack(
            True,
            f"the PACS sent an instance ({arrivals.bytes} bytes) to {ours} in {elapsed:.2f} s: C-MOVE works",
            elapsed,
            status,
            arrivals.bytes,
        )
    if status == 0xA801:
        why = f"the PACS does not know {ours} as a C-MOVE destination (0xA801): register them on the PACS"
    else:
        why = (
            f"the PACS answered 0x{status:04X} but nothing arrived at {ours}: the PACS cannot reach us. It "
            f"must know AE title {local.aet} with this host's address and port {local.port}; a firewall may "
            "also block that port"
        )
    return WayBack(False, why, elapsed, status)
