"""Hostile PACS, end to end (#15): each case is a peer that negotiates as a PACS would and then
does one thing wrong. ``asyncdicom run`` (a real process, as cron runs it) must end with a clear,
recorded failure or rejection: a documented exit code, one JSON summary naming the problem, no
traceback, bounded time and memory, nothing written outside the output root, and no instance
counted that the request did not ask for.

Each case's wall time and peak memory (the process's own, from wait4) are checked against
bounds; ``scripts/hardening_report`` prints them (HOSTILE_PEAKS names a file to collect them in).
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from asyncdicom.net.acse import AssociateRequest, associate_rj
from asyncdicom.net.dimse import pack_command, us
from asyncdicom.net.pdu import p_data
from tests.conftest import write_yaml
from tests.hostile_peers import (
    STUDY,
    Behaviour,
    HostilePeer,
    Request,
    c_store,
    encoded,
    find_done,
    get_done,
    instance,
    pdu_header,
    response,
    storage_context,
    store_command,
    trickle,
)

pytestmark = pytest.mark.network

ROOT = Path(__file__).resolve().parent.parent
WALL_BOUND = 60.0  # seconds a case may take (timeouts in the config are a few seconds)
PEAK_BOUND = 200.0  # MB of peak RSS for the run's own process


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # c-find or c-get
    behaviour: Callable[[], Behaviour]
    exits: tuple[int, ...]  # the documented exit codes this case may end with
    says: str  # what the summary or the recorded failure says (case-insensitive)
    elements: tuple[str, ...] = ()
    structure: str = "StudyInstanceUID"


# --- association phase ------------------------------------------------------------------------------


def _raw(data: bytes, then_close: bool = True) -> Behaviour:
    def raw(sock: socket.socket, pdu: bytes) -> None:
        sock.sendall(data)
        if not then_close:
            time.sleep(30)

    return Behaviour(raw=raw)


def _rejected() -> Behaviour:
    def answer(sock: socket.socket, request: AssociateRequest) -> None:
        sock.sendall(associate_rj(1, 1, 3))  # permanent, by the user: calling AE title not recognised

    return Behaviour(answer=answer)


def _no_context() -> Behaviour:
    """Accepts the association but refuses every presentation context."""

    def answer(sock: socket.socket, request: AssociateRequest) -> dict[int, str]:
        from asyncdicom.net.acse import associate_ac

        sock.sendall(associate_ac(request, [(cid, 3, "1.2.840.10008.1.2") for cid, _, _ in request.contexts]))
        return {}

    return Behaviour(answer=answer)


# --- C-FIND responses -----------------------------------------------------------------------------


def _find(send: Callable[[socket.socket, Request], None]) -> Behaviour:
    return Behaviour(find=lambda sock, request, contexts: send(sock, request))


def _match(**values: object) -> Callable[[socket.socket, Request], None]:
    """One pending match carrying ``values`` (raw bytes for a value are sent as they are)."""

    def send(sock: socket.socket, request: Request) -> None:
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = STUDY
        with warnings.catch_warnings():  # values pydicom would not write, on purpose
            warnings.simplefilter("ignore")
            for keyword, value in values.items():
                setattr(ds, keyword, value)
        if any(isinstance(value, str) and not value.isascii() for value in values.values()):
            ds.SpecificCharacterSet = "ISO_IR 192"
        sock.sendall(response(request, 0x8020, 0xFF00, data_set=True))
        sock.sendall(p_data(request.context_id, 0x00, encoded(ds), 16378))
        find_done(sock, request)

    return send


def _raw_match(data: bytes) -> Callable[[socket.socket, Request], None]:
    def send(sock: socket.socket, request: Request) -> None:
        sock.sendall(response(request, 0x8020, 0xFF00, data_set=True))
        sock.sendall(p_data(request.context_id, 0x00, data, 16378))
        find_done(sock, request)

    return send


def _element(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b" "
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _then(data: bytes) -> Callable[[socket.socket, Request], None]:
    return lambda sock, request: sock.sendall(data)


def _pending_flood(count: int) -> Callable[[socket.socket, Request], None]:
    def send(sock: socket.socket, request: Request) -> None:
        from pydicom.dataset import Dataset

        ds = Dataset()
        ds.QueryRetrieveLevel = "STUDY"
        ds.StudyInstanceUID = STUDY
        one = response(request, 0x8020, 0xFF00, data_set=True) + p_data(request.context_id, 0, encoded(ds), 16378)
        burst = one * 1000
        for _ in range(count // 1000):
            sock.sendall(burst)
        find_done(sock, request)

    return send


def _other_message_id(sock: socket.socket, request: Request) -> None:
    request.message_id += 1
    find_done(sock, request)


def _wrong_group_length(sock: socket.socket, request: Request) -> None:
    command = bytearray(pack_command([(0x0100, us(0x8020)), (0x0120, us(request.message_id)), (0x0900, us(0))]))
    command[8:12] = struct.pack("<L", 4000)  # (0000,0000) says 4000 bytes follow
    sock.sendall(p_data(request.context_id, 0x01, bytes(command), 16378))


def _truncated_command(sock: socket.socket, request: Request) -> None:
    command = pack_command([(0x0100, us(0x8020)), (0x0120, us(request.message_id)), (0x0900, us(0))])
    sock.sendall(p_data(request.context_id, 0x01, command[:-3], 16378))


def _unknown_command(sock: socket.socket, request: Request) -> None:
    command = pack_command([(0x0100, us(0x0FFF)), (0x0120, us(request.message_id)), (0x0900, us(0))])
    sock.sendall(p_data(request.context_id, 0x01, command, 16378))


def _pdv_beyond_pdu(sock: socket.socket, request: Request) -> None:
    """A P-DATA-TF PDU of 10 bytes whose PDV item claims 100."""
    sock.sendall(pdu_header(0x04, 10) + struct.pack(">LBB", 100, request.context_id, 0x03) + bytes(4))


def _unknown_context(sock: socket.socket, request: Request) -> None:
    command = pack_command([(0x0100, us(0x8020)), (0x0120, us(request.message_id)), (0x0900, us(0))])
    sock.sendall(p_data(251, 0x01, command, 16378))


def _status(status: int) -> Callable[[socket.socket, Request], None]:
    return lambda sock, request: sock.sendall(response(request, 0x8020, status))


def _one_byte_a_second(sock: socket.socket, request: Request) -> None:
    data = response(request, 0x8020, 0xFF00, data_set=True)
    trickle(sock, data, 1.0)


# --- C-GET sub-operations -------------------------------------------------------------------------


def _get(send: Callable[[socket.socket, Request, dict[int, str]], None]) -> Behaviour:
    return Behaviour(get=send)


def _stores(
    *datasets: object, completed: int | None = None
) -> Callable[[socket.socket, Request, dict[int, str]], None]:
    def send(sock: socket.socket, request: Request, contexts: dict[int, str]) -> None:
        for ds in datasets:
            c_store(sock, contexts, encoded(ds), str(ds.SOPInstanceUID))  # type: ignore[attr-defined]
        get_done(sock, request, len(datasets) if completed is None else completed)

    return send


def _store_bytes(data: bytes, sop_uid: str) -> Callable[[socket.socket, Request, dict[int, str]], None]:
    def send(sock: socket.socket, request: Request, contexts: dict[int, str]) -> None:
        c_store(sock, contexts, data, sop_uid)
        get_done(sock, request, 1)

    return send


def _declares_then_closes(sock: socket.socket, request: Request, contexts: dict[int, str]) -> None:
    """A C-STORE whose data set declares a 3 GB element, then the connection closes."""
    cid = storage_context(contexts)
    head = encoded(instance())[:200]
    declared = struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, 3_000_000_000)
    sock.sendall(store_command(cid, 7, generate_uid()) + p_data(cid, 0x00, head + declared + bytes(1000), 16378)[:-10])
    sock.shutdown(socket.SHUT_RDWR)


def _pixels_cut_short() -> tuple[bytes, str]:
    """A complete-looking data set whose Pixel Data declares 3 GB and carries 64 KB, and its UID."""
    ds = instance()
    del ds.PixelData
    data = encoded(ds) + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, 3_000_000_000) + bytes(65536)
    return data, str(ds.SOPInstanceUID)


def _get_other_message_id(sock: socket.socket, request: Request, contexts: dict[int, str]) -> None:
    request.message_id += 1
    get_done(sock, request, 0)


def _store_on_unknown_context(sock: socket.socket, request: Request, contexts: dict[int, str]) -> None:
    ds = instance()
    sock.sendall(store_command(253, 7, str(ds.SOPInstanceUID)) + p_data(253, 0x00, encoded(ds), 16378))
    get_done(sock, request, 1)


def _data_before_command(sock: socket.socket, request: Request, contexts: dict[int, str]) -> None:
    cid = storage_context(contexts)
    sock.sendall(p_data(cid, 0x00, encoded(instance()), 16378))
    get_done(sock, request, 1)


def _absurd_counts(sock: socket.socket, request: Request, contexts: dict[int, str]) -> None:
    sock.sendall(response(request, 0x8010, 0xFF00, remaining=65535, completed=0, failed=0, warning=0))
    get_done(sock, request, 65535)


def _store_class_not_proposed(sock: socket.socket, request: Request, contexts: dict[int, str]) -> None:
    ds = instance()
    cid = storage_context(contexts)
    sock.sendall(
        store_command(cid, 7, str(ds.SOPInstanceUID), sop_class="1.2.3.4.5.6") + p_data(cid, 0x00, encoded(ds), 16378)
    )
    get_done(sock, request, 1)


HUGE = 0xFFFFFFF0


def _beyond_the_match_bound(sock: socket.socket, request: Request) -> None:
    """Pending matches of 60 KB values each, past what one request may hold (32 MiB)."""
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = STUDY
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.PatientComments = "x" * 60_000
    one = response(request, 0x8020, 0xFF00, data_set=True) + p_data(request.context_id, 0, encoded(ds), 16378)
    for _ in range(700):
        sock.sendall(one)
    find_done(sock, request)


HUGE = 0xFFFFFFF0
FAILED, FATAL, DONE = (3,), (1,), (0,)

CASES = [
    # the association
    Case("associate-ac-4gb", "c-find", lambda: _raw(pdu_header(0x02, HUGE)), FAILED, "ASSOCIATE-AC PDU of 4294967280"),
    Case("associate-unknown-pdu", "c-find", lambda: _raw(pdu_header(0x09, 4) + bytes(4)), FAILED, "unknown type 0x09"),
    Case(
        "associate-ac-truncated",
        "c-find",
        lambda: _raw(pdu_header(0x02, 200) + bytes(50)),
        FAILED,
        "closed during negotiation",
    ),
    Case("associate-http", "c-find", lambda: _raw(b"HTTP/1.1 400 Bad Request\r\n\r\n"), FAILED, "HTTP"),
    Case("associate-closed", "c-find", lambda: _raw(b""), FAILED, "closed during negotiation"),
    Case("associate-rejected", "c-find", _rejected, FATAL, "rejected it permanently"),
    Case("associate-no-context", "c-find", _no_context, FATAL, "does not accept"),
    # PDUs and command sets
    Case(
        "pdu-over-max",
        "c-find",
        lambda: _find(_then(pdu_header(0x04, (1 << 20) + 1))),
        FAILED,
        "PDU of 1048577 bytes, more than the 1048576",
    ),
    Case("pdu-4gb", "c-find", lambda: _find(_then(pdu_header(0x04, HUGE))), FAILED, "PDU of 4294967280 bytes"),
    Case(
        "pdu-unknown-type", "c-find", lambda: _find(_then(pdu_header(0x0A, 4) + bytes(4))), FAILED, "unknown type 0x0A"
    ),
    Case(
        "pdu-truncated",
        "c-find",
        lambda: _find(_then(pdu_header(0x04, 100) + bytes(20))),
        FAILED,
        "did not answer in time",
    ),
    Case("pdv-beyond-pdu", "c-find", lambda: _find(_pdv_beyond_pdu), FAILED, "does not fit its P-DATA-TF PDU"),
    Case("pdv-unknown-context", "c-find", lambda: _find(_unknown_context), FAILED, "presentation context 251"),
    Case("command-truncated", "c-find", lambda: _find(_truncated_command), FAILED, "a command set"),
    Case("command-group-length", "c-find", lambda: _find(_wrong_group_length), FAILED, "group length (0000,0000)"),
    Case("command-unknown-field", "c-find", lambda: _find(_unknown_command), FAILED, "answered with command 0x0FFF"),
    Case("response-other-message-id", "c-find", lambda: _find(_other_message_id), FAILED, "response to message ID"),
    Case("response-unknown-status", "c-find", lambda: _find(_status(0xFFFF)), FAILED, "failure status 0xFFFF"),
    Case("find-100000-pending", "c-find", lambda: _find(_pending_flood(100_000)), DONE, '"matches": 100000'),
    Case(
        "find-beyond-the-bound",
        "c-find",
        lambda: _find(_beyond_the_match_bound),
        FAILED,
        "MiB of values for one request",
        ("PatientComments",),
    ),
    Case("one-byte-a-second", "c-find", lambda: _find(_one_byte_a_second), FAILED, "did not answer in time"),
    # C-FIND values: kept as text in the library (the CSV neutralises what a spreadsheet or a
    # terminal would act on); nothing becomes a path
    Case(
        "value-dot-dot-slash",
        "c-find",
        lambda: _find(_match(PatientID="../../etc/passwd")),
        DONE,
        '"library_rows": 1',
        ("PatientID",),
    ),
    Case(
        "value-slashes", "c-find", lambda: _find(_match(PatientID="a/b\\c")), DONE, '"library_rows": 1', ("PatientID",)
    ),
    Case(
        "value-nul",
        "c-find",
        lambda: _find(_raw_match(_element(0x0010, 0x0020, b"LO", b"P1\0x"))),
        DONE,
        "control characters",
        ("PatientID",),
    ),
    Case(
        "value-newline",
        "c-find",
        lambda: _find(_raw_match(_element(0x0010, 0x0020, b"LO", b"P1\r\nx"))),
        DONE,
        '"library_rows": 1',
        ("PatientID",),
    ),
    Case(
        "value-64kb",
        "c-find",
        lambda: _find(_match(PatientComments="x" * 70_000)),
        FAILED,
        "70000 bytes, more than the 65536",
        ("PatientComments",),
    ),
    Case(
        "value-bad-charset",
        "c-find",
        lambda: _find(
            _raw_match(
                _element(0x0008, 0x0005, b"CS", b"ISO_IR 192") + _element(0x0010, 0x0010, b"PN", b"\xff\xfe\xc3")
            )
        ),
        DONE,
        "not valid in their character set",
        ("PatientName",),
    ),
    Case(
        "value-bidi-override",
        "c-find",
        lambda: _find(_match(PatientID="abc\u202egpj.exe")),
        DONE,
        "change the text's direction",
        ("PatientID",),
    ),
    # C-GET sub-operations
    Case(
        "get-unasked-instance",
        "c-get",
        lambda: _get(_stores(instance(study=generate_uid()))),
        FAILED,
        "not one the C-GET asked for",
    ),
    Case(
        "get-uid-dot-dot",
        "c-get",
        lambda: _get(_stores(instance(sop_uid="1.2/../../../x"))),
        FAILED,
        "its SOPInstanceUID is not a UID",
    ),
    Case(
        "get-uid-not-a-uid",
        "c-get",
        lambda: _get(_stores(instance(sop_uid="not a uid"))),
        FAILED,
        "its SOPInstanceUID is not a UID",
    ),
    Case("get-3gb-then-closed", "c-get", lambda: _get(_declares_then_closes), FAILED, "aborted or closed"),
    Case(
        "get-pixels-cut-short",
        "c-get",
        lambda: _get(_store_bytes(*_pixels_cut_short())),
        FAILED,
        "truncated data set",
    ),
    Case(
        "get-bidi-in-path",
        "c-get",
        lambda: _get(_stores(instance(PatientID="P\u202e1gpj.exe"))),
        DONE,
        "file name must not",
        structure="PatientID/StudyInstanceUID",
    ),
    Case(
        "get-dot-dot-in-path",
        "c-get",
        lambda: _get(_stores(instance(PatientID="../../../outside"))),
        DONE,
        "file name must not",
        structure="PatientID/StudyInstanceUID",
    ),
    Case("get-other-message-id", "c-get", lambda: _get(_get_other_message_id), FAILED, "response to message ID"),
    Case(
        "get-unknown-context",
        "c-get",
        lambda: _get(_store_on_unknown_context),
        FAILED,
        "presentation context 253, never accepted",
    ),
    Case("get-data-before-command", "c-get", lambda: _get(_data_before_command), FAILED, "no command before it"),
    Case("get-absurd-counts", "c-get", lambda: _get(_absurd_counts), FAILED, "65535 instances sent but 0 arrived"),
    Case(
        "get-class-not-proposed",
        "c-get",
        lambda: _get(_store_class_not_proposed),
        FAILED,
        "C-STORE of SOP class '1.2.3.4.5.6'",
    ),
    Case(
        "get-store-names-another-instance",
        "c-get",
        lambda: _get(_store_bytes(encoded(instance()), generate_uid())),
        FAILED,
        "not the one its C-STORE named",
    ),
]


def _config(case: Case, port: int, folder: Path) -> Path:
    (folder / "batch.csv").write_text(f"StudyInstanceUID\n{STUDY}\n")
    request = {
        "type": case.kind,
        "model": "study",
        "threads": 1,
        "elements_batch_file": "batch.csv",
        "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID", *case.elements],
        "timeout": 4,
        "idle_timeout": 4,
        "connect_timeout": 4,
        "unreachable_timeout": 4,
        "retries": 1,
    }
    output: dict[str, object] = {"directory": "out", "library_file": "out/library.csv"}
    if case.kind == "c-get":
        output["directory_structure"] = case.structure
    document = {
        "pacs": {"hostname": "127.0.0.1", "port": port, "aet": "PEER"},
        "local": {"aet": "ASYNCDICOM", "port": 11112},
        "request": request,
        "output": output,
    }
    return write_yaml(folder / "c.yml", document)


def _run(config: Path) -> tuple[int, str, str, float, float]:
    """Run asyncdicom as cron would: (exit code, stdout, stderr, wall seconds, peak RSS in MB).

    The peak is the process's own high-water mark (VmHWM, sampled every 20 ms until it exits):
    rusage's would include the test runner's memory, copied by the fork before the exec."""
    out_path, err_path = config.parent / "stdout.txt", config.parent / "stderr.txt"
    start = time.monotonic()
    with out_path.open("w") as out_file, err_path.open("w") as err_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "asyncdicom", "run", str(config), "--json", "-q"],
            cwd=config.parent,
            stdout=out_file,
            stderr=err_file,
        )
    peak = 0.0
    while True:
        try:
            peak = max(peak, _high_water_mb(process.pid))
            code = process.wait(timeout=0.02)
            break
        except subprocess.TimeoutExpired:
            if time.monotonic() - start > WALL_BOUND * 2:
                process.kill()
    wall = time.monotonic() - start
    out, err = out_path.read_text(), err_path.read_text()
    out_path.unlink()
    err_path.unlink()
    return code, out, err, wall, peak


def _high_water_mb(pid: int) -> float:
    """The peak resident memory of process ``pid`` since its exec, in MB (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _files(folder: Path) -> set[Path]:
    return {path for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_hostile_pacs_gets_a_clear_recorded_ending(case: Case, tmp_path: Path) -> None:
    folder = tmp_path / "job"
    folder.mkdir()
    outside = tmp_path / "outside"  # where a ../ escaping the tree would land
    with HostilePeer(case.behaviour()) as peer:
        config = _config(case, peer.port, folder)
        code, out, err, wall, peak = _run(config)
    report = os.environ.get("HOSTILE_PEAKS")
    if report:
        with open(report, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"case": case.name, "exit": code, "wall": wall, "peak_mb": peak}) + "\n")
    assert "Traceback" not in out + err, err[-2000:]
    assert code in case.exits, f"exit {code}: {out[-1500:]} {err[-1500:]}"
    summary = json.loads(out)
    assert summary["exit_code"] == code
    status = subprocess.run(
        [sys.executable, "-m", "asyncdicom", "status", str(config), "--json"],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )
    said = (out + err + status.stdout).lower()
    assert case.says.lower() in said, said[-3000:]
    assert wall < WALL_BOUND
    assert peak < PEAK_BOUND
    allowed = {folder / "c.yml", folder / "batch.csv"}
    strays = [path for path in _files(tmp_path) if path not in allowed and folder / "out" not in path.parents]
    assert strays == []
    assert not outside.exists()
    if case.kind == "c-get":
        stored = [path for path in (folder / "out").rglob("*.dcm") if ".asyncdicom" not in path.parts]
        instances = summary.get("instances_new", 0)
        assert len(stored) == instances
        for path in stored:
            assert all(ord(char) >= 32 and char not in "\u202e\u202d\u2066\u2067\u2068" for char in str(path))
