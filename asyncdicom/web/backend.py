"""The DICOMweb backend: sessions that answer the engine's calls with QIDO-RS (and echo), over
:mod:`asyncdicom.web.http`. Each session is used by one worker thread at a time, as a DIMSE one."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from asyncdicom.config.schema import AuthConfig
from asyncdicom.errors import HttpRefused, ServiceNotSupported
from asyncdicom.models import Request
from asyncdicom.net.base import CountsCallback, FindOutcome, RetrieveOutcome
from asyncdicom.web import qido
from asyncdicom.web.auth import Credentials
from asyncdicom.web.http import HttpSource

PAGE = 1000  # results asked for per QIDO-RS request (limit); the rest by offset
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
            where = f"{source.base_url}/{path}"
            page = self._backend.settings.page
            found: list[dict[str, str]] = []
            first_keys: list[tuple[str, ...]] = []
            while True:
                answer = source.get_json(path, [*params, ("limit", str(page)), ("offset", str(len(found)))])
                batch = qido.matches(answer, keep, where)
                signature = tuple(sorted(str(item) for item in answer[:3]))
                if found and signature in first_keys:
                    msg = f"{where} ignores offset (it sent the same page twice); its answers cannot be paged"
                    raise HttpRefused(msg)
                first_keys.append(signature)
                found.extend(batch)
                if len(found) > MAX_MATCHES:
                    msg = f"{where} answered more than {MAX_MATCHES} matches for one request; narrow the request"
                    raise HttpRefused(msg)
                if len(answer) < page:
                    break
                self.busy_since = time.monotonic()
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
        msg = "retrieval from a DICOMweb source (WADO-RS) is not available yet; use a DIMSE pacs section"
        raise ServiceNotSupported(msg)

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

    def session(self) -> WebSession:
        return WebSession(self)
