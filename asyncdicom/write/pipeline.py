"""The writer pipeline: spooled instances → (post-processing) → final path → ledger.

A bounded queue sits between the receive path and the writers, so a slow disk or CPU slows
the PACS down instead of growing memory. Header parsing and file moves run in worker threads.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import anyio
import anyio.to_process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from asyncdicom.engine.tracker import Flight, Tracker
from asyncdicom.stats import RunStats
from asyncdicom.write.spool import Header, Placed, place, read_header
from asyncdicom.write.transforms import decompress_file

log = logging.getLogger("asyncdicom.write")

QUEUE = 64


@dataclass(frozen=True, slots=True)
class Spooled:
    """A durable spool file waiting to be placed, and the flight it belongs to (if known)."""

    path: Path
    flight: Flight | None
    transfer_syntax: str = ""


@dataclass(frozen=True, slots=True)
class InstanceRecord:
    """One placed instance, for the ledger."""

    sop_uid: str
    request_key: str | None
    path: str
    size: int
    transfer_syntax: str
    state: str
    warning: str | None = None


class InstanceSink(Protocol):
    """Where placed instances are recorded (the ledger)."""

    async def record_instance(self, record: InstanceRecord) -> None:
        """Queue a placed instance for the ledger."""


class Pipeline:
    """Writer tasks draining a bounded queue of spooled instances."""

    def __init__(
        self,
        *,
        root: Path,
        structure: tuple[str, ...],
        filename: str,
        sink: InstanceSink,
        tracker: Tracker,
        workers: int = 2,
        stats: RunStats | None = None,
        decompress: bool = False,
    ) -> None:
        self.root = root.resolve()
        self.structure = structure
        self.filename = filename
        self.sink = sink
        self.tracker = tracker
        self.workers = workers
        self.stats = stats
        self.decompress = decompress
        self.cpu_in_threads = os.environ.get("ASYNCDICOM_CPU_POOL") == "threads"
        self._send: MemoryObjectSendStream[Spooled]
        self._receive: MemoryObjectReceiveStream[Spooled]
        self._send, self._receive = anyio.create_memory_object_stream[Spooled](QUEUE)
        self._threads = anyio.CapacityLimiter(workers)

    async def enqueue(self, item: Spooled) -> None:
        """Hand a spool file over; waits while the queue is full (backpressure to the PACS)."""
        if item.flight is not None:
            self.tracker.handed_over(item.flight)
        await self._send.send(item)

    def close(self) -> None:
        """No more items will come; writers stop once the queue is drained."""
        self._send.close()

    async def run(self) -> None:
        """Run the writer tasks until :meth:`close` and the queue is empty."""
        async with anyio.create_task_group() as tg:
            for _ in range(self.workers):
                tg.start_soon(self._writer, self._receive.clone())
            self._receive.close()

    async def _writer(self, receive: MemoryObjectReceiveStream[Spooled]) -> None:
        with anyio.CancelScope(shield=True):  # drain even on Ctrl-C: every spool file gets placed
            async with receive:
                async for item in receive:
                    await self._handle(item)

    async def _handle(self, item: Spooled) -> None:
        path, warning = item.path, None
        if self.decompress:
            # CPU-bound decoding runs in worker processes: in this process it would stall the receive path
            try:
                if self.cpu_in_threads:  # for measurements only: see scripts/bench_retrieve --decompress
                    transformed = await anyio.to_thread.run_sync(decompress_file, path, limiter=self._threads)
                else:
                    transformed = await anyio.to_process.run_sync(decompress_file, path, limiter=self._threads)
                path, warning = transformed.path, transformed.warning
            except Exception as exc:  # a crashed worker process must not lose the instance
                warning = f"kept as received: decompression failed as {type(exc).__name__}"
            if warning:
                log.warning("instance in %s: %s", path.name, warning)
        try:
            header, placed = await anyio.to_thread.run_sync(self._place, path, limiter=self._threads)
        except (OSError, ValueError) as exc:
            log.error("unable to store a received instance as %s; it stays in the spool", exc)
            if item.flight is not None:
                self.tracker.lost(item.flight)
            return
        await self._record(item, header, placed, warning)

    async def placed_directly(self, item: Spooled, header: Header, placed: Placed) -> None:
        """Record an instance a receive thread placed itself (see :meth:`place_now`)."""
        if item.flight is not None:
            self.tracker.handed_over(item.flight)
        await self._record(item, header, placed, None)

    async def _record(self, item: Spooled, header: Header, placed: Placed, warning: str | None) -> None:
        duplicate = placed.state == "duplicate"
        if self.stats is not None:
            self.stats.instances += not duplicate
            self.stats.duplicates += duplicate
        await self.sink.record_instance(
            InstanceRecord(
                sop_uid=header.sop_instance_uid,
                request_key=item.flight.request.key if item.flight else None,
                path=str(placed.path.relative_to(self.root)),
                size=placed.size,
                transfer_syntax=header.transfer_syntax or item.transfer_syntax,
                state=placed.state,
                warning=warning,
            )
        )
        if item.flight is not None:
            self.tracker.placed(item.flight, header.sop_instance_uid, duplicate)

    @property
    def direct(self) -> bool:
        """Whether receive threads may place instances themselves (no CPU-heavy step configured)."""
        return not self.decompress

    def place_now(self, path: Path) -> tuple[Header, Placed]:
        """Header parse and atomic placement, in the calling (receive) thread: cheap I/O, and it
        saves three thread hops per instance. Raises OSError or ValueError."""
        return self._place(path)

    def _place(self, path: Path) -> tuple[Header, Placed]:
        header = read_header(path, (*self.structure, self.filename))
        return header, place(path, self.root, self.structure, self.filename, header)
