"""Hand-coded negotiation PDUs against pynetdicom's own encoders and decoders."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydicom.uid import UID
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ, A_RELEASE_RP, A_RELEASE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)
from pynetdicom.presentation import PresentationContext, build_context

from asyncdicom.errors import NetworkError
from asyncdicom.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from asyncdicom.net.acse import (
    AssociateRequest,
    associate_ac,
    associate_rj,
    associate_rq,
    parse_associate_ac,
    parse_associate_rj,
    parse_associate_rq,
)
from asyncdicom.net.pdu import MAX_PDU, abort_rq, release_rp, release_rq

SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.4.90"]


def _primitive(called: str, calling: str) -> A_ASSOCIATE:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = UID("1.2.840.10008.3.1.1.1")
    primitive.calling_ae_title = calling
    primitive.called_ae_title = called
    return primitive


def test_associate_rq_parsed_like_pynetdicom() -> None:
    """AE titles, every proposed context with its transfer syntaxes, and the maximum PDU length."""
    primitive = _primitive("ASYNCDICOM", "ORTHANC")
    contexts = []
    for number in range(120):
        context = build_context(f"1.2.840.10008.5.1.4.1.1.{number + 1}", SYNTAXES[: 1 + number % 3])
        context.context_id = 2 * number + 1
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    primitive.user_information = [max_length]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    request = parse_associate_rq(pdu.encode())
    assert (request.called_ae, request.calling_ae, request.max_pdu) == ("ASYNCDICOM", "ORTHANC", 16384)
    assert request.contexts == [
        (2 * n + 1, f"1.2.840.10008.5.1.4.1.1.{n + 1}", SYNTAXES[: 1 + n % 3]) for n in range(120)
    ]


def test_associate_ac_decodes_with_pynetdicom() -> None:
    """Our A-ASSOCIATE-AC carries the AE titles, results, syntaxes and user information."""
    request = AssociateRequest("ASYNCDICOM", "ORTHANC", [], 0)
    raw = associate_ac(request, [(1, 0, SYNTAXES[0]), (3, 4, SYNTAXES[1]), (5, 0, SYNTAXES[2])])
    pdu = A_ASSOCIATE_AC()
    pdu.decode(raw)
    answer = pdu.to_primitive()
    assert (answer.called_ae_title, answer.calling_ae_title) == ("ASYNCDICOM", "ORTHANC")
    assert answer.application_context_name == "1.2.840.10008.3.1.1.1"
    got = [
        (c.context_id, c.result, str(c.transfer_syntax[0])) for c in answer.presentation_context_definition_results_list
    ]
    assert got == [(1, 0, SYNTAXES[0]), (3, 4, SYNTAXES[1]), (5, 0, SYNTAXES[2])]
    assert answer.maximum_length_received == MAX_PDU  # a real limit, enforced on what we receive
    assert answer.implementation_class_uid == IMPLEMENTATION_CLASS_UID
    assert len(raw) == len(pdu.encode())


def test_associate_ac_parsed_like_pynetdicom() -> None:
    """Context results, transfer syntaxes and the maximum PDU length match pynetdicom's encoding."""
    primitive = _primitive("B", "A")
    primitive.result = 0
    primitive.result_source = 1
    contexts = []
    for context_id, result, syntax in ((1, 0, SYNTAXES[0]), (3, 3, SYNTAXES[1]), (5, 0, SYNTAXES[2])):
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
    assert results == [(1, 0, SYNTAXES[0]), (3, 3, SYNTAXES[1]), (5, 0, SYNTAXES[2])]
    assert max_pdu == 16384


def test_associate_rj_decodes_with_pynetdicom() -> None:
    pdu = A_ASSOCIATE_RJ()
    pdu.decode(associate_rj(1, 1, 3))
    assert (pdu.result, pdu.source, pdu.reason_diagnostic) == (1, 1, 3)
    assert parse_associate_rj(associate_rj(2, 3, 2)) == (2, 3, 2)


def _pynetdicom_user_information(*roles: str) -> list[object]:
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = MAX_PDU
    class_uid = ImplementationClassUIDNotification()
    class_uid.implementation_class_uid = IMPLEMENTATION_CLASS_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = IMPLEMENTATION_VERSION_NAME
    selections = []
    for uid in roles:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = UID(uid)
        role.scu_role, role.scp_role = False, True
        selections.append(role)
    return [max_length, class_uid, *selections, version]


def test_associate_ac_is_byte_identical_to_pynetdicoms() -> None:
    primitive = _primitive("B", "A")
    primitive.user_information = _pynetdicom_user_information()
    primitive.result = 0
    primitive.result_source = 1
    primitive.presentation_context_definition_results_list = []
    pdu = A_ASSOCIATE_AC()
    pdu.from_primitive(primitive)
    assert associate_ac(AssociateRequest("B", "A", [], 0), []) == pdu.encode()


def test_associate_rq_is_byte_identical_to_pynetdicoms() -> None:
    """Contexts 1, 3, 5…, SCP role selection for the storage classes, our user information."""
    proposals = [("1.2.840.10008.5.1.4.1.2.2.3", SYNTAXES[:2]), ("1.2.840.10008.5.1.4.1.1.2", SYNTAXES)]
    raw = associate_rq("ORTHANC", "ASYNCDICOM", proposals, ["1.2.840.10008.5.1.4.1.1.2"])
    primitive = _primitive("ORTHANC", "ASYNCDICOM")
    contexts = []
    for index, (abstract, syntaxes) in enumerate(proposals):
        context = build_context(abstract, syntaxes)
        context.context_id = 2 * index + 1
        contexts.append(context)
    primitive.presentation_context_definition_list = contexts
    primitive.user_information = _pynetdicom_user_information("1.2.840.10008.5.1.4.1.1.2")
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    assert raw == pdu.encode()
    assert parse_associate_rq(raw).contexts == [(1, proposals[0][0], SYNTAXES[:2]), (3, proposals[1][0], SYNTAXES)]


def test_more_than_128_contexts_are_refused() -> None:
    with pytest.raises(NetworkError, match="Unable to propose 129 presentation contexts"):
        associate_rq("B", "A", [("1.2.3", SYNTAXES)] * 129, [])


def test_release_and_abort_decode_with_pynetdicom() -> None:
    A_RELEASE_RQ().decode(release_rq())
    A_RELEASE_RP().decode(release_rp())
    abort = A_ABORT_RQ()
    abort.decode(abort_rq())
    assert (abort.source, abort.reason_diagnostic) == (0, 0)
    assert [raw[0] for raw in (release_rq(), release_rp(), abort_rq())] == [0x05, 0x06, 0x07]


@given(st.binary(max_size=400))
def test_garbage_after_the_fixed_part_never_crashes(tail: bytes) -> None:
    """Whatever follows the fixed fields, the parsers return; items that overrun are cut."""
    raw = b"\x01\x00" + (68 + len(tail)).to_bytes(4, "big") + b"\x00\x01\x00\x00" + b"A" * 32 + bytes(32) + tail
    request = parse_associate_rq(raw)
    assert request.calling_ae == "A" * 16
    parse_associate_ac(raw)
