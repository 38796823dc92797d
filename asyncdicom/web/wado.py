"""WADO-RS retrieval: which resources a retrieve request covers, and the instances of a
multipart/related answer written straight to the C-GET sink (spool files), part by part.

A part is a Part 10 file; its File Meta Information names the SOP class, instance and transfer
syntax, and the data set after it is streamed to the sink as received (no decoding, memory flat
in the instance's size). A part cut short is discarded; what was complete stays.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from asyncdicom.errors import HttpRefused
from asyncdicom.filemeta import MAX_META, read_meta
from asyncdicom.net.dimse import StoreFile, StoreSink

_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")
OK_STATUSES = (0x0000, 0x0001, 0x0107, 0x0116)


def plain_uids(text: str) -> list[str]:
    """The UIDs of a (backslash-separated) value that is a plain UID list, else []."""
    uids = [uid.strip() for uid in text.split("\\") if uid.strip()]
    return uids if uids and all(_UID.fullmatch(uid) and len(uid) <= 64 for uid in uids) else []


@dataclass
class InstanceWriter:
    """A :class:`~asyncdicom.web.parts.PartHandler` that hands each DICOM part to ``sink``."""

    sink: StoreSink
    where: str
    on_instance: Callable[[str, int], None]  # (SOP Instance UID, C-STORE-like status) per part
    pay: Callable[[int], None] = lambda count: None  # the byte pacer, if any
    _head: bytearray = field(default_factory=bytearray)
    _file: StoreFile | None = None
    _uid: str = ""

    def begin_part(self, content_type: str) -> None:
        kind = content_type.split(";")[0].strip().lower()
        if kind not in ("application/dicom", ""):
            msg = f"{self.where} answered a part of type {kind!r}, not application/dicom"
            raise HttpRefused(msg)
        self._head.clear()
        self._file, self._uid = None, ""

    def data(self, chunk: memoryview) -> None:
        self.pay(len(chunk))
        if self._file is not None:
            self._file.write(chunk)
            return
        self._head += chunk
        try:
            found = read_meta(self._head)
        except ValueError as exc:
            msg = f"{self.where} answered a part that is {exc}"
            raise HttpRefused(msg) from None
        if found is None:
            if len(self._head) > MAX_META + 132:
                msg = f"{self.where} answered a part whose File Meta Information never ends"
                raise HttpRefused(msg)
            return
        meta, end = found
        self._uid = meta["sop_instance"]
        self._file = self.sink.begin(meta["sop_class"], meta["sop_instance"], meta["transfer_syntax"])
        rest = bytes(self._head[end:])
        self._head.clear()
        if rest:
            self._file.write(rest)

    def end_part(self) -> None:
        if self._file is None:
            msg = f"{self.where} answered a part too short to hold a DICOM file"
            raise HttpRefused(msg)
        file, self._file = self._file, None
        status, after = self.sink.end(file, True)
        if after is not None:
            after()
        self.on_instance(self._uid, status)

    def abandon(self) -> None:
        """The body broke inside a part: its file is discarded."""
        if self._file is not None:
            file, self._file = self._file, None
            self.sink.end(file, False)
