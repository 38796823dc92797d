"""Spool files: received bytes on the output volume, before they get their final name.

A spool file is written as ``<uuid>.part`` and renamed to ``<uuid>.dcm`` inside
``<output>/.asyncdicom/spool`` once complete (or, on the direct route, closed as ``.part``,
made durable with a batch of others and linked from there; a ``.part`` is never counted, and
start-up deletes those an interrupted run left). Only a few header elements are parsed (never the
pixel data), from the first bytes kept in memory as they pass. :mod:`asyncdicom.write.place`
links it atomically to its final path.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from asyncdicom.errors import OutputError, output_error
from asyncdicom.filemeta import file_start
from asyncdicom.identity import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from asyncdicom.write.header import HEAD, scan_buffer, scan_header

log = logging.getLogger("asyncdicom.write")

_RUN = uuid.uuid4().hex[:16]  # spool names: this process's prefix and a counter (O_EXCL guards the rest)
_NUMBERS = itertools.count()
ROUTING = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str = "") -> bytes:
    """Preamble, ``DICM`` and a File Meta Information group naming asyncdicom."""
    identity = (IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME)
    return file_start(sop_class, sop_instance, transfer_syntax, identity, source_ae)


def spool_opener(spool: Path) -> Callable[[str, str, str, str], SpoolWriter]:
    """A function opening spool files in ``spool`` (made if missing) for received data sets:
    (SOP class, SOP instance, transfer syntax, calling AE) → :class:`SpoolWriter`."""
    spool.mkdir(parents=True, exist_ok=True)

    def open_file(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str) -> SpoolWriter:
        head = file_meta(sop_class, sop_instance, transfer_syntax, source_ae)
        return SpoolWriter(spool, head, transfer_syntax, sop_instance)

    return open_file


def fsync_dir(path: str | Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolWriter:
    """One spool file being written: :meth:`seal` (fsync) to place it at once, or :meth:`commit`
    (complete, named ``.dcm``, not yet fsynced) to leave it for the writers."""

    def __init__(self, spool: Path, head: bytes = b"", transfer_syntax: str = "", claimed: str = "") -> None:
        self._stem = os.path.join(spool, f"{_RUN}{next(_NUMBERS):08d}")  # strings: pathlib costs more than the open
        self.part_name = self._stem + ".part"
        self._fd = -1
        try:
            self._fd = os.open(self.part_name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except OSError as exc:
            raise output_error(exc, f"a spool file in {spool}") from None
        self.size = 0
        self.transfer_syntax = transfer_syntax
        self.claimed = claimed  # the SOP Instance UID its C-STORE named
        self.head = bytearray()  # the first bytes, where the header is: parsed without reading back
        self.header: Header | None = None  # once read by whoever checked the instance
        if head:
            try:
                self.write(head)
            except OutputError:
                self.discard()
                raise

    @property
    def part(self) -> Path:
        """The file while it is being written (and when sealed)."""
        return Path(self.part_name)

    @property
    def final(self) -> Path:
        """The file once committed."""
        return Path(self._stem + ".dcm")

    def write(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        if len(self.head) < HEAD:
            self.head += view[: HEAD - len(self.head)]
        try:
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            raise output_error(exc, f"spool file {os.path.basename(self.part_name)}") from None
        self.size += len(data)

    def _close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def close(self) -> str:
        """Close without fsync: the ``.part`` file is complete, to be made durable with others
        (:func:`asyncdicom.write.place.flush_files`) before it is placed."""
        self._close()
        return self.part_name

    def commit(self) -> Path:
        """Close and rename ``.part`` → ``.dcm``: the file is complete and survives the process.

        It is not fsynced here, so the PACS is not kept waiting for the disk: :func:`place`
        fsyncs it before it counts, and a request is only marked done once its files are placed.
        """
        self._close()
        final = self.final
        os.replace(self.part_name, final)
        return final

    def finish(self, ok: bool) -> Path | None:
        """:meth:`commit` a complete file (None if that fails), or :meth:`discard` a broken one."""
        if ok:
            try:
                return self.commit()
            except OSError as exc:
                log.error("unable to keep a received instance as %s", exc.strerror)
        self.discard()
        return None

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self._close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.part_name)


@dataclass(frozen=True, slots=True)
class Header:
    """What routing and paths need from an instance, read without its pixel data."""

    attrs: dict[str, str]
    transfer_syntax: str
    pixel_data: tuple[int, int, bool] | None = None  # (value offset, declared length, explicit VR), when scanned

    @property
    def sop_instance_uid(self) -> str:
        return self.attrs.get("SOPInstanceUID", "")


def read_header(path: str | Path, keywords: Iterable[str], head: bytes | bytearray | None = None) -> Header:
    """Parse only ``keywords`` (and the routing UIDs) from ``path``, or from ``head`` (its first
    bytes) when given, where the scan also notes where the Pixel Data is; stops before pixel
    data. Raises ValueError."""
    wanted = sorted({*ROUTING, *keywords})
    pixels: list[tuple[int, int, bool]] = []
    scanned = scan_buffer(head, wanted, pixels) if head is not None else scan_header(path, wanted)
    if scanned is not None:
        return Header(*scanned, pixels[0] if pixels else None)
    return read_header_with_pydicom(path, wanted)


def header_or_error(keywords: tuple[str, ...], path: str) -> Header | OSError | ValueError:
    """:func:`read_header` in a worker process, on a file it just wrote: the header, or why it
    could not be read (returned, not raised: it travels back with the file's outcome)."""
    try:
        return read_header(path, keywords)
    except (OSError, ValueError) as exc:
        return exc


def read_header_with_pydicom(path: str | Path, wanted: Iterable[str]) -> Header:
    """The reference reader (pydicom), used when the lean scan cannot handle a file."""
    tags = [tag for tag in (tag_for_keyword(k) for k in wanted) if tag is not None]
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        msg = f"Unable to read the header of {os.path.basename(path)} as {exc}"
        raise ValueError(msg) from None
    attrs: dict[str, str] = {}
    for keyword in wanted:
        value = ds.get(keyword)
        if value is None:
            continue
        multiple = isinstance(value, MultiValue | list | tuple)
        attrs[keyword] = "\\".join(str(v) for v in value) if multiple else str(value)
    meta = getattr(ds, "file_meta", None)
    return Header(attrs, str(getattr(meta, "TransferSyntaxUID", "")))


def sweep(spool: Path) -> list[Path]:
    """At start-up: delete partial spool files; return the complete ones still to place."""
    spool.mkdir(parents=True, exist_ok=True)
    for part in spool.glob("*.part"):
        part.unlink(missing_ok=True)
    return sorted(spool.glob("*.dcm"), key=lambda p: p.stat().st_mtime)
