"""A lean requestor association over a plain blocking socket.

pynetdicom runs every association in two polling threads (1 ms sleeps) and pauses its reactor
around each request; for thousands of small C-FINDs that polling, not the network, sets the
pace, and building DIMSE command sets as pydicom datasets costs more CPU than the query.
Here the worker thread that sends a request also reads its responses, straight from the
socket: no extra threads, no polling. Association negotiation uses pynetdicom's PDU classes;
the hot messages (command sets and PDV items, a fixed handful of group 0000 elements) are
packed by hand; identifiers are encoded and decoded by pydicom via pynetdicom's dsutils.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from io import BytesIO

from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dsutils import decode, encode

from asyncdicom.errors import AssociationAborted, AssociationRejected, ConnectionFailed, HostNotFound, SilentPeer
from asyncdicom.net.acse import associate_rq, parse_associate_ac, parse_associate_rj
from asyncdicom.net.dimse import (
    Command,
    StoreFile,
    StoreSink,
    abort_rq,
    ae,
    p_data,
    pack_command,
    parse_command,
    pdvs,
    read_pdu,
    release_rp,
    release_rq,
    ui,
    us,
    use_kernel_timeouts,
)

VERIFICATION = "1.2.840.10008.1.1"
PRIORITY_LOW = 0x0002  # a research batch should not push ahead of clinical work
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


class LeanAssociation:
    """One established association, driven by the calling thread only (``abort`` excepted)."""

    def __init__(
        self,
        sock: socket.socket,
        contexts: dict[str, tuple[int, UID]],
        peer_max_pdu: int,
        where: str,
        syntax_of: dict[int, str] | None = None,
    ) -> None:
        self._sock = sock
        self.contexts = contexts  # abstract syntax → (context ID, transfer syntax)
        self._peer_max_pdu = peer_max_pdu or 0
        # every accepted context, including several per SOP class (one per compressed syntax)
        self._syntax_of = syntax_of or {context_id: str(syntax) for context_id, syntax in contexts.values()}
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
        try:
            frozen_storage = tuple((uid, tuple(syntaxes)) for uid, syntaxes in storage)
            sock.sendall(_associate_rq(called, calling, tuple(abstract_syntaxes), frozen_storage))
            kind, body = read_pdu(sock)
        except (OSError, AssociationAborted):
            sock.close()
            msg = f"Unable to associate with {where} as the connection was closed during negotiation"
            raise AssociationAborted(msg) from None
        if kind == 0x03:
            sock.close()
            result, source, reason = parse_associate_rj(body)
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
        answers, peer_max = parse_associate_ac(body)
        proposed = {2 * i + 1: uid for i, uid in enumerate([*abstract_syntaxes, *(c for c, _ in storage)])}
        contexts: dict[str, tuple[int, UID]] = {}
        syntax_of: dict[int, str] = {}
        for context_id, result, syntax in answers:
            if result == 0 and context_id in proposed and syntax:
                syntax_of[context_id] = syntax
                contexts.setdefault(proposed[context_id], (context_id, UID(syntax)))
        use_kernel_timeouts(sock, timeout)
        return cls(sock, contexts, peer_max, where, syntax_of)

    # --- requests -----------------------------------------------------------------------------

    def find(self, model: str, identifier: Dataset, msg_id: int) -> Iterator[Response]:
        """Send a C-FIND and yield every response, the final one last."""
        request = pack_command(
            [
                (0x0002, ui(model)),
                (0x0100, us(0x0020)),
                (0x0110, us(msg_id)),
                (0x0700, us(PRIORITY_LOW)),
                (0x0800, us(0x0001)),
            ]
        )
        return self._request(model, request, identifier, None)

    def move(self, model: str, identifier: Dataset, msg_id: int, destination: str) -> Iterator[Response]:
        """Send a C-MOVE to ``destination`` and yield every response, the final one last."""
        request = pack_command(
            [
                (0x0002, ui(model)),
                (0x0100, us(0x0021)),
                (0x0110, us(msg_id)),
                (0x0600, ae(destination)),
                (0x0700, us(PRIORITY_LOW)),
                (0x0800, us(0x0001)),
            ]
        )
        return self._request(model, request, identifier, None)

    def get(self, model: str, identifier: Dataset, msg_id: int, sink: StoreSink) -> Iterator[Response]:
        """Send a C-GET; C-STOREs arriving meanwhile go to ``sink``. Yields every C-GET response."""
        request = pack_command(
            [
                (0x0002, ui(model)),
                (0x0100, us(0x0010)),
                (0x0110, us(msg_id)),
                (0x0700, us(PRIORITY_LOW)),
                (0x0800, us(0x0001)),
            ]
        )
        return self._request(model, request, identifier, sink)

    def _request(self, model: str, command: bytes, identifier: Dataset, sink: StoreSink | None) -> Iterator[Response]:
        context_id, syntax = self._context(model)
        self._send(context_id, command, _encode(identifier, syntax))
        while True:
            response = self._receive(syntax, sink)
            yield response
            if response.status not in (0xFF00, 0xFF01):
                return

    def echo(self, msg_id: int) -> int:
        """Send a C-ECHO; returns its status."""
        context_id, syntax = self._context(VERIFICATION)
        request = pack_command(
            [(0x0002, ui(VERIFICATION)), (0x0100, us(0x0030)), (0x0110, us(msg_id)), (0x0800, us(0x0101))]
        )
        self._send(context_id, request, None)
        return self._receive(syntax, None).status

    def _context(self, abstract_syntax: str) -> tuple[int, UID]:
        try:
            return self.contexts[abstract_syntax]
        except KeyError:
            msg = f"no presentation context for {abstract_syntax} was accepted"
            raise AssociationAborted(msg) from None

    def _send(self, context_id: int, command: bytes, dataset: bytes | None) -> None:
        """Send a command set (and data set) as P-DATA-TF PDUs within the peer's maximum length."""
        chunk = (self._peer_max_pdu - 6) if self._peer_max_pdu > 6 else 1 << 20
        pdus = [p_data(context_id, 0x01, command, chunk)]
        if dataset is not None:
            pdus.append(p_data(context_id, 0x00, dataset, chunk))
        try:
            self._sock.sendall(b"".join(pdus))
        except OSError:
            self._fail()

    def _receive(self, syntax: UID, sink: StoreSink | None) -> Response:
        """Read PDUs until one whole DIMSE response has arrived; serve C-STOREs on the way."""
        command = bytearray()
        data = bytearray()
        parsed: Command | None = None
        store: StoreFile | None = None
        try:
            while True:
                body = self._next_pdu()
                for context_id, control, fragment in pdvs(body):
                    if control & 0x01:
                        command += fragment
                        if not control & 0x02:
                            continue
                        parsed = parse_command(bytes(command))
                        command.clear()
                        if parsed.field == 0x0001:  # C-STORE-RQ: a C-GET sub-operation
                            store = self._begin_store(parsed, context_id, sink)
                        elif not parsed.has_dataset:
                            return Response(parsed.status, parsed.comment, None, parsed.counts)
                    elif store is not None and parsed is not None:
                        store.write(fragment)
                        if control & 0x02:
                            self._end_store(parsed, context_id, sink, store)
                            store, parsed = None, None
                    else:
                        data += fragment
                        if control & 0x02 and parsed is not None:
                            ds = decode(BytesIO(bytes(data)), syntax.is_implicit_VR, syntax.is_little_endian)
                            return Response(parsed.status, parsed.comment, ds, parsed.counts)
        except BaseException:
            if store is not None and sink is not None:
                sink.end(store, ok=False)
            raise

    def _next_pdu(self) -> bytearray:
        """The next P-DATA-TF PDU; anything else ends the association."""
        try:
            kind, body = read_pdu(self._sock)
        except (OSError, AssociationAborted):
            self._fail()
        if kind != 0x04:
            if kind == 0x05:  # the peer wants to release: answer; the request is lost
                with contextlib.suppress(OSError):
                    self._sock.sendall(release_rp())
            self._fail()
        return body

    def _begin_store(self, command: Command, context_id: int, sink: StoreSink | None) -> StoreFile:
        if sink is None:
            msg = "the PACS sent a C-STORE on an association that expects none"
            raise AssociationAborted(msg)
        syntax = self._syntax_of.get(context_id, "")
        return sink.begin(command.sop_class, command.sop_instance, syntax)

    def _end_store(self, command: Command, context_id: int, sink: StoreSink | None, store: StoreFile) -> None:
        assert sink is not None
        status, then = sink.end(store, ok=True)
        response = pack_command(
            [
                (0x0002, ui(command.sop_class)),
                (0x0100, us(0x8001)),
                (0x0120, us(command.message_id)),
                (0x0800, us(0x0101)),
                (0x0900, us(status)),
                (0x1000, ui(command.sop_instance)),
            ]
        )
        try:
            self._send(context_id, response, None)
        finally:
            if then is not None:
                then()

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
            self._sock.sendall(abort_rq())
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)

    def release(self) -> None:
        """Release politely; fall back to closing the socket."""
        if self.alive:
            self.alive = False
            with contextlib.suppress(OSError, AssociationAborted):
                self._sock.settimeout(5)
                self._sock.sendall(release_rq())
                read_pdu(self._sock)
        with contextlib.suppress(OSError):
            self._sock.close()


# --- PDU helpers ----------------------------------------------------------------------------


def _encode(ds: Dataset, syntax: UID) -> bytes:
    data = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    if data is None:
        msg = "Unable to encode the query identifier"
        raise ValueError(msg)
    return data


@functools.lru_cache(maxsize=8)
def _associate_rq(
    called: str,
    calling: str,
    abstract_syntaxes: tuple[str, ...],
    storage: tuple[tuple[str, tuple[str, ...]], ...],
) -> bytes:
    plain = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
    proposals = [(uid, plain) for uid in abstract_syntaxes] + list(storage)
    return associate_rq(called, calling, proposals, [uid for uid, _ in storage])
