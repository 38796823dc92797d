"""The PDU reader receives ahead: several small PDUs cost one receive; a large body is received
straight into its own buffer; the bytes come out unchanged whatever the sender's chunking."""

from __future__ import annotations

import socket
import threading

from asyncdicom.net.pdu import READ_AHEAD, PduReader, PduType, p_data


class CountingSocket(socket.socket):
    """A socket that counts its receives."""

    receives = 0

    def recv_into(self, buffer: object, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        self.receives += 1
        return super().recv_into(buffer, nbytes, flags)  # type: ignore[arg-type]


def _pair() -> tuple[CountingSocket, socket.socket]:
    ours, theirs = socket.socketpair()
    counting = CountingSocket(fileno=ours.detach())
    counting.settimeout(5)
    return counting, theirs


def test_small_pdus_sent_together_cost_one_receive() -> None:
    ours, theirs = _pair()
    messages = [p_data(1, 0x03, bytes([n]) * 200, 1000) for n in range(100)]  # 100 PDUs of 212 bytes
    theirs.sendall(b"".join(messages))
    reader = PduReader(ours, "a test peer")
    got = [reader.read(frozenset({PduType.P_DATA_TF})) for _ in messages]
    assert [bytes(pdu) for _, pdu in got] == messages
    ours.close()
    theirs.close()
    assert ours.receives == 1  # without reading ahead: 200 (a header and a body each)


def test_a_large_body_and_odd_chunks_come_out_whole() -> None:
    ours, theirs = _pair()
    big = p_data(1, 0x02, bytes(range(256)) * 1024, 1 << 20)  # one PDU of 256 KiB + 12 bytes
    small = p_data(1, 0x03, b"x" * 10, 100)
    stream = small + big + small + big + small
    assert len(big) > 2 * READ_AHEAD

    def send() -> None:
        for start in range(0, len(stream), 7777):  # chunks that cut headers and bodies anywhere
            theirs.sendall(stream[start : start + 7777])
        theirs.close()

    sender = threading.Thread(target=send)
    sender.start()
    reader = PduReader(ours, "a test peer")
    got = [bytes(reader.read()[1]) for _ in range(5)]
    sender.join()
    ours.close()
    assert got == [small, big, small, big, small]
