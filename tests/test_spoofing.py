"""The attack #15 names: while our C-MOVE runs, a sender using the PACS's AE title stores
unrequested instances, guessing the Move Originator Message IDs of the moves in flight (even
the right one). Every one is refused, none is stored or counted, and the request completes with
exactly what it asked for."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from asyncdicom.net.dimse import pack_command, ui, us
from asyncdicom.net.pdu import p_data
from tests.cli_helpers import cli_json
from tests.conftest import write_yaml
from tests.factory import StudySpec, make_instance
from tests.hostile import HostilePacs, first_request, read_pdu
from tests.pacs_servers import free_port

pytestmark = pytest.mark.network

STUDY_MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
WANTED = StudySpec("P1", "A^B", generate_uid(), "ACC1", "20200101", "CT", 1, 3)
FOREIGN = StudySpec("P2", "C^D", generate_uid(), "ACC2", "20200101", "CT", 1, 40)


def _store(port: int, datasets: list[object], message_ids: list[int]) -> list[int]:
    """C-STOREs to our SCP as the PACS (AE title PEER), each with a Move Originator Message ID."""
    ae = AE(ae_title="PEER")
    ae.add_requested_context(CTImageStorage)
    assoc = ae.associate("127.0.0.1", port, ae_title="ASYNCDICOM")
    assert assoc.is_established
    statuses = []
    for ds, message_id in zip(datasets, message_ids, strict=True):
        status = assoc.send_c_store(ds, originator_aet="PEER", originator_id=message_id)
        statuses.append(int(status.Status) if status else -1)
    assoc.release()
    return statuses


def test_spoofed_instances_are_refused_and_never_counted(tmp_path: Path) -> None:
    scp_port = free_port()
    series = generate_uid()
    wanted = [make_instance(WANTED, series, 1, n) for n in range(1, 4)]
    foreign_series = generate_uid()
    foreign = [make_instance(FOREIGN, foreign_series, 1, n) for n in range(1, 41)]
    spoofed: list[int] = []
    done = threading.Event()

    def pacs(sock: socket.socket, contexts: dict[int, str]) -> None:
        context_id, message_id = first_request(sock)
        read_pdu(sock)  # the identifier
        # the attacker guesses 1..39 and, in the worst case, the move's real ID
        spoofed.extend(_store(scp_port, foreign, [*range(1, 40), message_id]))
        _store(scp_port, wanted, [message_id] * 3)  # what the move asked for
        final = pack_command(
            [(0x0002, ui(STUDY_MOVE)), (0x0100, us(0x8021)), (0x0120, us(message_id)), (0x0800, us(0x0101)),
             (0x0900, us(0x0000)), (0x1020, us(0)), (0x1021, us(3)), (0x1022, us(0)), (0x1023, us(0))]
        )  # fmt: skip
        sock.sendall(p_data(context_id, 0x01, final, 16378))
        done.set()

    with HostilePacs(pacs) as server:
        (tmp_path / "batch.csv").write_text(f"StudyInstanceUID\n{WANTED.study_uid}\n")
        document = {
            "pacs": {"hostname": "127.0.0.1", "port": server.port, "aet": "PEER"},
            "local": {"aet": "ASYNCDICOM", "port": scp_port},
            "request": {
                "type": "c-move",
                "model": "study",
                "threads": 1,
                "elements_batch_file": "batch.csv",
                "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
            },
            "output": {"directory": "out", "directory_structure": "StudyInstanceUID"},
        }
        result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", document))
    assert done.is_set()
    assert result.exit_code == 0, result.stderr
    assert spoofed == [0xC000] * 40  # every guess refused, the right ID included
    assert (summary["done"], summary["instances_new"]) == (1, 3)
    stored = {path.stem for path in (tmp_path / "out").rglob("*.dcm") if ".asyncdicom" not in path.parts}
    assert stored == {str(ds.SOPInstanceUID) for ds in wanted}
    assert not (tmp_path / "out" / FOREIGN.study_uid).exists()
    assert "instance refused" in result.stderr or "refused an instance" in result.stderr
