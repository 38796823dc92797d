"""The DICOMweb backend: sessions that answer the engine's calls, C-FIND and echo with QIDO-RS,
C-GET with QIDO-RS then WADO-RS, over :mod:`asyncdicom.web.http`. Each session is used by one
worker thread at a time, as a DIMSE one."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncdicom.config.schema import AuthConfig
from asyncdicom.errors import HttpRefused, ServerError, ServiceNotSupported
from asyncdicom.models import Request
from asyncdicom.net.base import CountsCallback, FindOutcome, RetrieveOutcome
from asyncdicom.net.dimse import StoreSink
from asyncdicom.net.pace import Pacer
from asyncdicom.web import qido, wado
from asyncdicom.web.auth import Credentials
from asyncdicom.web.http import HttpSource
from asyncdicom.web.parts import MultipartStream, boundary_of

log = logging.getLogger(__name__)

PAGE = 1000  # results asked for per QIDO-RS request (limit); the rest by offset
AS_STORED = 'multipart/related; type="application/dicom"; transfer-syntax=*'
AS_SERVER_LIKES = 'multipart/related; type="application/dicom"'
MAX_MATCHES = 1_000_000  # matches one request may gather before it fails


@dataclass(frozen=True, slots=True)
class WebSettings:
    """What a DICOMweb session needs of the configuration."""

    url: str
    auth: AuthConfig | None = None
    ca_file: Path | None = None
    connect_timeout: float = 10.0
    timeout: float = 30.0
    page: int = field(default_factory=lambda: PAGE)  # read at creation, so tests may lower it
    pacer: Pacer | None = None  # request.max_megabytes_per_second


class WebSession:
    """One worker's connection pool to the source."""

    def __init__(self, backend: WebBackend) -> None:
        self._backend = backend
        self._http: HttpSource | None = None
        self.busy_since: float | None = None

    def _source(self) -> HttpSource:
        if self._http is None:
            settings = self._backend.settings
            self._http = HttpSource(
                settings.url,
                credentials=self._backend.credentials,
                ca_file=settings.ca_file,
                connect_timeout=settings.connect_timeout,
                timeout=settings.timeout,
            )
        return self._http

    def find(self, request: Request) -> FindOutcome:
        """One C-FIND as QIDO-RS, page by page until the answer is complete."""
        start = self.busy_since = time.monotonic()
        try:
            path, params, keep = qido.query(request)
            source = self._source()
            answer = self._paged(source, path, params)
            found = qido.matches(answer, keep, f"{source.base_url}/{path}")
            return FindOutcome(0x0000, tuple(found), time.monotonic() - start, pending=len(found))
        finally:
            self.busy_since = None

    def retrieve(
        self,
        request: Request,
        message_id: int,
        sink: Any,
        on_counts: CountsCallback | None = None,
        classes: Sequence[str] = (),
    ) -> RetrieveOutcome:
        """A C-GET as WADO-RS: the instances QIDO-RS says the request covers, asked for by study,
        series or instance as the request names them, each part streamed to ``sink`` as it
        arrives; those not received are the outcome's failed UIDs (asked for again by UID)."""
        if sink is None:
            msg = "a DICOMweb source has no C-MOVE; use request.type c-get"
            raise ServiceNotSupported(msg)
        start = self.busy_since = time.monotonic()
        try:
            source = self._source()
            targets = self._targets(source, request)
            expected = list(dict.fromkeys(uid for _, uids in targets for uid in uids))
            arrived: dict[str, int] = {}

            def counts() -> dict[str, int]:
                good = sum(1 for status in arrived.values() if status in wado.OK_STATUSES)
                return {
                    "remaining": max(0, len(expected) - len(arrived)),
                    "completed": good,
                    "failed": len(arrived) - good,
                }

            def on_instance(uid: str, status: int) -> None:
                arrived[uid] = status
                self.busy_since = time.monotonic()
                if on_counts is not None:
                    on_counts(counts())

            for path, _ in targets:
                if path:  # "": QIDO-RS does not know the instance; it stays missing
                    self._fetch(source, path, sink, on_instance)
            good = {uid for uid, status in arrived.items() if status in wado.OK_STATUSES}
            missing = tuple(uid for uid in expected if uid not in good)
            final = counts()
            final["failed"] = len(missing)
            return RetrieveOutcome(
                0xB000 if missing else 0x0000, final, failed_uids=missing, elapsed=time.monotonic() - start
            )
        finally:
            self.busy_since = None

    def _fetch(self, source: HttpSource, path: str, sink: StoreSink, on_instance: Callable[[str, int], None]) -> None:
        """One WADO-RS request, its parts streamed to ``sink``; as stored where the server allows."""
        where = f"{source.base_url}/{path}"
        pacer = self._backend.settings.pacer
        writer = wado.InstanceWriter(sink, where, on_instance, pacer.take if pacer is not None else lambda count: None)
        accept = AS_STORED if self._backend.as_stored else AS_SERVER_LIKES
        try:
            with source.stream(path, accept) as (content_type, chunks):
                self._parse(content_type, chunks, writer, where)
        except HttpRefused as exc:
            if exc.status not in (400, 406) or not self._backend.as_stored:
                raise
            self._backend.as_stored = False  # the server cannot send as stored: take its default
            log.warning("%s refuses transfer-syntax=*; instances come in the syntax it chooses", source.base_url)
            with source.stream(path, AS_SERVER_LIKES) as (content_type, chunks):
                self._parse(content_type, chunks, writer, where)

    @staticmethod
    def _parse(content_type: str, chunks: Iterator[bytes], writer: wado.InstanceWriter, where: str) -> None:
        boundary = boundary_of(content_type)
        if boundary is None:
            msg = f"{where} answered {content_type.split(';')[0] or 'no content type'}, not multipart/related"
            raise HttpRefused(msg)
        stream = MultipartStream(boundary, writer, where)
        try:
            for chunk in chunks:
                stream.feed(chunk)
            stream.finish()
            if stream.in_part:
                msg = f"{where}: the answer ended inside an instance"
                raise ServerError(msg)
        except BaseException:
            writer.abandon()
            raise

    def _targets(self, source: HttpSource, request: Request) -> list[tuple[str, list[str]]]:
        """(WADO-RS path, the SOP Instance UIDs QIDO-RS says it holds) for what ``request`` covers."""
        given = {s.leaf.keyword: s.value or "" for s in request.elements if len(s.path) == 1 and s.value}
        level = request.level or "STUDY"
        studies = wado.plain_uids(given.get("StudyInstanceUID", ""))
        series = wado.plain_uids(given.get("SeriesInstanceUID", ""))
        sops = wado.plain_uids(given.get("SOPInstanceUID", "")) if level == "IMAGE" else []
        if sops:
            if len(studies) == 1 and len(series) == 1:
                base = f"studies/{studies[0]}/series/{series[0]}/instances"
                return [(f"{base}/{uid}", [uid]) for uid in sops]
            return [self._instance_target(source, uid, studies) for uid in sops]
        if not studies:
            studies = self._study_uids(source, given)
        targets: list[tuple[str, list[str]]] = []
        for study in studies:
            if level == "STUDY" or not series:
                targets.append((f"studies/{study}", self._instance_uids(source, f"studies/{study}/instances")))
                continue
            for one in series:
                path = f"studies/{study}/series/{one}"
                uids = self._instance_uids(source, f"{path}/instances")
                if uids or len(studies) == 1:
                    targets.append((path, uids))
        return targets

    def _instance_target(self, source: HttpSource, uid: str, studies: list[str]) -> tuple[str, list[str]]:
        """Where one instance named without its series is (QIDO-RS tells); a path that names no
        study when QIDO-RS does not know it, so its absence counts as missing."""
        path = f"studies/{studies[0]}/instances" if len(studies) == 1 else "instances"
        params = [("SOPInstanceUID", uid), ("includefield", "StudyInstanceUID"), ("includefield", "SeriesInstanceUID")]
        for item in source.get_json(path, [*params, ("limit", "1")]):
            study, series = _first(item, "0020000D") or (studies[0] if studies else ""), _first(item, "0020000E")
            if study and series:
                return f"studies/{study}/series/{series}/instances/{uid}", [uid]
        return "", [uid]

    def _study_uids(self, source: HttpSource, given: dict[str, str]) -> list[str]:
        keys = [(k, given[k]) for k in ("PatientID", "AccessionNumber", "SeriesInstanceUID") if k in given]
        if not keys:
            msg = "a DICOMweb retrieve needs a Study Instance UID, or a Patient ID, Accession Number or Series UID"
            raise HttpRefused(msg)
        path = "series" if "SeriesInstanceUID" in given and len(keys) == 1 else "studies"
        params = [(k, v.replace("\\", ",") if k.endswith("UID") else v) for k, v in keys]
        found = self._paged(source, path, [*params, ("includefield", "StudyInstanceUID")])
        return list(dict.fromkeys(uid for item in found if (uid := _first(item, "0020000D"))))

    def _instance_uids(self, source: HttpSource, path: str) -> list[str]:
        found = self._paged(source, path, [("includefield", "SOPInstanceUID")])
        return list(dict.fromkeys(uid for item in found if (uid := _first(item, "00080018"))))

    def _paged(self, source: HttpSource, path: str, params: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """Every data set QIDO-RS answers for ``path``, page by page."""
        page = self._backend.settings.page
        found: list[dict[str, Any]] = []
        previous: list[dict[str, Any]] = []
        while True:
            answer, more = source.get_page(path, [*params, ("limit", str(page)), ("offset", str(len(found)))])
            if previous and answer[:3] == previous[:3]:
                msg = f"{source.base_url}/{path} ignores offset (the same page twice); its answers cannot be paged"
                raise HttpRefused(msg)
            previous = answer
            found.extend(answer)
            self.busy_since = time.monotonic()
            if len(found) > MAX_MATCHES:
                msg = f"{source.base_url}/{path} answered more than {MAX_MATCHES} matches; narrow the request"
                raise HttpRefused(msg)
            if len(answer) < page and not (more and answer):  # a short page, and no word of more
                return found

    def echo(self) -> int:
        """0x0000 when the source answers a QIDO-RS query for one study."""
        self._source().get_json("studies", [("limit", "1")])
        return 0x0000

    def abort(self, *, silent: bool) -> None:
        """Close the connections from another thread: a request in flight ends with an error."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None


class WebBackend:
    """Sessions against one DICOMweb base URL, sharing its credentials."""

    def __init__(self, settings: WebSettings) -> None:
        self.settings = settings
        self.credentials = Credentials(settings.auth) if settings.auth is not None else None
        self.as_stored = True  # ask for instances as stored until the server refuses it

    def session(self) -> WebSession:
        return WebSession(self)


def _first(item: dict[str, Any], tag: str) -> str:
    """The first value of ``tag`` in a DICOM JSON data set, as text ("" when absent)."""
    element = item.get(tag)
    values = element.get("Value") if isinstance(element, dict) else None
    return str(values[0]).strip() if isinstance(values, list) and values else ""
