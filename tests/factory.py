"""Synthetic DICOM test data (pydicom only; nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid


@dataclass(frozen=True)
class StudySpec:
    patient_id: str
    patient_name: str
    study_uid: str
    accession: str
    study_date: str
    modality: str
    series: int
    instances: int


def make_instance(spec: StudySpec, series_uid: str, series_number: int, number: int, rows: int = 8) -> Dataset:
    """A small but valid CT image instance."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = CTImageStorage
    ds.PatientName = spec.patient_name
    ds.PatientID = spec.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = spec.study_uid
    ds.StudyDate = spec.study_date
    ds.StudyTime = "101010"
    ds.AccessionNumber = spec.accession
    ds.StudyID = "1"
    ds.StudyDescription = f"{spec.modality} test study"
    ds.ReferringPhysicianName = ""
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"series {series_number}"
    ds.Modality = spec.modality
    ds.InstanceNumber = number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = ds.Columns = rows
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((i * 7) % 256 for i in range(rows * rows * 2))
    return ds


def study_specs(
    patients: int, studies_per_patient: int = 1, series: int = 1, instances: int = 1, prefix: str = "P"
) -> list[StudySpec]:
    """Deterministic patients/studies with fresh UIDs; names include non-ASCII characters."""
    specs = []
    for p in range(patients):
        for s in range(studies_per_patient):
            specs.append(
                StudySpec(
                    patient_id=f"{prefix}{p:05d}",
                    patient_name=f"Tést^Pätient{p:05d}",
                    study_uid=generate_uid(),
                    accession=f"A{p:05d}{s:02d}",
                    study_date=f"20{10 + s:02d}0{1 + p % 9}1{p % 9}",
                    modality=("CT", "MR")[s % 2],
                    series=series,
                    instances=instances,
                )
            )
    return specs


def instances(spec: StudySpec) -> Iterator[Dataset]:
    for r in range(1, spec.series + 1):
        series_uid = generate_uid()
        for i in range(1, spec.instances + 1):
            yield make_instance(spec, series_uid, r, i)


def write_files(specs: list[StudySpec], folder: Path) -> list[Dataset]:
    """Write every instance of ``specs`` under ``folder``; returns the datasets."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in specs:
        for ds in instances(spec):
            ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
            written.append(ds)
    return written


HOSTILE_PATIENT = "../HOSTILE/x"


def write_hostile(folder: Path) -> list[Dataset]:
    """One study whose attribute values try to escape the output tree through paths."""
    spec = StudySpec(
        patient_id=HOSTILE_PATIENT,
        patient_name="Evil^Path",
        study_uid=generate_uid(),
        accession="EVIL",
        study_date="20200101",
        modality="CT",
        series=1,
        instances=3,
    )
    written = []
    for ds in instances(spec):
        ds.StudyDescription = ".."
        ds.SeriesDescription = "a/b\\c:d*"
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
        written.append(ds)
    return written


COMPRESSED_FILES = [
    "SC_rgb_jpeg_dcmtk.dcm",
    "JPGExtended.dcm",
    "SC_rgb_jpeg_gdcm.dcm",
    "MR_small_jp2klossless.dcm",
    "JPEG2000.dcm",
    "MR_small_jpeg_ls_lossless.dcm",
    "JPEGLSNearLossless_08.dcm",
    "MR_small_RLE.dcm",
    "JPEG-lossy.dcm",  # no installed decoder reads it: kept as received, with a warning
]


def write_compressed(folder: Path) -> list[Dataset]:
    """pydicom's bundled compressed files as one study of patient COMPRESSED, each with fresh UIDs."""
    from pydicom import dcmread
    from pydicom.data import get_testdata_file

    folder.mkdir(parents=True, exist_ok=True)
    study = generate_uid()
    written = []
    for number, name in enumerate(COMPRESSED_FILES, start=1):
        ds = dcmread(get_testdata_file(name, download=False))
        ds.PatientID = "COMPRESSED"
        ds.PatientName = "Compressed^Files"
        ds.StudyInstanceUID = study
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.InstanceNumber = number
        path = folder / f"{number:02d}-{name}"
        ds.save_as(path, enforce_file_format=True)
        written.append(ds)
    return written
