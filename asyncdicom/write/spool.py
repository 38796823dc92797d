"""Spool files: received bytes on the output volume, before they get their final name.

A spool file is written as ``<uuid>.part`` and renamed to ``<uuid>.dcm`` inside
``<output>/.asyncdicom/spool`` once complete. Only a few header elements are parsed afterwards
(never the pixel data). :func:`place` fsyncs it and links it atomically to its final path.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.errors import InvalidDicomError
from pydicom.multival import MultiValue

from asyncdicom.write.header import scan_header
from asyncdicom.write.paths import confine, render, with_suffix_number

log = logging.getLogger("asyncdicom.write")

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1.48.1"  # under pydicom's root, for asyncdicom
IMPLEMENTATION_VERSION = "ASYNCDICOM_01"
ROUTING = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")


def _element(group_element: int, vr: bytes, value: bytes) -> bytes:
    if len(value) % 2:
        value += b"\0" if vr == b"UI" else b" "
    tag = struct.pack("<HH", group_element >> 16, group_element & 0xFFFF)
    if vr == b"OB":
        return tag + vr + b"\0\0" + struct.pack("<L", len(value)) + value
    return tag + vr + struct.pack("<H", len(value)) + value


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str, source_ae: str = "") -> bytes:
    """Preamble, ``DICM`` and a File Meta Information group (Explicit VR Little Endian)."""
    body = b"".join(
        [
            _element(0x00020001, b"OB", b"\x00\x01"),
            _element(0x00020002, b"UI", sop_class.encode("ascii")),
            _element(0x00020003, b"UI", sop_instance.encode("ascii")),
            _element(0x00020010, b"UI", transfer_syntax.encode("ascii")),
            _element(0x00020012, b"UI", IMPLEMENTATION_CLASS_UID.encode("ascii")),
            _element(0x00020013, b"SH", IMPLEMENTATION_VERSION.encode("ascii")),
            *([_element(0x00020016, b"AE", source_ae.encode("ascii"))] if source_ae else []),
        ]
    )
    return b"\0" * 128 + b"DICM" + _element(0x00020000, b"UL", struct.pack("<L", len(body))) + body


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolWriter:
    """One spool file being written; :meth:`commit` makes it durable and returns its path."""

    def __init__(self, spool: Path, head: bytes = b"") -> None:
        self.final = spool / f"{uuid.uuid4().hex}.dcm"
        self.part = self.final.with_suffix(".part")
        self._handle: BinaryIO = self.part.open("wb")
        self.size = 0
        if head:
            self.write(head)

    def write(self, data: bytes | memoryview) -> None:
        self._handle.write(data)
        self.size += len(data)

    def commit(self) -> Path:
        """Close and rename ``.part`` → ``.dcm``: the file is complete and survives the process.

        It is not fsynced here, so the PACS is not kept waiting for the disk: :func:`place`
        fsyncs it before it counts, and a request is only marked done once its files are placed.
        """
        self._handle.close()
        os.replace(self.part, self.final)
        return self.final

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
            self._handle.close()
        with contextlib.suppress(FileNotFoundError):
            self.part.unlink()


@dataclass(frozen=True, slots=True)
class Header:
    """What routing and paths need from an instance, read without its pixel data."""

    attrs: dict[str, str]
    transfer_syntax: str

    @property
    def sop_instance_uid(self) -> str:
        return self.attrs.get("SOPInstanceUID", "")


def read_header(path: Path, keywords: Iterable[str]) -> Header:
    """Parse only ``keywords`` (and the routing UIDs) from ``path``; stops before pixel data."""
    wanted = sorted({*ROUTING, *keywords})
    scanned = scan_header(path, wanted)
    if scanned is not None:
        return Header(*scanned)
    return read_header_with_pydicom(path, wanted)


def read_header_with_pydicom(path: Path, wanted: Iterable[str]) -> Header:
    """The reference reader (pydicom), used when the lean scan cannot handle a file."""
    tags = [tag for tag in (tag_for_keyword(k) for k in wanted) if tag is not None]
    try:
        ds = dcmread(path, stop_before_pixels=True, specific_tags=tags)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        msg = f"Unable to read the header of {path.name} as {exc}"
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


@dataclass(frozen=True, slots=True)
class Placed:
    """Where an instance ended: ``stored``, ``duplicate`` (same instance already there) or ``renamed``."""

    path: Path
    state: str
    size: int


def _same_instance(path: Path, sop_uid: str) -> bool:
    try:
        return read_header(path, ()).sop_instance_uid == sop_uid
    except ValueError:
        return False


def place(spooled: Path, root: Path, structure: tuple[str, ...], filename: str, header: Header) -> Placed:
    """Move a spool file to its rendered path atomically, never overwriting another instance."""
    target = confine(root, render(structure, filename, header.attrs))
    target.parent.mkdir(parents=True, exist_ok=True)
    with spooled.open("rb") as handle:  # durable before it has a name in the output tree
        os.fsync(handle.fileno())
        size = os.fstat(handle.fileno()).st_size
    sop_uid = header.sop_instance_uid
    candidate, number = target, 0
    while True:
        try:
            # link() fails if the name exists: no window in which another writer's file is replaced
            os.link(spooled, candidate)
        except FileExistsError:
            if _same_instance(candidate, sop_uid):
                spooled.unlink()
                return Placed(candidate, "duplicate", size)
            number += 1
            candidate = with_suffix_number(target, number)
            continue
        spooled.unlink()
        fsync_dir(candidate.parent)
        return Placed(candidate, "stored" if number == 0 else "renamed", size)


def sweep(spool: Path) -> list[Path]:
    """At start-up: delete partial spool files; return the complete ones still to place."""
    spool.mkdir(parents=True, exist_ok=True)
    for part in spool.glob("*.part"):
        part.unlink(missing_ok=True)
    return sorted(spool.glob("*.dcm"), key=lambda p: p.stat().st_mtime)
