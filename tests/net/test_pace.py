"""The byte pacer behind request.max_megabytes_per_second, with an injected clock and sleep."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from asyncdicom.net.pace import Pacer


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.lock = threading.Lock()

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.now += seconds


def test_a_burst_then_the_rate() -> None:
    """The first quarter second's worth (at least 1 MiB) passes at once; after that each byte costs 1/rate."""
    fake = FakeTime()
    pacer = Pacer(4_000_000, clock=fake.clock, sleep=fake.sleep)
    pacer.take(1_000_000)
    assert fake.now == 0.0
    assert pacer.capacity == 1 << 20  # a quarter second is 1 MB, less than one MiB
    pacer.take(1_000_000)  # 2 MB taken, 1 MiB of burst: the rest at 4 MB/s
    assert fake.now == pytest.approx((2_000_000 - (1 << 20)) / 4_000_000)
    assert pacer.debt() == 0.0 and pacer.total == 2_000_000


@given(
    st.floats(min_value=1e5, max_value=1e9),
    st.lists(st.integers(min_value=1, max_value=1 << 20), min_size=1, max_size=300),
)
def test_long_run_rate_never_exceeds_the_cap(rate: float, sizes: list[int]) -> None:
    """However the bytes come, the time taken is at least (total - burst) / rate."""
    fake = FakeTime()
    pacer = Pacer(rate, clock=fake.clock, sleep=fake.sleep)
    for size in sizes:
        pacer.take(size)
    assert fake.now >= (sum(sizes) - pacer.capacity) / rate - 1e-6
    assert fake.now <= max(0.0, (sum(sizes) - pacer.capacity) / rate) + 1e-6


def test_debt_tells_new_requests_to_wait() -> None:
    fake = FakeTime()
    pacer = Pacer(1_000_000, clock=fake.clock, sleep=lambda _: None)  # a reader that does not wait
    pacer.take(int(pacer.capacity) + 500_000)
    assert pacer.debt() == pytest.approx(0.5)
    fake.now = 0.5
    assert pacer.debt() == 0.0


def test_rate_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        Pacer(0)
