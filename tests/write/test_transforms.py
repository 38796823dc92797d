"""Decompression of every compressed transfer syntax among pydicom's bundled test files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file
from pydicom.uid import ExplicitVRLittleEndian

from asyncdicom.write.transforms import decompress_file

BUNDLED = [
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG Baseline
    "JPGExtended.dcm",  # JPEG Extended (12-bit)
    "SC_rgb_jpeg_gdcm.dcm",  # JPEG Lossless SV1
    "MR_small_jp2klossless.dcm",  # JPEG 2000 Lossless
    "JPEG2000.dcm",  # JPEG 2000
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS Lossless
    "JPEGLSNearLossless_08.dcm",  # JPEG-LS Near-Lossless
    "MR_small_RLE.dcm",  # RLE Lossless
    "image_dfl.dcm",  # Deflated Explicit VR Little Endian
]


def _copy(name: str, folder: Path) -> Path:
    target = folder / "spooled.dcm"
    shutil.copyfile(get_testdata_file(name, download=False), target)
    return target


@pytest.mark.parametrize("name", BUNDLED)
def test_every_bundled_syntax_decompresses(tmp_path: Path, name: str) -> None:
    """Each compressed syntax becomes Explicit VR Little Endian with the same pixels and SOP Instance UID."""
    source = _copy(name, tmp_path)
    original = dcmread(source)
    result = decompress_file(source)
    assert result.warning is None
    out = dcmread(result.path)
    assert out.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert out.SOPInstanceUID == original.SOPInstanceUID
    assert not source.exists()
    assert not list(tmp_path.glob("*.part"))
    if "PixelData" in original:
        assert np.array_equal(out.pixel_array, original.pixel_array)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"])
def test_lossless_syntaxes_give_the_uncompressed_pixels(tmp_path: Path, name: str) -> None:
    """Lossless encodings of MR_small decode to exactly MR_small's pixels."""
    out = dcmread(decompress_file(_copy(name, tmp_path)).path)
    reference = dcmread(get_testdata_file("MR_small.dcm", download=False))
    assert np.array_equal(out.pixel_array, reference.pixel_array)


def test_uncompressed_is_left_alone(tmp_path: Path) -> None:
    """An uncompressed file is placed as received: no rewrite."""
    source = _copy("CT_small.dcm", tmp_path)
    before = source.read_bytes()
    result = decompress_file(source)
    assert (result.path, result.warning) == (source, None)
    assert source.read_bytes() == before


def test_undecodable_instance_is_kept_with_a_warning(tmp_path: Path) -> None:
    """Pixel data no installed decoder can read (pydicom's JPEG-lossy.dcm) is kept exactly as
    received, with a warning naming the syntax."""
    source = _copy("JPEG-lossy.dcm", tmp_path)
    raw = source.read_bytes()
    result = decompress_file(source)
    assert result.path == source
    assert result.warning is not None
    assert result.warning.startswith("kept as received (JPEG Extended (Process 2 and 4)): unable to decompress as")
    assert source.read_bytes() == raw
    assert not list(tmp_path.glob("*.part"))


def test_native_instances_skip_the_decoding_worker() -> None:
    """output.decompress asks a worker process only for what may need it: compressed or deflated
    instances, and those whose transfer syntax is not known."""
    from asyncdicom.write.pipeline import _may_need_decoding

    assert not _may_need_decoding("1.2.840.10008.1.2.1") and not _may_need_decoding("1.2.840.10008.1.2")
    assert not _may_need_decoding("1.2.840.10008.1.2.2")
    assert _may_need_decoding("1.2.840.10008.1.2.4.90") and _may_need_decoding("1.2.840.10008.1.2.5")
    assert _may_need_decoding("1.2.840.10008.1.2.1.99") and _may_need_decoding("") and _may_need_decoding("1.2.3")


def test_decoding_and_anonymizing_in_one_call_writes_what_two_steps_wrote(tmp_path: Path) -> None:
    """The one-hop route (the decoded data set straight into the anonymizer, never written and
    parsed again) gives, byte for byte, the file the two steps gave (decompress to a file, then anonymize it), for every compressed
    syntax the tests hold, and keeps the undecodable one as received with the same warning."""
    from asyncdicom.anonymize.worker import anonymize_file, anonymize_spooled
    from asyncdicom.write.transforms import decompress_and_anonymize, decompress_file
    from tests.factory import write_compressed

    samples = Path(__file__).resolve().parents[1] / "data" / "reference-samples"
    script = str(samples / "sample-dicom-anonymizer.script")
    (tmp_path / "lookup.properties").write_text("ptid/COMPRESSED = 77\n")
    table = str(tmp_path / "lookup.properties")
    written = write_compressed(tmp_path / "in")
    assert written
    for number, source in enumerate(sorted((tmp_path / "in").iterdir())):
        two = tmp_path / f"two-{number}"
        one = tmp_path / f"one-{number}"
        for folder in (two, one):
            folder.mkdir()
            shutil.copy(source, folder / "spool.dcm")
        step = decompress_file(two / "spool.dcm")
        status, reason = anonymize_file(script, table, "faithful", str(step.path), str(two / "out.dcm"))
        got = decompress_and_anonymize(  # as the pipeline calls it: into a scratch name of its own
            anonymize_spooled, script, table, "faithful", str(one / "spool.dcm"), str(one / "out.dcm")
        )
        assert got == (status, reason, step.warning), source.name
        assert status == "ok" and (one / "out.dcm").read_bytes() == (two / "out.dcm").read_bytes(), source.name
        assert sorted(p.name for p in one.iterdir()) == ["out.dcm", "spool.dcm"]  # no temporary file of its own
        assert (one / "spool.dcm").exists()  # the original stays until the anonymized copy is placed


def _header_unless_named_bad(path: str) -> object:
    """A stand-in for the pipeline's header read: an error for targets of sources named bad…"""
    return ValueError("unreadable") if Path(path).name.startswith("bad") else Path(path).name


def test_a_batch_removes_the_sources_of_what_it_wrote_and_could_read_back(tmp_path: Path) -> None:
    """Both batch forms (as received, decoded first) remove a source once its target is written
    and its header read back; a source whose target could not be read back, or that the script
    refused, stays in the spool."""
    from asyncdicom.anonymize.worker import anonymize_spooled, anonymize_spooled_many
    from asyncdicom.write.transforms import decompress_and_anonymize_many
    from tests.factory import StudySpec, write_files

    samples = Path(__file__).resolve().parents[1] / "data" / "reference-samples"
    script = str(samples / "sample-dicom-anonymizer.script")
    (tmp_path / "lookup.properties").write_text("ptid/P1 = 77\n")
    table = str(tmp_path / "lookup.properties")
    for form in ("plain", "decoding"):
        spool = tmp_path / form
        write_files([StudySpec("P1", "A^B", "1.2.3", "ACC1", "20200101", "CT", 1, 3)], spool)
        sources = sorted(spool.iterdir())
        sources[1] = sources[1].rename(spool / f"bad-{sources[1].name}")
        sources[2].write_bytes(b"not DICOM")  # refused (quarantined by the pipeline): stays
        pairs = [(str(path), str(path.with_suffix(".anon.part"))) for path in sources]
        if form == "plain":
            results = anonymize_spooled_many(script, table, "faithful", pairs, _header_unless_named_bad, True)
            statuses = [status for status, _, _ in results]
        else:
            decoded = decompress_and_anonymize_many(
                anonymize_spooled, script, table, "faithful", pairs, _header_unless_named_bad, True
            )
            statuses = [status for status, _, _, _ in decoded]
        assert statuses == ["ok", "ok", "quarantine"], form
        assert [path.exists() for path in sources] == [False, True, True], form
