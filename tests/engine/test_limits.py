"""Pure limits: token bucket, adaptive concurrency, latency deadline."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from asyncdicom.engine.limits import AdaptiveConcurrency, LatencyTracker, TokenBucket


class TestTokenBucket:
    def test_unlimited(self) -> None:
        """Rate 0 never waits."""
        bucket = TokenBucket(rate=0)
        assert [bucket.reserve(0.0) for _ in range(5)] == [0.0] * 5

    def test_waits_are_exact(self) -> None:
        """At 4/s with capacity 1, back-to-back reservations wait 0, 0.25, 0.5 s."""
        bucket = TokenBucket(rate=4, capacity=1)
        assert [bucket.reserve(10.0) for _ in range(3)] == [0.0, 0.25, 0.5]

    def test_refills_over_time(self) -> None:
        """Tokens come back at the rate, up to the capacity."""
        bucket = TokenBucket(rate=2, capacity=2)
        assert bucket.reserve(0.0) == 0.0
        assert bucket.reserve(0.0) == 0.0
        assert bucket.reserve(0.0) == 0.5
        assert bucket.reserve(100.0) == 0.0

    @given(st.floats(min_value=0.5, max_value=100), st.integers(min_value=1, max_value=200))
    def test_long_run_rate(self, rate: float, n: int) -> None:
        """n immediate reservations finish no sooner than (n - capacity) / rate."""
        bucket = TokenBucket(rate=rate, capacity=1)
        last = max(bucket.reserve(0.0) for _ in range(n))
        assert abs(last - (n - 1) / rate) < 1e-6 * n


class TestAdaptiveConcurrency:
    def test_cut_and_grow(self) -> None:
        """Rejections lower the limit (not below 1); a streak of successes raises it back."""
        control = AdaptiveConcurrency(maximum=4, grow_after=3)
        assert [control.on_rejected() for _ in range(5)] == [3, 2, 1, 1, 1]
        assert [control.on_success() for _ in range(6)] == [1, 1, 2, 2, 2, 3]

    def test_never_above_maximum(self) -> None:
        """Successes never raise the limit past the configured threads."""
        control = AdaptiveConcurrency(maximum=2, grow_after=1)
        assert max(control.on_success() for _ in range(10)) == 2


class TestLatencyTracker:
    def test_ceiling_until_enough_samples(self) -> None:
        """Without enough samples the deadline is the DIMSE timeout."""
        tracker = LatencyTracker(ceiling=30, min_samples=10)
        for _ in range(9):
            tracker.add(0.005)
        assert tracker.deadline() == 30

    def test_adaptive_deadline(self) -> None:
        """With samples the deadline is factor x p99, floored, and doubles per retry."""
        tracker = LatencyTracker(ceiling=30, floor=1.0, factor=10, min_samples=10)
        for _ in range(99):
            tracker.add(0.01)
        tracker.add(0.5)
        assert tracker.deadline() == 1.0
        tracker.add(0.5)
        assert tracker.deadline() == 5.0
        assert tracker.deadline(attempt=1) == 10.0
        assert tracker.deadline(attempt=5) == 30


class TestAutoConcurrency:
    """threads: auto against simulated PACS: it settles within one of the PACS's limit N."""

    @staticmethod
    def _drive(n: int, *, refuse: bool, completions: int = 6000, maximum: int = 16) -> list[int]:
        """Feed completions at the rate a PACS serving ``n`` associations would allow; above ``n``
        it refuses (``refuse``) or slows every association down four times. Returns the levels."""
        from asyncdicom.engine.limits import AutoConcurrency

        control = AutoConcurrency(maximum=maximum, hold_epochs=10_000)
        delay, now, levels = 0.01, 0.0, []
        for _ in range(completions):
            level = control.limit
            if refuse and level > n:
                control.on_rejected(now)
                level = n
            slow = 1.0 if refuse or level <= n else 4.0
            now += delay * slow / level
            control.on_success(now, 1, delay * slow)
            levels.append(control.limit)
        return levels

    def test_settles_below_a_refusing_pacs(self) -> None:
        for n in (1, 3, 5, 9):
            levels = self._drive(n, refuse=True)
            tail = sorted(levels[len(levels) // 2 :])
            assert abs(tail[len(tail) // 2] - n) <= 1 and abs(levels[-1] - n) <= 1, (n, levels[-1])

    def test_settles_where_a_pacs_slows_down(self) -> None:
        for n in (2, 4, 6, 10):
            levels = self._drive(n, refuse=False)
            tail = sorted(levels[len(levels) // 2 :])
            assert abs(tail[len(tail) // 2] - n) <= 1 and abs(levels[-1] - n) <= 1, (n, levels[-1])

    def test_never_above_the_maximum_and_cuts_multiplicatively(self) -> None:
        from asyncdicom.engine.limits import AutoConcurrency

        assert max(self._drive(100, refuse=True, maximum=6)) == 6
        control = AutoConcurrency(maximum=16, limit=12)
        assert control.on_rejected(0.0) == 9  # x 0.75
        assert control.on_rejected(0.1) == 9  # the same burst
        assert control.on_rejected(5.0) == 6

    def test_probes_again_after_a_quiet_hold(self) -> None:
        from asyncdicom.engine.limits import AutoConcurrency

        control = AutoConcurrency(maximum=8, limit=3, ceiling=3, hold_epochs=2)
        now, levels = 0.0, []
        for _ in range(400):
            now += 0.01  # a PACS whose throughput does not grow past 3
            levels.append(control.on_success(now, 1, 0.01))
        assert set(levels) == {3, 4}
        back = [i for i in range(1, len(levels)) if levels[i - 1] == 4 and levels[i] == 3]
        assert back  # it tried 4 after the hold, found no gain (twice), and went back


def test_one_busy_epoch_does_not_undo_a_step_up() -> None:
    """After a step up, one epoch whose throughput did not rise (the machine was busy) is looked
    at again: a good second epoch keeps the step; two bad ones take it back, and it stays there."""
    from asyncdicom.engine.limits import AutoConcurrency

    def epoch(control: AutoConcurrency, start: float, rate: float) -> float:
        """One epoch of 16 completions at ``rate`` a second; returns the time at its end."""
        now = start
        for _ in range(16):
            now += 1 / rate
            control.on_success(now, 1, 0.01)
        return now

    control = AutoConcurrency(maximum=8, limit=2, hold_epochs=10_000, epoch_seconds=0.0)
    now = epoch(control, 0.0, 20.0)  # at 2: 20 a second
    assert control.limit == 3
    now = epoch(control, now, 20.0)  # at 3, a busy epoch: no gain yet
    assert control.limit == 3
    now = epoch(control, now, 30.0)  # at 3 it pays after all: on to 4
    assert control.limit == 4
    now = epoch(control, now, 30.0)  # at 4: no gain
    now = epoch(control, now, 30.0)  # and again: back to 3, for good
    assert (control.limit, control.ceiling) == (3, 3)


def test_one_slow_epoch_does_not_lower_the_level() -> None:
    """One epoch whose latency jumped past twice the best (the machine was busy) is looked at
    again: a normal second epoch keeps the level; two slow ones in a row lower it, for good."""
    from asyncdicom.engine.limits import AutoConcurrency

    def epoch(control: AutoConcurrency, start: float, latency: float) -> float:
        now = start
        for _ in range(16):
            now += 0.05
            control.on_success(now, 1, latency)
        return now

    control = AutoConcurrency(maximum=4, limit=4, ceiling=4, hold_epochs=10_000, epoch_seconds=0.0)
    now = epoch(control, 0.0, 0.01)  # the best latency: 10 ms
    now = epoch(control, now, 0.05)  # a busy moment: five times slower
    assert control.limit == 4
    now = epoch(control, now, 0.01)  # back to normal: the level stands
    assert control.limit == 4
    now = epoch(control, now, 0.05)
    now = epoch(control, now, 0.05)  # slow twice in a row: too many associations
    assert (control.limit, control.ceiling) == (3, 3)
