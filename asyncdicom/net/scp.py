"""The storage SCP for C-MOVE: a lean acceptor that writes received bytes straight to the spool.

One thread per association reads PDUs from a blocking socket and streams each data set's
fragments into a spool file (flat memory, whatever the instance size); nothing is decoded.
Negotiation PDUs are :mod:`asyncdicom.net.acse`; command sets and PDVs are :mod:`asyncdicom.net.dimse`.
pynetdicom's own server would cost two polling threads per association and a file flush per
fragment, which made C-MOVE three times slower than C-GET.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncdicom.errors import AssociationAborted, OutputError
from asyncdicom.net.acse import (
    IMPLICIT_VR_LITTLE_ENDIAN,
    AssociateRequest,
    associate_ac,
    associate_rj,
    parse_associate_rq,
)
from asyncdicom.net.dimse import (
    Command,
    Reply,
    abort_rq,
    p_data,
    pack_command,
    parse_command,
    pdvs,
    read_pdu,
    release_rp,
    ui,
    us,
    use_kernel_timeouts,
)
from asyncdicom.write.spool import SpoolWriter, file_meta

log = logging.getLogger("asyncdicom.scp")

STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_NOT_REQUESTED = 0xC000
VERIFICATION = "1.2.840.10008.1.1"


@dataclass(frozen=True, slots=True)
class Received:
    """A complete C-STORE data set in a spool file (still open: the receiver decides how to keep
    it), with what identifies its origin."""

    file: SpoolWriter
    sop_class: str
    sop_instance: str
    transfer_syntax: str
    calling_ae: str
    move_message_id: int | None


class StorageSCP:
    """Accepts C-STOREs from the allowed AE titles; ``on_received`` returns the status to answer
    and what to do once it is answered."""

    def __init__(
        self,
        *,
        ae_title: str,
        port: int,
        allowed_aets: Sequence[str],
        max_associations: int,
        spool: Path,
        on_received: Callable[[Received], Reply],
        host: str = "",
        timeout: float = 120.0,
    ) -> None:
        self.ae_title = ae_title
        self.port = port
        self.host = host
        self.allowed_aets = [title.strip() for title in allowed_aets]
        self.max_associations = max_associations
        self.spool = spool
        self.on_received = on_received
        self.timeout = timeout
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._active: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self.output_error: OutputError | None = None  # received bytes could not be spooled

    def start(self) -> int:
        """Listen (port 0 picks a free one) and return the port."""
        self.spool.mkdir(parents=True, exist_ok=True)
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError as exc:
            listener.close()
            msg = f"Unable to listen on port {self.port} (local.port) as {exc.strerror}; choose another port"
            raise OSError(msg) from None
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
                sock, _ = self._listener.accept()
            except OSError:
                return
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            use_kernel_timeouts(sock, self.timeout)
            thread = threading.Thread(target=self._serve, args=(sock,), name="asyncdicom-scp-assoc", daemon=True)
            with self._lock:
                self._threads.add(thread)
            thread.start()

    def _serve(self, sock: socket.socket) -> None:
        with self._lock:
            busy = len(self._active) >= self.max_associations
            self._active.add(sock)
        try:
            _Association(self, sock).run(busy)
        except OutputError as exc:  # the volume is full: the peer is aborted, the run stops
            self.output_error = self.output_error or exc
            with contextlib.suppress(OSError):
                sock.sendall(abort_rq())
        except (OSError, AssociationAborted, ValueError) as exc:
            if not self._stopping.is_set():
                log.debug("storage association ended: %s", exc)
        finally:
            with self._lock:
                self._active.discard(sock)
                self._threads.discard(threading.current_thread())
            with contextlib.suppress(OSError):
                sock.close()


class _Association:
    """One incoming association, served by the thread that accepted it."""

    def __init__(self, server: StorageSCP, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.calling = ""
        self.syntax_of: dict[int, str] = {}
        self.peer_max = 0

    def run(self, busy: bool) -> None:
        kind, pdu = read_pdu(self.sock)
        if kind != 0x01:
            self.sock.sendall(abort_rq())
            return
        try:
            request = parse_associate_rq(pdu)
        except ValueError:
            self.sock.sendall(abort_rq())
            return
        self.calling = request.calling_ae
        if busy:
            self.sock.sendall(associate_rj(2, 3, 2))  # transient, provider (presentation), local limit exceeded
            return
        if self.server.allowed_aets and self.calling not in self.server.allowed_aets:
            log.warning("refused an association from AE title %r: not in local.allowed_aets", self.calling)
            self.sock.sendall(associate_rj(1, 1, 3))  # permanent, service user, calling AE title not recognised
            return
        self._accept(request)
        self._serve()

    def _accept(self, request: AssociateRequest) -> None:
        results = []
        for context_id, _, syntaxes in request.contexts:
            if syntaxes:
                # every abstract and transfer syntax is accepted: the bytes are stored as they come
                results.append((context_id, 0x00, syntaxes[0]))
                self.syntax_of[context_id] = syntaxes[0]
            else:
                results.append((context_id, 0x04, IMPLICIT_VR_LITTLE_ENDIAN))
        self.peer_max = request.max_pdu
        self.sock.sendall(associate_ac(request, results))

    def _serve(self) -> None:
        """Read PDUs until the peer releases or aborts; answer every C-STORE and C-ECHO."""
        buffer = bytearray()
        command: Command | None = None
        store: SpoolWriter | None = None
        try:
            while True:
                kind, pdu = read_pdu(self.sock)
                if kind == 0x05:  # A-RELEASE-RQ
                    self.sock.sendall(release_rp())
                    return
                if kind != 0x04:  # A-ABORT or anything unexpected
                    return
                for context_id, control, fragment in pdvs(pdu):
                    if control & 0x01:
                        buffer += fragment
                        if control & 0x02:
                            command = parse_command(bytes(buffer))
                            buffer.clear()
                            if command.field == 0x0030:  # C-ECHO-RQ
                                self._answer(context_id, command, 0x8030, STATUS_SUCCESS)
                            elif command.field == 0x0001:
                                store = self._begin(command, context_id)
                    elif store is not None and command is not None:
                        store.write(fragment)
                        if control & 0x02:
                            status, then = self._end(command, context_id, store)
                            store = None
                            try:
                                self._answer(context_id, command, 0x8001, status)
                            finally:
                                if then is not None:
                                    then()
        finally:
            if store is not None:
                store.discard()

    def _begin(self, command: Command, context_id: int) -> SpoolWriter:
        syntax = self.syntax_of.get(context_id, "1.2.840.10008.1.2")
        meta = file_meta(command.sop_class, command.sop_instance, syntax, self.calling)
        return SpoolWriter(self.server.spool, meta, syntax)

    def _end(self, command: Command, context_id: int, store: SpoolWriter) -> Reply:
        received = Received(
            file=store,
            sop_class=command.sop_class,
            sop_instance=command.sop_instance,
            transfer_syntax=store.transfer_syntax,
            calling_ae=self.calling,
            move_message_id=command.move_message_id,
        )
        return self.server.on_received(received)

    def _answer(self, context_id: int, command: Command, field: int, status: int) -> None:
        fields = [
            (0x0002, ui(command.sop_class)),
            (0x0100, us(field)),
            (0x0120, us(command.message_id)),
            (0x0800, us(0x0101)),
            (0x0900, us(status)),
        ]
        if command.sop_instance:
            fields.append((0x1000, ui(command.sop_instance)))
        chunk = self.peer_max - 6 if self.peer_max > 6 else 1 << 20
        self.sock.sendall(p_data(context_id, 0x01, pack_command(fields), chunk))
