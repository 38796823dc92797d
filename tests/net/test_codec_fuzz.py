"""The message layer under random and mutated bytes: only the project's own errors come out.

Whatever a peer sends, the PDU reader, the DIMSE reader, the command parser and the negotiation
parsers either return or raise ProtocolError / AssociationAborted (the connection closed); never
struct.error, IndexError, ValueError or a MemoryError from a length taken on trust.
"""

from __future__ import annotations

import contextlib
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from asyncdicom.errors import AssociationAborted, ProtocolError
from asyncdicom.net.acse import associate_ac, associate_rq, parse_associate_ac, parse_associate_rq
from asyncdicom.net.dimse import MessageReader, pack_command, parse_command, ui, us
from asyncdicom.net.pdu import MAX_PDU, NEGOTIATION, PduReader, p_data

CT = "1.2.840.10008.5.1.4.1.1.2"
VALID_STREAM = (
    p_data(1, 0x01, pack_command([(0x0002, ui(CT)), (0x0100, us(0x0001)), (0x0110, us(5)), (0x0800, us(0))]), 64)
    + p_data(1, 0x00, bytes(range(256)) * 4, 300)
    + b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
)
VALID_RQ = associate_rq("CALLED", "CALLING", [(CT, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])] * 3, [CT])


def _feed(data: bytes) -> PduReader:
    ours, theirs = socket.socketpair()
    theirs.sendall(data)
    theirs.close()
    ours.settimeout(2)
    return PduReader(ours, "a fuzzing peer")


def _drain_messages(data: bytes) -> int:
    reader = _feed(data)
    events = 0
    try:
        for _ in MessageReader(reader).events():
            events += 1
            if events > 10_000:
                break
    except (ProtocolError, AssociationAborted):
        pass
    finally:
        reader._sock.close()
    return events


def _mutate(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    mutated = bytearray(data)
    for position, value in flips:
        mutated[position % len(mutated)] = value
    return bytes(mutated[: max(1, cut % (len(mutated) + 1))])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_random_bytes_after_association(data: bytes) -> None:
    _drain_messages(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8), st.integers(0, 10_000))
def test_mutated_messages(flips: list[tuple[int, int]], cut: int) -> None:
    """A valid C-STORE, its data set and a release, with bytes changed and the stream cut anywhere."""
    _drain_messages(_mutate(VALID_STREAM, flips, cut))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8), st.integers(0, 10_000))
def test_mutated_negotiation(flips: list[tuple[int, int]], cut: int) -> None:
    """A mutated A-ASSOCIATE-RQ (and the AC answering it) through the reader and both parsers."""
    for valid in (VALID_RQ, associate_ac(parse_associate_rq(VALID_RQ), [(1, 0, "1.2.840.10008.1.2.1")])):
        reader = _feed(_mutate(valid, flips, cut))
        try:
            _, pdu = reader.read(NEGOTIATION)
            parse_associate_rq(pdu) if pdu[0] == 1 else parse_associate_ac(pdu)
        except (ProtocolError, AssociationAborted):
            pass
        finally:
            reader._sock.close()


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_command_parser(raw: bytes) -> None:
    with contextlib.suppress(ProtocolError):
        parse_command(raw)


def test_lengths_are_checked_before_anything_is_read() -> None:
    """A header claiming more than the limit fails with only its six bytes sent."""
    for header in (b"\x04\x00" + (MAX_PDU + 1).to_bytes(4, "big"), b"\x01\x00\xff\xff\xff\xff"):
        reader = _feed(header)
        with reader._sock, pytest.raises(ProtocolError, match="more than the"):
            reader.read()


def test_the_valid_stream_is_read_whole() -> None:
    """The fuzzers' seed: one command set (in 64-byte fragments), four data fragments, a release."""
    assert _drain_messages(VALID_STREAM) == 6
