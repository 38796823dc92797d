"""What the engine needs from the network, as protocols (no pynetdicom here)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from asyncdicom.models import Request

PENDING = (0xFF00, 0xFF01)
CountsCallback = Callable[[dict[str, int]], None]


@dataclass(frozen=True, slots=True)
class FindOutcome:
    """The result of one C-FIND: its final status and every match.

    ``status`` is the final DIMSE status; ``matches`` holds one mapping of keyword to text
    per pending response; ``pending`` counts those responses.
    """

    status: int
    matches: tuple[dict[str, str], ...] = ()
    elapsed: float = 0.0
    comment: str | None = None
    pending: int = field(default=0)


@dataclass(frozen=True, slots=True)
class RetrieveOutcome:
    """The result of one C-MOVE or C-GET.

    ``counts`` holds the final (or last seen) completed/failed/warning/remaining sub-operation
    counts; ``failed_uids`` the Failed SOP Instance UID List; ``received`` the SOP Instance
    UIDs of this request that are durable at their final paths.
    """

    status: int
    counts: dict[str, int] = field(default_factory=dict)
    failed_uids: tuple[str, ...] = ()
    elapsed: float = 0.0
    comment: str | None = None
    pending: int = 0
    received: frozenset[str] = frozenset()
    stored: int = 0
    duplicates: int = 0
    arrived: int = 0  # instances received and accepted (an archive's two data sets under one UID count twice)
    refused: tuple[str, ...] = ()  # SOP classes a C-GET needed and the PACS accepted no context for


class DicomSession(Protocol):
    """One association's worth of work, used by a single worker thread at a time.

    Every method but :meth:`abort` blocks and runs in a worker thread.
    """

    @property
    def busy_since(self) -> float | None:
        """``time.monotonic()`` of the last response (or of the send), while a request runs."""

    def find(self, request: Request) -> FindOutcome:
        """Send one C-FIND and collect every response (re-associating when needed)."""

    def retrieve(
        self,
        request: Request,
        message_id: int,
        sink: Any,
        on_counts: CountsCallback | None = None,
        classes: Sequence[str] = (),
    ) -> RetrieveOutcome:
        """Send one C-MOVE (``sink`` None) or C-GET (C-STOREs go to ``sink``) and wait for its end;
        ``on_counts`` gets the sub-operation counts of each pending response (in the worker thread);
        ``classes``: a C-GET's SOP classes, when known, to propose presentation contexts for."""

    def echo(self) -> int:
        """Send one C-ECHO and return its status."""

    def abort(self, *, silent: bool) -> None:
        """Abort the association from another thread; ``silent`` marks a watchdog abort."""

    def close(self) -> None:
        """Release the association, if any."""


class DicomBackend(Protocol):
    """Factory for sessions against one PACS."""

    def session(self) -> DicomSession:
        """A new session; it associates lazily on first use."""
