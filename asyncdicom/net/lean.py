"""A lean requestor association: pynetdicom's PDU and DIMSE codecs over a plain blocking socket.

pynetdicom runs every association in two polling threads (1 ms sleeps) and pauses its reactor
around each request; for thousands of small C-FINDs that polling, not the network, sets the
pace. Here the worker thread that sends a request also reads its responses, straight from
the socket: no extra threads, no polling. Encoding and decoding stay pynetdicom's
(:mod:`pynetdicom.pdu`, :mod:`pynetdicom.dimse_messages`), so the bytes on the wire are the
same as with ``AE.associate``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID
from pynetdicom.dimse_messages import C_ECHO_RQ, C_FIND_RQ, DIMSEMessage
from pynetdicom.dimse_primitives import C_ECHO, C_FIND
from pynetdicom.dsutils import decode, encode
from pynetdicom.pdu import (
    A_ABORT_RQ,
    A_ASSOCIATE_AC,
    A_ASSOCIATE_RJ,
    A_ASSOCIATE_RQ,
    A_RELEASE_RP,
    A_RELEASE_RQ,
    P_DATA_TF,
)
from pynetdicom.pdu_primitives import (
    A_ABORT,
    A_ASSOCIATE,
    A_RELEASE,
    P_DATA,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AddressInformation

from asyncdicom.errors import AssociationAborted, AssociationRejected, ConnectionFailed, SilentPeer

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
VERSION_NAME = "ASYNCDICOM_01"
_HEADER = struct.Struct(">BxL")
_REJECT_TEXT = {
    (1, 1): "no reason given", (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised", (1, 7): "called AE title not recognised",
    (2, 1): "no reason given", (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion", (3, 2): "local limit exceeded",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Response:
    """One DIMSE response: its command set and, if sent, its decoded data set."""

    command: Dataset
    dataset: Dataset | None


class LeanAssociation:
    """One established association, driven by the calling thread only (``abort`` excepted)."""

    def __init__(self, sock: socket.socket, contexts: dict[str, tuple[int, UID]], peer_max_pdu: int,
                 where: str) -> None:  # fmt: skip
        self._sock = sock
        self.contexts = contexts  # abstract syntax → (context ID, transfer syntax)
        self._peer_max_pdu = peer_max_pdu or 0
        self._where = where
        self._aborted = threading.Event()
        self._silent = False
        self.alive = True

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, host: str, port: int, *, called: str, calling: str, abstract_syntaxes: list[str],
             connect_timeout: float, timeout: float) -> LeanAssociation:  # fmt: skip
        """Connect, negotiate and return an established association, or raise a NetworkError."""
        where = f"{called}@{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except OSError:
            msg = f"Unable to connect to {where}; check pacs.hostname and pacs.port, and that the PACS is running"
            raise ConnectionFailed(msg) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            sock.sendall(_associate_rq(host, port, called, calling, abstract_syntaxes))
            kind, body = _read_pdu(sock)
        except (OSError, AssociationAborted):
            sock.close()
            msg = f"Unable to associate with {where} as the connection was closed during negotiation"
            raise AssociationAborted(msg) from None
        if kind == 0x03:
            sock.close()
            rj = A_ASSOCIATE_RJ()
            rj.decode(body)
            result, source, reason = int(rj.result or 0), int(rj.source or 0), int(rj.reason_diagnostic or 0)
            text = _REJECT_TEXT.get((source, reason), f"source {source}, reason {reason}")
            kind_text = "permanently" if result == 1 else "for now"
            msg = f"Unable to associate with {where} as the PACS rejected it {kind_text} ({text})"
            if (source, reason) == (1, 3):
                msg += f"; the PACS must know our AE title '{calling}' (local.aet)"
            elif (source, reason) == (1, 7):
                msg += "; check pacs.aet"
            raise AssociationRejected(result, source, reason, msg)
        if kind != 0x02:
            sock.close()
            msg = f"Unable to associate with {where} as the PACS answered with PDU type 0x{kind:02X}"
            raise AssociationAborted(msg)
        ac = A_ASSOCIATE_AC()
        ac.decode(body)
        primitive = ac.to_primitive()
        proposed = {2 * i + 1: uid for i, uid in enumerate(abstract_syntaxes)}
        contexts: dict[str, tuple[int, UID]] = {}
        for answer in primitive.presentation_context_definition_results_list:
            context_id = int(answer.context_id or 0)
            if answer.result == 0 and context_id in proposed and answer.transfer_syntax:
                contexts[proposed[context_id]] = (context_id, UID(answer.transfer_syntax[0]))
        peer_max = 0
        for item in primitive.user_information:
            if isinstance(item, MaximumLengthNotification):
                peer_max = int(item.maximum_length_received or 0)
        sock.settimeout(timeout)
        return cls(sock, contexts, peer_max, where)

    # --- requests -----------------------------------------------------------------------------

    def find(self, model: str, identifier: Dataset, msg_id: int) -> Iterator[Response]:
        """Send a C-FIND and yield every response, the final one last."""
        context_id, syntax = self._context(model)
        primitive = C_FIND()
        primitive.MessageID = msg_id
        primitive.AffectedSOPClassUID = model
        primitive.Priority = 2
        primitive.Identifier = BytesIO(_encode(identifier, syntax))
        message = C_FIND_RQ()
        message.primitive_to_message(primitive)
        self._send(message, context_id)
        while True:
            response = self._receive(syntax)
            yield response
            if int(response.command.Status) not in (0xFF00, 0xFF01):
                return

    def echo(self, msg_id: int) -> int:
        """Send a C-ECHO; returns its status."""
        context_id, syntax = self._context("1.2.840.10008.1.1")
        primitive = C_ECHO()
        primitive.MessageID = msg_id
        primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
        message = C_ECHO_RQ()
        message.primitive_to_message(primitive)
        self._send(message, context_id)
        return int(self._receive(syntax).command.Status)

    def _context(self, abstract_syntax: str) -> tuple[int, UID]:
        try:
            return self.contexts[abstract_syntax]
        except KeyError:
            msg = f"no presentation context for {abstract_syntax} was accepted"
            raise AssociationAborted(msg) from None

    def _send(self, message: DIMSEMessage, context_id: int) -> None:
        pdus = b"".join(_p_data_tf(p) for p in message.encode_msg(context_id, self._peer_max_pdu))
        try:
            self._sock.sendall(pdus)
        except OSError:
            self._fail()

    def _receive(self, syntax: UID) -> Response:
        message = DIMSEMessage()
        while True:
            try:
                kind, body = _read_pdu(self._sock)
            except (OSError, AssociationAborted):
                self._fail()
            if kind == 0x04:
                pdu = P_DATA_TF()
                pdu.decode(body)
                if message.decode_msg(pdu.to_primitive()):
                    break
                continue
            if kind == 0x05:  # the peer wants to release: answer, then the request is lost
                with contextlib.suppress(OSError):
                    self._sock.sendall(_release_rp())
            self._fail()
        command = message.command_set
        data = None
        if int(command.CommandDataSetType) != 0x0101:
            raw = message.data_set.getvalue() if message.data_set else b""
            data = decode(BytesIO(raw), syntax.is_implicit_VR, syntax.is_little_endian) if raw else None
        return Response(command, data)

    def _fail(self) -> None:
        self.alive = False
        with contextlib.suppress(OSError):
            self._sock.close()
        if self._silent:
            msg = "the PACS did not answer in time, so the association was aborted"
            raise SilentPeer(msg)
        msg = f"the association with {self._where} was aborted or closed"
        raise AssociationAborted(msg)

    # --- ending -------------------------------------------------------------------------------

    def abort(self, *, silent: bool) -> None:
        """Abort from any thread: the thread blocked on the socket wakes with an error at once."""
        self._silent = silent
        self.alive = False
        with contextlib.suppress(OSError):
            self._sock.sendall(_abort_rq())
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """Release politely; fall back to closing the socket."""
        if self.alive:
            self.alive = False
            with contextlib.suppress(OSError, AssociationAborted):
                self._sock.settimeout(5)
                self._sock.sendall(_release_rq())
                _read_pdu(self._sock)
        with contextlib.suppress(OSError):
            self._sock.close()


# --- PDU helpers ----------------------------------------------------------------------------


def _read_exact(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            msg = "connection closed"
            raise AssociationAborted(msg)
        got += n
    return bytes(buffer)


def _read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """One whole PDU: its type and all its bytes (header included, as pynetdicom decodes them)."""
    header = _read_exact(sock, 6)
    kind, length = _HEADER.unpack(header)
    return kind, header + _read_exact(sock, length)


def _encode(ds: Dataset, syntax: UID) -> bytes:
    data = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if data is None:
        msg = "Unable to encode the query identifier"
        raise ValueError(msg)
    return data


def _p_data_tf(primitive: P_DATA) -> bytes:
    pdu = P_DATA_TF()
    pdu.from_primitive(primitive)
    return pdu.encode()


def _associate_rq(host: str, port: int, called: str, calling: str, abstract_syntaxes: list[str]) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID(APPLICATION_CONTEXT)
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    primitive.calling_presentation_address = AddressInformation("127.0.0.1", 0)
    primitive.called_presentation_address = AddressInformation(host, port)
    contexts = []
    for index, uid in enumerate(abstract_syntaxes):
        context = PresentationContext()
        context.context_id = 2 * index + 1
        context.abstract_syntax = UID(uid)
        context.transfer_syntax = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 0
    class_uid = ImplementationClassUIDNotification()
    class_uid.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = VERSION_NAME
    primitive.user_information = [max_length, class_uid, version]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()


def _release_rq() -> bytes:
    pdu = A_RELEASE_RQ()
    pdu.from_primitive(A_RELEASE())
    return pdu.encode()


def _release_rp() -> bytes:
    primitive = A_RELEASE()
    primitive.result = "affirmative"
    pdu = A_RELEASE_RP()
    pdu.from_primitive(primitive)
    return pdu.encode()


def _abort_rq() -> bytes:
    primitive = A_ABORT()
    primitive.abort_source = 0
    pdu = A_ABORT_RQ()
    pdu.from_primitive(primitive)
    return pdu.encode()
