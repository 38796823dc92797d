"""C-MOVE and C-GET through the CLI against a real Orthanc: files, attribution, resume, paths."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from tests.cli_helpers import cli_json
from tests.conftest import LoadedOrthanc, write_yaml
from tests.factory import HOSTILE_PATIENT

pytestmark = pytest.mark.orthanc


def retrieve_config(
    orthanc: LoadedOrthanc,
    kind: str,
    rows: list[dict[str, str]],
    level: str,
    *,
    threads: int = 4,
    structure: str = "PatientID/StudyInstanceUID/SeriesInstanceUID",
    **output: Any,
) -> dict[str, Any]:
    columns = [c for c in rows[0] if c != "QueryRetrieveLevel"]
    return {
        "pacs": {"hostname": "127.0.0.1", "port": orthanc.port, "aet": "ORTHANC"},
        "local": {"port": orthanc.scp_port, "aet": "ASYNCDICOM"},
        "request": {
            "type": kind,
            "model": "study",
            "threads": threads,
            "elements_batch_file": "batch.csv",
            "elements": [f"QueryRetrieveLevel={level}", *columns],
        },
        "output": {
            "directory": "out",
            "database_file": "out/retrieved.csv",
            "directory_structure": structure,
            **output,
        },
    }


def write_batch(tmp_path: Path, rows: list[dict[str, str]]) -> None:
    with (tmp_path / "batch.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def stored(tmp_path: Path) -> dict[str, Path]:
    """SOP Instance UID → file, for every file in the output tree (ledger and spool excluded)."""
    out = tmp_path / "out"
    files = [p for p in out.rglob("*.dcm") if ".asyncdicom" not in p.parts]
    result = {str(dcmread(p, stop_before_pixels=True).SOPInstanceUID): p for p in files}
    assert len(result) == len(files), "the same instance was stored twice"
    return result


def run(
    tmp_path: Path, doc: dict[str, Any], rows: list[dict[str, str]], *args: str, exit_code: int = 0
) -> dict[str, Any]:
    write_batch(tmp_path, rows)
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc), *args)
    assert result.exit_code == exit_code, result.stderr
    return summary


def _rows(orthanc: LoadedOrthanc, level: str, patients: int = 3) -> tuple[list[dict[str, str]], set[str]]:
    chosen = [ds for ds in orthanc.instances if ds.PatientID in orthanc.patients[:patients]]
    if level == "STUDY":
        rows = [{"StudyInstanceUID": uid} for uid in dict.fromkeys(str(ds.StudyInstanceUID) for ds in chosen)]
    elif level == "SERIES":
        pairs = dict.fromkeys((str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)) for ds in chosen)
        rows = [{"StudyInstanceUID": a, "SeriesInstanceUID": b} for a, b in pairs]
    else:
        rows = [
            {
                "StudyInstanceUID": str(ds.StudyInstanceUID),
                "SeriesInstanceUID": str(ds.SeriesInstanceUID),
                "SOPInstanceUID": str(ds.SOPInstanceUID),
            }
            for ds in chosen
        ]
    return rows, {str(ds.SOPInstanceUID) for ds in chosen}


@pytest.mark.parametrize("threads", [1, 8])
@pytest.mark.parametrize("level", ["STUDY", "SERIES", "IMAGE"])
@pytest.mark.parametrize("kind", ["c-move", "c-get"])
def test_levels_and_concurrency(tmp_path: Path, orthanc: LoadedOrthanc, kind: str, level: str, threads: int) -> None:
    """Every level retrieves exactly the requested instances, byte-identical, at concurrency 1 and 8."""
    rows, expected = _rows(orthanc, level)
    summary = run(tmp_path, retrieve_config(orthanc, kind, rows, level, threads=threads), rows)
    assert (summary["done"], summary["failed"], summary["partial"]) == (len(rows), 0, 0)
    files = stored(tmp_path)
    assert set(files) == expected
    originals = {str(ds.SOPInstanceUID): ds for ds in orthanc.instances}
    for uid, path in list(files.items())[:5]:
        copy = dcmread(path)
        assert copy.PixelData == originals[uid].PixelData
        assert copy.PatientID == originals[uid].PatientID
        assert path.relative_to(tmp_path / "out").parts[:2] == (copy.PatientID, copy.StudyInstanceUID)
    with (tmp_path / "out" / "retrieved.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(rows)
    assert {r["state"] for r in table} == {"done"}
    assert sum(int(r["received"]) for r in table) == len(expected)
    assert not list((tmp_path / "out" / ".asyncdicom" / "spool").iterdir())


@pytest.mark.parametrize("kind", ["c-move", "c-get"])
def test_overlapping_requests_store_each_instance_once(tmp_path: Path, orthanc: LoadedOrthanc, kind: str) -> None:
    """Study- and series-level requests for the same data in one batch: every request is complete,
    every instance is stored once, the rest are counted as duplicates."""
    series_rows, expected = _rows(orthanc, "SERIES", patients=2)
    study_rows, _ = _rows(orthanc, "STUDY", patients=2)
    rows = [
        {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": r["StudyInstanceUID"], "SeriesInstanceUID": ""}
        for r in study_rows
    ]
    rows += [{"QueryRetrieveLevel": "SERIES", **r} for r in series_rows]
    summary = run(tmp_path, retrieve_config(orthanc, kind, rows, "SERIES", threads=8), rows)
    assert summary["done"] == len(rows)
    files = stored(tmp_path)
    assert set(files) == expected
    assert not [p for p in files.values() if p.stem.endswith("_1")]
    assert summary["instances_new"] == len(expected)
    assert summary["duplicate_instances"] == len(expected)


def test_rerun_skips_and_restart_finds_duplicates(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    """A second run does nothing; --restart retrieves again and recognises every file as already there."""
    rows, expected = _rows(orthanc, "STUDY", patients=2)
    doc = retrieve_config(orthanc, "c-move", rows, "STUDY")
    first = run(tmp_path, doc, rows)
    second = run(tmp_path, doc, rows)
    third = run(tmp_path, doc, rows, "--restart")
    assert (first["instances_new"], second["ran"], third["ran"]) == (len(expected), 0, len(rows))
    assert (third["instances_new"], third["duplicate_instances"]) == (0, len(expected))
    assert set(stored(tmp_path)) == expected


def test_hostile_attribute_values_stay_inside_the_output(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    """Attribute values with ../, separators and reserved characters never leave or break the tree."""
    rows = [{"StudyInstanceUID": str(orthanc.hostile[0].StudyInstanceUID)}]
    doc = retrieve_config(orthanc, "c-get", rows, "STUDY", structure="PatientID/StudyDescription/SeriesDescription")
    summary = run(tmp_path, doc, rows)
    assert summary["done"] == 1
    files = stored(tmp_path)
    assert set(files) == {str(ds.SOPInstanceUID) for ds in orthanc.hostile}
    for path in files.values():
        parts = path.relative_to((tmp_path / "out").resolve()).parts
        assert parts[:3] == ("_HOSTILE_x", "NO_StudyDescription", "a_b_c_d_")
    assert HOSTILE_PATIENT not in str(files)


def test_unknown_move_destination_fails_the_requests(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    """Orthanc answers 0xC000 when our AE title is not a known destination: the requests fail (exit 3)."""
    rows, _ = _rows(orthanc, "STUDY", patients=1)
    doc = retrieve_config(orthanc, "c-move", rows, "STUDY")
    doc["local"]["aet"] = "STRANGER"
    write_batch(tmp_path, rows)
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 3
    assert summary["failed"] == len(rows)
    assert cli_json("status", tmp_path / "c.yml")[1]["failures"][0]["error"] == "failure status 0xC000"


@pytest.mark.parametrize("kind", ["c-move", "c-get"])
@pytest.mark.parametrize("decompress", [False, True])
def test_compressed_syntaxes(tmp_path: Path, orthanc: LoadedOrthanc, kind: str, decompress: bool) -> None:
    """Compressed instances arrive in their stored transfer syntax; with output.decompress they are
    written as Explicit VR Little Endian, except one no decoder reads, kept as received with a warning."""
    rows = [{"StudyInstanceUID": str(orthanc.compressed[0].StudyInstanceUID)}]
    doc = retrieve_config(orthanc, kind, rows, "STUDY", structure="StudyInstanceUID", decompress=decompress)
    summary = run(tmp_path, doc, rows, exit_code=3 if decompress else 0)  # one kept compressed: work left
    assert summary["done"] == 1
    assert summary["outcome"] == ("instances-held-back" if decompress else "complete")
    files = stored(tmp_path)
    originals = {str(ds.SOPInstanceUID): ds for ds in orthanc.compressed}
    assert set(files) == set(originals)
    undecodable = {uid for uid, ds in originals.items() if ds.InstanceNumber == len(originals)}
    for uid, path in files.items():
        syntax = dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID
        original = originals[uid].file_meta.TransferSyntaxUID
        if decompress and uid not in undecodable:
            assert syntax == "1.2.840.10008.1.2.1", (uid, original.name)
        elif not decompress:
            # C-GET learns the study's classes and proposes each with every syntax it may be stored
            # in (JPEG-LS near-lossless too, which the fixed proposal lacks): all arrive as stored
            assert syntax == original, (kind, original.name, syntax.name)
    ledger = tmp_path / "out" / ".asyncdicom" / "c.sqlite3"
    import sqlite3

    with sqlite3.connect(ledger) as db:
        warnings = dict(db.execute("SELECT sop_uid, warning FROM instances WHERE warning IS NOT NULL").fetchall())
    if decompress:
        assert set(warnings) == undecodable
        assert next(iter(warnings.values())).startswith("kept as received (JPEG Extended (Process 2 and 4))")
        assert [(group["kind"], group["count"]) for group in summary["held_back"]] == [("kept compressed", 1)]
    else:
        assert warnings == {}


def test_large_instance_keeps_memory_flat(tmp_path: Path, orthanc: LoadedOrthanc) -> None:
    """A 1 GiB multi-frame instance is retrieved by C-GET and C-MOVE with a peak RSS far below its size."""
    import subprocess
    import sys

    import numpy as np
    from pydicom.uid import generate_uid

    from tests.factory import StudySpec, make_instance

    spec = StudySpec("LARGE", "Large^Instance", generate_uid(), "LARGE", "20240101", "CT", 1, 1)
    ds = make_instance(spec, generate_uid(), 1, 1)
    frames, size = 2048, 512  # 1 GiB of pixel data
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = size
    ds.PixelData = np.zeros((frames, size, size), dtype=np.uint16).tobytes()
    big = tmp_path / "large.dcm"
    ds.save_as(big, enforce_file_format=True)
    del ds
    orthanc.server.upload([big])
    megabytes = big.stat().st_size / 2**20
    big.unlink()
    rows = [{"StudyInstanceUID": spec.study_uid}]
    for kind in ("c-get", "c-move"):
        folder = tmp_path / kind
        folder.mkdir()
        write_batch(folder, rows)
        write_yaml(folder / "c.yml", retrieve_config(orthanc, kind, rows, "STUDY", structure="StudyInstanceUID"))
        stats = folder / "time.txt"
        result = subprocess.run(
            [
                "/usr/bin/time",
                "-o",
                str(stats),
                "-f",
                "%M",
                sys.executable,
                "-m",
                "asyncdicom",
                "run",
                str(folder / "c.yml"),
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr
        peak_mb = int(stats.read_text().split()[-1]) / 1024
        files = [p for p in (folder / "out").rglob("*.dcm") if ".asyncdicom" not in p.parts]
        assert len(files) == 1 and files[0].stat().st_size > 2**30
        assert peak_mb < 150, f"{kind}: peak RSS {peak_mb:.0f} MB for a {megabytes:.0f} MB instance"
