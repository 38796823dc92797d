"""What to do after each attempt: done, retry, fail, slow down or stop (pure)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from asyncdicom.errors import (
    AssociationAborted,
    AssociationRejected,
    ConnectionFailed,
    NetworkError,
    ProtocolError,
    ServerBusy,
    ServiceNotSupported,
    SilentPeer,
)
from asyncdicom.net.base import RetrieveOutcome


class Action(Enum):
    """The scheduler's next step for a request."""

    DONE = "done"
    RETRY = "retry"  # try again after ``delay``; counts as an attempt
    FAIL = "fail"  # record the request as failed
    PARTIAL = "partial"  # record the request as partly retrieved; the next run asks again
    SLOW_DOWN = "slow-down"  # the PACS is busy: hold fewer associations, wait, try again
    RECONNECT = "reconnect"  # the PACS cannot be reached: wait and try again, stop if it lasts
    FATAL = "fatal"  # nothing will work until the configuration changes: stop the run


@dataclass(frozen=True, slots=True)
class Decision:
    """An action, how long to wait before it, and why (for the ledger and the log)."""

    action: Action
    delay: float = 0.0
    reason: str = ""
    transient: bool = False  # a failure that may not recur (busy, aborted, silent): the next run tries again


def status_category(status: int) -> str:
    """PS3.7 category of a C-FIND/C-MOVE/C-GET status code."""
    if status == 0x0000:
        return "success"
    if status in (0xFF00, 0xFF01):
        return "pending"
    if status == 0xFE00:
        return "cancel"
    if status in (0x0001, 0x0107, 0x0116) or 0xB000 <= status <= 0xBFFF:
        return "warning"
    return "failure"


_MEANINGS = {
    0x0000: "success",
    0x0001: "warning: requested optional attributes are not supported",
    0xA700: "out of resources",
    0xA701: "out of resources: unable to calculate the number of matches",
    0xA702: "out of resources: unable to perform sub-operations",
    0xA801: "move destination unknown",
    0xA900: "identifier does not match the SOP class",
    0xB000: "warning: some sub-operations failed",
    0xC000: "unable to process",
    0xFE00: "cancelled",
}


def status_meaning(status: int) -> str:
    """What a C-FIND/C-MOVE/C-GET status means, in words (PS3.4 C.4)."""
    if status in _MEANINGS:
        return _MEANINGS[status]
    category = status_category(status)
    return "unable to process" if category == "failure" and 0xC000 <= status <= 0xCFFF else category


@dataclass(frozen=True, slots=True)
class Unreachable:
    """Connection failures in a row: seconds since the first, and how many rounds of tries."""

    seconds: float
    rounds: int


@dataclass(frozen=True)
class RetryPolicy:
    """Retry counts and exponential back-off with a cap."""

    retries: int = 3
    base_delay: float = 0.25
    max_delay: float = 30.0
    give_up_unreachable: float = 60.0  # seconds of connection failures in a row before the run stops
    jitter: float = 0.0  # each delay is spread by ± this fraction, so workers do not retry in step
    destination: str = "our AE title"  # for 0xA801: "AE title ASYNCDICOM, host …, port 11112"
    random: Callable[[], float] = field(default=random.random, repr=False, compare=False)

    def backoff(self, attempt: int) -> float:
        """Delay before attempt ``attempt + 1``: 0.25 s, 0.5 s, 1 s, … up to ``max_delay``, spread
        by ``jitter``."""
        delay = min(self.max_delay, self.base_delay * (2 ** max(0, attempt)))
        if self.jitter:
            delay *= 1.0 + self.jitter * (2.0 * self.random() - 1.0)
        return float(delay)

    def _unknown_destination(self) -> str:
        return (
            f"the PACS does not know {self.destination} as a C-MOVE destination (0xA801): "
            "register that AE title, this host and port on the PACS; check with asyncdicom echo --move"
        )

    def for_status(self, status: int, attempt: int) -> Decision:
        """Decide from the final DIMSE status of attempt number ``attempt`` (0-based)."""
        category = status_category(status)
        if category in ("success", "warning"):
            return Decision(Action.DONE, reason=category)
        busy = 0xA700 <= status <= 0xA7FF
        if busy and attempt < self.retries:
            return Decision(Action.RETRY, self.backoff(attempt + 2), f"PACS out of resources (0x{status:04X})")
        return Decision(Action.FAIL, reason=f"{category} status 0x{status:04X}", transient=busy or status == 0xFE00)

    def for_retrieve(self, outcome: RetrieveOutcome, attempt: int) -> Decision:
        """Decide whether a C-MOVE/C-GET is complete: what the PACS reported completed must have
        arrived and be durable; counters alone are not trusted (Orthanc may report 0)."""
        category = status_category(outcome.status)
        completed = outcome.counts.get("completed", 0)
        failed = outcome.counts.get("failed", 0) + len(outcome.failed_uids) > 0
        arrived = max(outcome.arrived, len(outcome.received))
        more = attempt < self.retries
        if category in ("success", "warning") and not failed and arrived >= completed:
            return Decision(Action.DONE, reason=category)
        if outcome.status == 0xA801:
            return Decision(Action.FATAL, reason=self._unknown_destination())
        if outcome.refused:  # asking again would meet the same refusal
            reason = outcome.comment or "the PACS accepted no presentation context for some SOP classes"
            return Decision(Action.PARTIAL if arrived else Action.FAIL, reason=reason)
        if category in ("success", "warning"):
            reason = (
                f"{len(outcome.failed_uids) or outcome.counts.get('failed', 0)} sub-operations failed"
                if failed
                else f"the PACS reported {completed} instances sent but {arrived} arrived"
            )
            return Decision(Action.RETRY if more else Action.PARTIAL, self.backoff(attempt), reason)
        reason = f"{category} status 0x{outcome.status:04X}" + (
            f" after {arrived} instances arrived" if arrived else ""
        )
        if 0xA700 <= outcome.status <= 0xA7FF and more:
            return Decision(Action.RETRY, self.backoff(attempt + 2), reason)
        if arrived:
            return Decision(Action.RETRY if more else Action.PARTIAL, self.backoff(attempt), reason)
        transient = 0xA700 <= outcome.status <= 0xA7FF or outcome.status == 0xFE00
        return Decision(Action.FAIL, reason=reason, transient=transient)

    def for_error(self, error: NetworkError, attempt: int, unreachable: Unreachable | None = None) -> Decision:
        """Decide from a network error; ``unreachable`` is how long connections have failed in a row
        (shared by every worker, so the time to give up does not depend on their number)."""
        if isinstance(error, AssociationRejected):
            if error.transient:
                asked = error.retry_after if isinstance(error, ServerBusy) else None
                wait = max(self.backoff(attempt), asked or 0.0)
                return Decision(Action.SLOW_DOWN, wait, str(error))
            return Decision(Action.FATAL, reason=str(error))
        if isinstance(error, ServiceNotSupported):
            return Decision(Action.FATAL, reason=str(error))
        if isinstance(error, ConnectionFailed):
            unreachable = unreachable or Unreachable(0.0, 1)
            left = self.give_up_unreachable - unreachable.seconds
            if left <= 0:
                gave_up = f"; gave up after {unreachable.seconds:.3g} s (request.unreachable_timeout)"
                return Decision(Action.FATAL, reason=str(error) + (gave_up if unreachable.rounds > 1 else ""))
            return Decision(Action.RECONNECT, min(self.backoff(unreachable.rounds + 1), left), str(error))
        if isinstance(error, ProtocolError):  # a peer that broke the protocol will do so again
            return Decision(Action.FAIL, reason=str(error))
        if isinstance(error, SilentPeer | AssociationAborted):
            if attempt < self.retries:
                delay = 0.0 if isinstance(error, SilentPeer) else self.backoff(attempt)
                return Decision(Action.RETRY, delay, str(error))
            return Decision(Action.FAIL, reason=str(error), transient=True)
        return Decision(Action.FAIL, reason=str(error))
