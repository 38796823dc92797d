"""MockBackend: a DicomBackend driven by a plain function, for tests and dry runs.

The handler gets each request and returns a :class:`FindOutcome`, raises a NetworkError, or
returns :data:`SILENT` to behave like a PACS that never answers (until aborted).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Final

from asyncdicom.errors import AssociationAborted, SilentPeer
from asyncdicom.models import Request
from asyncdicom.net.base import FindOutcome, RetrieveOutcome

SILENT: Final = object()

Handler = Callable[[Request], "FindOutcome | object"]


class MockSession:
    """A session whose every call goes to the backend's handler."""

    def __init__(self, backend: MockBackend) -> None:
        self._backend = backend
        self._aborted = threading.Event()
        self._silent = False
        self.busy_since: float | None = None
        self.closed = False

    def find(self, request: Request) -> FindOutcome:
        self._aborted.clear()
        self.busy_since = time.monotonic()
        try:
            result = self._backend.handler(request)
            if result is SILENT:
                self._backend.silent_started.set()
                self._aborted.wait(60)
                if self._silent:
                    msg = "the PACS did not answer the C-FIND in time, so the association was aborted"
                    raise SilentPeer(msg)
                msg = "the association was aborted before the C-FIND completed"
                raise AssociationAborted(msg)
            assert isinstance(result, FindOutcome)
            return result
        finally:
            self.busy_since = None

    def retrieve(
        self, request: Request, message_id: int, sink: object, on_counts: object = None, classes: object = ()
    ) -> RetrieveOutcome:
        result = self._backend.handler(request)
        assert isinstance(result, RetrieveOutcome)
        return result

    def echo(self) -> int:
        return 0

    def abort(self, *, silent: bool) -> None:
        self._silent = silent
        self._aborted.set()

    def close(self) -> None:
        self.closed = True


class MockBackend:
    """Backend whose sessions answer with ``handler(request)``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.sessions: list[MockSession] = []
        self.silent_started = threading.Event()

    def session(self) -> MockSession:
        session = MockSession(self)
        self.sessions.append(session)
        return session
