"""The value types every layer shares: requests, their results, instance records, and states.

This is the ground floor (with :mod:`asyncdicom.errors` and :mod:`asyncdicom.elements`): it
imports nothing else of asyncdicom, so the engine, the ledger, the network and the writers can
all speak of the same things without importing each other.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from asyncdicom.elements import ElementSpec, level_of, parse_path


class RequestState(StrEnum):
    """Where a request stands in the ledger (the values are stored as they are)."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"
    PARTIAL = "partial"  # some instances arrived; the next run asks for the rest


class InstanceState(StrEnum):
    """What happened to one received instance (the values are stored as they are)."""

    STORED = "stored"  # at its final path
    RENAMED = "renamed"  # at its final path with a _1, _2… suffix: another instance had the name
    DUPLICATE = "duplicate"  # placement only: the same instance was already stored there (recorded as stored)
    QUARANTINED = "quarantined"  # held back by the anonymizer, kept in the quarantine directory
    SKIPPED = "skipped"  # the anonymization script said to skip it; kept in the quarantine directory


class HeldBack(StrEnum):
    """Why a received instance is not (or not as asked) in the output tree: work left to do."""

    QUARANTINED = "quarantined"  # the anonymizer quarantined it
    SKIPPED = "skipped"  # the anonymization script skipped it
    KEPT_COMPRESSED = "kept compressed"  # output.decompress asked for it, decompression failed


KEPT_COMPRESSED_PREFIX = "kept as received"
"""How the warning of an instance kept compressed begins (the ledger finds them by it)."""


@dataclass(frozen=True, slots=True)
class Request:
    """One request to send: its stable key, CSV line (0 without a batch file) and elements."""

    key: str
    line: int
    elements: tuple[ElementSpec, ...]

    @property
    def level(self) -> str | None:
        """QueryRetrieveLevel of the request."""
        return level_of(self.elements)

    def to_json(self) -> str:
        """The elements as JSON (stored in the ledger)."""
        return json.dumps([[spec.name, spec.value] for spec in self.elements])


def narrow(request: Request, missing: Sequence[str]) -> Request | None:
    """The same request (same key) asking only for the ``missing`` SOP Instances, at IMAGE level.

    Only possible when the request names its series: an IMAGE-level retrieve needs the Study and
    Series Instance UIDs (PS3.4 C.4.2.1.4), and a list of UIDs alone does not say which series.
    """
    given = {s.leaf.keyword: s for s in request.elements if len(s.path) == 1 and s.value}
    if not missing or "StudyInstanceUID" not in given or "SeriesInstanceUID" not in given:
        return None
    if "\\" in (given["SeriesInstanceUID"].value or ""):
        return None
    kept = [given[k] for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID") if k in given]
    level = parse_path("QueryRetrieveLevel")
    sop = parse_path("SOPInstanceUID")
    elements = (ElementSpec(level, "IMAGE"), *kept, ElementSpec(sop, "\\".join(missing)))
    return Request(request.key, request.line, elements)


@dataclass(frozen=True, slots=True)
class RequestResult:
    """How a request ended in this run."""

    state: RequestState
    attempts: int
    status: int | None = None
    category: str | None = None
    error: str | None = None
    matches: tuple[dict[str, str], ...] = ()
    elapsed: float = 0.0
    counts: dict[str, int] | None = None
    received: int | None = None
    missing: tuple[str, ...] = ()
    transient: bool = False  # failed in a way that may not recur: a plain rerun tries it again
    duplicates: int = 0  # instances received again although already stored (transferred twice)


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One received instance, for the ledger."""

    sop_uid: str
    request_key: str | None
    path: str
    size: int
    transfer_syntax: str
    state: InstanceState
    warning: str | None = None
    replaces: str | None = None  # the SOP Instance UID of the held-back row this one supersedes


class SharedBudget(Protocol):
    """Association slots shared with the other hosts of a job (the PostgreSQL ledger's), as the
    engine's workers use them."""

    async def acquire(self, owner: object) -> None:
        """Wait for a slot of the job's budget for ``owner``."""

    def release(self, owner: object) -> None:
        """Give ``owner``'s slot back."""

    def keep_idle(self) -> bool:
        """Whether a worker with nothing to do should keep its slot a moment (more work may come)."""

    def over_share(self) -> bool:
        """Whether this host holds more than its share while another host waits for a slot."""
