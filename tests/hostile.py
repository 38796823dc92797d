"""A scripted hostile PACS on a raw socket: it negotiates properly, then sends whatever a test
tells it to (oversized PDU headers, endless data sets, garbage), for faults that neither Orthanc
nor pynetdicom can produce."""

from __future__ import annotations

import contextlib
import resource
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Self

from asyncdicom.net.acse import associate_ac, parse_associate_rq
from asyncdicom.net.dimse import pack_command, ui, us
from asyncdicom.net.pdu import HEADER, p_data

Script = Callable[[socket.socket, dict[int, str]], None]
"""What the peer does once associated: gets the socket and context ID → abstract syntax."""


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    header = b""
    while len(header) < 6:
        chunk = sock.recv(6 - len(header))
        if not chunk:
            raise ConnectionError("closed")
        header += chunk
    kind, length = HEADER.unpack(header)
    body = b""
    while len(body) < length:
        chunk = sock.recv(length - len(body))
        if not chunk:
            raise ConnectionError("closed")
        body += chunk
    return kind, header + body


class Listener:
    """A loopback port whose every connection :meth:`_serve` handles in a daemon thread, from
    ``with`` until its end."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.connections = 0

    def __enter__(self) -> Self:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        raise NotImplementedError


class HostilePacs(Listener):
    """Accepts associations (every context, Explicit VR Little Endian when offered), then runs
    ``script``; records the PDU types it received afterwards (an A-ABORT is 7)."""

    def __init__(self, script: Script) -> None:
        super().__init__()
        self.script = script
        self.received_after: list[int] = []
        self.associations = 0

    def _serve(self, sock: socket.socket) -> None:
        with sock, contextlib.suppress(OSError, ConnectionError):
            _, pdu = read_pdu(sock)
            request = parse_associate_rq(pdu)
            results, contexts = [], {}
            for context_id, abstract, syntaxes in request.contexts:
                syntax = "1.2.840.10008.1.2.1" if "1.2.840.10008.1.2.1" in syntaxes else syntaxes[0]
                results.append((context_id, 0, syntax))
                contexts[context_id] = abstract
            sock.sendall(associate_ac(request, results))
            self.associations += 1
            self.script(sock, contexts)
            sock.settimeout(5)
            while True:
                kind, _ = read_pdu(sock)
                self.received_after.append(kind)


def first_request(sock: socket.socket) -> tuple[int, int]:
    """Read PDUs until a command set's last fragment: (context ID, message ID)."""
    while True:
        kind, pdu = read_pdu(sock)
        if kind == 0x04 and pdu[11] & 0x03 == 0x03:
            message_id = 0
            offset = 12
            while offset + 8 <= len(pdu):
                _, element, length = struct.unpack_from("<HHL", pdu, offset)
                if element == 0x0110:
                    message_id = struct.unpack_from("<H", pdu, offset + 8)[0]
                offset += 8 + length
            return pdu[10], message_id
        if kind == 0x04 and pdu[11] & 0x01:
            continue


def pending_find_response(context_id: int, message_id: int, sop_class: str) -> bytes:
    """A C-FIND-RSP Pending command set announcing a data set (which the caller then sends)."""
    command = pack_command(
        [
            (0x0002, ui(sop_class)),
            (0x0100, us(0x8020)),
            (0x0120, us(message_id)),
            (0x0800, us(0x0001)),
            (0x0900, us(0xFF00)),
        ]
    )
    return p_data(context_id, 0x01, command, 1 << 20)


def peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
