"""Anonymizing one file: read IN and OUT, run the script, write a new Part 10 file atomically."""

from __future__ import annotations

import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import dcmread, dcmwrite
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRLittleEndian

from asyncdicom.anonymize import dictionary, values
from asyncdicom.anonymize.context import Context, Quarantine, Skip
from asyncdicom.anonymize.engine import anonymize
from asyncdicom.anonymize.lookup import LookupTable
from asyncdicom.anonymize.script import Script

IMPLEMENTATION_CLASS_UID = "1.2.40.0.13.1.1.1"  # what DAT writes (dcm4che-1.4-JP)
IMPLEMENTATION_VERSION = "dcm4che-1.4-JP"


@dataclass(frozen=True, slots=True)
class Outcome:
    """``ok``, ``skip`` or ``quarantine``, and why (never patient data)."""

    status: str
    reason: str = ""
    output: Path | None = None


@dataclass(slots=True)
class Anonymizer:
    script: Script
    lookup: LookupTable = field(default_factory=LookupTable.empty)
    params: dict[str, str] = field(default_factory=dict)
    mode: str = "faithful"

    def file(self, source: Path, target: Path) -> Outcome:
        """Anonymize ``source`` into ``target`` (written only when the outcome is ok)."""
        with warnings.catch_warnings():
            # pydicom's warnings about odd files can quote element values; the outcome says enough
            warnings.simplefilter("ignore")
            return self._file(source, target)

    def _file(self, source: Path, target: Path) -> Outcome:
        try:
            out = dcmread(source, force=True)
            original = _reference_copy(out)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            return Outcome("quarantine", f"unreadable as DICOM ({type(exc).__name__})")
        meta = original.file_meta
        syntax = getattr(meta, "TransferSyntaxUID", None)
        implicit = bool(out.is_implicit_VR) if out.is_implicit_VR is not None else False
        little = bool(out.is_little_endian) if out.is_little_endian is not None else True
        for ds in (original, out):
            if 0x00080005 not in ds:
                values.put(ds, 0x00080005, "CS", b"ISO_IR 100", implicit, little)
        ctx = Context(
            script=self.script,
            lookup=self.lookup,
            root_in=original,
            root_out=out,
            meta=meta,
            encodings=values.encodings_of(original),
            implicit=implicit,
            little=little,
            mode=self.mode,
            params={**self.script.params, **self.params},
        )
        try:
            anonymize(ctx)
        except Skip as exc:
            return Outcome("skip", str(exc))
        except Quarantine as exc:
            return Outcome("quarantine", str(exc))
        except (ValueError, KeyError, IndexError, TypeError, LookupError) as exc:
            return Outcome("quarantine", f"the script failed on this file ({type(exc).__name__})")
        _drop_after_pixels(ctx, out)
        try:
            _write(out, UID(syntax) if syntax else ExplicitVRLittleEndian, target)
        except (OSError, ValueError, TypeError) as exc:
            return Outcome("quarantine", f"unable to write the result ({type(exc).__name__})")
        return Outcome("ok", "", target)


def _drop_after_pixels(ctx: Context, out: Dataset) -> None:
    """§5.9: elements after the top-level Pixel Data are filtered, never evaluated."""
    script = ctx.script
    for tag in [int(t) for t in out.keys() if int(t) > 0x7FE00010]:  # noqa: SIM118 - iterating converts
        private = bool(tag >> 16 & 1)
        rule = ctx.table.get(tag)
        if private and tag & 0xFF00 == 0:
            if script.rpg and not script.keep_safe_private:
                del out[tag]
            continue
        safe = private and script.keep_safe_private and dictionary.is_safe(tag, values.creator_of(out, tag))
        if (
            (script.rpg and private and not safe)
            or (rule is None and script.rue)
            or (rule is not None and rule.startswith("@remove()"))
        ):
            del out[tag]


def _write(ds: Dataset, syntax: UID, target: Path) -> None:
    meta = FileMetaDataset()
    meta.FileMetaInformationVersion = b"\x00\x01"
    meta.MediaStorageSOPClassUID = UID(str(ds.get("SOPClassUID", "")))
    meta.MediaStorageSOPInstanceUID = UID(str(ds.get("SOPInstanceUID", "")))
    meta.TransferSyntaxUID = syntax
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    _prepare(ds)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            if ds.original_encoding[1] is False and syntax.is_little_endian:
                # a raw big endian data set without file meta is written as Explicit VR Little Endian
                dcmwrite(handle, ds, implicit_vr=False, little_endian=True, force_encoding=True)
            else:
                ds.save_as(handle, enforce_file_format=False)
        os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _prepare(ds: Dataset) -> None:
    """As dcm4che writes: no group lengths, no trailing padding, sequences and items of
    undefined length (readers treat the two encodings differently)."""
    for tag in [int(t) for t in ds.keys()]:  # noqa: SIM118 - iterating a Dataset converts its elements
        if tag & 0xFFFF == 0 or tag in (0xFFFAFFFA, 0xFFFCFFFC):
            del ds[tag]
            continue
        elem = values.element(ds, tag)
        if elem is None or values.vr_of(elem, ds) != "SQ":
            continue
        sequence = ds[tag]
        sequence.is_undefined_length = True
        for item in sequence.value:
            item.is_undefined_length_sequence_item = True
            _prepare(item)


def _reference_copy(read: Dataset) -> Dataset:
    """IN for the script: the elements before the top-level Pixel Data, sharing the raw
    elements read once (they are immutable; a sequence is parsed separately in each copy when
    it is first used), with the same encoding and file meta."""
    copy = Dataset()
    copy._dict = {tag: elem for tag, elem in read._dict.items() if tag < 0x7FE00010}
    copy.set_original_encoding(read.is_implicit_VR, read.is_little_endian, read.original_character_set)
    copy.file_meta = read.file_meta if hasattr(read, "file_meta") else FileMetaDataset()
    return copy
