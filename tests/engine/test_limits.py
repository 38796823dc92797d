"""Pure limits: token bucket, time window, adaptive concurrency, latency deadline."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from asyncdicom.engine.limits import AdaptiveConcurrency, LatencyTracker, TimeWindow, TokenBucket


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


class TestTimeWindow:
    zone = ZoneInfo("America/New_York")

    def _at(self, hh: int, mm: int) -> datetime:
        return datetime(2026, 3, 10, hh, mm, tzinfo=self.zone)

    def test_inside_and_before(self) -> None:
        """Inside the window waits 0; before it, until start."""
        window = TimeWindow(time(17, 13), time(17, 15), self.zone)
        assert window.seconds_until_open(self._at(17, 14)) == 0
        assert window.seconds_until_open(self._at(17, 0)) == 13 * 60
        assert window.seconds_until_close(self._at(17, 14)) == 60

    def test_after_waits_until_next_day(self) -> None:
        """After the window it opens again the next day."""
        window = TimeWindow(time(17, 13), time(17, 15), self.zone)
        assert window.seconds_until_open(self._at(17, 15)) == (24 * 60 - 2) * 60

    def test_crossing_midnight(self) -> None:
        """A 19:00-06:00 window is open at 23:00 and 03:00, closed at 12:00."""
        window = TimeWindow(time(19, 0), time(6, 0), self.zone)
        assert window.seconds_until_open(self._at(23, 0)) == 0
        assert window.seconds_until_open(self._at(3, 0)) == 0
        assert window.seconds_until_open(self._at(12, 0)) == 7 * 3600

    def test_other_zone_input(self) -> None:
        """The current instant may come in any zone: the window's own zone decides."""
        window = TimeWindow(time(9, 0), time(10, 0), self.zone)
        utc_now = datetime(2026, 6, 1, 13, 30, tzinfo=UTC)  # 09:30 in New York (EDT)
        assert window.seconds_until_open(utc_now) == 0

    def test_dst_day(self) -> None:
        """On the spring-forward night the wait is computed in wall-clock time (23 h day)."""
        window = TimeWindow(time(3, 0), time(4, 0), self.zone)
        before = datetime(2026, 3, 7, 4, 0, tzinfo=self.zone)
        wait = window.seconds_until_open(before)
        assert before + timedelta(seconds=wait) == datetime(2026, 3, 8, 3, 0, tzinfo=self.zone)


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


class TestWindowGate:
    """The async gate with an injected clock: what it says, and that it says it once."""

    now = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)  # 07:00 in New York

    def _gate(self, calls: list[float]) -> object:
        from asyncdicom.engine.gates import WindowGate

        window = TimeWindow(time(19, 0), time(6, 0), ZoneInfo("America/New_York"))
        return WindowGate(window, on_wait=calls.append, now=lambda: self.now)

    def test_announcement_names_the_zone_and_utc(self) -> None:
        gate = self._gate([])
        assert gate.describe() == "closed, opens in 12h 00m"  # type: ignore[attr-defined]
        assert gate.opening_text() == (  # type: ignore[attr-defined]
            "19:00 America/New_York (2026-12-01; 2026-12-02T00:00:00Z), in 12h 00m"
        )

    def test_eight_waiting_workers_announce_the_wait_once(self) -> None:
        """The wait was printed once per thread (8 times); now once per closed period."""
        import anyio

        calls: list[float] = []
        gate = self._gate(calls)

        async def main() -> None:
            with anyio.move_on_after(0.2):
                async with anyio.create_task_group() as tg:
                    for _ in range(8):
                        tg.start_soon(gate.wait_open)  # type: ignore[attr-defined]

        anyio.run(main)
        assert calls == [12 * 3600.0]
