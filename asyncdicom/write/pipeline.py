"""The writer pipeline: spooled instances → (post-processing) → final path → ledger.

Two routes:

* **direct** (nothing CPU-heavy configured): the receiving thread closes the file once it has
  answered the C-STORE, reads its header from the bytes it kept, and drops a note in an outbox
  (waiting while :data:`OUTBOX_LIMIT` notes are there); the event loop drains the outbox in
  batches (one wake-up per burst, not one hop per instance): the batch's files are made durable
  at once (:func:`~asyncdicom.write.place.flush_files`), then each is linked to its final path
  and recorded in the ledger;
* **queued** (decompression, anonymization): the receiving thread drops the closed file in a
  bounded inbox (:class:`~asyncdicom.write.inbox.Inbox`; it waits only when the inbox is full,
  so a slow disk or CPU slows the PACS down instead of growing memory). A writer task waits for
  a free worker process, then hands it everything waiting, up to :data:`BATCH` instances: the
  process anonymizes them (decoding first if asked), reads each new file's header and removes
  the originals once the batch is written. Written files then go through the same outbox as the
  direct route: one flush per batch, links, one directory fsync per batch; nothing is recorded
  before the flush.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Protocol

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_process
from pydicom.uid import UID

from asyncdicom.errors import OutputError, output_error
from asyncdicom.models import HeldBack, InstanceRecord, InstanceState
from asyncdicom.stats import RunStats
from asyncdicom.write.inbox import Inbox
from asyncdicom.write.place import Placed, Placer, flush_files, sync_dirs
from asyncdicom.write.spool import Header, SpoolWriter, header_or_error, read_header
from asyncdicom.write.tracker import Flight, Tracker
from asyncdicom.write.transforms import (
    AnonymizeFile,
    AnonymizeMany,
    decompress_and_anonymize,
    decompress_and_anonymize_many,
    decompress_file,
    ready,
)

log = logging.getLogger("asyncdicom.write")

WorkerResult = tuple[str, str, str | None, object]  # status, reason, decompression warning, header (or why not)

QUEUE = 64
WRITERS_PER_PROCESS = 4  # writer tasks per worker process: one hands it a batch while others place results
BATCH = 8  # instances a writer hands a worker process at once (a hop costs the loop ~0.13 ms of CPU)
FILE_THREADS = 8  # worker threads for fsyncs, links and header reads (I/O-bound)
OUTBOX = 64  # placed instances noted before the loop is woken to record them
OUTBOX_LIMIT = 1024  # notes waiting for the drain before receive threads wait too (back-pressure)
DRAIN_EVERY = 0.5  # seconds: how stale the ledger and the live figures may get


@dataclass(frozen=True, slots=True)
class Spooled:
    """A durable spool file waiting to be placed, and the flight it belongs to (if known)."""

    path: Path
    flight: Flight | None
    transfer_syntax: str = ""
    request_key: str | None = None  # without a flight: the request it belongs to
    replaces: tuple[str, Path] | None = None  # a held-back instance again: its ledger UID and quarantine copy


@dataclass(frozen=True, slots=True)
class AnonymizeSettings:
    """What the writers need to run a CTP script on each instance."""

    script: Path
    lookup_table: Path | None
    mode: str
    quarantine: Path
    function: AnonymizeFile
    prepare: Callable[[str, str | None, str], object] | None = None  # loads script and table in a worker
    many: AnonymizeMany | None = None  # ``function`` on a batch of files in one call

    @property
    def arguments(self) -> tuple[str, str | None, str]:
        """(script, lookup table, mode) as the worker function takes them."""
        return str(self.script), str(self.lookup_table) if self.lookup_table else None, self.mode


@dataclass(frozen=True, slots=True)
class Noted:
    """An instance placed (or not: no header and placement) and not yet recorded; ``original``
    (what an anonymized copy was made from) and ``replaces``'s quarantine copy are removed once
    the placement is durable."""

    flight: Flight | None
    transfer_syntax: str
    header: Header | None
    placed: Placed | None
    warning: str | None = None
    request_key: str | None = None
    original: Path | None = None
    replaces: tuple[str, Path] | None = None
    spooled: str | None = None  # received, closed, not yet durable nor placed


def _may_need_decoding(transfer_syntax: str) -> bool:
    """Whether output.decompress has work for an instance received in ``transfer_syntax``: not
    for one known to be native and inflated (no worker process is asked, then); when the syntax
    is not known, the worker reads the file's own meta and decides."""
    if not transfer_syntax:
        return True
    syntax = UID(transfer_syntax)
    return not syntax.is_transfer_syntax or syntax.is_compressed or syntax.is_deflated


def _target(path: Path | str) -> str:
    """Where the anonymized copy of spool file ``path`` is written (a string: pathlib's parsing
    costs more here than the rest of the hand-over)."""
    return os.path.splitext(path)[0] + ".anon.part"


def _sources(noted: Noted) -> list[Path]:
    """The files ``noted``'s placed copy replaces: its original, and a quarantine copy."""
    return [path for path in (noted.original, noted.replaces[1] if noted.replaces else None) if path is not None]


def _read_headers(
    paths: list[Path], keywords: tuple[str, ...], originals: list[Path | None]
) -> list[Header | OSError | ValueError]:
    """Worker thread: each file's header, or why it could not be read; the original a file was
    made from is removed once its header is read."""
    headers: list[Header | OSError | ValueError] = []
    for path, original in zip(paths, originals, strict=True):
        try:
            headers.append(read_header(path, keywords))
        except (OSError, ValueError) as exc:
            headers.append(exc)
            continue
        if original is not None:
            with contextlib.suppress(OSError):
                os.unlink(original)
    return headers


def _unlink_all(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)


class InstanceSink(Protocol):
    """Where placed instances are recorded (the ledger)."""

    async def record_instance(self, record: InstanceRecord) -> None:
        """Queue a placed instance for the ledger."""


class Pipeline:
    """Writer tasks draining a bounded queue of spooled instances, and the outbox of instances
    that receive threads placed themselves."""

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
        anonymize: AnonymizeSettings | None = None,
    ) -> None:
        self.placer = Placer(root, structure, filename)
        self.root = self.placer.root
        self.sink = sink
        self.tracker = tracker
        self.workers = workers
        self.stats = stats
        self.decompress = decompress
        self.anonymize = anonymize
        self.quarantine = Placer(anonymize.quarantine, (), "SOPInstanceUID") if anonymize else None
        self._inbox = Inbox[Spooled](QUEUE)
        self._processes = anyio.CapacityLimiter(workers)
        self._dispatch = anyio.CapacityLimiter(workers)  # writers with a batch for a process (or waiting for one)
        self._threads = anyio.CapacityLimiter(FILE_THREADS)
        self._outbox: list[Noted] = []
        self._outbox_lock = threading.Lock()
        self._room = threading.Condition(self._outbox_lock)  # the drain took a batch
        self._woken = False
        self._wakeup = anyio.Event()
        self._flushing = anyio.Lock()
        self._closed = False
        self._writers_done = False
        self._token: anyio.lowlevel.EventLoopToken | None = None
        self.output_error: OutputError | None = None  # the volume is full or unwritable: the run stops
        self._reasons: set[tuple[HeldBack, str]] = set()  # held-back reasons logged once each

    @property
    def direct(self) -> bool:
        """Whether receive threads place instances themselves (no CPU-heavy step configured)."""
        return not self.decompress and self.anonymize is None

    async def enqueue(self, item: Spooled) -> None:
        """Hand a spool file over; waits while the queue is full (backpressure to the PACS)."""
        if item.flight is not None:
            self.tracker.handed_over(item.flight)
        await self._inbox.put(item)

    def enqueue_from_thread(self, item: Spooled) -> bool:
        """:meth:`enqueue` from a receive thread, which waits while the queue is full; False
        once the pipeline is closed (the run is over: the file stays in the spool)."""
        if item.flight is not None:
            self.tracker.handed_over(item.flight)
        return self._inbox.put_from_thread(item)

    def close(self) -> None:
        """No more items will come; writers stop once the queue and the outbox are drained."""
        self._inbox.close()
        self._closed = True
        self._wakeup.set()

    async def run(self) -> None:
        """Run the writer tasks and the outbox drain until :meth:`close` and everything is recorded."""
        self._token = anyio.lowlevel.current_token()
        self._inbox.bind()
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._drain)
            if not self.direct:
                for _ in range(self.workers):
                    tg.start_soon(self._warm)
            try:
                async with anyio.create_task_group() as writers:
                    for _ in range(self.workers * WRITERS_PER_PROCESS):
                        writers.start_soon(self._writer)
            finally:  # the writers are done (they post to the outbox): the drain may end once it is empty
                self._writers_done = True
                self._wakeup.set()

    async def _warm(self) -> None:
        """Start a worker process now, while the first associations are made, and have it import
        its modules and load the script and lookup table: the first instances do not wait for
        them, and the work is spread over the processes from the start."""
        settings = self.anonymize
        with contextlib.suppress(Exception):  # a worker that cannot start fails on its first instance
            if settings is not None and settings.prepare is not None:
                await anyio.to_process.run_sync(settings.prepare, *settings.arguments, limiter=self._processes)
            else:
                await anyio.to_process.run_sync(ready, limiter=self._processes)

    # --- direct route: receive threads ------------------------------------------------------------

    def place_in_thread(self, file: SpoolWriter, flight: Flight) -> None:
        """Receive thread, after answering the C-STORE: close the spool file, read its header
        from the bytes kept in memory, and leave a note: the drain makes a batch of them
        durable at once and then places them. The flight must have been told with
        :meth:`Tracker.handed_over` before answering."""
        try:
            part = file.close()
            header = file.header or read_header(part, self.placer.keywords, file.head)
        except (OSError, ValueError, OutputError) as exc:
            self._failed(exc)
            file.discard()
            self._post(Noted(flight, file.transfer_syntax, None, None))
            return
        self._post(Noted(flight, file.transfer_syntax, header, None, spooled=part))

    def _held_back(self, flight: Flight | None, kind: HeldBack, reason: str) -> None:
        """Log the first instance held back for each reason, naming its request by CSV line (never
        an original UID); the rest are counted, and the run's summary lists the counts."""
        if (kind, reason) in self._reasons:
            return
        self._reasons.add((kind, reason))
        whose = f"of CSV line {flight.request.line}" if flight is not None and flight.request.line else "received"
        log.warning("an instance %s was %s: %s (more for this reason are only counted)", whose, kind, reason)

    def _failed(self, exc: Exception, what: str = "a received instance") -> None:
        """Log a failure to store an instance; a full or unwritable volume also stops the run
        (:attr:`output_error`, raised by the retrieve that waits for the instance)."""
        if isinstance(exc, OSError) and exc.errno is not None:
            exc = output_error(exc, what)
        if isinstance(exc, OutputError):
            if self.output_error is None:
                self.output_error = exc
                log.error("%s", exc)
            return
        log.error("unable to store %s as %s", what, exc)

    def _post(self, noted: Noted) -> None:
        """Leave a note for the loop; wake it only when the outbox is full or someone waits for
        this flight (the drain task also looks every :data:`DRAIN_EVERY` seconds)."""
        wake, full = self._noted(noted)
        if wake:
            # RuntimeError: the run is over (not while its retrieves run); the next run meets it as a duplicate
            with contextlib.suppress(RuntimeError):
                anyio.from_thread.run_sync(self._wakeup.set, token=self._token)
        if full:  # a slow disk slows the PACS down rather than piling up notes
            with self._outbox_lock:
                while len(self._outbox) >= OUTBOX_LIMIT and not self._closed:
                    self._room.wait(DRAIN_EVERY)

    def _noted(self, noted: Noted) -> tuple[bool, bool]:
        """Put ``noted`` in the outbox: (whether the drain task must be woken now, whether the
        outbox is full)."""
        with self._outbox_lock:
            self._outbox.append(noted)
            size = len(self._outbox)
            urgent = size >= OUTBOX or (noted.flight is not None and noted.flight.waiting)
            wake = urgent and not self._woken
            self._woken = self._woken or wake
        return wake, size >= OUTBOX_LIMIT

    def _post_here(self, noted: Noted) -> None:
        """:meth:`_post` from the event loop (a writer task), which never waits for room."""
        if self._noted(noted)[0]:
            self._wakeup.set()

    async def settle(self, flight: Flight) -> None:
        """Return once every instance handed over for ``flight`` is placed and recorded."""
        with self._outbox_lock:
            flight.waiting = True
        await self._record_outbox()
        await flight.wait_idle()

    async def _record_outbox(self) -> None:
        async with self._flushing:  # one flush at a time: flushes at once make each other (and every writer) wait
            await self._record_outbox_now()

    async def _record_outbox_now(self) -> None:
        with self._outbox_lock:
            batch, self._outbox, self._woken = self._outbox, [], False
            self._room.notify_all()
        if any(noted.spooled for noted in batch):
            batch = await anyio.to_thread.run_sync(self._place_spooled, batch, limiter=self._threads)
        directories = {noted.placed.directory for noted in batch if noted.placed is not None}
        if directories:  # the batch's links become durable: one fsync per directory, not per file
            try:
                await anyio.to_thread.run_sync(sync_dirs, directories, limiter=self._threads)
            except OSError as exc:  # nothing recorded; queued originals stay in the spool for the next run
                self._failed(exc, "new files durably")
                batch = [Noted(noted.flight, noted.transfer_syntax, None, None) for noted in batch]
        done = [path for noted in batch if noted.placed is not None for path in _sources(noted)]
        if done:  # what the placed copies were made from: durable at their final paths now
            await anyio.to_thread.run_sync(_unlink_all, done, limiter=self._threads)
        for noted in batch:
            if noted.header is None or noted.placed is None:
                if noted.flight is not None:
                    self.tracker.lost(noted.flight)
            else:
                replaces = noted.replaces[0] if noted.replaces else None
                await self._record(
                    noted.flight,
                    noted.transfer_syntax,
                    noted.header,
                    noted.placed,
                    noted.warning,
                    noted.request_key,
                    replaces,
                )

    def _place_spooled(self, batch: list[Noted]) -> list[Noted]:
        """Worker thread: make the batch's received files durable at once, then link each to
        its final path (a file never has a name in the tree before its bytes are on disk)."""
        spooled = [noted.spooled for noted in batch if noted.spooled is not None]
        try:
            flush_files(spooled)
        except OSError as exc:
            self._failed(exc, "received instances durably")
            for path in spooled:
                with contextlib.suppress(OSError):
                    os.unlink(path)
            return [replace(n, header=None, spooled=None) if n.spooled else n for n in batch]
        placed: list[Noted] = []
        for noted in batch:
            if noted.spooled is None or noted.header is None:
                placed.append(noted)
                continue
            try:
                where = self.placer.place(noted.spooled, noted.header, synced=True, sync_dir=False)
            except (OSError, ValueError, OutputError) as exc:
                self._failed(exc)
                with contextlib.suppress(OSError):
                    os.unlink(noted.spooled)
                placed.append(replace(noted, header=None, spooled=None))
                continue
            placed.append(replace(noted, placed=where, spooled=None))
        return placed

    async def _drain(self) -> None:
        with anyio.CancelScope(shield=True):  # drain even on Ctrl-C: every placed file gets recorded
            while True:
                with anyio.move_on_after(DRAIN_EVERY):
                    await self._wakeup.wait()
                self._wakeup = anyio.Event()
                await self._record_outbox()
                if self._closed and self._writers_done:
                    with self._outbox_lock:
                        if not self._outbox:
                            return

    # --- queued route: writer tasks ---------------------------------------------------------------

    async def _writer(self) -> None:
        with anyio.CancelScope(shield=True):  # drain even on Ctrl-C: every spool file gets placed
            if self._batches:
                while await self._handle_batch():
                    pass
                return
            while items := await self._inbox.take(1):
                await self._handle(items[0])

    @property
    def _batches(self) -> bool:
        """Whether instances reach worker processes in batches (the anonymizer has a batch form)."""
        return self.anonymize is not None and self.anonymize.many is not None

    async def _handle_batch(self) -> bool:
        """Wait until a worker process is free, then for an instance, and hand the process it
        and what else is waiting (up to :data:`BATCH`), in one call per kind (decoded first, or
        as received): while the processes are busy the queue fills and the next batch is larger;
        idle, an instance goes alone at once. Its results are placed once the process is free
        for the next batch. False when the queue is closed and empty."""
        async with self._dispatch:
            items = await self._inbox.take(BATCH)
            if not items:
                return False
            decode = [item for item in items if self.decompress and _may_need_decoding(item.transfer_syntax)]
            native = [item for item in items if item not in decode]
            calls = [
                (group, decoding, await self._call_many(group, decoding))
                for group, decoding in ((decode, True), (native, False))
                if group
            ]
        for group, decoding, results in calls:
            await self._after_many(group, decoding, results)
        return True

    async def _call_many(self, items: list[Spooled], decoding: bool) -> list[WorkerResult] | None:
        """One worker call anonymizing ``items`` (decoded first if ``decoding``) and reading the
        header of each file written: their results, or None if the worker crashed."""
        settings = self.anonymize
        assert settings is not None
        assert settings.many is not None
        pairs = [(str(item.path), _target(item.path)) for item in items]
        then = partial(header_or_error, self.placer.keywords)
        try:
            if decoding:
                return await anyio.to_process.run_sync(
                    decompress_and_anonymize_many,
                    settings.function,
                    *settings.arguments,
                    pairs,
                    then,
                    True,
                    limiter=self._processes,
                )
            plain = await anyio.to_process.run_sync(
                settings.many, *settings.arguments, pairs, then, True, limiter=self._processes
            )
        except Exception:  # a crashed worker process: its batch is run again one by one
            return None
        return [(status, reason, None, header) for status, reason, header in plain]

    async def _after_many(self, items: list[Spooled], decoding: bool, results: list[WorkerResult] | None) -> None:
        """Quarantine what the anonymizer refused and leave the rest in the outbox, as a
        receive thread does: the drain makes the batch durable at once (one journal commit, not
        one per file), links each file into the tree, fsyncs the new directory entries and
        records it. The worker removed each original once its batch was written, before any
        flush, which would otherwise write every original to disk too (measured: 2.2 GB written
        for 1 GB of output) and make the removal wait for that write. Nothing is recorded
        before the flush, so a crash in between loses an instance no request counts yet: it is
        retrieved again. If the worker crashed, each instance is run again on its own, so that
        only the one that crashes it is quarantined."""
        if results is None:
            for item in items:
                await (self._decode_and_anonymize(item) if decoding else self._handle(item))
            return
        for item, (status, reason, warning, header) in zip(items, results, strict=True):
            if warning:
                self._held_back(item.flight, HeldBack.KEPT_COMPRESSED, warning)
                if self.stats is not None:
                    self.stats.kept_compressed += 1
            if status != "ok":
                await self._quarantine(item, item.path, status, reason)
                continue
            self._post_written(item, header, warning, _target(item.path))

    async def _finish_many(self, done: list[tuple[Spooled, Path, str | None, Path | None]]) -> None:
        """Read each written file's header (one thread hop for the batch; the original it was
        made from is removed then) and leave it in the outbox, as :meth:`_after_many` does."""
        paths = [path for _, path, _, _ in done]
        originals = [original for _, _, _, original in done]
        headers = await anyio.to_thread.run_sync(
            _read_headers, paths, self.placer.keywords, originals, limiter=self._threads
        )
        for (item, path, warning, _), header in zip(done, headers, strict=True):
            self._post_written(item, header, warning, str(path))

    def _post_written(self, item: Spooled, header: object, warning: str | None, written: str) -> None:
        """Leave the file ``written`` for ``item`` in the outbox; if its header could not be read
        (``header`` is why), say so and count the instance lost (its original stays in the spool,
        for the next run)."""
        if not isinstance(header, Header):
            error = header if isinstance(header, OSError | ValueError) else ValueError("no header")
            self._failed(error, "a received instance (it stays in the spool)")
            if item.flight is not None:
                self.tracker.lost(item.flight)
            return
        flight, syntax, key = item.flight, item.transfer_syntax, item.request_key
        self._post_here(Noted(flight, syntax, header, None, warning, key, None, item.replaces, spooled=written))

    async def _handle(self, item: Spooled) -> None:
        if self.anonymize is not None and self.decompress and _may_need_decoding(item.transfer_syntax):
            await self._decode_and_anonymize(item)
            return
        path, warning = item.path, None
        if self.decompress and _may_need_decoding(item.transfer_syntax):
            # CPU-bound decoding runs in worker processes: in this process it would stall the receive path
            try:
                transformed = await anyio.to_process.run_sync(decompress_file, path, limiter=self._processes)
                path, warning = transformed.path, transformed.warning
            except Exception as exc:  # a crashed worker process must not lose the instance
                warning = f"kept as received: decompression failed as {type(exc).__name__}"
            if warning:
                self._held_back(item.flight, HeldBack.KEPT_COMPRESSED, warning)
                if self.stats is not None:
                    self.stats.kept_compressed += 1
        original: Path | None = None
        if self.anonymize is not None:
            anonymized = Path(_target(path))
            status, reason = await self._anonymize(path, anonymized)
            if status != "ok":
                await self._quarantine(item, path, status, reason)
                return
            original, path = path, anonymized
        await self._finish(item, path, original, warning)

    async def _decode_and_anonymize(self, item: Spooled) -> None:
        """Decompression and anonymization in one worker call, with no file between them (the
        anonymizer reads the decoded bytes in memory): one process hop, one write and one fsync
        fewer per instance than the two steps. An instance the anonymizer refuses is quarantined
        as received; one no decoder reads is anonymized as received and held back, as before."""
        settings = self.anonymize
        assert settings is not None
        path = item.path
        anonymized = Path(_target(path))
        try:
            status, reason, warning = await anyio.to_process.run_sync(
                decompress_and_anonymize,
                settings.function,
                *settings.arguments,
                str(path),
                str(anonymized),
                limiter=self._processes,
            )
        except Exception as exc:  # a crashed worker must not lose the instance: it is quarantined
            await anyio.to_thread.run_sync(partial(anonymized.unlink, missing_ok=True))
            status, reason, warning = "quarantine", f"the anonymizer failed ({type(exc).__name__})", None
        if warning:
            self._held_back(item.flight, HeldBack.KEPT_COMPRESSED, warning)
            if self.stats is not None:
                self.stats.kept_compressed += 1
        if status != "ok":
            await self._quarantine(item, path, status, reason)
            return
        await self._finish(item, anonymized, path, warning)

    async def _finish(self, item: Spooled, path: Path, original: Path | None, warning: str | None) -> None:
        """:meth:`_finish_many` for one file."""
        await self._finish_many([(item, path, warning, original)])

    async def _anonymize(self, source: Path, target: Path) -> tuple[str, str]:
        """Run the CTP script in a worker process: (status, reason)."""
        settings = self.anonymize
        assert settings is not None
        try:
            return await anyio.to_process.run_sync(
                settings.function, *settings.arguments, str(source), str(target), limiter=self._processes
            )
        except Exception as exc:  # a crashed worker must not lose the instance: it is quarantined
            await anyio.to_thread.run_sync(partial(target.unlink, missing_ok=True))
            return "quarantine", f"the anonymizer failed ({type(exc).__name__})"

    async def _quarantine(self, item: Spooled, path: Path, status: str, reason: str) -> None:
        """Keep the original out of the output tree, in the quarantine directory, and record why."""
        assert self.quarantine is not None
        try:
            header, placed = await anyio.to_thread.run_sync(self._quarantine_place, path, limiter=self._threads)
        except (OSError, ValueError) as exc:
            self._failed(exc, "a quarantined instance (it stays in the spool)")
            if item.flight is not None:
                self.tracker.lost(item.flight)
            return
        state = InstanceState.SKIPPED if status == "skip" else InstanceState.QUARANTINED
        self._held_back(item.flight, HeldBack(state.value), reason)
        if self.stats is not None:
            self.stats.quarantined += 1
        await self._note(
            item.flight, item.transfer_syntax, header, str(placed.path), placed.size, state, reason, item.request_key
        )

    def _quarantine_place(self, path: Path) -> tuple[Header, Placed]:
        assert self.quarantine is not None
        header = read_header(path, ())
        return header, self.quarantine.place(path, header)

    async def _record(
        self,
        flight: Flight | None,
        transfer_syntax: str,
        header: Header,
        placed: Placed,
        warning: str | None,
        request_key: str | None = None,
        replaces: str | None = None,
    ) -> None:
        duplicate = placed.state is InstanceState.DUPLICATE
        if self.stats is not None:
            self.stats.instances += not duplicate
            self.stats.duplicates += duplicate
            self.stats.bytes += 0 if duplicate else placed.size
        await self._note(
            flight, transfer_syntax, header, placed.relative, placed.size, placed.state, warning, request_key, replaces
        )

    async def _note(
        self,
        flight: Flight | None,
        transfer_syntax: str,
        header: Header,
        path: str,
        size: int,
        state: InstanceState,
        warning: str | None,
        request_key: str | None = None,
        replaces: str | None = None,
    ) -> None:
        """Queue the ledger row of an instance durable at ``path``, then count it for its flight.

        An instance found already stored at its path (received again, e.g. after an interruption)
        is recorded as stored: it may be the only copy, whose row the interrupted run never wrote
        (the ledger keeps an existing row)."""
        again = state is InstanceState.DUPLICATE
        await self.sink.record_instance(
            InstanceRecord(
                sop_uid=header.sop_instance_uid,
                request_key=flight.request.key if flight else request_key,
                path=path,
                size=size,
                transfer_syntax=header.transfer_syntax or transfer_syntax,
                state=InstanceState.STORED if again else state,
                warning=warning,
                replaces=replaces,
            )
        )
        if flight is not None:
            self.tracker.placed(flight, header.sop_instance_uid, again)
