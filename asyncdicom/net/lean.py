"""A lean requestor association over a plain blocking socket.

pynetdicom runs every association in two polling threads (1 ms sleeps) and pauses its reactor
around each request; for thousands of small C-FINDs that polling, not the network, sets the
pace, and building DIMSE command sets as pydicom datasets costs more CPU than the query.
Here the worker thread that sends a request also reads its responses, straight from the
socket: no extra threads, no polling. Negotiation is :mod:`asyncdicom.net.acse`, PDUs and their
limits :mod:`asyncdicom.net.pdu`, DIMSE messages :mod:`asyncdicom.net.dimse`; this module keeps
only the requestor's policy. Identifiers are encoded and decoded by pydicom (via pynetdicom's
dsutils), within :data:`MAX_IDENTIFIER` bytes.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO
from typing import NoReturn

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode

from asyncdicom.errors import (
    AssociationAborted,
    AssociationRejected,
    ConnectionFailed,
    HostNotFound,
    IdentityRefused,
    NetworkError,
    ProtocolError,
    SilentPeer,
)
from asyncdicom.net.acse import UserIdentity, associate_rq, parse_associate_ac, parse_associate_rj
from asyncdicom.net.dimse import (
    PENDING,
    PRIORITY_LOW,
    BoundedBuffer,
    CommandEvent,
    CommandField,
    DataEvent,
    MessageReader,
    StoreFile,
    StoreSink,
    Tag,
    ae,
    check_store,
    pack_command,
    response,
    send_message,
    ui,
    us,
    use_kernel_timeouts,
)
from asyncdicom.net.pace import Pacer
from asyncdicom.net.pdu import NEGOTIATION, PduReader, PduType, abort_rq, release_rp, release_rq
from asyncdicom.net.tls import connect as tls_connect
from asyncdicom.net.tls import refused_after_handshake

VERIFICATION = "1.2.840.10008.1.1"
MAX_IDENTIFIER = 1 << 20
"""The largest response identifier (C-FIND match, C-MOVE/C-GET final response) kept in memory."""
_REJECT_TEXT = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


@dataclass(frozen=True, slots=True)
class Response:
    """One DIMSE response: its status, error comment, sub-operation counts and decoded data set."""

    status: int
    comment: str | None
    dataset: Dataset | None
    counts: dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class Expected:
    """The response a request waits for: on its context, of its kind, to its message ID."""

    context_id: int
    field: int
    message_id: int


class LeanAssociation:
    """One established association, driven by the calling thread only (``abort`` excepted)."""

    def __init__(
        self,
        sock: socket.socket,
        pdus: PduReader,
        contexts: dict[str, tuple[int, UID]],
        peer_max_pdu: int,
        where: str,
        syntax_of: dict[int, str] | None = None,
        abstract_of: dict[int, str] | None = None,
    ) -> None:
        self._sock = sock
        self._pdus = pdus
        self._events = MessageReader(pdus).events()
        self.contexts = contexts  # abstract syntax → (context ID, transfer syntax)
        self._peer_max_pdu = peer_max_pdu or 0
        # every accepted context, including several per SOP class (one per compressed syntax)
        self._syntax_of = syntax_of or {context_id: str(syntax) for context_id, syntax in contexts.values()}
        self._abstract_of = abstract_of or {context_id: abstract for abstract, (context_id, _) in contexts.items()}
        self._where = where
        self._aborted = threading.Event()
        self._silent = False
        self.alive = True

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        host: str,
        port: int,
        *,
        called: str,
        calling: str,
        abstract_syntaxes: list[str],
        connect_timeout: float,
        timeout: float,
        storage: Sequence[tuple[str, Sequence[str]]] = (),
        pacer: Pacer | None = None,
        tls: ssl.SSLContext | None = None,
        identity: UserIdentity | None = None,
    ) -> LeanAssociation:
        """Connect, negotiate and return an established association, or raise a NetworkError.

        ``storage`` lists (SOP class, transfer syntaxes) we accept C-STOREs for, in the SCP role
        (C-GET): each becomes a presentation context with a role selection item.
        """
        where = f"{called}@{host}:{port}"
        try:
            sock = socket.create_connection((host, port), timeout=connect_timeout)
        except socket.gaierror:
            msg = f"Unable to connect to {where} as the host name {host!r} does not resolve; check pacs.hostname"
            raise HostNotFound(msg) from None
        except ConnectionRefusedError:
            msg = (
                f"Unable to connect to {where} as the connection was refused: nothing listens on port {port}; "
                "check pacs.port, and that the PACS is running"
            )
            raise ConnectionFailed(msg) from None
        except OSError as exc:
            why = "it timed out" if isinstance(exc, TimeoutError) else (exc.strerror or type(exc).__name__)
            msg = f"Unable to connect to {where} as {why}; check pacs.hostname and pacs.port, and the network"
            raise ConnectionFailed(msg) from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:  # TlsRefused (permanent) names what to fix
            sock = tls_connect(sock, tls, host, where, connect_timeout)
        pdus = PduReader(sock, f"the PACS {where}", pacer=pacer)
        try:
            frozen_storage = tuple((uid, tuple(syntaxes)) for uid, syntaxes in storage)
            sock.sendall(_associate_rq(called, calling, tuple(abstract_syntaxes), frozen_storage, identity))
            kind, body = pdus.read(NEGOTIATION)
        except ProtocolError as exc:
            _abort_and_close(sock)
            msg = f"Unable to associate with {where} as {exc}"
            raise ProtocolError(msg) from None
        except ssl.SSLError as exc:  # TLS 1.3: a PACS refuses our certificate once the handshake is over
            sock.close()
            raise refused_after_handshake(exc, where) from None
        except (OSError, AssociationAborted):
            sock.close()
            msg = f"Unable to associate with {where} as the connection was closed during negotiation"
            if tls is not None:
                msg += "; over TLS, the PACS may not trust our certificate (pacs.tls.cert_file) or know our AE title"
            else:
                msg += "; if that port speaks DICOM TLS only, give pacs.tls"
            raise AssociationAborted(msg) from None
        if kind is PduType.ASSOCIATE_RJ:
            sock.close()
            result, source, reason = parse_associate_rj(body)
            text = _REJECT_TEXT.get((source, reason), f"source {source}, reason {reason}")
            kind_text = "permanently" if result == 1 else "for now"
            msg = f"Unable to associate with {where} as the PACS rejected it {kind_text} ({text})"
            if (source, reason) == (1, 3):
                msg += f"; the PACS must know our AE title '{calling}' (local.aet)"
            elif (source, reason) == (1, 7):
                msg += "; check pacs.aet"
            elif identity is not None and reason == 1 and source in (1, 2):
                # no reason given, to an association carrying a user identity: how PACSs refuse one
                # (pynetdicom even says it transiently); asking again would meet the same answer
                msg += "; the PACS does not accept our user identity: check pacs.username and its password"
                raise IdentityRefused(result, source, reason, msg)
            raise AssociationRejected(result, source, reason, msg)
        if kind is not PduType.ASSOCIATE_AC:
            sock.close()
            msg = f"Unable to associate with {where} as the PACS answered with an {kind.name.replace('_', '-')} PDU"
            raise AssociationAborted(msg)
        try:
            answers, peer_max = parse_associate_ac(body)
        except ProtocolError as exc:
            _abort_and_close(sock)
            msg = f"Unable to associate with {where} as the PACS sent {exc}"
            raise ProtocolError(msg) from None
        proposed = {2 * i + 1: uid for i, uid in enumerate([*abstract_syntaxes, *(c for c, _ in storage)])}
        contexts: dict[str, tuple[int, UID]] = {}
        syntax_of: dict[int, str] = {}
        for context_id, result, syntax in answers:
            if result == 0 and context_id in proposed and syntax:
                syntax_of[context_id] = syntax
                contexts.setdefault(proposed[context_id], (context_id, UID(syntax)))
        use_kernel_timeouts(sock, timeout)
        abstract_of = {context_id: proposed[context_id] for context_id in syntax_of}
        return cls(sock, pdus, contexts, peer_max, where, syntax_of, abstract_of)

    def set_timeout(self, seconds: float) -> None:
        """How long a receive or send may wait from now on (a retrieve watched for progress
        elsewhere waits longer than a query)."""
        with contextlib.suppress(OSError):
            use_kernel_timeouts(self._sock, seconds)

    # --- requests -----------------------------------------------------------------------------

    def find(self, model: str, identifier: Dataset, msg_id: int) -> Iterator[Response]:
        """Send a C-FIND and yield every response, the final one last."""
        return self._request(model, CommandField.C_FIND_RQ, msg_id, identifier, None)

    def move(self, model: str, identifier: Dataset, msg_id: int, destination: str) -> Iterator[Response]:
        """Send a C-MOVE to ``destination`` and yield every response, the final one last."""
        return self._request(model, CommandField.C_MOVE_RQ, msg_id, identifier, None, destination)

    def get(self, model: str, identifier: Dataset, msg_id: int, sink: StoreSink) -> Iterator[Response]:
        """Send a C-GET; C-STOREs arriving meanwhile go to ``sink``. Yields every C-GET response."""
        return self._request(model, CommandField.C_GET_RQ, msg_id, identifier, sink)

    def _request(
        self,
        model: str,
        field: CommandField,
        msg_id: int,
        identifier: Dataset,
        sink: StoreSink | None,
        destination: str | None = None,
    ) -> Iterator[Response]:
        context_id, syntax = self._context(model)
        fields = [(Tag.AFFECTED_SOP_CLASS, ui(model)), (Tag.COMMAND_FIELD, us(field)), (Tag.MESSAGE_ID, us(msg_id))]
        if destination is not None:
            fields.append((Tag.MOVE_DESTINATION, ae(destination)))
        fields += [(Tag.PRIORITY, us(PRIORITY_LOW)), (Tag.DATA_SET_TYPE, us(0x0001))]
        self._send(context_id, pack_command([(int(tag), value) for tag, value in fields]), _encode(identifier, syntax))
        expected = Expected(context_id, field | 0x8000, msg_id)
        while True:
            answer = self._receive(syntax, sink, expected)
            yield answer
            if answer.status not in PENDING:
                return

    def echo(self, msg_id: int) -> int:
        """Send a C-ECHO; returns its status."""
        context_id, syntax = self._context(VERIFICATION)
        request = pack_command(
            [
                (Tag.AFFECTED_SOP_CLASS, ui(VERIFICATION)),
                (Tag.COMMAND_FIELD, us(CommandField.C_ECHO_RQ)),
                (Tag.MESSAGE_ID, us(msg_id)),
                (Tag.DATA_SET_TYPE, us(0x0101)),
            ]
        )
        self._send(context_id, request, None)
        return self._receive(syntax, None, Expected(context_id, CommandField.C_ECHO_RSP, msg_id)).status

    def _context(self, abstract_syntax: str) -> tuple[int, UID]:
        try:
            return self.contexts[abstract_syntax]
        except KeyError:
            msg = f"no presentation context for {abstract_syntax} was accepted"
            raise AssociationAborted(msg) from None

    def _send(self, context_id: int, command: bytes, dataset: bytes | None) -> None:
        """Send a command set (and data set) within the peer's maximum PDU length."""
        try:
            send_message(self._sock, context_id, command, dataset, self._peer_max_pdu)
        except OSError:
            self._fail()

    def _receive(self, syntax: UID, sink: StoreSink | None, expected: Expected) -> Response:
        """Read until one whole DIMSE response to ``expected`` has arrived; serve C-STOREs on the
        way. A peer that breaks the protocol (a response to another request or of another kind, a
        message on a context never accepted) is aborted; no buffer of a failed attempt outlives it."""
        store: StoreFile | None = None
        storing: CommandEvent | None = None
        answer: CommandEvent | None = None
        data: BoundedBuffer | None = None
        try:
            for event in self._events:
                if isinstance(event, DataEvent):
                    self._check_data(event, storing or answer)
                    if store is not None:
                        store.write(event.fragment)
                        if event.last:
                            assert storing is not None
                            assert sink is not None
                            self._end_store(storing, sink, store)
                            store = storing = None
                    elif data is not None and answer is not None:
                        data.add(event.fragment)
                        if event.last:
                            return self._response(answer, syntax, data)
                    else:
                        msg = f"the PACS {self._where} sent a data set with no command before it"
                        raise ProtocolError(msg)
                elif isinstance(event, CommandEvent):
                    if store is not None or data is not None:
                        msg = f"the PACS {self._where} sent a command in the middle of a data set"
                        raise ProtocolError(msg)
                    command = event.command
                    if command.field == CommandField.C_STORE_RQ:  # a C-GET sub-operation
                        check_store(event, self._abstract_of, f"the PACS {self._where}")
                        store, storing = self._begin_store(event, sink), event
                        continue
                    self._check_response(event, expected)
                    if not command.has_dataset:
                        return Response(command.status, command.comment, None, command.counts)
                    else:
                        answer = event
                        data = BoundedBuffer(MAX_IDENTIFIER, f"the PACS {self._where} sent a response identifier")
                else:
                    if event.kind is PduType.RELEASE_RQ:  # the peer wants to release: answer; the request is lost
                        with contextlib.suppress(OSError):
                            self._sock.sendall(release_rp())
                    msg = f"{self._where} ended the association ({event.kind.name})"
                    raise AssociationAborted(msg)  # handled below, with every other end
        except ProtocolError as exc:
            self._fail(exc)
        except (OSError, AssociationAborted) as exc:
            if isinstance(exc, BlockingIOError | TimeoutError):  # the kernel's receive timeout: silence
                self._silent = True
            self._fail()
        except BaseException:  # e.g. the output volume is full: the association cannot go on
            self._close(abort=True)
            raise
        finally:
            if store is not None and sink is not None:
                sink.end(store, ok=False)
            del data
        self._fail()  # pragma: no cover - the events never end

    def _check_response(self, event: CommandEvent, expected: Expected) -> None:
        """ProtocolError unless ``event`` answers ``expected``: its kind, message and context."""
        command = event.command
        if command.field != expected.field:
            msg = f"the PACS {self._where} answered with command 0x{command.field:04X}, not 0x{expected.field:04X}"
            raise ProtocolError(msg)
        if command.responded_to != expected.message_id:
            msg = (
                f"the PACS {self._where} sent a response to message ID {command.responded_to}; "
                f"the request in progress is message ID {expected.message_id}"
            )
            raise ProtocolError(msg)
        if event.context_id != expected.context_id:
            msg = (
                f"the PACS {self._where} answered on presentation context {event.context_id}, "
                f"not the request's {expected.context_id}"
            )
            raise ProtocolError(msg)

    def _check_data(self, event: DataEvent, command: CommandEvent | None) -> None:
        """ProtocolError unless a data set fragment came on its command's context."""
        if command is not None and event.context_id != command.context_id:
            msg = (
                f"the PACS {self._where} sent a data set on presentation context {event.context_id} "
                f"for a command on context {command.context_id}"
            )
            raise ProtocolError(msg)

    def _response(self, answer: CommandEvent, syntax: UID, data: BoundedBuffer) -> Response:
        command = answer.command
        try:
            ds = decode(BytesIO(bytes(data.data)), syntax.is_implicit_VR, syntax.is_little_endian)
        except Exception:  # hostile bytes into pydicom's parser: any failure is the peer's
            msg = f"the PACS {self._where} sent a response identifier that cannot be decoded"
            raise ProtocolError(msg) from None
        return Response(command.status, command.comment, ds, command.counts)

    def _begin_store(self, event: CommandEvent, sink: StoreSink | None) -> StoreFile:
        if sink is None:
            msg = f"the PACS {self._where} sent a C-STORE on an association that expects none"
            raise ProtocolError(msg)
        syntax = self._syntax_of.get(event.context_id, "")
        return sink.begin(event.command.sop_class, event.command.sop_instance, syntax)

    def _end_store(self, event: CommandEvent, sink: StoreSink, store: StoreFile) -> None:
        status, then = sink.end(store, ok=True)
        try:
            self._send(event.context_id, response(event.command, CommandField.C_STORE_RSP, status), None)
        finally:
            if then is not None:
                then()

    def _close(self, *, abort: bool) -> None:
        """Mark the association dead and close its socket (A-ABORT first when ``abort``)."""
        self.alive = False
        self._events.close()  # drops the last PDU buffer
        if abort:
            with contextlib.suppress(OSError):
                self._sock.sendall(abort_rq(2, 0))
        with contextlib.suppress(OSError):
            self._sock.close()

    def _fail(self, error: ProtocolError | None = None) -> NoReturn:
        """End the association and raise what the caller should see."""
        self._close(abort=error is not None)
        if self._silent:
            msg = "the PACS did not answer in time, so the association was aborted"
            raise SilentPeer(msg) from None
        if error is not None:
            raise ProtocolError(str(error)) from None
        msg = f"the association with {self._where} was aborted or closed"
        raise AssociationAborted(msg) from None

    # --- ending -------------------------------------------------------------------------------

    def abort(self, *, silent: bool) -> None:
        """Abort from any thread: the thread blocked on the socket wakes with an error at once."""
        self._silent = silent
        self.alive = False
        with contextlib.suppress(OSError):
            self._sock.sendall(abort_rq())
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """Release politely; fall back to closing the socket."""
        if self.alive:
            self.alive = False
            with contextlib.suppress(OSError, AssociationAborted):
                use_kernel_timeouts(self._sock, 5)
                self._sock.sendall(release_rq())
                self._pdus.read()
        with contextlib.suppress(OSError):
            self._sock.close()


def _abort_and_close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(abort_rq(2, 0))
    sock.close()


# --- PDU helpers ----------------------------------------------------------------------------


def _encode(ds: Dataset, syntax: UID) -> bytes:
    data = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if data is None:
        msg = "Unable to encode the query identifier"
        raise NetworkError(msg)
    return data


@functools.lru_cache(maxsize=8)
def _associate_rq(
    called: str,
    calling: str,
    abstract_syntaxes: tuple[str, ...],
    storage: tuple[tuple[str, tuple[str, ...]], ...],
    identity: UserIdentity | None = None,
) -> bytes:
    plain = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    proposals = [(uid, plain) for uid in abstract_syntaxes] + list(storage)
    return associate_rq(called, calling, proposals, [uid for uid, _ in storage], identity)
