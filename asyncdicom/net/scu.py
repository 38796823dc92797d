"""pynetdicom SCU: blocking C-ECHO and C-FIND over an association kept per worker.

Every call here blocks and runs in a worker thread. Exceptions leave this module as
:mod:`asyncdicom.errors` types only.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
import threading
import time
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, _config, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    PatientStudyOnlyQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from asyncdicom.config import Config
from asyncdicom.elements import build_identifier
from asyncdicom.errors import (
    AssociationAborted,
    AssociationRejected,
    ConnectionFailed,
    ServiceNotSupported,
    SilentPeer,
)
from asyncdicom.net.base import PENDING, FindOutcome
from asyncdicom.plan import Request

# The "standard" handlers run on every PDU under the AE-wide lock; identifiers may hold PHI.
_config.LOG_HANDLER_LEVEL = "none"
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)

FIND_MODELS = {
    "patient": PatientRootQueryRetrieveInformationModelFind,
    "study": StudyRootQueryRetrieveInformationModelFind,
    "psonly": PatientStudyOnlyQueryRetrieveInformationModelFind,
}


def set_nodelay(sock: socket.socket | Any) -> None:
    """Turn Nagle's algorithm off: small DIMSE messages otherwise wait for a delayed ACK."""
    with contextlib.suppress(OSError, AttributeError):  # not a TCP socket, or closed: nothing to tune
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _on_connect(event: evt.Event) -> None:
    transport = event.assoc.dul.socket
    if transport is not None:
        set_nodelay(transport.socket)


def identifier_to_text(ds: Dataset) -> dict[str, str]:
    """Top-level, non-sequence elements of a response identifier as keyword → text."""
    out: dict[str, str] = {}
    for elem in ds:
        keyword = elem.keyword
        if not keyword or elem.VR == "SQ" or elem.tag.group in (0x0000, 0x0002):
            continue
        value = elem.value
        if value is None:
            out[keyword] = ""
        elif isinstance(value, bytes | bytearray):
            continue
        elif elem.VM > 1:
            out[keyword] = "\\".join(str(item) for item in value)
        else:
            out[keyword] = str(value)
    return out


class PynetdicomBackend:
    """Creates :class:`ScuSession` objects sharing one requestor AE."""

    def __init__(self, config: Config) -> None:
        self.config = config
        ae = AE(ae_title=config.local.aet)
        ae.acse_timeout = config.request.connect_timeout
        ae.connection_timeout = config.request.connect_timeout
        ae.dimse_timeout = config.request.timeout
        ae.network_timeout = max(60.0, config.request.timeout)
        ae.add_requested_context(Verification)
        if config.request.type == "c-find":
            ae.add_requested_context(FIND_MODELS[config.request.model])
        self.ae = ae
        self.find_model = FIND_MODELS[config.request.model]

    def session(self) -> ScuSession:
        """A new session; it associates lazily on first use."""
        return ScuSession(self)

    def associate(self) -> Association:
        """Open one association to the configured PACS, or raise a NetworkError."""
        pacs = self.config.pacs
        connected = threading.Event()

        def on_open(event: evt.Event) -> None:
            connected.set()
            _on_connect(event)

        assoc = self.ae.associate(
            pacs.hostname,
            pacs.port,
            ae_title=pacs.aet,
            max_pdu=0,
            evt_handlers=[(evt.EVT_CONN_OPEN, on_open)],
        )
        if assoc.is_established:
            self._check_accepted(assoc)
            # A peer that stalls mid-PDU would otherwise block recv() forever.
            sock = assoc.dul.socket.socket if assoc.dul.socket else None
            if sock is not None:
                sock.settimeout(self.config.request.timeout + 5)
            return assoc
        where = f"{pacs.aet}@{pacs.hostname}:{pacs.port}"
        if assoc.is_rejected:
            rsp = assoc.acceptor.primitive
            assert rsp is not None
            msg = (
                f"Unable to associate with {where} as the PACS rejected it "
                f"({rsp.result_str}, {rsp.source_str}: {rsp.reason_str})"
            )
            raise AssociationRejected(int(rsp.result or 0), int(rsp.result_source or 0), int(rsp.diagnostic or 0), msg)
        if not connected.is_set():
            msg = f"Unable to connect to {where}; check pacs.hostname and pacs.port, and that the PACS is running"
            raise ConnectionFailed(msg)
        msg = f"Unable to associate with {where} as the association was aborted during negotiation"
        raise AssociationAborted(msg)


    def _check_accepted(self, assoc: Association) -> None:
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        needed = self.find_model if self.config.request.type == "c-find" else Verification
        if needed not in accepted:
            assoc.release()
            pacs = self.config.pacs
            msg = (
                f"Unable to use {pacs.aet}@{pacs.hostname}:{pacs.port} as it does not accept "
                f"'{needed.name}' ({needed})"
            )
            if self.config.request.type == "c-find":
                msg += "; try another request.model (patient or study)"
            raise ServiceNotSupported(msg)


class _NoResponse(AssociationAborted):
    """The association died before the PACS sent any response to the request."""


class ScuSession:
    """One worker's association, reused across requests and re-opened when the PACS drops it."""

    def __init__(self, backend: PynetdicomBackend) -> None:
        self._backend = backend
        self._assoc: Association | None = None
        self._ids = itertools.count(1)
        self._silenced = False
        self._lock = threading.Lock()
        self.busy_since: float | None = None

    def _association(self) -> tuple[Association, bool]:
        assoc = self._assoc
        if assoc is not None and assoc.is_established:
            return assoc, True
        assoc = self._backend.associate()
        with self._lock:
            self._assoc = assoc
            self._silenced = False
        return assoc, False

    def _message_id(self) -> int:
        return next(self._ids) % 65535 + 1

    def find(self, request: Request) -> FindOutcome:
        """Send one C-FIND and collect every response.

        A PACS may close an idle association just as we reuse it: when a reused association
        dies before any response, the request is sent once more on a fresh one.
        """
        identifier = build_identifier(request.elements)
        assoc, reused = self._association()
        try:
            return self._find_once(assoc, identifier)
        except _NoResponse:
            if not reused:
                raise
        assoc, _ = self._association()
        return self._find_once(assoc, identifier)

    def _find_once(self, assoc: Association, identifier: Dataset) -> FindOutcome:
        start = self.busy_since = time.monotonic()
        matches: list[dict[str, str]] = []
        try:
            responses = assoc.send_c_find(identifier, self._backend.find_model, msg_id=self._message_id())
            for status, ident in responses:
                if not status:  # empty status: DIMSE timeout, abort or invalid response
                    self._drop(assoc)
                    if self._silenced:
                        msg = "the PACS did not answer the C-FIND in time, so the association was aborted"
                        raise SilentPeer(msg)
                    msg = "the association was aborted before the C-FIND completed"
                    raise (AssociationAborted if matches else _NoResponse)(msg)
                self.busy_since = time.monotonic()
                code = int(status.Status)
                if code in PENDING:
                    if ident is not None:
                        matches.append(identifier_to_text(ident))
                    continue
                comment = status.get("ErrorComment")
                return FindOutcome(
                    status=code,
                    matches=tuple(matches),
                    elapsed=time.monotonic() - start,
                    comment=str(comment) if comment else None,
                    pending=len(matches),
                )
        finally:
            self.busy_since = None
        self._drop(assoc)
        msg = "the C-FIND ended without a final response"
        raise AssociationAborted(msg)

    def echo(self) -> int:
        """Send one C-ECHO; the status, or a NetworkError."""
        assoc, _ = self._association()
        status = assoc.send_c_echo()
        if not status:
            self._drop(assoc)
            msg = "the association was aborted before the C-ECHO completed"
            raise AssociationAborted(msg)
        return int(status.Status)

    def _drop(self, assoc: Association) -> None:
        with self._lock:
            if self._assoc is assoc:
                self._assoc = None
        if assoc.is_established or assoc.is_alive():
            assoc.abort()

    def abort(self, *, silent: bool) -> None:
        """Abort the association and wake the thread waiting on it (thread-safe)."""
        with self._lock:
            assoc = self._assoc
            self._silenced = silent
        if assoc is None:
            return
        assoc.abort()
        # abort() alone leaves a thread blocked in send_c_find until the DIMSE timeout.
        assoc.dimse.msg_queue.put((None, None))

    def close(self) -> None:
        """Release the association politely (abort if the release fails)."""
        with self._lock:
            assoc, self._assoc = self._assoc, None
        if assoc is not None and assoc.is_established:
            assoc.release()
            if assoc.is_alive():
                assoc.abort()
