"""A bounded hand-over from receiving threads to tasks of the event loop.

A receive thread used to hand each instance to the writers with ``anyio.from_thread.run``: a
task created in the loop, the loop woken, and the thread asleep until the task ran (about
60 µs and a dozen futex calls per instance). Here the thread appends to a list under a lock
and goes on; the loop is woken only when a task sleeps waiting for items, and a full inbox
makes the thread wait for room (back-pressure to the PACS, memory bounded).
"""

from __future__ import annotations

import contextlib
import threading
from collections import deque
from typing import Generic, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread

T = TypeVar("T")

ROOM_EVERY = 0.5  # seconds a waiting thread sleeps before it looks whether the inbox closed


class Inbox(Generic[T]):
    """Items put by threads (:meth:`put_from_thread`) or tasks (:meth:`put`), taken in batches
    by tasks of one event loop (:meth:`take`); at most ``limit`` wait (more only once closed
    is refused)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._items: deque[T] = deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._sleepers = 0  # tasks waiting in take()
        self._waking = False  # a thread asked the loop to wake them
        self._closed = False
        self._ready = anyio.Event()
        self._token: anyio.lowlevel.EventLoopToken | None = None

    def bind(self) -> None:
        """In the event loop, before any thread puts: the loop threads wake."""
        self._token = anyio.lowlevel.current_token()

    def put_from_thread(self, item: T) -> bool:
        """Append ``item``, waiting while the inbox is full; False (item not taken) once closed."""
        with self._lock:
            while len(self._items) >= self.limit and not self._closed:
                self._room.wait(ROOM_EVERY)
            if self._closed:
                return False
            self._items.append(item)
            wake = self._sleepers > 0 and not self._waking
            self._waking = self._waking or wake
        if wake:
            # RuntimeError: the loop is gone (the run is over); nobody will take the item
            with contextlib.suppress(RuntimeError):
                anyio.from_thread.run_sync(self._wake, token=self._token)
        return True

    async def put(self, item: T) -> bool:
        """:meth:`put_from_thread` for a task (waiting for room in a worker thread)."""
        with self._lock:
            if self._closed:
                return False
            full = len(self._items) >= self.limit
            if not full:
                self._items.append(item)
            wake = not full and self._sleepers > 0
        if full:
            return await anyio.to_thread.run_sync(self.put_from_thread, item)
        if wake:
            self._wake()
        return True

    async def take(self, most: int) -> list[T]:
        """Up to ``most`` items, waiting for the first; [] once closed and empty."""
        while True:
            with self._lock:
                if self._items:
                    count = min(most, len(self._items))
                    items = [self._items.popleft() for _ in range(count)]
                    self._room.notify(count)
                    return items
                if self._closed:
                    return []
                self._sleepers += 1
                ready = self._ready
            try:
                await ready.wait()
            finally:
                with self._lock:
                    self._sleepers -= 1

    def close(self) -> None:
        """In the loop: no more items; takers get what is left, then []."""
        with self._lock:
            self._closed = True
            self._room.notify_all()
        self._wake()

    def _wake(self) -> None:
        """In the loop: wake the tasks waiting for items."""
        with self._lock:
            self._waking = False
            ready, self._ready = self._ready, anyio.Event()
        ready.set()
