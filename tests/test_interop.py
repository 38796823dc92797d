"""The interop matrix (issue #12): pydicom's bundled test files loaded into every peer the tests
can start, every study retrieved by C-GET and by C-MOVE, each stored data set compared element by
element with the peer's copy (:mod:`tests.interop_compare` says which differences are allowed).
docs/interop.md prints the matrix; each case checks its own row."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sqlite3
import subprocess
import urllib.error
import urllib.request
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from asyncdicom.net.qrscp import QueryRetrieveSCP
from asyncdicom.net.storage import COMMON_IMAGES, OTHER_CLASSES
from tests.cli_helpers import cli_json
from tests.conftest import write_yaml
from tests.interop_compare import file_differences
from tests.interop_data import Holding, holdings
from tests.pacs_servers import Dcmqrscp, Orthanc, dcmtk, free_port

pytestmark = pytest.mark.orthanc

DOCS = Path(__file__).resolve().parents[1] / "docs" / "interop.md"
UNCOMPRESSED = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2")


@dataclass
class Peer:
    name: str  # as the docs' matrix names it
    aet: str
    port: int
    held: list[Holding]
    copies: dict[str, Path]  # SOP Instance UID → the peer's own copy of the file
    sop_classes: tuple[str, ...] = ()  # request.sop_classes a C-GET from it needs
    converts: bool = False  # sends uncompressed data sets in the syntax it negotiated, not as stored


@dataclass
class Peers:
    scp_port: int
    by_name: dict[str, Peer]


def _orthanc_copies(server: Orthanc, folder: Path) -> dict[str, Path]:
    """Every instance Orthanc holds, downloaded as it stores it."""
    base = f"http://127.0.0.1:{server.http_port}"
    with urllib.request.urlopen(f"{base}/instances", timeout=30) as response:
        ids = json.loads(response.read())
    copies: dict[str, Path] = {}
    folder.mkdir(parents=True, exist_ok=True)
    for number, orthanc_id in enumerate(ids):
        target = folder / f"{number}.dcm"
        with urllib.request.urlopen(f"{base}/instances/{orthanc_id}/file", timeout=30) as response:
            target.write_bytes(response.read())
        copies[str(dcmread(target, stop_before_pixels=True).SOPInstanceUID)] = target
    return copies


@pytest.fixture(scope="module")
def peers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Peers]:
    folder = tmp_path_factory.mktemp("interop")
    held = holdings(folder / "files")
    scp_port = free_port()
    back = {"ASYNCDICOM": ("127.0.0.1", scp_port)}
    orthanc = Orthanc(
        folder / "orthanc", modalities=back, extra={"StorageAccessOnFind": "Always", "DefaultEncoding": "Utf8"}
    ).start()
    dcmqrscp = Dcmqrscp(folder / "dcmqrscp", peers=back)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        datasets = [dcmread(h.path) for h in held]
    qrscp = QueryRetrieveSCP(datasets, ae_title="PEER", destinations=back)
    try:
        in_orthanc = []
        for holding in held:
            try:
                orthanc.upload([holding.path])
            except urllib.error.HTTPError:  # Orthanc refuses the file
                continue
            in_orthanc.append(holding)
        # dcmqrscp registers no decoder and proposes one compressed syntax per C-MOVE: it holds
        # only what it can send (docs/interop.md)
        in_dcmqrscp = [h for h in held if h.syntax in UNCOMPRESSED]
        dcmqrscp.storage.mkdir(parents=True, exist_ok=True)
        dcmqrscp.register([h.path for h in in_dcmqrscp])
        dcmqrscp.start()
        qrscp.start()
        unusual = tuple(sorted({h.sop_class for h in in_dcmqrscp} - set(COMMON_IMAGES + OTHER_CLASSES)))
        yield Peers(
            scp_port,
            {
                "Orthanc": Peer(
                    "Orthanc", "ORTHANC", orthanc.dicom_port, in_orthanc, _orthanc_copies(orthanc, folder / "o")
                ),
                "dcmqrscp": Peer(
                    "dcmqrscp",
                    dcmqrscp.aet,
                    dcmqrscp.port,
                    in_dcmqrscp,
                    {h.sop_uid: dcmqrscp.storage / h.path.name for h in in_dcmqrscp},
                    unusual,
                    converts=True,
                ),
                "pynetdicom Q/R SCP": Peer(
                    "pynetdicom Q/R SCP", "PEER", qrscp.port, held, {h.sop_uid: h.path for h in held}
                ),
            },
        )
    finally:
        qrscp.stop()
        dcmqrscp.stop()
        orthanc.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _docs_rows() -> dict[tuple[str, str], list[str]]:
    text = DOCS.read_text(encoding="utf-8")
    section = text[text.index("## The matrix") :]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) >= 5 and re.fullmatch(r"C-(GET|MOVE)", cells[1]):
            rows[(cells[0], cells[1])] = cells
    return rows


@pytest.mark.parametrize("operation", ["C-GET", "C-MOVE"])
@pytest.mark.parametrize("name", ["Orthanc", "dcmqrscp", "pynetdicom Q/R SCP"])
def test_every_study_comes_whole_and_equal(tmp_path: Path, peers: Peers, name: str, operation: str) -> None:
    peer = peers.by_name[name]
    studies = sorted({h.study_uid for h in peer.held})
    (tmp_path / "batch.csv").write_text("StudyInstanceUID\n" + "\n".join(studies) + "\n")
    request = {
        "type": operation.lower(),
        "threads": 2,
        "elements_batch_file": "batch.csv",
        "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
    }
    if operation == "C-GET" and peer.sop_classes:
        request["sop_classes"] = list(peer.sop_classes)
    doc = {
        "pacs": {"hostname": "127.0.0.1", "port": peer.port, "aet": peer.aet},
        "local": {"port": peers.scp_port, "aet": "ASYNCDICOM"},
        "request": request,
        "output": {"directory": "out", "directory_structure": "StudyInstanceUID/SeriesInstanceUID"},
    }
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 0, result.stderr[-3000:]
    assert (summary["done"], summary["instances_new"]) == (len(studies), len(peer.held))
    files = [p for p in (tmp_path / "out").rglob("*.dcm") if ".asyncdicom" not in p.parts]
    differences = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the bundled files hold invalid values on purpose
        for path in files:
            uid = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
            if found := file_differences(path, peer.copies[uid], peer.converts):
                differences[path.name] = found
    assert len(files) == len(peer.held)
    assert differences == {}
    row = _docs_rows()[(name, operation)]
    assert (int(row[2]), int(row[3])) == (len(peer.held), len(studies)), f"docs/interop.md row {row}"


# C-FIND of the odd ones (issue #12): each (model, level) with keys whose values are in other
# character sets, multi-valued, empty or sequences, into the library CSV and the matches table,
# compared with what Orthanc returns to dcmtk's findscu for the same query.
UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
FIND_KEYS = {
    "PATIENT": ["PatientName", "PatientBirthDate", "OtherPatientNames", "OtherPatientIDsSequence"],
    "STUDY": ["PatientName", "StudyDescription", "ModalitiesInStudy", "ReferringPhysicianName", "AccessionNumber"],
    "SERIES": ["StudyInstanceUID", "Modality", "SeriesDescription", "RequestAttributesSequence"],
    "IMAGE": [
        "SeriesInstanceUID",
        "ImageType",
        "PixelSpacing",
        "DerivationCodeSequence",
        "SourceImageSequence[0].ReferencedSOPInstanceUID",
    ],
}
FIND_CASES = [("patient", level) for level in UNIQUE] + [("study", level) for level in ("STUDY", "SERIES", "IMAGE")]


def _findscu(peer: Peer, model: str, level: str, keys: list[str], folder: Path) -> list[Dataset]:
    """The responses Orthanc gives dcmtk's findscu for the same query, as data sets."""
    folder.mkdir()
    command = [dcmtk("findscu"), "-P" if model == "patient" else "-S", "-aec", peer.aet, "-X", "-od", str(folder)]
    for key in ["QueryRetrieveLevel=" + level, UNIQUE[level], *keys]:
        command += ["-k", key]
    subprocess.run([*command, "127.0.0.1", str(peer.port)], check=True, capture_output=True, timeout=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [dcmread(path, force=True) for path in sorted(folder.glob("rsp*.dcm"))]


def _expected(ds: Dataset, column: str) -> object:
    """What findscu's response holds for ``column``, as a library value (JSON parsed, for a
    sequence): values as DICOM writes them, multiple values joined by a backslash."""
    if "." in column:  # Seq[0].Keyword
        outer, keyword = column.split("[0].")
        items = ds[outer].value if outer in ds else None
        ds = items[0] if items else Dataset()
        column = keyword
    elem = ds[column] if column in ds else None  # noqa: SIM401 (the element, not its value)
    if elem is None or elem.value is None:
        return "" if elem is None or elem.VR != "SQ" else []
    if elem.VR == "SQ":
        return [item.to_json_dict() for item in elem.value] if elem.value else ""
    if elem.VM > 1:
        return "\\".join(str(value) for value in elem.value)
    return str(elem.value)


def _text(value: object) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _library(value: str, column: str, level: str) -> object:
    sequence = column in FIND_KEYS[level] and "." not in column and column.endswith("Sequence")
    return json.loads(value) if sequence and value else value


@pytest.mark.parametrize(("model", "level"), FIND_CASES)
@pytest.mark.parametrize("name", ["Orthanc", "pynetdicom Q/R SCP"])
def test_cfind_keeps_every_value_findscu_gets(tmp_path: Path, peers: Peers, name: str, model: str, level: str) -> None:
    peer = peers.by_name[name]
    keys = FIND_KEYS[level]
    columns = [UNIQUE[level], *keys]
    doc = {
        "pacs": {"hostname": "127.0.0.1", "port": peer.port, "aet": peer.aet},
        "request": {"type": "c-find", "model": model, "elements": [f"QueryRetrieveLevel={level}", *columns]},
        "output": {"directory": "out", "library_file": "library.csv"},
    }
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 0, result.stderr[-3000:]
    responses = _findscu(peer, model, level, keys, tmp_path / "findscu")
    with (tmp_path / "library.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    with sqlite3.connect(tmp_path / "out" / ".asyncdicom" / "c.sqlite3") as db:
        matches = [json.loads(attrs) for (attrs,) in db.execute("SELECT attrs FROM matches")]
    ours = Counter(tuple(_text(_library(row[c], c, level)) for c in columns) for row in rows)
    theirs = Counter(tuple(_text(_expected(ds, c)) for c in columns) for ds in responses)
    assert len(responses) > 1 and summary["matches"] == len(rows) == len(matches) == len(responses)
    assert {"lost or changed": ours - theirs, "missing": theirs - ours} == {"lost or changed": {}, "missing": {}}
    top = [c for c in columns if "." not in c]  # the matches table holds what the CSV shows
    assert Counter(tuple(m.get(c, "") for c in top) for m in matches) == Counter(tuple(r[c] for c in top) for r in rows)


def test_dcmqrscp_cannot_send_what_it_stores_compressed(tmp_path: Path) -> None:
    """Why dcmqrscp holds only uncompressed files in the matrix: one stored RLE file fails its
    sub-operation (dcmqrscp cannot decode it and proposes no RLE context), and the request ends
    failed, not done."""
    rle = next(h for h in holdings(tmp_path / "files") if h.name == "MR_small_RLE.dcm")
    scp_port = free_port()
    server = Dcmqrscp(tmp_path / "dcmqrscp", peers={"ASYNCDICOM": ("127.0.0.1", scp_port)})
    server.storage.mkdir(parents=True)
    server.register([rle.path])
    server.start()
    try:
        (tmp_path / "batch.csv").write_text(f"StudyInstanceUID\n{rle.study_uid}\n")
        doc = {
            "pacs": {"hostname": "127.0.0.1", "port": server.port, "aet": server.aet},
            "local": {"port": scp_port, "aet": "ASYNCDICOM"},
            "request": {
                "type": "c-move",
                "retries": 0,
                "elements_batch_file": "batch.csv",
                "elements": ["QueryRetrieveLevel=STUDY", "StudyInstanceUID"],
            },
            "output": {"directory": "out"},
        }
        result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    finally:
        server.stop()
    assert result.exit_code == 3 and (summary["done"], summary["instances_new"]) == (0, 0)
    log = (tmp_path / "dcmqrscp" / "dcmqrscp.log").read_text(errors="replace")
    assert "unable to convert DICOM file" in log and "RLE Lossless" in log
