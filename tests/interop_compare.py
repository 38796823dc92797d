"""Element-by-element comparison of a retrieved data set with the peer's copy (issue #12).

Differences allowed, and why:

- **group lengths** (gggg,0000) of data set groups: retired since 2008 (PS3.5 §7.2); a sender may
  drop them or add them, and they say nothing about the content;
- **Data Set Trailing Padding** (FFFC,FFFC): meaningless by definition (PS3.10 §7.2), a peer may
  drop it;
- **trailing padding of values**: a text value padded to even length with a space (or a UI value
  with a NUL) is the same value whether the pad is there or not (PS3.5 §6.2);
- **the File Meta Information** but for the SOP Class and Instance UIDs and the transfer syntax:
  it describes the file, not the instance, and each writer writes its own (implementation class
  and version, source AE title). Ours must name the data set's own UIDs, even where the peer's
  file names others (three bundled files do);
- **Pixel Data's VR when encapsulated**: compressed pixel data must be OB (PS3.5 §A.4); dcmtk-based
  peers send the files that say OW as OB;
- **the transfer syntax of an uncompressed data set, for a peer that converts** (dcmqrscp sends
  every file in the syntax of the context it chose, not as stored): values are then compared
  decoded, binary ones (OW, OF, OL, OD, OV) in little endian byte order.

Everything else must be equal: every element, in every sequence item, with its VR and value, the
pixel data byte for byte, in the same transfer syntax.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID

TRAILING_PADDING = 0xFFFCFFFC
META_UIDS = (("MediaStorageSOPClassUID", "SOPClassUID"), ("MediaStorageSOPInstanceUID", "SOPInstanceUID"))
PIXEL_DATA = 0x7FE00010


def _plain(value: Any) -> Any:
    if isinstance(value, str):
        return value.rstrip(" \0")
    if isinstance(value, bytes):
        return value[:-1] if len(value) % 2 == 0 and value.endswith(b"\0") else value
    if isinstance(value, (MultiValue, list, tuple)):
        return [_plain(item) for item in value]
    return value


def _kept(ds: Dataset) -> dict[int, DataElement]:
    return {int(elem.tag): elem for elem in ds if elem.tag.element != 0x0000 and int(elem.tag) != TRAILING_PADDING}


WIDTHS = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _little(value: bytes, vr: str, big: bool) -> bytes:
    """``value`` in little endian order (binary VRs of a big endian data set are byte-swapped)."""
    width = WIDTHS.get(vr, 1)
    if not big or width == 1 or len(value) % width:
        return value
    return b"".join(value[n : n + width][::-1] for n in range(0, len(value), width))


def dataset_differences(
    ours: Dataset,
    theirs: Dataset,
    where: str = "",
    encapsulated: bool = False,
    swap: tuple[bool, bool] = (False, False),
) -> list[str]:
    """What differs between two data sets, beyond the allowed differences (an empty list: none).
    ``encapsulated``: their pixel data is compressed; ``swap``: which of the two is big endian."""
    found: list[str] = []
    mine, peer = _kept(ours), _kept(theirs)
    for tag in sorted(mine.keys() | peer.keys()):
        a, b = mine.get(tag), peer.get(tag)
        name = f"{where}({tag >> 16:04X},{tag & 0xFFFF:04X})"
        if a is None or b is None:
            found.append(f"{name} {'missing' if a is None else 'added'}")
        elif a.VR != b.VR and not (encapsulated and tag == PIXEL_DATA and {a.VR, b.VR} == {"OB", "OW"}):
            found.append(f"{name} VR {a.VR} != {b.VR}")
        elif a.VR == "SQ":
            if len(a.value) != len(b.value):
                found.append(f"{name} {len(a.value)} items != {len(b.value)}")
                continue
            for n, (x, y) in enumerate(zip(a.value, b.value, strict=True)):
                found.extend(dataset_differences(x, y, f"{name}[{n}].", encapsulated, swap))
        elif isinstance(a.value, bytes) and isinstance(b.value, bytes) and swap[0] != swap[1]:
            if _little(a.value, a.VR, swap[0]) != _little(b.value, b.VR, swap[1]):
                found.append(f"{name} {a.keyword or 'private'} value differs (byte order considered)")
        elif _plain(a.value) != _plain(b.value):
            found.append(f"{name} {a.keyword or 'private'} value differs")
    return found


def file_differences(ours: Path, theirs: Path, converts: bool = False) -> list[str]:
    """:func:`dataset_differences` of two files, and of the File Meta elements that must agree;
    ``converts``: the peer may send an uncompressed data set in another uncompressed syntax."""
    a, b = dcmread(ours), dcmread(theirs)
    found = [
        f"file meta {meta} {a.file_meta.get(meta)} != the data set's {b.get(keyword)}"
        for meta, keyword in META_UIDS
        if a.file_meta.get(meta) != b.get(keyword)
    ]
    mine, peer = UID(a.file_meta.TransferSyntaxUID), UID(b.file_meta.TransferSyntaxUID)
    if mine != peer and not (converts and not mine.is_compressed and not peer.is_compressed):
        found.append(f"transfer syntax {mine.name} != {peer.name}")
    swap = (not mine.is_little_endian, not peer.is_little_endian)
    return found + dataset_differences(a, b, encapsulated=peer.is_compressed, swap=swap)
