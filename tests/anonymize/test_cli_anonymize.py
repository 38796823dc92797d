"""`asyncdicom anonymize`: files and folder trees, exit codes, summaries, bad scripts."""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from tests.cli_helpers import cli
from tests.pacs_servers import dcmtk

VECTORS = Path(__file__).resolve().parents[1] / "data" / "ctp-vectors"
SAMPLE = VECTORS / "scripts" / "sample.script"
LOOKUP = VECTORS / "scripts" / "sample_lookup.properties"


def test_folder_tree_is_mirrored_and_quarantines_are_summarised(tmp_path: Path) -> None:
    source = tmp_path / "in"
    (source / "a" / "b").mkdir(parents=True)
    shutil.copy(VECTORS / "inputs" / "syn_ct_phi.dcm", source / "a" / "ct.dcm")
    shutil.copy(VECTORS / "inputs" / "syn_mr_latin1.dcm", source / "a" / "b" / "mr.dcm")
    shutil.copy(VECTORS / "inputs" / "MR_small.dcm", source / "mr_small.dcm")  # PatientID 4MR1: not in the table
    held = tmp_path / "held"
    result = cli(
        "anonymize",
        "--script",
        str(SAMPLE),
        "--lookup-table",
        str(LOOKUP),
        "--quarantine-directory",
        str(held),
        str(source),
        str(tmp_path / "out"),
    )
    assert result.exit_code == 3, result.output
    out = tmp_path / "out"
    written = {p.relative_to(out).parent.as_posix(): p for p in out.rglob("*.dcm")}
    assert sorted(written) == ["a", "a/b"]  # the folders mirrored
    for path in written.values():  # each file named after its anonymized SOP Instance UID, not the input's name
        assert path.name == f"{dcmread(path).SOPInstanceUID}.dcm"
    assert dcmread(written["a"]).SOPInstanceUID != dcmread(source / "a" / "ct.dcm").SOPInstanceUID
    assert "anonymized 2, skipped 0, quarantined 1" in result.output
    assert "quarantine: @lookup() failed" in result.output
    assert "4MR1" not in result.output  # no patient data in the summary
    assert [p.name for p in held.rglob("*.dcm")] == ["mr_small.dcm"]  # the original, kept apart
    assert (held / "mr_small.dcm").read_bytes() == (source / "mr_small.dcm").read_bytes()
    ct = dcmread(written["a"])
    assert ct.PatientID != dcmread(source / "a" / "ct.dcm").PatientID
    kept = cli("anonymize", "--script", str(SAMPLE), "--lookup-table", str(LOOKUP), "--keep-names", "--workers", "1",
               str(source), str(tmp_path / "kept"))  # fmt: skip
    assert kept.exit_code == 3
    names = sorted(p.relative_to(tmp_path / "kept").as_posix() for p in (tmp_path / "kept").rglob("*.dcm"))
    assert names == ["a/b/mr.dcm", "a/ct.dcm"]


def test_single_file_ok_exits_zero(tmp_path: Path) -> None:
    target = tmp_path / "o.dcm"
    result = cli(
        "anonymize",
        "--script",
        str(VECTORS / "scripts" / "f02_hash.script"),
        "--param",
        "UIDROOT=1.2.3",
        str(VECTORS / "inputs" / "syn_ct_phi.dcm"),
        str(target),
    )
    assert result.exit_code == 0, result.output
    assert dcmread(target).SOPInstanceUID.startswith("1.2.3.")


def test_bad_script_and_table_are_usage_errors_with_lines(tmp_path: Path) -> None:
    bad = tmp_path / "bad.script"
    bad.write_text("<script>\n <e en='T' t='00100010'>@remove()</e\n</script>\n")
    result = cli("anonymize", "--script", str(bad), str(VECTORS / "inputs" / "MR_small.dcm"), str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "bad.script:3 as its XML is malformed" in result.output.replace("\n", " ")
    table = tmp_path / "t.properties"
    table.write_text("ptid/1 = \\u00zz\n")
    result = cli("anonymize", "--script", str(SAMPLE), "--lookup-table", str(table), str(bad), str(tmp_path / "o"))
    assert result.exit_code == 2 and "t.properties:1" in result.output
    result = cli("anonymize", "--script", str(SAMPLE), "--mode", "strict", str(bad), str(tmp_path / "o"))
    assert result.exit_code == 2 and "--mode" in result.output


def test_files_dat_drops_silently_are_handled(tmp_path: Path) -> None:
    """DAT writes nothing and says nothing for these (spec §15.5): here they are anonymized."""
    for name in ("nested_priv_SQ.dcm", "meta_missing_tsyntax.dcm", "ExplVR_BigEndNoMeta.dcm"):
        source = Path(get_testdata_file(name, download=False))
        target = tmp_path / name
        result = cli(
            "anonymize", "--script", str(VECTORS / "scripts" / "dicom-anonymizer.script"), str(source), str(target)
        )
        assert result.exit_code == 0, (name, result.output)
        written = dcmread(target)
        assert written.file_meta.TransferSyntaxUID
        if name.endswith("NoMeta.dcm"):  # a raw data set becomes Part 10 Explicit VR Little Endian
            assert written.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
            assert written.SOPInstanceUID != dcmread(source, force=True).SOPInstanceUID


def test_written_files_have_a_conformant_file_meta(tmp_path: Path) -> None:
    """As DAT's: a group length that counts the meta group, dcm4che's implementation names, the
    input's transfer syntax (deflated input is written deflated); dcmtk reads them without a
    warning."""
    script = VECTORS / "scripts" / "dicom-anonymizer.script"
    for name in ("CT_small.dcm", "image_dfl.dcm", "MR_small_RLE.dcm"):
        source = Path(get_testdata_file(name, download=False))
        target = tmp_path / name
        result = cli("anonymize", "--script", str(script), str(source), str(target))
        assert result.exit_code == 0, (name, result.output)
        raw = target.read_bytes()
        assert raw[128:132] == b"DICM" and raw[132:140] == b"\x02\x00\x00\x00UL\x04\x00"
        end = 144 + struct.unpack("<L", raw[140:144])[0]
        offset, groups = 144, set()
        while offset < end:  # the group length counts exactly the meta elements after it
            group, vr = struct.unpack("<H", raw[offset : offset + 2])[0], raw[offset + 4 : offset + 6]
            groups.add(group)
            if vr == b"OB":
                offset += 12 + struct.unpack("<L", raw[offset + 8 : offset + 12])[0]
            else:
                offset += 8 + struct.unpack("<H", raw[offset + 6 : offset + 8])[0]
        assert offset == end and groups == {2}
        written = dcmread(target)
        original = dcmread(source)
        assert written.file_meta.TransferSyntaxUID == original.file_meta.TransferSyntaxUID
        assert written.file_meta.ImplementationClassUID == "1.2.40.0.13.1.1.1"
        assert written.file_meta.MediaStorageSOPInstanceUID == written.SOPInstanceUID != original.SOPInstanceUID
        assert written.Rows == original.Rows and written.PixelData == original.PixelData
        dump = subprocess.run([dcmtk("dcmdump"), "-q", str(target)], capture_output=True, text=True, check=False)
        assert dump.returncode == 0 and "W:" not in dump.stdout + dump.stderr, dump.stderr


def test_real_process_exit_codes_and_summary(tmp_path: Path) -> None:
    """The console entry point skips the interpreter's teardown after ``anonymize``: the exit
    code and the summary must still come through."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    command = [sys.executable, "-m", "asyncdicom", "anonymize", "--script", str(SAMPLE), "--lookup-table", str(LOOKUP)]

    def anonymize(name: str, target: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*command, str(VECTORS / "inputs" / name), str(target)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )

    ok = anonymize("syn_ct_phi.dcm", tmp_path / "ok.dcm")
    assert ok.returncode == 0, ok.stderr
    assert "anonymized 1, skipped 0, quarantined 0" in ok.stdout + ok.stderr
    assert dcmread(tmp_path / "ok.dcm").PatientID != dcmread(VECTORS / "inputs" / "syn_ct_phi.dcm").PatientID
    held = anonymize("MR_small.dcm", tmp_path / "no.dcm")
    assert held.returncode == 3, held.stderr
    assert "quarantined 1" in held.stdout + held.stderr
    assert not (tmp_path / "no.dcm").exists()


def test_pydicom_loads_without_pixel_libraries_for_the_command() -> None:
    """The command imports pydicom with its pixel libraries hidden (start-up time); they are
    importable again afterwards, and Java number formatting (which uses numpy) still works."""
    probe = (
        "import sys\n"
        "from asyncdicom.anonymize.startup import without_pixel_libraries\n"
        "with without_pixel_libraries():\n"
        "    import pydicom\n"
        "    from asyncdicom.anonymize import batch\n"
        "print(sorted(n for n in ('numpy', 'gdcm', 'PIL', 'pylibjpeg') if n in sys.modules))\n"
        "from asyncdicom.anonymize.java import float_to_string\n"
        "print(float_to_string(0.1), 'numpy' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["[]", "0.1 True"]


def test_truncated_files_are_quarantined_with_the_element_they_end_in(tmp_path: Path) -> None:
    """DAT writes nothing for these; an anonymized copy would be as incomplete as its input."""
    script = VECTORS / "scripts" / "dicom-anonymizer.script"
    for name, where in (
        ("MR_truncated.dcm", "(7FE0,0010) PixelData"),
        ("rtplan_truncated.dcm", "(300A,00B0) BeamSequence"),
        ("no_meta.dcm", "(0820,0500)"),  # a stray first byte: read as one huge element
    ):
        source = Path(get_testdata_file(name, download=False))
        result = cli("anonymize", "--script", str(script), str(source), str(tmp_path / name))
        assert result.exit_code == 3, (name, result.output)
        assert f"the file ends inside {where}" in result.output and "truncated" in result.output
        assert not (tmp_path / name).exists()


def test_standard_elements_encoded_as_un_keep_their_vr(tmp_path: Path) -> None:
    """DAT keeps the VR a file gave (pydicom would turn a known UN into its dictionary VR); the
    file meta takes the UIDs' text (DAT writes its hex rendering of the UN bytes there, which
    readers cannot use: asyncdicom deliberately differs)."""
    source = Path(get_testdata_file("rtdose_rle_1frame.dcm", download=False))
    target = tmp_path / "o.dcm"
    result = cli(
        "anonymize", "--script", str(VECTORS / "scripts" / "f08_text_functions.script"), str(source), str(target)
    )
    assert result.exit_code == 0, result.output
    written = dcmread(target)
    assert written.get_item(0x00080016).VR == "UN" and written.get_item(0x00080012).VR == "UN"
    assert written.file_meta.MediaStorageSOPClassUID == "1.2.840.10008.5.1.4.1.1.481.2"
    assert written.file_meta.MediaStorageSOPInstanceUID == dcmread(source).SOPInstanceUID


def test_folder_progress_reports_files_bytes_and_held_back(tmp_path: Path) -> None:
    """What the folder command's progress display shows: files done of all, bytes read (for MB/s)
    and files held back so far."""
    from asyncdicom.anonymize.batch import Job, run

    source = tmp_path / "in"
    source.mkdir()
    for name in ("syn_ct_phi.dcm", "syn_mr_latin1.dcm", "MR_small.dcm"):  # MR_small: not in the table
        shutil.copy(VECTORS / "inputs" / name, source / name)
    calls: list[tuple[int, int, int, int]] = []
    summary = run(Job(SAMPLE, LOOKUP, "faithful"), source, tmp_path / "out", lambda *call: calls.append(call), 1)
    total = sum(path.stat().st_size for path in source.iterdir())
    assert calls[-1] == (3, 3, total, 1)
    assert [call[0] for call in calls] == [1, 2, 3]
    assert summary.quarantined == 1


@pytest.mark.parametrize(
    ("module", "decoders"),
    [("asyncdicom.cli", False), ("asyncdicom.anonymize.lean", False), ("asyncdicom.write.transforms", True)],
)
def test_which_processes_load_the_pixel_libraries(module: str, decoders: bool) -> None:
    """The command line's process never decodes and loads pydicom without numpy, GDCM or
    pylibjpeg; so does a worker process that only anonymizes (it imports ``lean``); a worker
    that decompresses (it imports ``transforms``) has pydicom's decoders."""
    probe = (
        f"import sys, {module}\n"
        "print(sorted(n for n in ('numpy', 'gdcm', 'pylibjpeg') if n in sys.modules))\n"
        "from pydicom.pixels.decoders import JPEG2000LosslessDecoder\n"
        "print(JPEG2000LosslessDecoder.is_available)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    loaded, available = result.stdout.splitlines()
    assert (loaded == "[]") is not decoders
    assert available == str(decoders)
