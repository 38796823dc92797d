"""The failure table: the docs print it as it is, and the retry policy does what each row says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from asyncdicom.engine import failures
from asyncdicom.engine.failures import Failure
from asyncdicom.engine.retry import Action, Decision, RetryPolicy, Unreachable
from asyncdicom.errors import (
    AccessDenied,
    AssociationAborted,
    AssociationRejected,
    ConnectionFailed,
    HttpRefused,
    IdentityRefused,
    NetworkError,
    ProtocolError,
    ServerBusy,
    ServerError,
    ServiceNotSupported,
    SilentPeer,
    TlsRefused,
)
from asyncdicom.net.base import RetrieveOutcome

DOCS = Path(__file__).resolve().parents[2] / "docs" / "troubleshooting.md"
POLICY = RetryPolicy(retries=1, destination="AE title ME at host, port 104")


def test_the_docs_print_the_table() -> None:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## Failures") :]
    rows = [
        tuple(cell.strip() for cell in line.strip("|").split("|"))
        for line in section.splitlines()
        if line.startswith("| ") and not line.startswith(("| failure", "| ---"))
    ]
    assert rows == [(f.kind, f.action, f.advice) for f in failures.TABLE]


def _first_action(row: Failure) -> Action:
    """The action a row's text starts with."""
    words = {
        "slow down": Action.SLOW_DOWN,
        "stop the run": Action.FATAL,
        "retry": Action.RETRY,
        "abort the association, retry": Action.RETRY,
        "fail the request": Action.FAIL,
        "reconnect": Action.RECONNECT,
        "record the request as partial": Action.PARTIAL,
    }
    for start, action in sorted(words.items(), key=lambda item: -len(item[0])):
        if row.action.startswith(start):
            return action
    raise AssertionError(row.action)


ERRORS: list[tuple[NetworkError, Failure]] = [
    (AssociationRejected(2, 3, 2, "busy"), failures.BUSY),
    (AssociationRejected(1, 1, 3, "calling AE title not recognised"), failures.REFUSED),
    (AssociationAborted("reset"), failures.ABORTED),
    (ProtocolError("bad PDU"), failures.BROKEN),
    (ConnectionFailed("refused"), failures.UNREACHABLE),
    (SilentPeer("silent"), failures.SILENT),
    (ServiceNotSupported("no model"), failures.UNSUPPORTED),
    (AccessDenied("https://pacs/dicom-web/studies answered 401"), failures.ACCESS_DENIED),
    (HttpRefused("https://pacs/dicom-web/studies answered 400"), failures.HTTP_REFUSED),
    (ServerBusy("https://pacs/dicom-web/studies answered 429", 2.0), failures.BUSY),
    (ServerError("https://pacs/dicom-web/studies answered 500"), failures.ABORTED),
    (IdentityRefused(2, 2, 1, "rejected for now (no reason given); check pacs.username"), failures.REFUSED),
    (TlsRefused("Unable to connect to PACS@host:2762 over TLS as its certificate has expired"), failures.TLS_REFUSED),
]
STATUSES: list[tuple[int, Failure]] = [
    (0xA702, failures.OUT_OF_RESOURCES),
    (0xA801, failures.UNKNOWN_DESTINATION),
    (0xA900, failures.WRONG_IDENTIFIER),
    (0xC001, failures.UNABLE),
    (0xFE00, failures.CANCELLED),
]


def test_every_row_is_reached() -> None:
    reached = {row for _, row in ERRORS} | {row for _, row in STATUSES}
    reached |= {failures.SUB_OPERATIONS, failures.REFUSED_CLASS}
    assert reached == set(failures.TABLE)


@pytest.mark.parametrize(("error", "row"), ERRORS, ids=lambda x: type(x).__name__ if isinstance(x, Exception) else "")
def test_errors_do_what_their_row_says(error: NetworkError, row: Failure) -> None:
    assert failures.for_error(error) is row
    first = POLICY.for_error(error, 0, Unreachable(0.0, 1))
    assert first.action is _first_action(row)
    if first.action is Action.RETRY:
        last = POLICY.for_error(error, 1)
        assert last.action is Action.FAIL
        assert last.transient == ("plain rerun continues" in row.action)


@pytest.mark.parametrize(("status", "row"), STATUSES, ids=lambda x: f"0x{x:04X}" if isinstance(x, int) else "")
def test_statuses_do_what_their_row_says(status: int, row: Failure) -> None:
    assert failures.for_status(status) is row
    decisions: list[Decision] = [POLICY.for_retrieve(RetrieveOutcome(status), attempt) for attempt in (0, 1)]
    assert decisions[0].action is _first_action(row)
    final = decisions[-1] if decisions[0].action is Action.RETRY else decisions[0]
    if final.action is Action.FAIL:
        assert final.transient == ("plain rerun continues" in row.action)
    if status == 0xA801:
        assert "AE title ME at host, port 104" in final.reason and "echo --move" in final.reason


def test_failed_sub_operations_retry_then_partial() -> None:
    outcome = RetrieveOutcome(0xB000, counts={"completed": 3, "failed": 1}, failed_uids=("1.2.3",))
    assert failures.for_status(0xB000, failed_sub_operations=True) is failures.SUB_OPERATIONS
    assert failures.for_status(0xB000) is None and failures.for_status(0x0000) is None
    assert [POLICY.for_retrieve(outcome, a).action for a in (0, 1)] == [Action.RETRY, Action.PARTIAL]


def test_back_off_is_jittered_within_its_bounds() -> None:
    values = iter([0.0, 1.0, 0.5])
    policy = RetryPolicy(jitter=0.25, random=lambda: next(values))
    assert [policy.backoff(2) for _ in range(3)] == [0.75, 1.25, 1.0]
    assert re.search(r"jittered", failures.ABORTED.action)


def test_a_refused_class_is_not_asked_for_again() -> None:
    why = "the PACS accepted no presentation context for Encapsulated PDF Storage (1.2.840.10008.5.1.4.1.1.104.1)"
    refused = ("1.2.840.10008.5.1.4.1.1.104.1",)
    some = RetrieveOutcome(0xB000, counts={"completed": 2, "failed": 1}, arrived=2, comment=why, refused=refused)
    none = RetrieveOutcome(0xA702, counts={"failed": 1}, comment=why, refused=refused)
    assert (POLICY.for_retrieve(some, 0).action, POLICY.for_retrieve(some, 0).reason) == (Action.PARTIAL, why)
    assert POLICY.for_retrieve(none, 0).action is Action.FAIL and not POLICY.for_retrieve(none, 0).transient
    assert _first_action(failures.REFUSED_CLASS) is Action.PARTIAL  # at once: no retry
