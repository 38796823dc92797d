"""Hand-coded DIMSE/PDU pieces against pynetdicom's own encoders and decoders."""

from __future__ import annotations

import socket
import threading
import time

import pytest
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode

from asyncdicom.net.dimse import pack_command, parse_command, ui, us, use_kernel_timeouts
from asyncdicom.net.pdu import PduReader, PduType


def test_packed_command_decodes_with_pydicom() -> None:
    """A hand-packed C-STORE-RSP command set is valid Implicit VR Little Endian group 0000."""
    raw = pack_command(
        [
            (0x0002, ui("1.2.840.10008.5.1.4.1.1.2")),
            (0x0100, us(0x8001)),
            (0x0120, us(7)),
            (0x0800, us(0x0101)),
            (0x0900, us(0xB000)),
            (0x1000, ui("1.2.3")),
        ]
    )
    ds = decode(__import__("io").BytesIO(raw), True, True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert (ds.CommandField, ds.MessageIDBeingRespondedTo, ds.Status) == (0x8001, 7, 0xB000)
    assert ds.AffectedSOPInstanceUID == "1.2.3"
    parsed = parse_command(raw)
    assert (parsed.field, parsed.status, parsed.has_dataset, parsed.sop_instance) == (0x8001, 0xB000, False, "1.2.3")


def test_store_request_fields_are_parsed() -> None:
    """Move originator and message IDs of a C-STORE-RQ (as pynetdicom would send it) are read."""
    from pynetdicom.dimse_messages import C_STORE_RQ

    primitive = C_STORE()
    primitive.MessageID = 9
    primitive.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    primitive.AffectedSOPInstanceUID = "1.2.3.4"
    primitive.Priority = 0
    primitive.MoveOriginatorApplicationEntityTitle = "ASYNCDICOM"
    primitive.MoveOriginatorMessageID = 4242
    primitive.DataSet = __import__("io").BytesIO(b"")
    message = C_STORE_RQ()
    message.primitive_to_message(primitive)
    raw = message.encode_msg(1, 0).__next__().presentation_data_value_list[0][1][1:]
    parsed = parse_command(raw)
    assert (parsed.field, parsed.message_id, parsed.move_message_id) == (0x0001, 9, 4242)
    assert (parsed.sop_class, parsed.sop_instance) == ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4")


def test_kernel_timeouts_read_whole_pdus_and_give_up_on_silence() -> None:
    """A blocking socket with SO_RCVTIMEO reads a PDU sent in pieces, and raises OSError (as a
    Python timeout would) when the peer stays silent."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        use_kernel_timeouts(ours, 0.3)
        assert ours.gettimeout() is None  # blocking: the kernel keeps the time
        pdu = b"\x04\x00" + (70000).to_bytes(4, "big") + bytes(range(256)) * 273 + bytes(70000 - 256 * 273)

        def send_in_pieces() -> None:
            for start in range(0, len(pdu), 4096):
                theirs.sendall(pdu[start : start + 4096])

        sender = threading.Thread(target=send_in_pieces)
        sender.start()
        reader = PduReader(ours, "a test peer")
        kind, body = reader.read()
        sender.join()
        assert (kind, bytes(body)) == (PduType.P_DATA_TF, pdu)
        start = time.monotonic()
        with pytest.raises(OSError):
            reader.read()
        assert 0.2 < time.monotonic() - start < 5


def test_a_command_set_must_be_as_long_as_its_group_length_says() -> None:
    """(0000,0000) counts the bytes after it: a lie either way is the peer's ProtocolError; the
    Message ID Being Responded To is read."""
    from asyncdicom.errors import ProtocolError

    command = pack_command([(0x0100, us(0x8020)), (0x0120, us(7)), (0x0900, us(0))])
    parsed = parse_command(command)
    assert (parsed.field, parsed.responded_to, parsed.status) == (0x8020, 7, 0)
    for declared in (len(command) - 12 - 2, len(command) - 12 + 2, 4000):
        lying = command[:8] + declared.to_bytes(4, "little") + command[12:]
        with pytest.raises(ProtocolError, match=f"group length \\(0000,0000\\) says {declared} bytes"):
            parse_command(lying)
