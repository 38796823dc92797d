"""``asyncdicom demo``: a built-in PACS with generated studies, and a C-FIND batch against it."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import anyio
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from asyncdicom.config import load_config
from asyncdicom.net.qrscp import QueryRetrieveSCP
from asyncdicom.plan import build_plan
from asyncdicom.runner import RunOptions, RunReport, backend_for, run

MODALITIES = ("CT", "MR", "CR", "US")


def demo_datasets(patients: int = 6, studies: int = 2, series: int = 2, instances: int = 3) -> list[Dataset]:
    """Synthetic, obviously fake patients with studies, series and instances (no pixel data)."""
    out: list[Dataset] = []
    for p in range(1, patients + 1):
        for s in range(1, studies + 1):
            study_uid = generate_uid()
            modality = MODALITIES[(p + s) % len(MODALITIES)]
            for r in range(1, series + 1):
                series_uid = generate_uid()
                for i in range(1, instances + 1):
                    ds = Dataset()
                    ds.SpecificCharacterSet = "ISO_IR 100"
                    ds.PatientName = f"DEMO^PATIENT{p:02d}"
                    ds.PatientID = f"DEMO{p:04d}"
                    ds.PatientSex = "O"
                    ds.PatientBirthDate = f"19{50 + p:02d}0101"
                    ds.StudyInstanceUID = study_uid
                    ds.StudyDate = f"2024{s:02d}{p:02d}"
                    ds.StudyTime = "120000"
                    ds.AccessionNumber = f"ACC{p:03d}{s:02d}"
                    ds.StudyDescription = f"{modality} demo study {s}"
                    ds.StudyID = str(s)
                    ds.SeriesInstanceUID = series_uid
                    ds.SeriesNumber = r
                    ds.Modality = modality
                    ds.SeriesDescription = f"demo series {r}"
                    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
                    ds.SOPInstanceUID = generate_uid()
                    ds.InstanceNumber = i
                    _pixels(ds, p * 10 + i)
                    out.append(ds)
    return out


def _pixels(ds: Dataset, seed: int) -> None:
    """A small 8-bit gradient image and file meta, so retrieved files are real image files."""
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 32
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes((x + y + seed) % 256 for y in range(32) for x in range(32))


DEMO_CONFIG = """\
# Written by 'asyncdicom demo': a C-FIND batch against the built-in demo PACS.
pacs:
  hostname: 127.0.0.1
  port: {port}
  aet: DEMOPACS
local:
  aet: ASYNCDICOM
request:
  type: c-find
  model: study
  threads: 4
  elements_batch_file: demo-batch.csv
  elements:
    - QueryRetrieveLevel=STUDY
    - PatientID
    - StudyInstanceUID
    - StudyDate
    - StudyDescription
    - AccessionNumber
    - ModalitiesInStudy
    - NumberOfStudyRelatedInstances
output:
  directory: .
  library_file: library.csv
"""


def write_demo_files(directory: Path, port: int, datasets: list[Dataset]) -> Path:
    """Write the demo config and batch CSV; returns the config path."""
    directory.mkdir(parents=True, exist_ok=True)
    config_path = directory / "demo.yaml"
    config_path.write_text(DEMO_CONFIG.format(port=port), encoding="utf-8")
    patient_ids = sorted({str(ds.PatientID) for ds in datasets})
    (directory / "demo-batch.csv").write_text("PatientID\n" + "\n".join(patient_ids) + "\n", encoding="utf-8")
    return config_path


DEMO_RETRIEVE = """\
# Written by 'asyncdicom demo': a C-GET of every study the C-FIND found (no listening port needed).
pacs:
  hostname: 127.0.0.1
  port: {port}
  aet: DEMOPACS
local:
  aet: ASYNCDICOM
request:
  type: c-get
  model: study
  threads: 4
  elements_batch_file: demo-studies.csv
  elements:
    - QueryRetrieveLevel=STUDY
    - StudyInstanceUID
output:
  directory: images
  database_file: images/retrieved.csv
  directory_structure: PatientID/StudyInstanceUID/SeriesInstanceUID
  filename: SOPInstanceUID
"""


def write_retrieve_files(directory: Path, port: int) -> Path:
    """The C-GET config and a batch of the Study Instance UIDs in the C-FIND library."""
    with (directory / "library.csv").open(newline="", encoding="utf-8") as handle:
        studies = [row["StudyInstanceUID"] for row in csv.DictReader(handle)]
    (directory / "demo-studies.csv").write_text("StudyInstanceUID\n" + "\n".join(studies) + "\n", encoding="utf-8")
    config_path = directory / "demo-retrieve.yaml"
    config_path.write_text(DEMO_RETRIEVE.format(port=port), encoding="utf-8")
    return config_path


def tree_preview(root: Path, limit: int = 6) -> list[str]:
    """A few lines showing the retrieved file tree."""
    files = sorted(p for p in root.rglob("*.dcm") if ".asyncdicom" not in p.parts)
    lines = [str(p.relative_to(root.parent)) for p in files[:limit]]
    if len(files) > limit:
        lines.append(f"… and {len(files) - limit} more files")
    return lines


async def run_demo(directory: Path, progress: Callable[[str], None] | None = None) -> tuple[RunReport, RunReport]:
    """Start the demo PACS, then run a C-FIND batch and a C-GET of what it found."""
    say = progress or (lambda text: None)
    datasets = demo_datasets()
    with QueryRetrieveSCP(datasets) as pacs:
        config_path = await anyio.to_thread.run_sync(write_demo_files, directory, pacs.port, datasets)
        say(f"demo PACS 'DEMOPACS' listening on 127.0.0.1:{pacs.port} with {len(datasets)} instances")
        say("step 1: C-FIND, one query per patient in demo-batch.csv")
        config = load_config(config_path)
        found = await run(config, build_plan(config), backend_for(config), RunOptions(restart=True))
        say("step 2: C-GET of every study in the library")
        retrieve_path = await anyio.to_thread.run_sync(write_retrieve_files, directory, pacs.port)
        config = load_config(retrieve_path)
        retrieved = await run(config, build_plan(config), backend_for(config), RunOptions(restart=True))
    return found, retrieved
