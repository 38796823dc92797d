"""Hand-coded DIMSE/PDU pieces against pynetdicom's own encoders and decoders."""

from __future__ import annotations

from pydicom.uid import UID
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import decode
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu_primitives import A_ASSOCIATE, MaximumLengthNotification
from pynetdicom.presentation import PresentationContext

from asyncdicom.net.dimse import pack_command, parse_associate_ac, parse_command, ui, us


def test_associate_ac_parsed_like_pynetdicom() -> None:
    """Context results, transfer syntaxes and the maximum PDU length match pynetdicom's encoding."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID("1.2.840.10008.3.1.1.1")
    primitive.calling_ae_title = "A"
    primitive.called_ae_title = "B"
    primitive.result = 0
    primitive.result_source = 1
    contexts = []
    for context_id, result, syntax in (
        (1, 0, "1.2.840.10008.1.2.1"),
        (3, 3, "1.2.840.10008.1.2"),
        (5, 0, "1.2.840.10008.1.2.4.90"),
    ):
        context = PresentationContext()
        context.context_id = context_id
        context.result = result
        context.transfer_syntax = [UID(syntax)]
        contexts.append(context)
    primitive.presentation_context_definition_results_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    results, max_pdu = parse_associate_ac(pdu.encode())
    assert results == [(1, 0, "1.2.840.10008.1.2.1"), (3, 3, "1.2.840.10008.1.2"), (5, 0, "1.2.840.10008.1.2.4.90")]
    assert max_pdu == 16384


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
