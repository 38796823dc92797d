"""Run a script on a dataset built by the test and read the result back."""

from __future__ import annotations

from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from asyncdicom.anonymize.files import Anonymizer, Outcome
from asyncdicom.anonymize.lookup import LookupTable
from asyncdicom.anonymize.script import parse


def dataset(**attrs: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    for keyword, value in attrs.items():
        setattr(ds, keyword, value)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def rules(*lines: str, params: dict[str, str] | None = None) -> str:
    """An XML script from ``(tag, script)``-style lines already written as <e>/<r>/<k> elements."""
    body = "".join(f' <p t="{k}">{v}</p>\n' for k, v in (params or {}).items())
    return "<script>\n" + body + "".join(f" {line}\n" for line in lines) + "</script>\n"


def e(tag: str, script: str, name: str = "") -> str:
    return f'<e en="T" t="{tag}" n="{name}">{script}</e>'


def run(
    tmp_path: Path,
    ds: Dataset,
    script: str,
    *,
    lookup: dict[str, str] | None = None,
    mode: str = "faithful",
) -> tuple[Outcome, Dataset | None]:
    source = tmp_path / "in.dcm"
    ds.save_as(source, enforce_file_format=True)
    target = tmp_path / "out.dcm"
    target.unlink(missing_ok=True)
    anonymizer = Anonymizer(parse(script, "test.script"), LookupTable(lookup or {}), {}, mode)
    outcome = anonymizer.file(source, target)
    return outcome, (dcmread(target) if outcome.status == "ok" else None)
