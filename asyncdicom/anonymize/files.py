"""Anonymizing one file: read IN and OUT, run the script, write a new Part 10 file atomically."""

from __future__ import annotations

import os
import tempfile
import warnings
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.filebase import DicomBytesIO, DicomFileLike
from pydicom.multival import MultiValue
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from asyncdicom.anonymize import charset, dictionary, values
from asyncdicom.anonymize.charset import Charset, CharsetError
from asyncdicom.anonymize.context import Context, Quarantine, Skip
from asyncdicom.anonymize.decode import read_plain
from asyncdicom.anonymize.encode import write_top_level
from asyncdicom.anonymize.engine import anonymize, describe
from asyncdicom.anonymize.lookup import LookupTable
from asyncdicom.anonymize.script import Script
from asyncdicom.filemeta import file_start

IMPLEMENTATION_CLASS_UID = "1.2.40.0.13.1.1.1"  # what DAT writes (dcm4che-1.4-JP)
IMPLEMENTATION_VERSION = "dcm4che-1.4-JP"


@dataclass(frozen=True, slots=True)
class Outcome:
    """``ok``, ``skip`` or ``quarantine``, and why (never patient data)."""

    status: str
    reason: str = ""
    output: Path | None = None
    sop_instance_uid: str = ""  # of the anonymized data set (a name for the file that reveals nothing)


@dataclass(slots=True)
class Anonymizer:
    script: Script
    lookup: LookupTable = field(default_factory=LookupTable.empty)
    params: dict[str, str] = field(default_factory=dict)
    mode: str = "faithful"

    def file(self, source: Path | BinaryIO | Dataset, target: Path, *, scratch: bool = False) -> Outcome:
        """Anonymize ``source`` (a file, its bytes, or the data set read from them, which is
        changed) into ``target`` (written only when the
        outcome is ok). The target appears whole, through a temporary file renamed over it;
        with ``scratch`` the caller owns the name (a temporary one it renames or discards
        itself) and it is written directly."""
        with warnings.catch_warnings():
            # pydicom's warnings about odd files can quote element values; the outcome says enough
            warnings.simplefilter("ignore")
            return self._file(source, target, scratch)

    def _file(self, source: Path | BinaryIO | Dataset, target: Path, scratch: bool) -> Outcome:
        try:
            out = source if isinstance(source, Dataset) else read_plain(source) or dcmread(source, force=True)
            original = _reference_copy(out)
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            return Outcome("quarantine", f"unreadable as DICOM ({type(exc).__name__})")
        cut = _truncated(out)
        if cut is not None:  # DAT writes nothing either; an anonymized copy would be as incomplete
            return Outcome("quarantine", f"the file ends inside {describe(cut)}: it is truncated")
        meta = original.file_meta
        syntax = getattr(meta, "TransferSyntaxUID", None)
        implicit = bool(out.is_implicit_VR) if out.is_implicit_VR is not None else False
        little = bool(out.is_little_endian) if out.is_little_endian is not None else True
        chars = values.charset_of(original)
        if chars is None:  # absent, or a charset dcm4che does not know: CTP sets ISO_IR 100 in both
            for ds in (original, out):
                values.put(ds, 0x00080005, "CS", b"ISO_IR 100", implicit, little)
            chars = charset.LATIN_1
        ctx = Context(
            script=self.script,
            lookup=self.lookup,
            root_in=original,
            root_out=out,
            meta=meta,
            chars=chars,
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
            _write(out, UID(syntax) if syntax else ExplicitVRLittleEndian, target, ctx.charsets[0][1], scratch)
        except (OSError, ValueError, TypeError) as exc:
            return Outcome("quarantine", f"unable to write the result ({type(exc).__name__})")
        return Outcome("ok", "", target, str(out.get("SOPInstanceUID", "") or ""))


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


def _write(ds: Dataset, syntax: UID, target: Path, chars: Charset, scratch: bool = False) -> None:
    """A new file meta (as DAT's, with its group length), then the data set encoded as
    ``syntax`` says; written beside ``target`` and renamed over it when complete (or, for a
    ``scratch`` target, written there: one file-system operation fewer, none of which may wait
    for another thread's journal commit)."""
    start = file_start(
        _uid(ds, 0x00080016, chars),
        _uid(ds, 0x00080018, chars),
        syntax,
        (IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION),
    )
    implicit, little = _encoding(ds, syntax)
    # values are bytes already encoded as dcm4che would: pydicom must not transcode them when
    # the script (or CTP's ISO_IR 100 default) changed the Specific Character Set
    read_implicit, read_little = ds.original_encoding
    ds.set_original_encoding(read_implicit, read_little, ds._character_set)
    if syntax.is_transfer_syntax and 0x7FE00010 in ds._dict:
        ds[0x7FE00010].is_undefined_length = syntax.is_compressed  # encapsulated: undefined (PS3.5 A.4)
    _prepare(ds)
    if scratch:
        name = str(target)
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(start)
            fp = DicomFileLike(handle) if syntax != DeflatedExplicitVRLittleEndian else DicomBytesIO()
            write_top_level(fp, ds, implicit, little)
            if isinstance(fp, DicomBytesIO):  # PS3.5 A.5: the encoded data set, deflated
                compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
                deflated = compressor.compress(fp.getvalue()) + compressor.flush()
                handle.write(deflated + b"\0" * (len(deflated) % 2))
        if not scratch:
            os.replace(name, target)
    except BaseException:
        Path(name).unlink(missing_ok=True)
        raise


def _uid(ds: Dataset, tag: int, chars: Charset) -> str:
    """A UID for the file meta as DAT takes it: the first value, read with the data set's
    charset (and written as UTF-8), without converting the element (pydicom would turn a UN into
    UI; DAT keeps the VR the file had)."""
    elem = values.element(ds, tag)
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        try:
            text = chars.decode(value)
        except CharsetError:
            text = value.decode("ascii", "replace")
    elif isinstance(value, MultiValue):
        text = "\\".join(str(v) for v in value)
    else:
        text = str(value)
    return text.split("\\", 1)[0].strip(" \0")


def _truncated(ds: Dataset) -> int | None:
    """The tag of a last element whose value is shorter than its length says, or None."""
    if not ds._dict:
        return None
    last = ds._dict[max(ds._dict)]
    if (
        isinstance(last, RawDataElement)
        and last.length != 0xFFFFFFFF
        and last.value is not None
        and len(last.value) < last.length
    ):
        return int(last.tag)
    return None


def _encoding(ds: Dataset, syntax: UID) -> tuple[bool, bool]:
    """(implicit VR, little endian) to write: the transfer syntax's, except that a raw big
    endian data set read without file meta becomes Explicit VR Little Endian (as DAT writes it),
    and a private syntax keeps the encoding the data set was read in."""
    if ds.original_encoding[1] is False and syntax.is_little_endian:
        return False, True
    if syntax.is_transfer_syntax:
        return syntax.is_implicit_VR, syntax.is_little_endian
    implicit, little = ds.original_encoding
    if implicit is None or little is None:
        msg = f"unable to tell how to encode transfer syntax {syntax}"
        raise ValueError(msg)
    return implicit, little


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
