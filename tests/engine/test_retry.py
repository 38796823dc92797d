"""Retry decisions: a table of statuses and errors."""

from __future__ import annotations

import pytest

from asyncdicom.engine.retry import Action, RetryPolicy, Unreachable, status_category
from asyncdicom.errors import AssociationAborted, AssociationRejected, ConnectionFailed, ProtocolError, SilentPeer


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (0x0000, "success"),
        (0xFF00, "pending"),
        (0xFF01, "pending"),
        (0xFE00, "cancel"),
        (0xB000, "warning"),
        (0x0001, "warning"),
        (0xA700, "failure"),
        (0xA900, "failure"),
        (0xC000, "failure"),
        (0x0122, "failure"),
    ],
)
def test_categories(status: int, category: str) -> None:
    """Status codes map to PS3.7 categories."""
    assert status_category(status) == category


class TestStatuses:
    policy = RetryPolicy(retries=2)

    def test_success_and_warning_are_done(self) -> None:
        """Success and warning finals settle the request."""
        assert self.policy.for_status(0x0000, 0).action is Action.DONE
        assert self.policy.for_status(0xB000, 0).action is Action.DONE

    def test_out_of_resources_retries_then_fails(self) -> None:
        """0xA700 is retried with growing back-off until the retries are spent."""
        first, second = self.policy.for_status(0xA700, 0), self.policy.for_status(0xA700, 1)
        assert (first.action, second.action) == (Action.RETRY, Action.RETRY)
        assert second.delay > first.delay
        last = self.policy.for_status(0xA700, 2)
        assert (last.action, last.transient) == (Action.FAIL, True)  # a plain rerun tries it again

    def test_unable_to_process_fails_at_once(self) -> None:
        """0xC000 and 0xA900 are not retried."""
        assert self.policy.for_status(0xC000, 0).reason == "failure status 0xC000"
        assert self.policy.for_status(0xA900, 0).action is Action.FAIL
        assert not self.policy.for_status(0xC000, 0).transient


class TestErrors:
    policy = RetryPolicy(retries=1, give_up_unreachable=10.0)

    def test_transient_rejection_slows_down(self) -> None:
        """A busy PACS (local limit exceeded) means slow down, not failure."""
        busy = AssociationRejected(2, 3, 2, "busy")
        assert self.policy.for_error(busy, 0).action is Action.SLOW_DOWN

    def test_permanent_rejection_is_fatal(self) -> None:
        """Calling AE title not recognised: nothing will work; stop the run."""
        unknown = AssociationRejected(1, 1, 3, "calling AE title not recognised")
        decision = self.policy.for_error(unknown, 0)
        assert (decision.action, decision.reason) == (Action.FATAL, "calling AE title not recognised")

    def test_unreachable_reconnects_then_is_fatal(self) -> None:
        """Connection failures back off, never past the give-up time, and stop the run once it is reached."""
        down = ConnectionFailed("down")
        first = self.policy.for_error(down, 0, Unreachable(0.0, 1))
        assert (first.action, first.delay) == (Action.RECONNECT, 1.0)
        assert self.policy.for_error(down, 0, Unreachable(3.0, 3)).delay == 4.0
        last = self.policy.for_error(down, 0, Unreachable(7.0, 4))
        assert (last.action, last.delay) == (Action.RECONNECT, 3.0)  # 8 s of back-off, cut at the 10 s mark
        fatal = self.policy.for_error(down, 0, Unreachable(10.0, 5))
        assert (fatal.action, fatal.reason) == (Action.FATAL, "down; gave up after 10 s (request.unreachable_timeout)")

    def test_unreachable_with_no_patience_is_fatal_at_once(self) -> None:
        """request.unreachable_timeout 0: the first failure stops the run, without announcing a retry."""
        decision = RetryPolicy(give_up_unreachable=0.0).for_error(ConnectionFailed("down"), 0, Unreachable(0.0, 1))
        assert (decision.action, decision.reason) == (Action.FATAL, "down")

    def test_silent_and_aborted_retry_then_fail(self) -> None:
        """A silent PACS is retried at once; aborts with back-off; both fail after the retries."""
        silent = self.policy.for_error(SilentPeer("x"), 0)
        assert (silent.action, silent.delay) == (Action.RETRY, 0.0)
        assert self.policy.for_error(AssociationAborted("x"), 0).action is Action.RETRY
        aborted = self.policy.for_error(AssociationAborted("x"), 1)
        assert (aborted.action, aborted.transient) == (Action.FAIL, True)
        assert self.policy.for_error(SilentPeer("x"), 1).transient
        assert not self.policy.for_error(ProtocolError("x"), 1).transient  # it would break the protocol again
