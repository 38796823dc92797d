"""Retrieval wiring: the C-MOVE/C-GET operation, the storage SCP's hand-off, the C-GET sink.

Received instances go: bytes → durable spool file → (attributed to a flight) → writer
pipeline → final path → ledger. A request's retrieve returns only once every instance it
caused is at its final path, so "done" always means "on disk".
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.lowlevel

from asyncdicom.anonymize import lean, worker
from asyncdicom.config import Config
from asyncdicom.config.load import tls_files
from asyncdicom.config.schema import state_folder
from asyncdicom.coverage import Find, class_parts, missing_parts, sop_classes
from asyncdicom.elements import is_uid
from asyncdicom.errors import FatalRunError, NetworkError, OutputError
from asyncdicom.events import emit
from asyncdicom.models import Request
from asyncdicom.net.base import CountsCallback, DicomBackend, DicomSession, FindOutcome, RetrieveOutcome
from asyncdicom.net.dimse import Reply, Status, StoreFile
from asyncdicom.net.pace import Pacer
from asyncdicom.net.scp import Received, StorageSCP
from asyncdicom.net.storage import CLASS_ROOM
from asyncdicom.net.tls import server_context
from asyncdicom.problems import GroupedLog
from asyncdicom.stats import RunStats
from asyncdicom.write.integrity import truncated
from asyncdicom.write.pipeline import AnonymizeSettings, InstanceSink, Pipeline, Spooled
from asyncdicom.write.spool import SpoolWriter, file_meta, read_header, spool_opener, sweep
from asyncdicom.write.tracker import Flight, Tracker

log = logging.getLogger("asyncdicom.retrieve")

MATCH_KEYS = ("PatientID", "AccessionNumber")
UID_KEYS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")
TRUNCATED = "its pixel data is shorter than it declares (a truncated data set)"
SETTLED = ("completed", "failed", "warning")  # sub-operation counts of instances the PACS dealt with


def spool_dir(config: Config) -> Path:
    """Where received bytes wait: on the output volume, so the final move is a rename."""
    assert config.output.directory is not None
    return state_folder(config.output.directory, config.anonymization.enabled) / "spool"


def anonymize_settings(config: Config) -> AnonymizeSettings | None:
    """The writers' anonymization settings, or None when it is off."""
    section = config.anonymization
    if not section.enabled or section.script is None:
        return None
    assert config.output.directory is not None
    quarantine = section.quarantine_directory or quarantine_dir(config.output.directory)
    # without decompression, worker processes load pydicom without its pixel libraries
    functions = worker if config.output.decompress else lean
    return AnonymizeSettings(
        section.script,
        section.lookup_table,
        section.mode,
        quarantine,
        functions.anonymize_spooled,
        functions.prepare,
        functions.anonymize_spooled_many,
    )


def worker_processes() -> int:
    """Worker processes for decompression and anonymization: one per core this process may use
    but one (the receiving and writing), and at least two (decoding a 512×512 JPEG 2000 frame
    costs ~20 ms: with one process for it, the second core of a two-core machine idles)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 2
    return max(2, cores - 1)


def quarantine_dir(output: Path) -> Path:
    """The default quarantine: beside the output tree, never in it (its files hold patient data)."""
    return output.parent / f"{output.name}-quarantine"


def merged(outcomes: list[RetrieveOutcome]) -> RetrieveOutcome:
    """One outcome for a request retrieved in parts: the first status that is not success (else
    success), counts and failed UIDs added up. No parts: everything was stored already."""
    if not outcomes:
        return RetrieveOutcome(status=0x0000, comment="every instance was stored already")
    if len(outcomes) == 1:
        return outcomes[0]
    counts: dict[str, int] = {}
    for outcome in outcomes:
        for name, value in outcome.counts.items():
            counts[name] = counts.get(name, 0) + value
    status = next((o.status for o in outcomes if o.status != 0x0000), 0x0000)
    return RetrieveOutcome(
        status=status,
        counts=counts,
        failed_uids=tuple(uid for o in outcomes for uid in o.failed_uids),
        elapsed=sum(o.elapsed for o in outcomes),
        comment=next((o.comment for o in outcomes if o.comment), None),
        pending=sum(o.pending for o in outcomes),
        refused=tuple(dict.fromkeys(uid for o in outcomes for uid in o.refused)),
    )


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` becomes another name for ``source`` (a copy across file systems)."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copy2(source, target)


def unfit_uids(file: SpoolWriter, attrs: Mapping[str, str]) -> str | None:
    """Why a received instance cannot be kept whatever it answers, or None: one of its UIDs is
    not a UID (paths are made of them), or its data set is not the instance its C-STORE named."""
    for keyword in UID_KEYS:
        if not is_uid(attrs.get(keyword, "")):
            return f"its {keyword} is not a UID"
    if file.claimed and attrs["SOPInstanceUID"] != file.claimed:
        return "its SOP Instance UID is not the one its C-STORE named"
    return None


class GetSink:
    """C-STOREs of one C-GET, written to spool files as the fragments arrive (worker thread)."""

    def __init__(self, retriever: Retriever, flight: Flight, source_ae: str) -> None:
        self._retriever = retriever
        self._flight = flight
        self._source = source_ae

    def begin(self, sop_class: str, sop_instance: str, transfer_syntax: str) -> SpoolWriter:
        meta = file_meta(sop_class, sop_instance, transfer_syntax, self._source)
        return SpoolWriter(self._retriever.spool, meta, transfer_syntax, sop_instance)

    def end(self, file: StoreFile, ok: bool) -> Reply:
        assert isinstance(file, SpoolWriter)
        if not ok:
            file.discard()
            return Status.OUT_OF_RESOURCES, None
        attrs = self._retriever.attributes(file)
        if self._flight.keys and not self._flight.matches(attrs):  # a sub-operation nobody asked for
            file.discard()
            return self._retriever.refuse_instance(self._source, "it is not one the C-GET asked for")
        unfit = unfit_uids(file, attrs)
        if unfit is not None:
            file.discard()
            return self._retriever.refuse_instance(self._source, unfit)
        if self._retriever.truncated(file):
            file.discard()
            return self._retriever.refuse_instance(self._source, TRUNCATED)
        return self._retriever.hand_over(file, self._flight)


class Retriever:
    """Everything a C-MOVE/C-GET run needs besides the scheduler."""

    def __init__(
        self,
        config: Config,
        sink: InstanceSink,
        stats: RunStats,
        problems: GroupedLog | None = None,
        held_back: list[tuple[str, str, str, str]] | None = None,
        stored: dict[str, set[str]] | None = None,
        finder: DicomBackend | None = None,
        pacer: Pacer | None = None,
    ) -> None:
        assert config.output.directory is not None
        self.config = config
        self.get = config.request.type == "c-get"
        self.spool = spool_dir(config)
        self.tracker = Tracker()
        self.stats = stats
        self.problems = problems or GroupedLog(log)
        self.held_back = held_back or []  # instances to anonymize again: (UID, request key, path, syntax)
        self.stored = stored if stored is not None else {}  # request key → UIDs stored (unfinished requests)
        self.finder = finder  # C-FINDs that learn what an interrupted request still misses
        self.pacer = pacer  # request.max_megabytes_per_second, shared with the C-GET associations
        self.pipeline = Pipeline(
            root=config.output.directory,
            structure=config.output.directory_structure,
            filename=config.output.filename,
            sink=sink,
            tracker=self.tracker,
            stats=stats,
            workers=worker_processes(),
            decompress=config.output.decompress,
            anonymize=anonymize_settings(config),
        )
        self.keywords = (*MATCH_KEYS, *self.pipeline.placer.keywords)  # read once per received instance
        self.scp: StorageSCP | None = None
        self._listening = False
        self._flights: dict[DicomSession, Flight] = {}
        self._classes: dict[str, tuple[str, ...] | None] = {}  # study → its SOP classes (C-GET)
        self._class_locks: dict[str, anyio.Lock] = {}
        self._idle_finders: list[DicomSession] = []  # C-FIND sessions kept between uses
        self._token: anyio.lowlevel.EventLoopToken | None = None

    def progress(self, session: DicomSession) -> float | None:
        """When the retrieve running on ``session`` last delivered an instance (monotonic), if it has."""
        flight = self._flights.get(session)
        return flight.last if flight is not None else None

    async def operation(
        self, session: DicomSession, request: Request, threads: anyio.CapacityLimiter
    ) -> RetrieveOutcome:
        """One C-MOVE or C-GET, returning once all it delivered is at its final path."""
        flight = self.tracker.open(request)
        self._flights[session] = flight
        try:
            sink = GetSink(self, flight, self.config.pacs.aet) if self.get else None
            expected = self.stats.expected_in_flight

            def on_counts(counts: dict[str, int]) -> None:  # worker thread: one dict assignment
                expected[flight.message_id] = sum(counts.get(k, 0) for k in ("remaining", *SETTLED))

            try:
                outcome = await self._retrieve(session, request, flight, sink, on_counts, threads)
            except NetworkError as exc:
                await self.pipeline.settle(flight)
                self._stop_if_unwritable()
                exc.received = len(flight.received)
                raise
            except OutputError:
                await self.pipeline.settle(flight)
                raise
            await self.pipeline.settle(flight)
            self._stop_if_unwritable()
            reported = sum(outcome.counts.get(k, 0) for k in SETTLED)
            self.stats.expected_settled += max(reported, len(flight.received))
            return replace(
                outcome,
                received=frozenset(flight.received),
                stored=flight.stored,
                duplicates=flight.duplicates,
                arrived=flight.arrived,
            )
        finally:
            self._flights.pop(session, None)
            self.stats.expected_in_flight.pop(flight.message_id, None)
            self.tracker.close(flight)
            if flight.received:
                self.stored.setdefault(request.key, set()).update(flight.received)

    async def _retrieve(
        self,
        session: DicomSession,
        request: Request,
        flight: Flight,
        sink: GetSink | None,
        on_counts: CountsCallback,
        threads: anyio.CapacityLimiter,
    ) -> RetrieveOutcome:
        """The request's C-MOVE or C-GET; for a request some of whose instances are stored already,
        only the parts still missing (see :mod:`asyncdicom.coverage`)."""
        parts = [request]
        known = self.stored.get(request.key)
        if known and self.finder is not None:
            found = await self._missing(request, known, threads)
            if found is not None:
                log.info(
                    "resuming CSV line %d: %d instances stored earlier; asking for the rest in %d parts",
                    request.line,
                    len(known),
                    len(found),
                )
                self.stats.resumed += 1
                parts = found
        classes = await self._sop_classes(request, threads) if sink is not None else ()
        plan = [(part, classes) for part in parts]
        if len(classes) > CLASS_ROOM and self.finder is not None:  # more classes than one association takes
            async with self._finding(threads) as find:
                split = await class_parts(request, known or (), find, self.config.request.model, CLASS_ROOM)
            if split is not None:
                log.info("CSV line %d: %d SOP classes, asked for in %d parts", request.line, len(classes), len(split))
                plan = split
        outcomes = [
            await anyio.to_thread.run_sync(
                session.retrieve, part, flight.message_id, sink, on_counts, part_classes, limiter=threads
            )
            for part, part_classes in plan
        ]
        return merged(outcomes)

    async def _sop_classes(self, request: Request, threads: anyio.CapacityLimiter) -> tuple[str, ...]:
        """A C-GET's SOP classes, learnt from C-FINDs (cached per study), to propose them; () when
        the PACS does not say (the usual proposal then)."""
        if self.finder is None or self.config.pacs.web:  # WADO-RS needs no presentation contexts
            return ()
        async with self._finding(threads) as find:
            found = await sop_classes(request, find, self.config.request.model, self._classes, self._class_locks)
        return found or ()

    @asynccontextmanager
    async def _finding(self, threads: anyio.CapacityLimiter) -> AsyncIterator[Find]:
        """A C-FIND function on a kept association of its own (one per worker at most, reused)."""
        assert self.finder is not None
        session = self._idle_finders.pop() if self._idle_finders else self.finder.session()

        async def find(query: Request) -> FindOutcome:
            return await anyio.to_thread.run_sync(session.find, query, limiter=threads)

        try:
            yield find
        finally:
            self._idle_finders.append(session)

    async def _missing(self, request: Request, known: set[str], threads: anyio.CapacityLimiter) -> list[Request] | None:
        """What ``request`` still misses, from C-FINDs on an association of their own."""
        async with self._finding(threads) as find:
            return await missing_parts(request, known, find, self.config.request.model)

    def _abort_moves(self) -> None:
        """Storage SCP thread: the output volume cannot take what the PACS sends, so every C-MOVE
        in flight is aborted at once (it could only fail the same way; the run then stops with
        the volume's error) rather than left waiting for the PACS to give up on its
        sub-operations."""
        for session in list(self._flights):
            session.abort(silent=False)

    def _stop_if_unwritable(self) -> None:
        """A full or unwritable output volume stops the run (a retry would fail the same way)."""
        error = self.pipeline.output_error or (self.scp.output_error if self.scp is not None else None)
        if error is not None:
            raise error

    def on_received(self, received: Received) -> Reply:
        """Storage SCP thread: attribute a received instance and hand it to the writers."""
        file = received.file
        assert isinstance(file, SpoolWriter)
        attrs = self.attributes(file)
        flight = self.tracker.attribute(received.move_message_id, attrs)
        if flight is None:
            file.discard()
            return self.refuse_instance(received.calling_ae, "it belongs to no request in flight")
        unfit = unfit_uids(file, attrs)
        if unfit is not None:
            file.discard()
            return self.refuse_instance(received.calling_ae, unfit)
        if self.truncated(file):
            file.discard()
            return self.refuse_instance(received.calling_ae, TRUNCATED)
        return self.hand_over(file, flight)

    def attributes(self, file: SpoolWriter) -> dict[str, str]:
        """What a received instance is, read once from the bytes kept in memory (its header is
        kept on the file for the placement): checked against the request it claims."""
        try:
            file.header = read_header(file.part_name, self.keywords, file.head)
        except ValueError:
            return {}
        return file.header.attrs

    @staticmethod
    def truncated(file: SpoolWriter) -> bool:
        """Whether a received file ends inside its Pixel Data, found by :meth:`attributes`' scan."""
        found = file.header.pixel_data if file.header is not None else None
        return truncated(file.part_name, file.head, file.size, found)

    def refuse_instance(self, calling_ae: str, why: str) -> Reply:
        """Refuse a received instance (discarded by the caller): counted, and said once per reason
        (the sender's AE title only; nothing from the instance)."""
        self.tracker.refused += 1
        emit("instance-refused", calling_ae=calling_ae)
        self.problems.warning(f"instance refused: {why}", f"refused an instance from {calling_ae}: {why}")
        return Status.UNABLE_TO_PROCESS, None

    def hand_over(self, file: SpoolWriter, flight: Flight) -> Reply:
        """Receive thread, before answering the C-STORE: the status, and the placement to do once
        answered when nothing heavy is configured; otherwise queue the file for the writers."""
        pipeline = self.pipeline
        flight.last = time.monotonic()
        if flight.first is None:  # the PACS's latency: how long the first instance took to come
            flight.first = flight.last
            self.stats.latencies.append(flight.first - flight.opened)
        if pipeline.direct:
            self.tracker.handed_over(flight)
            return Status.SUCCESS, partial(pipeline.place_in_thread, file, flight)
        path = file.finish(ok=True)
        if path is None:
            return Status.OUT_OF_RESOURCES, None
        if not pipeline.enqueue_from_thread(Spooled(path, flight, file.transfer_syntax)):
            return Status.OUT_OF_RESOURCES, None  # the run is over: the file stays in the spool for the next run
        return Status.SUCCESS, None

    async def _again(self, held_back: list[tuple[str, str, str, str]]) -> None:
        """Anonymize instances held back by an earlier run again, from their quarantine copies and
        without asking the PACS (``run --retry-failed`` after the script or lookup table is fixed)."""
        copies: list[Spooled] = []
        for uid, key, quarantined, syntax in held_back:
            source = Path(quarantined)
            spooled = self.spool / f"again-{len(copies):08d}-{source.name}"
            try:
                await anyio.to_thread.run_sync(_link_or_copy, source, spooled)
            except FileNotFoundError:
                self.problems.warning("held back: copy gone", "a held-back instance's quarantine copy is gone")
                continue
            copies.append(Spooled(spooled, None, syntax, key, (uid, source)))
        if copies:
            log.info("anonymizing %d held-back instances again, from the quarantine", len(copies))
        for item in copies:
            await self.pipeline.enqueue(item)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Retriever]:
        """Writers and spool leftovers; the storage SCP (C-MOVE) is stopped cleanly on exit."""
        self._token = anyio.lowlevel.current_token()
        leftovers = await anyio.to_thread.run_sync(sweep, self.spool)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.pipeline.run)
            try:
                if leftovers:
                    log.info("placing %d instances left in the spool by an earlier run", len(leftovers))
                for path in leftovers:
                    await self.pipeline.enqueue(Spooled(path, None))
                await self._again(self.held_back)
                yield self
            finally:
                with anyio.CancelScope(shield=True):
                    await self.stop_listening()
                    for session in self._idle_finders:
                        await anyio.to_thread.run_sync(session.close)
                    self.pipeline.close()

    async def listen(self) -> None:
        """Start the storage SCP (C-MOVE only), while requests may run: the scheduler calls this
        when the schedule window opens."""
        if self.get or self._listening:
            return
        local = self.config.local
        self.scp = StorageSCP(
            ae_title=local.aet,
            port=local.port,
            allowed_aets=local.allowed_aets,
            max_associations=2 * self.config.request.workers + 2,
            open_file=spool_opener(self.spool),
            on_received=self.on_received,
            host=local.bind_address,
            pacer=self.pacer,
            tls=server_context(tls_files(local.tls, "local.tls")) if local.tls else None,
            timeout=self.config.request.idle_timeout,
            allowed_hosts=local.allowed_hosts,
            max_instance_bytes=int(local.max_instance_megabytes * 1_000_000),
            max_per_host=local.max_associations_per_host,
            sop_classes=self.config.request.sop_classes,
            on_output_error=self._abort_moves,
        )
        try:
            await anyio.to_thread.run_sync(self.scp.start)
        except NetworkError as exc:
            raise FatalRunError(str(exc)) from None
        self._listening = True

    async def stop_listening(self) -> None:
        """Stop the storage SCP (when the window has closed and its requests have drained)."""
        if self.scp is not None and self._listening:
            self._listening = False
            await anyio.to_thread.run_sync(self.scp.stop)
