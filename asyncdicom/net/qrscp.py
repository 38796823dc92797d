"""A small built-in Query/Retrieve SCP over in-memory datasets.

It backs ``asyncdicom demo`` and the tests of faults a real PACS cannot be made to produce on
demand (delays, silence, aborts, failure statuses, association limits).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, _config, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelGet,
    PatientStudyOnlyQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

# The "standard" handlers run on every PDU under the AE-wide lock; identifiers may hold PHI.
_config.LOG_HANDLER_LEVEL = "none"
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False


def _syntax(ds: Dataset) -> str:
    meta = getattr(ds, "file_meta", None)
    return str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""


def _on_connect(event: evt.Event) -> None:
    """Turn Nagle's algorithm off on accepted sockets."""
    transport = event.assoc.dul.socket
    if transport is not None and transport.socket is not None:
        with contextlib.suppress(OSError):
            transport.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


LEVEL_KEYS = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
_NOT_MATCHED = {"QueryRetrieveLevel", "SpecificCharacterSet"}


@dataclass
class Faults:
    """Misbehaviour to inject; every field off by default."""

    delay: float = 0.0  # seconds to wait before answering each C-FIND
    silent_every: int = 0  # never answer every Nth C-FIND (1 = all)
    abort_every: int = 0  # abort the association on every Nth C-FIND
    status: int | None = None  # answer every C-FIND with this final status, no matches
    max_associations: int = 0  # reject associations beyond this many (0 = no limit)
    require_calling_aet: tuple[str, ...] = ()  # reject other calling AE titles (permanent rejection)
    max_pdu: int = 0  # our receive limit (0 = unlimited); small values force the peer to fragment
    store_delay: float = 0.0  # seconds to wait before each C-STORE of a C-GET or C-MOVE (a slow PACS)
    stall_after: int = 0  # the first C-GET or C-MOVE freezes after this many instances (until stop)
    slow_above: int = 0  # with more associations open than this, every C-FIND takes 4 x delay
    abort_retrieve_every: int = 0  # abort the association after 2 instances of every Nth C-GET/C-MOVE
    busy_retrieves: int = 0  # the first N C-GET/C-MOVE requests end at once with 0xA702
    refuse_classes: tuple[str, ...] = ()  # storage SOP classes whose C-GET contexts are rejected


@lru_cache(maxsize=256)
def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z", re.S)


def _element_matches(actual: str, wanted: str, vr: str) -> bool:
    if vr == "UI":
        return actual in wanted.split("\\")
    if vr in {"DA", "TM", "DT"} and "-" in wanted:
        low, _, high = wanted.partition("-")
        return bool(actual) and (not low or actual >= low) and (not high or actual <= high)
    if "*" in wanted or "?" in wanted:
        return bool(_wildcard(wanted).match(actual))
    return actual.strip() == wanted.strip()


def matches(ds: Dataset, query: Dataset) -> bool:
    """Whether ``ds`` matches every non-empty key of ``query`` (single-value, non-sequence)."""
    for elem in query:
        if elem.keyword in _NOT_MATCHED or elem.VR == "SQ" or elem.value in (None, ""):
            continue
        actual = ds.get(elem.keyword)
        wanted = "\\".join(str(v) for v in elem.value) if elem.VM > 1 else str(elem.value)
        if not _element_matches("" if actual is None else str(actual), wanted, elem.VR):
            return False
    return True


class QueryRetrieveSCP:
    """Serve C-ECHO and C-FIND (all three models) over ``datasets`` on a loopback port."""

    def __init__(
        self,
        datasets: Sequence[Dataset],
        ae_title: str = "DEMOPACS",
        faults: Faults | None = None,
        destinations: dict[str, tuple[str, int]] | None = None,
    ) -> None:
        self.datasets = list(datasets)
        self.ae_title = ae_title
        self.faults = faults or Faults()
        self.destinations = dict(destinations or {})  # C-MOVE destination AE title → (host, port)
        self.finds = 0
        self.retrieves = 0
        self.open_associations = 0
        self.most_open = 0  # the most associations open at once
        self._count = itertools.count(1)
        self._lock = threading.Lock()
        self._release = threading.Event()
        self.started = threading.Event()  # set when a C-FIND has reached the handler
        self._server: object | None = None
        self.port = 0

    def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Start listening (port 0 picks a free one); returns the port."""
        ae = AE(ae_title=self.ae_title)
        ae.maximum_associations = self.faults.max_associations or 64
        ae.maximum_pdu_size = self.faults.max_pdu
        ae.require_calling_aet = list(self.faults.require_calling_aet)
        for context in (
            Verification,
            PatientRootQueryRetrieveInformationModelFind,
            StudyRootQueryRetrieveInformationModelFind,
            PatientStudyOnlyQueryRetrieveInformationModelFind,
            PatientRootQueryRetrieveInformationModelMove,
            StudyRootQueryRetrieveInformationModelMove,
            PatientStudyOnlyQueryRetrieveInformationModelMove,
        ):
            ae.add_supported_context(context)
        for context in (
            PatientRootQueryRetrieveInformationModelGet,
            StudyRootQueryRetrieveInformationModelGet,
            PatientStudyOnlyQueryRetrieveInformationModelGet,
        ):
            ae.add_supported_context(context, scp_role=True, scu_role=True)
        held = {(str(ds.SOPClassUID), _syntax(ds)) for ds in self.datasets if "SOPClassUID" in ds}
        classes = sorted({sop_class for sop_class, _ in held})
        for sop_class, syntax in sorted(held):  # C-MOVE sub-associations: each class as held
            if len(ae.requested_contexts) < 128 and syntax:
                ae.add_requested_context(sop_class, syntax)
        for sop_class in classes:  # then uncompressed, as room allows
            if len(ae.requested_contexts) < 128:
                ae.add_requested_context(sop_class)
        for sop_class in classes:
            if sop_class not in self.faults.refuse_classes:  # C-GET role selection, any syntax
                ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES, scp_role=True, scu_role=True)
        handlers = [
            (evt.EVT_C_FIND, self._on_find),
            (evt.EVT_C_GET, self._on_get),
            (evt.EVT_C_MOVE, self._on_move),
            (evt.EVT_CONN_OPEN, _on_connect),
            (evt.EVT_CONN_OPEN, self._on_open),
            (evt.EVT_CONN_CLOSE, self._on_close),
        ]
        server = ae.start_server((host, port), block=False, evt_handlers=cast(Any, handlers))
        assert server is not None
        self._server = server
        self.port = int(server.server_address[1])
        return self.port

    def _on_open(self, event: evt.Event) -> None:
        with self._lock:
            self.open_associations += 1
            self.most_open = max(self.most_open, self.open_associations)

    def _on_close(self, event: evt.Event) -> None:
        with self._lock:
            self.open_associations -= 1

    def stop(self) -> None:
        """Stop serving and release any handler held silent."""
        self._release.set()
        server = self._server
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            self._server = None

    def __enter__(self) -> QueryRetrieveSCP:
        if not self._server:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _on_find(self, event: evt.Event) -> Iterator[tuple[int, Dataset | None]]:
        faults = self.faults
        with self._lock:
            number = next(self._count)
            self.finds = number
        self.started.set()
        if faults.delay:
            crowded = faults.slow_above and self.open_associations > faults.slow_above
            self._release.wait(faults.delay * (4 if crowded else 1))
        if faults.silent_every and number % faults.silent_every == 0:
            self._release.wait(60)  # say nothing until the requestor gives up
            return
        if faults.abort_every and number % faults.abort_every == 0:
            event.assoc.abort()
            return
        if faults.status is not None:
            yield faults.status, None
            return
        query = event.identifier
        level = str(query.get("QueryRetrieveLevel", "STUDY"))
        key = LEVEL_KEYS.get(level, "StudyInstanceUID")
        seen: set[str] = set()
        for ds in self.datasets:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            unique = str(ds.get(key, ""))
            if unique in seen or not matches(ds, query):
                continue
            seen.add(unique)
            yield 0xFF00, self._response(ds, query, level)
        yield 0x0000, None

    def _selected(self, query: Dataset) -> list[Dataset]:
        """The stored instances a C-GET or C-MOVE identifier asks for."""
        return [ds for ds in self.datasets if matches(ds, query)]

    def _sub_operations(self, event: evt.Event, selected: list[Dataset]) -> Iterator[int | tuple[int, Dataset | None]]:
        """The count, then one (status, dataset) per instance; stops at a C-CANCEL."""
        faults = self.faults
        with self._lock:
            self.retrieves += 1
            number = self.retrieves
        stall = faults.stall_after if number == 1 else 0
        abort = faults.abort_retrieve_every and number % faults.abort_retrieve_every == 0
        if number <= faults.busy_retrieves:
            yield 1
            yield 0xA702, None  # out of resources: unable to perform sub-operations
            return
        yield len(selected)
        for index, ds in enumerate(selected):
            if stall and index == stall:
                self._release.wait(120)  # frozen: no response, no instance
                return
            if abort and index == 2:
                event.assoc.abort()
                return
            if self.faults.store_delay:
                self._release.wait(self.faults.store_delay)
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, ds

    def _on_get(self, event: evt.Event) -> Iterator[int | tuple[int, Dataset | None]]:
        yield from self._sub_operations(event, self._selected(event.identifier))

    def _on_move(self, event: evt.Event) -> Iterator[object]:
        destination = self.destinations.get(str(event.move_destination).strip())
        if destination is None:
            yield None, None  # unknown destination: pynetdicom answers 0xA801
            return
        yield destination[0], destination[1]
        yield from self._sub_operations(event, self._selected(event.identifier))

    def _response(self, ds: Dataset, query: Dataset, level: str) -> Dataset:
        out = Dataset()
        out.QueryRetrieveLevel = level
        for elem in query:
            if elem.keyword in _NOT_MATCHED or not elem.keyword:
                continue
            if elem.keyword == "NumberOfStudyRelatedInstances":
                study = ds.get("StudyInstanceUID")
                value: object = sum(1 for other in self.datasets if other.get("StudyInstanceUID") == study)
            elif elem.keyword == "ModalitiesInStudy":
                study = ds.get("StudyInstanceUID")
                value = sorted(
                    {str(o.Modality) for o in self.datasets if o.get("StudyInstanceUID") == study and o.get("Modality")}
                )
            else:
                value = ds.get(elem.keyword, None)
            out.add_new(elem.tag, elem.VR, value if elem.VR != "SQ" else [])
        if "SpecificCharacterSet" in ds:
            out.SpecificCharacterSet = ds.SpecificCharacterSet
        return out
