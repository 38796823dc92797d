"""The SCU: blocking C-ECHO, C-FIND, C-MOVE and C-GET over an association kept per worker (see net.lean).

Every call here blocks and runs in a worker thread. Exceptions leave this module as
:mod:`asyncdicom.errors` types only.
"""

from __future__ import annotations

import itertools
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from asyncdicom.elements import build_identifier, identifier_to_text
from asyncdicom.errors import AssociationAborted, ProtocolError, ServiceNotSupported, SilentPeer
from asyncdicom.models import Request
from asyncdicom.net.acse import UserIdentity
from asyncdicom.net.base import PENDING, CountsCallback, FindOutcome, RetrieveOutcome
from asyncdicom.net.dimse import StoreSink
from asyncdicom.net.lean import LeanAssociation
from asyncdicom.net.pace import Pacer
from asyncdicom.net.storage import CLASS_ROOM, CONTEXTS_PER_CLASS, learned_contexts, storage_contexts

FIND_MODELS = {
    "patient": PatientRootQueryRetrieveInformationModelFind,
    "study": StudyRootQueryRetrieveInformationModelFind,
    "psonly": PatientStudyOnlyQueryRetrieveInformationModelFind,
}
MOVE_MODELS = {
    "patient": "1.2.840.10008.5.1.4.1.2.1.2",
    "study": "1.2.840.10008.5.1.4.1.2.2.2",
    "psonly": "1.2.840.10008.5.1.4.1.2.3.2",
}
GET_MODELS = {
    "patient": "1.2.840.10008.5.1.4.1.2.1.3",
    "study": "1.2.840.10008.5.1.4.1.2.2.3",
    "psonly": "1.2.840.10008.5.1.4.1.2.3.3",
}
# Keys sent in C-MOVE/C-GET identifiers: the unique keys (PS3.4 C.4.2.1.4) and, without a
# Study Instance UID, the accession number that many PACS also accept.
MAX_MATCHES = 200_000  # matches one C-FIND request may return (about 400 bytes each in memory, values aside)
MAX_MATCH_TEXT = 32 << 20  # characters of values one request's matches may hold, all together
RETRIEVE_KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber")


def retrieve_identifier(request: Request) -> Dataset:
    """QueryRetrieveLevel and the retrieve keys that have values; nothing else.

    Orthanc, for one, matches a STUDY-level retrieve on AccessionNumber before the UID when
    both are present, so an accession number is left out when the UID is given.
    """
    given = {s.leaf.keyword: s for s in request.elements if len(s.path) == 1 and s.value}
    specs = [s for s in request.elements if len(s.path) == 1 and s.leaf.keyword == "QueryRetrieveLevel"]
    for keyword in RETRIEVE_KEYS:
        if keyword in given and not (keyword == "AccessionNumber" and "StudyInstanceUID" in given):
            specs.append(given[keyword])
    return build_identifier(specs)


def _failed_uids(dataset: Dataset | None) -> tuple[str, ...]:
    """(0008,0058) Failed SOP Instance UID List of a final response, as a tuple; ProtocolError
    when the PACS sent one pydicom cannot decode."""
    try:
        value = dataset.get("FailedSOPInstanceUIDList") if dataset is not None else None
        if not value:
            return ()
        return (str(value),) if isinstance(value, str) else tuple(str(uid) for uid in value)
    except Exception:  # hostile bytes decoded lazily by pydicom: any failure is the peer's
        msg = "the PACS sent a Failed SOP Instance UID List that cannot be decoded"
        raise ProtocolError(msg) from None


@dataclass(frozen=True, slots=True)
class ScuSettings:
    """What the SCU needs to know of the configuration (built from it by the runner)."""

    host: str
    port: int
    called_aet: str
    calling_aet: str
    request_type: str  # c-find, c-move, c-get or c-echo
    model: str  # patient, study or psonly
    connect_timeout: float = 10.0
    timeout: float = 30.0
    sop_classes: tuple[str, ...] = ()  # storage classes to propose for C-GET besides the common ones
    pacer: Pacer | None = None  # request.max_megabytes_per_second, shared with the storage SCP
    retrieve_timeout: float = 86400.0  # socket wait inside a C-MOVE/C-GET: the engine's idle watchdog cuts it first
    tls: ssl.SSLContext | None = None  # pacs.tls: every association speaks DICOM TLS
    identity: UserIdentity | None = None  # pacs.username (and its passcode), sent in every A-ASSOCIATE-RQ

    @property
    def where(self) -> str:
        return f"{self.called_aet}@{self.host}:{self.port}"


class ScuBackend:
    """Creates :class:`ScuSession` objects for the configured PACS."""

    def __init__(self, settings: ScuSettings) -> None:
        self.settings = settings
        kind, model = settings.request_type, settings.model
        self.find_model = UID(FIND_MODELS[model])
        self.model = UID(
            {"c-find": FIND_MODELS, "c-move": MOVE_MODELS, "c-get": GET_MODELS}.get(kind, FIND_MODELS)[model]
        )
        self.needed = self.model if kind != "c-echo" else UID(Verification)
        self._syntaxes = [str(Verification)] + ([str(self.model)] if kind != "c-echo" else [])
        self._storage = storage_contexts(settings.sop_classes) if kind == "c-get" else []

    def session(self) -> ScuSession:
        """A new session; it associates lazily on first use."""
        return ScuSession(self)

    def associate(self, classes: Sequence[str] = ()) -> LeanAssociation:
        """Open one association to the configured PACS, or raise a NetworkError; for a C-GET whose
        SOP ``classes`` are known, a proposal made for them."""
        settings = self.settings
        assoc = LeanAssociation.open(
            settings.host,
            settings.port,
            called=settings.called_aet,
            calling=settings.calling_aet,
            abstract_syntaxes=self._syntaxes,
            connect_timeout=settings.connect_timeout,
            timeout=settings.timeout,
            storage=learned_contexts(classes, settings.sop_classes) if classes else self._storage,
            pacer=settings.pacer,
            tls=settings.tls,
            identity=settings.identity,
        )
        if self.needed not in assoc.contexts:
            assoc.release()
            msg = f"Unable to use {settings.where} as it does not accept '{self.needed.name}' ({self.needed})"
            if settings.request_type == "c-find":
                msg += "; try another request.model (patient or study)"
            raise ServiceNotSupported(msg)
        return assoc


_T = TypeVar("_T")


class _NoResponse(AssociationAborted):
    """The association died before the PACS sent any response to the request."""


class ScuSession:
    """One worker's association, reused across requests and re-opened when the PACS drops it."""

    def __init__(self, backend: ScuBackend) -> None:
        self._backend = backend
        self._assoc: LeanAssociation | None = None
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.busy_since: float | None = None
        self._proposed: frozenset[str] = frozenset()  # SOP classes the association was proposed for

    def _association(self, classes: Sequence[str] = ()) -> tuple[LeanAssociation, bool]:
        """The kept association, when it suits ``classes`` (a C-GET's SOP classes): it was proposed
        for them with every syntax they may be stored in (accepted or refused); else a new one
        proposed for them, and for the classes of the last one too when all fit."""
        assoc = self._assoc
        if assoc is not None and assoc.alive:
            if not classes or self._proposed.issuperset(classes):
                return assoc, True
            self.close()
        wanted = list(dict.fromkeys(classes))
        kept = [uid for uid in self._proposed if uid not in wanted]
        if (len(wanted) + len(kept)) * CONTEXTS_PER_CLASS <= CLASS_ROOM:  # the last classes too, if all fit
            wanted += sorted(kept)
        assoc = self._backend.associate(wanted)
        with self._lock:
            self._assoc = assoc
            self._proposed = frozenset(wanted)
        return assoc, False

    def _message_id(self) -> int:
        return next(self._ids) % 65535 + 1

    def find(self, request: Request) -> FindOutcome:
        """Send one C-FIND and collect every response.

        A PACS may close an idle association just as we reuse it: when a reused association
        dies before any response, the request is sent once more on a fresh one.
        """
        identifier = build_identifier(request.elements)
        return self._on_live_association(lambda assoc: self._find_once(assoc, identifier))

    def _on_live_association(self, send: Callable[[LeanAssociation], _T], classes: Sequence[str] = ()) -> _T:
        """Run ``send`` on the kept association; once more on a fresh one if a reused association
        died before the PACS answered anything."""
        assoc, reused = self._association(classes)
        try:
            return send(assoc)
        except _NoResponse:
            if not reused:
                raise
        assoc, _ = self._association(classes)
        return send(assoc)

    def _find_once(self, assoc: LeanAssociation, identifier: Dataset) -> FindOutcome:
        start = self.busy_since = time.monotonic()
        matches: list[dict[str, str]] = []
        size = 0  # characters of the matches' values so far
        try:
            for response in assoc.find(self._backend.find_model, identifier, self._message_id()):
                self.busy_since = time.monotonic()
                if response.status in PENDING:
                    if response.dataset is not None:
                        try:
                            match = identifier_to_text(response.dataset)
                            size += sum(map(len, match.values()))
                            matches.append(match)
                            if len(matches) > MAX_MATCHES or size > MAX_MATCH_TEXT:
                                msg = (
                                    f"the PACS returned more than {MAX_MATCHES} matches or {MAX_MATCH_TEXT >> 20} MiB "
                                    "of values for one request; split it (by study or series, or with more keys)"
                                )
                                raise ProtocolError(msg)
                        except ProtocolError:
                            assoc.abort(silent=False)  # the rest of its responses are not read
                            raise
                    continue
                return FindOutcome(
                    status=response.status,
                    matches=tuple(matches),
                    elapsed=time.monotonic() - start,
                    comment=response.comment,
                    pending=len(matches),
                )
        except (SilentPeer, ProtocolError):
            raise
        except AssociationAborted as exc:
            if matches:
                raise
            raise _NoResponse(str(exc)) from None
        finally:
            self.busy_since = None
        msg = "the C-FIND ended without a final response"  # pragma: no cover - find() always ends on a final
        raise AssociationAborted(msg)  # pragma: no cover

    def retrieve(
        self,
        request: Request,
        message_id: int,
        sink: StoreSink | None,
        on_counts: CountsCallback | None = None,
        classes: Sequence[str] = (),
    ) -> RetrieveOutcome:
        """Send one C-MOVE (to our AE title) or, with a ``sink``, one C-GET; collect its responses
        (``on_counts`` sees the sub-operation counts of each pending one). ``classes``: the SOP
        classes a C-GET will receive, when known: the association is proposed for them."""
        identifier = retrieve_identifier(request)
        classes = classes if sink is not None else ()
        outcome = self._on_live_association(
            lambda assoc: self._retrieve_once(assoc, identifier, message_id, sink, on_counts), classes
        )
        assoc = self._assoc
        refused = [uid for uid in classes if assoc is not None and uid not in assoc.contexts]
        if refused and outcome.status != 0x0000:
            names = ", ".join(f"{UID(uid).name} ({uid})" for uid in refused)
            why = f"the PACS accepted no presentation context for {names}; try request.type c-move"
            comment = f"{outcome.comment}; {why}" if outcome.comment else why
            outcome = replace(outcome, comment=comment, refused=tuple(refused))
        elif sink is not None and not classes and (outcome.counts.get("failed") or outcome.failed_uids):
            why = (
                "the PACS did not say which SOP classes this request holds, so the usual ones were proposed; "
                "if its log names a class it had no presentation context for, add it to request.sop_classes "
                "or use request.type c-move"
            )
            outcome = replace(outcome, comment=f"{outcome.comment}; {why}" if outcome.comment else why)
        return outcome

    def _retrieve_once(
        self,
        assoc: LeanAssociation,
        identifier: Dataset,
        message_id: int,
        sink: StoreSink | None,
        on_counts: CountsCallback | None,
    ) -> RetrieveOutcome:
        start = self.busy_since = time.monotonic()
        assoc.set_timeout(self._backend.settings.retrieve_timeout)
        model = self._backend.model
        counts: dict[str, int] = {}
        pending = 0
        if sink is None:
            responses = assoc.move(model, identifier, message_id, self._backend.settings.calling_aet)
        else:
            responses = assoc.get(model, identifier, message_id, sink)
        try:
            for response in responses:
                self.busy_since = time.monotonic()
                counts = response.counts or counts
                if response.status in PENDING:
                    pending += 1
                    if on_counts is not None and response.counts:
                        on_counts(response.counts)
                    continue
                failed_uids = _failed_uids(response.dataset)
                return RetrieveOutcome(
                    status=response.status,
                    counts=dict(counts),
                    failed_uids=failed_uids,
                    elapsed=time.monotonic() - start,
                    comment=response.comment,
                    pending=pending,
                )
        except (SilentPeer, ProtocolError):
            raise
        except AssociationAborted as exc:
            if pending:
                raise
            raise _NoResponse(str(exc)) from None
        finally:
            self.busy_since = None
            if assoc.alive:
                assoc.set_timeout(self._backend.settings.timeout)
        msg = "the retrieve ended without a final response"  # pragma: no cover
        raise AssociationAborted(msg)  # pragma: no cover

    def echo(self) -> int:
        """Send one C-ECHO; the status, or a NetworkError."""
        assoc, _ = self._association()
        return assoc.echo(self._message_id())

    def abort(self, *, silent: bool) -> None:
        """Abort the association and wake the thread waiting on it (thread-safe)."""
        with self._lock:
            assoc = self._assoc
        if assoc is not None:
            assoc.abort(silent=silent)

    def close(self) -> None:
        """Release the association politely (it is closed if the release fails)."""
        with self._lock:
            assoc, self._assoc = self._assoc, None
        if assoc is not None:
            assoc.release()
