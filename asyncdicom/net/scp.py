"""The storage SCP for C-MOVE: a lean acceptor that writes received bytes straight to files.

One thread per association reads PDUs from a blocking socket and streams each data set's
fragments into a file its owner opens (the spool; flat memory, whatever the instance size); nothing is decoded.
Negotiation PDUs are :mod:`asyncdicom.net.acse`; command sets and PDVs are :mod:`asyncdicom.net.dimse`.
pynetdicom's own server would cost two polling threads per association and a file flush per
fragment, which made C-MOVE three times slower than C-GET.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from asyncdicom.errors import AssociationAborted, NetworkError, OutputError, ProtocolError, TlsRefused
from asyncdicom.net.acse import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    AssociateRequest,
    associate_ac,
    associate_rj,
    parse_associate_rq,
)
from asyncdicom.net.dimse import (
    CommandEvent,
    CommandField,
    DataEvent,
    MessageReader,
    OpenFile,
    Reply,
    Status,
    StoreFile,
    check_store,
    response,
    send_message,
    use_kernel_timeouts,
)
from asyncdicom.net.pace import Pacer
from asyncdicom.net.pdu import PduReader, PduType, abort_rq, release_rp
from asyncdicom.net.tls import accept as tls_accept

log = logging.getLogger("asyncdicom.scp")

VERIFICATION = "1.2.840.10008.1.1"
TLS_REFUSED = "TLS handshake failed"
ARTIM = 30.0
"""Seconds a new connection has to send its A-ASSOCIATE-RQ (PS3.8 9.1.5, as dcmtk's default)."""


@dataclass(frozen=True, slots=True)
class Received:
    """A complete C-STORE data set in a spool file (still open: the receiver decides how to keep
    it), with what identifies its origin."""

    file: StoreFile
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    calling_ae: str
    move_message_id: int | None


class StorageSCP:
    """Accepts C-STOREs from the allowed AE titles; ``on_received`` returns the status to answer
    and what to do once it is answered; ``on_output_error`` hears (once, from the association's
    thread) that received bytes could not be spooled."""

    def __init__(
        self,
        *,
        ae_title: str,
        port: int,
        allowed_aets: Sequence[str],
        max_associations: int,
        open_file: OpenFile,
        on_received: Callable[[Received], Reply],
        host: str = "",
        timeout: float = 120.0,
        pacer: Pacer | None = None,
        tls: ssl.SSLContext | None = None,
        allowed_hosts: Sequence[str] = (),
        max_instance_bytes: int = 0,
        max_per_host: int = 0,
        sop_classes: Sequence[str] = (),
        on_output_error: Callable[[], None] | None = None,
    ) -> None:
        self.ae_title = ae_title
        self.port = port
        self.host = host
        self.allowed_aets = [title.strip() for title in allowed_aets]
        self.max_associations = max_associations
        self.open_file = open_file
        self.on_received = on_received
        self.timeout = timeout
        self.pacer = pacer
        self.tls = tls  # peers must speak DICOM TLS (the handshake runs in each association's thread)
        self.allowed_hosts = tuple(ipaddress.ip_network(host, strict=False) for host in allowed_hosts)
        self.max_instance_bytes = max_instance_bytes  # 0: no limit; a larger instance aborts its association
        self.max_per_host = max_per_host or max_associations  # connections at once from one address
        self.sop_classes = frozenset(sop_classes)  # storage classes accepted besides the standard ones
        self.refusals: collections.Counter[str] = collections.Counter()  # refused connections and instances, by why
        self._per_host: collections.Counter[str] = collections.Counter()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._active: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self.output_error: OutputError | None = None  # received bytes could not be spooled
        self.on_output_error = on_output_error

    def start(self) -> int:
        """Listen (port 0 picks a free one) and return the port."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError as exc:
            listener.close()
            where = f"{self.host}:{self.port}" if self.host else f"port {self.port}"
            remedy = (
                "give an address of this machine (local.bind_address)"
                if exc.errno == errno.EADDRNOTAVAIL
                else "choose another port (local.port)"
            )
            msg = f"Unable to listen on {where} as {exc.strerror}; {remedy}"
            raise NetworkError(msg) from None
        listener.listen(64)
        self._listener = listener
        self.port = int(listener.getsockname()[1])
        self._accept_thread = threading.Thread(target=self._accept, name="asyncdicom-scp", daemon=True)
        self._accept_thread.start()
        return self.port

    def stop(self) -> None:
        """Stop listening and close every association still open."""
        self._stopping.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            active = list(self._active)
        for sock in active:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        if self._accept_thread is not None:
            self._accept_thread.join(5)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:  # each finishes placing what it has answered
            thread.join(30)

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, address = self._listener.accept()
            except OSError:
                return
            host = str(address[0])
            why = self._refuse_host(host)
            if why:  # refused at once, spending no thread
                self.refuse(why, f"refused a connection from {host}: {why}")
                with contextlib.suppress(OSError):
                    sock.close()
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            use_kernel_timeouts(sock, min(self.timeout, ARTIM))
            thread = threading.Thread(target=self._serve, args=(sock, host), name="asyncdicom-scp-assoc", daemon=True)
            with self._lock:
                self._threads.add(thread)
                self._per_host[host] += 1
            thread.start()

    def _refuse_host(self, host: str) -> str:
        """Why a connection from ``host`` is refused before anything is read ("" if it is not)."""
        if self.allowed_hosts:
            try:
                address = ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                return "not an address local.allowed_hosts can match"
            if address.version == 6 and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            if not any(address in network for network in self.allowed_hosts):
                return "not in local.allowed_hosts"
        with self._lock:
            if len(self._threads) >= self.max_connections:  # more connections than any PACS needs
                return f"{self.max_connections} connections open already"
            if self._per_host[host] >= self.max_per_host:
                return f"{self.max_per_host} connections from that address open already"
        return ""

    def _release(self, host: str) -> None:
        """One connection from ``host`` fewer (under the lock); no entry is kept for a host with
        none, so many addresses cannot grow the table."""
        self._per_host[host] -= 1
        if self._per_host[host] <= 0:
            del self._per_host[host]

    def refuse(self, why: str, message: str) -> None:
        """Count a refusal; log the first of each kind as a warning, the rest (and any while
        stopping) at debug level: a hostile peer must not flood the log. Messages never hold
        patient data."""
        with self._lock:
            self.refusals[why] += 1
            first = self.refusals[why] == 1
        loud = first and not self._stopping.is_set()
        log.log(logging.WARNING if loud else logging.DEBUG, "%s", message)

    @property
    def refused_tls(self) -> int:
        """Connections refused by the TLS handshake."""
        return self.refusals[TLS_REFUSED]

    @property
    def max_connections(self) -> int:
        """Connections served at once: the associations allowed, and as many more being told no."""
        return 2 * self.max_associations + 2

    def _serve(self, sock: socket.socket, address: str) -> None:
        with self._lock:
            busy = len(self._active) >= self.max_associations
            self._active.add(sock)
        if self.tls is not None:
            secured = self._handshake(sock, address)
            if secured is None:
                return
            sock = secured
        try:
            _Association(self, sock, address).run(busy)
        except OutputError as exc:  # the volume is full: the peer is aborted, the run stops
            with self._lock:
                first, self.output_error = self.output_error is None, self.output_error or exc
            with contextlib.suppress(OSError):
                sock.sendall(abort_rq())
            if first and self.on_output_error is not None:
                self.on_output_error()
        except ProtocolError as exc:
            if not self._stopping.is_set():
                log.warning("%s", exc)
            _abort_politely(sock)
        except (OSError, AssociationAborted) as exc:
            if not self._stopping.is_set():
                log.debug("storage association ended: %s", exc)
        finally:
            with self._lock:
                self._active.discard(sock)
                self._threads.discard(threading.current_thread())
                self._release(address)
            with contextlib.suppress(OSError):
                sock.close()

    def _handshake(self, sock: socket.socket, address: str) -> ssl.SSLSocket | None:
        """The TLS handshake with a connecting peer, within ARTIM; None (logged, counted, closed)
        if it fails. The wrapped socket replaces the plain one among the active."""
        assert self.tls is not None
        try:
            secured = tls_accept(sock, self.tls, address, min(self.timeout, ARTIM))
        except TlsRefused as exc:
            with self._lock:
                self._active.discard(sock)
                self._threads.discard(threading.current_thread())
                self._release(address)
            self.refuse(TLS_REFUSED, str(exc))
            return None
        with self._lock:
            self._active.discard(sock)
            self._active.add(secured)
        use_kernel_timeouts(secured, min(self.timeout, ARTIM))
        return secured


VERIFICATION_CLASS = "1.2.840.10008.1.1"
_STORAGE_ROOT = "1.2.840.10008.5.1.4.1.1."  # the Storage SOP classes of PS3.4 Annex B (images and most others)
_OTHER_STORAGE = frozenset(
    {
        "1.2.840.10008.5.1.4.38.1",  # Hanging Protocol Storage
        "1.2.840.10008.5.1.4.39.1",  # Color Palette Storage
        "1.2.840.10008.5.1.4.43.1",  # Generic Implant Template Storage
        "1.2.840.10008.5.1.4.44.1",  # Implant Assembly Template Storage
        "1.2.840.10008.5.1.4.45.1",  # Implant Template Group Storage
    }
)


def is_storage(abstract: str, extra: frozenset[str] = frozenset()) -> bool:
    """Whether our storage SCP accepts a context for ``abstract``: Verification, a standard
    Storage SOP class, one of ``request.sop_classes``, or a private class (outside the DICOM
    root: vendors' private storage). Query/retrieve, worklist, print, MPPS and every other
    standard service are refused."""
    return (
        abstract == VERIFICATION_CLASS
        or abstract.startswith(_STORAGE_ROOT)
        or abstract in _OTHER_STORAGE
        or abstract in extra
        or not abstract.startswith("1.2.840.10008.")
    )


def _abort_politely(sock: socket.socket) -> None:
    """A-ABORT, then read (and drop) at most 64 KiB for a second before closing, so the peer
    gets the A-ABORT instead of a connection reset for the bytes it sent after the fault."""
    with contextlib.suppress(OSError):
        sock.sendall(abort_rq(2, 0))
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(1.0)
        left = 64 * 1024
        while left > 0:
            chunk = sock.recv(min(left, 16384))
            if not chunk:
                break
            left -= len(chunk)


class _Association:
    """One incoming association, served by the thread that accepted it."""

    def __init__(self, server: StorageSCP, sock: socket.socket, address: str) -> None:
        self.server = server
        self.address = address
        self.sock = sock
        self.pdus = PduReader(sock, f"a peer at {address}", pacer=server.pacer)
        self.calling = ""
        self.syntax_of: dict[int, str] = {}
        self.abstract_of: dict[int, str] = {}  # accepted context ID → its abstract syntax
        self.peer_max = 0

    def run(self, busy: bool) -> None:
        kind, pdu = self.pdus.read(frozenset({PduType.ASSOCIATE_RQ}))
        if kind is not PduType.ASSOCIATE_RQ:  # an A-ABORT
            return
        request = parse_associate_rq(pdu)
        del pdu
        self.calling = request.calling_ae
        self.pdus.peer = f"AE {self.calling!r} at {self.pdus.peer.removeprefix('a peer at ')}"
        if busy:
            self.sock.sendall(associate_rj(2, 3, 2))  # transient, provider (presentation), local limit exceeded
            return
        if self.server.allowed_aets and self.calling not in self.server.allowed_aets:
            self.server.refuse(
                "calling AE title not allowed",
                f"refused an association from AE title {self.calling!r} at {self.address}: not in local.allowed_aets",
            )
            self.sock.sendall(associate_rj(1, 1, 3))  # permanent, service user, calling AE title not recognised
            return
        self._accept(request)
        use_kernel_timeouts(self.sock, self.server.timeout)
        self._serve()

    def _accept(self, request: AssociateRequest) -> None:
        results = []
        for context_id, abstract, syntaxes in request.contexts:
            if not is_storage(abstract, self.server.sop_classes):  # a storage SCP serves nothing else
                results.append((context_id, 0x03, IMPLICIT_VR_LITTLE_ENDIAN))  # abstract syntax not supported
            elif syntaxes:
                # every transfer syntax is accepted: the bytes are stored as they come
                results.append((context_id, 0x00, syntaxes[0]))
                self.syntax_of[context_id] = syntaxes[0]
                self.abstract_of[context_id] = abstract
            else:
                results.append((context_id, 0x04, IMPLICIT_VR_LITTLE_ENDIAN))
        self.peer_max = request.max_pdu
        self.sock.sendall(associate_ac(request, results))

    def _serve(self) -> None:
        """Read until the peer releases or aborts; answer every C-STORE and C-ECHO."""
        store: StoreFile | None = None
        storing: CommandEvent | None = None
        peer = self.pdus.peer
        limit, received = self.server.max_instance_bytes, 0
        try:
            for event in MessageReader(self.pdus).events():
                if isinstance(event, DataEvent):
                    if store is None or storing is None:
                        msg = f"{peer} sent a data set with no C-STORE before it"
                        raise ProtocolError(msg)
                    if event.context_id != storing.context_id:
                        msg = f"{peer} sent a data set on presentation context {event.context_id}, not its C-STORE's"
                        raise ProtocolError(msg)
                    store.write(event.fragment)
                    received += len(event.fragment)
                    if limit and received > limit:
                        self.server.refuse(
                            "instance larger than local.max_instance_megabytes",
                            f"aborted an association from {peer}: an instance larger than local.max_instance_megabytes",
                        )
                        msg = f"{peer} sent an instance larger than local.max_instance_megabytes"
                        raise ProtocolError(msg)
                    if event.last:
                        status, then = self._end(storing, store)
                        store = None
                        try:
                            self._answer(storing, CommandField.C_STORE_RSP, status)
                        finally:
                            if then is not None:
                                then()
                elif isinstance(event, CommandEvent):
                    if store is not None:
                        msg = f"{peer} sent a command in the middle of a data set"
                        raise ProtocolError(msg)
                    if event.command.field == CommandField.C_ECHO_RQ:
                        self._answer(event, CommandField.C_ECHO_RSP, Status.SUCCESS)
                    elif event.command.field == CommandField.C_STORE_RQ:
                        check_store(event, self.abstract_of, self.pdus.peer)
                        store, storing, received = self._begin(event), event, 0
                    else:
                        msg = (
                            f"{peer} sent DIMSE command 0x{event.command.field:04X}, which a storage SCP does not serve"
                        )
                        raise ProtocolError(msg)
                elif event.kind is PduType.RELEASE_RQ:
                    self.sock.sendall(release_rp())
                    return
                else:  # A-ABORT, or a release reply we never asked for
                    return
        finally:
            if store is not None:
                store.discard()

    def _begin(self, event: CommandEvent) -> StoreFile:
        syntax = self.syntax_of.get(event.context_id, IMPLICIT_VR_LITTLE_ENDIAN)
        return self.server.open_file(event.command.sop_class, event.command.sop_instance, syntax, self.calling)

    def _end(self, event: CommandEvent, store: StoreFile) -> Reply:
        received = Received(
            file=store,
            sop_class=event.command.sop_class,
            sop_instance=event.command.sop_instance,
            transfer_syntax=self.syntax_of.get(event.context_id, IMPLICIT_VR_LITTLE_ENDIAN),
            calling_ae=self.calling,
            move_message_id=event.command.move_message_id,
        )
        return self.server.on_received(received)

    def _answer(self, event: CommandEvent, field: CommandField, status: int) -> None:
        send_message(self.sock, event.context_id, response(event.command, field, status), None, self.peer_max)
