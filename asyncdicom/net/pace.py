"""A cap on received bytes per second, shared by every receiving thread (``request.max_megabytes_per_second``).

A token bucket on bytes: a reader reserves a PDU's length before reading its body and sleeps
off any debt, so the socket's receive window fills and TCP slows the sender down; nothing is
dropped. The burst is a quarter of a second's worth (at least one PDU), so the rate holds over
any stretch longer than that.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

MEGABYTE = 1_000_000


class Pacer:
    """At most ``rate`` bytes per second on average across every thread that calls :meth:`take`."""

    def __init__(
        self,
        rate: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if rate <= 0:
            msg = "a pacer needs a positive rate"
            raise ValueError(msg)
        self.rate = rate
        self.capacity = max(rate / 4, float(1 << 20))
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = self.capacity
        self._stamp = clock()
        self.total = 0  # bytes taken so far

    def set_rate(self, rate: float) -> None:
        """A new average rate from now on (several hosts share the cap: this one's share)."""
        if rate <= 0:
            msg = "a pacer needs a positive rate"
            raise ValueError(msg)
        with self._lock:
            self._refill(self._clock())
            self.rate = rate

    def _refill(self, now: float) -> None:
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def take(self, count: int) -> None:
        """Reserve ``count`` bytes; sleep until the bucket has paid for them."""
        with self._lock:
            self._refill(self._clock())
            self._tokens -= count
            self.total += count
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)

    def debt(self) -> float:
        """Seconds until the bucket is no longer in debt (0 when it is not): how long a new
        request waits before it starts."""
        with self._lock:
            self._refill(self._clock())
            return -self._tokens / self.rate if self._tokens < 0 else 0.0
