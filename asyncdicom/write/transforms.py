"""Post-processing of received instances (pure file-to-file steps, run in a worker process).

Decompression writes Explicit VR Little Endian with pydicom 3's pixel handlers (pylibjpeg's
libjpeg, openjpeg and rle plugins, and GDCM). An instance that cannot be decoded is kept as
received, with a warning: an instance is never lost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian


@dataclass(frozen=True, slots=True)
class Transformed:
    """The file to place next, and a warning if a step could not be applied."""

    path: Path
    warning: str | None = None


def decompress_file(source: Path) -> Transformed:
    """Rewrite ``source`` (a spool file) as Explicit VR Little Endian if its pixel data is
    compressed or its data set deflated; the SOP Instance UID is kept."""
    try:
        syntax = read_file_meta_info(source).TransferSyntaxUID  # the meta alone: cheap for the common case
    except Exception as exc:  # any reader failure: keep the file as it came
        return Transformed(source, f"kept as received: unable to read it as {type(exc).__name__}")
    if not (syntax.is_compressed or syntax.is_deflated):
        return Transformed(source)
    try:
        ds = dcmread(source)
        if syntax.is_compressed:
            ds.decompress(generate_instance_uid=False)  # pydicom 3.0 would otherwise replace the UID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        target = source.with_name(source.stem + ".decompressed.part")
        with target.open("wb") as handle:
            dcmwrite(handle, ds, enforce_file_format=True)
            handle.flush()
            os.fsync(handle.fileno())
    except Exception as exc:  # decoders raise many types; never lose the instance
        source.with_name(source.stem + ".decompressed.part").unlink(missing_ok=True)
        why = " ".join(str(exc).split())[:300]  # one line: it is grouped and shown by reason
        return Transformed(source, f"kept as received ({syntax.name}): unable to decompress as {why}")
    final = source.with_name(source.stem + ".decompressed.dcm")
    os.replace(target, final)
    source.unlink()
    return Transformed(final)
