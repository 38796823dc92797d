"""Element values as CTP sees them (§4: decoded, trimmed per VR, joined with ``\\``) and as
dcm4che writes them (§5.6: split, normalised and validated per VR; a failed write keeps the
original value).

Values are read from the raw bytes pydicom leaves untouched, and written back as raw bytes
encoded in the dataset's character set, so nothing is re-interpreted on the way.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from asyncdicom.anonymize import charset, dictionary
from asyncdicom.anonymize.charset import Charset, CharsetError
from asyncdicom.anonymize.java import (
    double_to_string,
    float_to_string,
    parse_float,
    parse_int,
    split,
    substring,
    trim,
)

TEXT_VRS = {"LO", "LT", "PN", "SH", "ST", "UC", "UT"}
PRIVATE_TEXT = {"LO", "LT", "SH", "CS", "ST", "DA", "DS", "DT", "TM", "IS", "PN", "UC", "UI", "UR"}
_LEAD_TRIM = {"AE", "CS", "DS", "IS", "LO", "SH"}
_TAIL_TRIM = {"DA", "DT", "TM", "UI", "LT", "ST", "UT", "UC", "UR"}
_INTS = {"US": ("H", False), "SS": ("h", True), "UL": ("L", False), "SL": ("l", True)}
_FLOATS = {"FL": "f", "FD": "d"}


class WriteError(ValueError):
    """dcm4che would refuse to store this value (the element keeps its original value)."""


def element(ds: Dataset, tag: int) -> DataElement | RawDataElement | None:
    """Element ``tag`` of ``ds`` as stored (raw bytes stay raw), or None. Reads the dataset's
    element dict directly: pydicom's accessors convert every key to a Tag, which cost more than
    the rest of a lookup on this path."""
    found: DataElement | RawDataElement | None = ds._dict.get(tag)  # type: ignore[call-overload]
    return found


def has(ds: Dataset, tag: int) -> bool:
    """Whether ``ds`` holds element ``tag`` (see :func:`element`)."""
    return tag in ds._dict


def multiplicity(ds: Dataset, tag: int) -> int:
    """0 when ``tag`` is absent or has no value (no bytes, or a sequence without items), else
    at least 1: dcm4che's ``vm()`` compared with zero."""
    elem = element(ds, tag)
    if elem is None:
        return 0
    if vr_of(elem, ds) == "SQ":
        return len(ds[tag].value)
    raw = _raw_bytes(elem)
    if raw is not None:
        return 1 if raw else 0
    return 0 if elem.value in (None, "", b"") else 1


def charset_of(ds: Dataset) -> Charset | None:
    """The data set's Specific Character Set as dcm4che reads it; None when it is absent or
    dcm4che knows no charset for it."""
    elem = element(ds, 0x00080005)
    if elem is None:
        return None
    raw = elem.value
    if isinstance(raw, bytes):
        text = raw.decode("utf-8", "replace")  # dcm4che reads it with no charset: the JVM default
    elif isinstance(raw, str):
        text = raw
    elif raw is None:
        text = ""
    else:
        text = "\\".join(str(v) for v in raw)
    return charset.from_value(text)


def vr_of(elem: DataElement | RawDataElement, ds: Dataset) -> str:
    """The element's VR: explicit in the file, else dcm4che's dictionary (implicit files), with
    private elements of unknown creators as UN."""
    vr = elem.VR
    if vr:
        return str(vr)
    tag = int(elem.tag)
    if tag >> 16 & 1:
        if tag & 0xFFFF < 0x100:
            return "LO"
        entry = dictionary.private_entry(tag, creator_of(ds, tag))
        return entry[0] if entry and entry[0] else "UN"
    found = dictionary.dictionary_vr(tag)
    if found:
        return found
    try:
        return str(dictionary_VR(tag))
    except KeyError:
        return "UN"


def creator_of(ds: Dataset, tag: int) -> str | None:
    """The private creator of a private data element in ``ds`` (trimmed), or None."""
    block = (tag >> 8) & 0xFF
    if not tag >> 16 & 1 or block == 0:
        return None
    elem = element(ds, (tag & 0xFFFF0000) | block)
    if elem is None:
        return None
    raw = _raw_bytes(elem)
    if raw is None:
        return None
    return trim(raw.decode("latin_1"))


def _raw_bytes(elem: DataElement | RawDataElement) -> bytes | None:
    if isinstance(elem, RawDataElement):
        return elem.value if elem.value is not None else b""
    value = elem.value
    if value is None:
        return b""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin_1", "replace")
    return None


def _trim_for(text: str, vr: str) -> str:
    if vr == "AS":
        return text
    text = text.rstrip(" \0")
    if vr == "PN":
        return text.rstrip(" \0^")
    if vr in _LEAD_TRIM:
        return text.lstrip(" ")
    return text


def _numbers(raw: bytes, vr: str, little: bool) -> str:
    order = "<" if little else ">"
    if vr in _INTS:
        code, _ = _INTS[vr]
        size = struct.calcsize(order + code)
        count = len(raw) // size
        return "\\".join(str(v) for v in struct.unpack(f"{order}{count}{code}", raw[: count * size]))
    if vr in _FLOATS:
        code = _FLOATS[vr]
        size = struct.calcsize(order + code)
        count = len(raw) // size
        render = float_to_string if vr == "FL" else double_to_string
        return "\\".join(render(v) for v in struct.unpack(f"{order}{count}{code}", raw[: count * size]))
    count = len(raw) // 4  # AT
    pairs = struct.unpack(f"{order}{count * 2}H", raw[: count * 4])
    return "\\".join(f"{pairs[i]:04X}{pairs[i + 1]:04X}" for i in range(0, len(pairs), 2))


def contents(ds: Dataset, tag: int, chars: Charset, little: bool = True) -> str | None:
    """CTP's string for element ``tag`` of ``ds`` (None when absent, a sequence, or binary)."""
    elem = element(ds, tag)
    if elem is None:
        return None
    vr = vr_of(elem, ds)
    if vr == "SQ":
        return None
    raw = _raw_bytes(elem)
    if raw is None:
        return _from_value(elem)
    if tag >> 16 & 1 and tag & 0xFFFF >= 0x100:
        creator = creator_of(ds, tag)
        if creator is not None:
            entry = dictionary.private_entry(tag, creator)
            private_vr = entry[0] if entry else ""
            if creator == "CTP" or private_vr in PRIVATE_TEXT or private_vr == "UN":
                try:
                    return chars.decode(raw)
                except CharsetError:
                    return None
            if private_vr in ("SS", "US"):  # CTP reads the bytes itself: unsigned 16-bit
                return _numbers(raw, "US", little)
            if private_vr in ("SL", "UL"):  # ...and signed 32-bit, UL too
                return _numbers(raw, "SL", little)
            if not elem.VR:  # anything else in an implicit VR file is UN to dcm4che: hex bytes
                return "\\".join(f"{b:02X}" for b in raw)
    if vr in _INTS or vr in _FLOATS or vr == "AT":
        return _numbers(raw, vr, little)
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        return "\\".join(f"{b:02X}" for b in raw)
    try:  # every string VR is read with the data set's charset (dcm4che's getStrings(cs))
        return _trim_for(chars.decode(raw), vr)
    except CharsetError:
        return None


def _from_value(elem: DataElement | RawDataElement) -> str | None:
    value = elem.value
    if isinstance(value, list | tuple | MultiValue):
        return "\\".join(str(v) for v in value)
    return None if value is None else str(value)


# --- writing ---------------------------------------------------------------------------------


def _pad(data: bytes, vr: str) -> bytes:
    if len(data) % 2:
        data += b"\0" if vr in ("UI", "OB", "UN") else b" "
    return data


def _check_da(value: str) -> None:
    """dcm4che's DA parser: year, optional separator, month, optional separator, and the day
    read from character 6 onwards (its quirk: 2020-0203 passes, 2020-02-03 fails)."""
    p = 4
    parse_int(substring(value, 0, 4))
    if not value[p].isdigit():
        p += 1
    parse_int(substring(value, p, p + 2))
    p += 2
    value[p]
    parse_int(substring(value, 6))


def _check_tm(value: str) -> None:
    parse_int(substring(value, 0, 2))
    if len(value) <= 2:
        raise WriteError(value)  # nothing parsed past the hour: DateFormat rejects it
    p = 2
    if value[p] == ":":
        p += 1
    parse_int(substring(value, p, p + 2))
    p += 2
    if p < len(value):
        if value[p] == ":":
            p += 1
        parse_float(substring(value, p))


def _check_dt(source: str) -> None:
    """dcm4che's DTFormat: each field a Java substring (too short a value throws)."""
    s = source
    zone = len(source) - 5
    if zone >= 0 and source[zone] in "+-":
        parse_int(substring(source, zone + 1))
        s = source[:zone]
    parse_int(substring(s, 0, 4))
    p = 4
    if len(s) > p:
        if not s[p].isdigit():
            p += 1
        parse_int(substring(s, p, p + 2))
        p += 2
        if len(s) > p:
            if not s[p].isdigit():
                p += 1
            parse_int(substring(s, p, p + 2))
            p += 2
            if len(s) > p:
                parse_int(substring(s, p, p + 2))
                p += 2
                if len(s) > p:
                    if s[p] == ":":
                        p += 1
                    parse_int(substring(s, p, p + 2))
                    p += 2
                    if len(s) > p:
                        if s[p] == ":":
                            p += 1
                        parse_float(substring(s, p))


_CHECKS = {"DA": _check_da, "TM": _check_tm, "DT": _check_dt}


def _person_name(value: str) -> str:
    groups = []
    for group in value.split("="):
        parts = group.split("^")[:5]
        text = "^".join(parts).rstrip("^")
        if len(text) > 64:
            msg = "a person name component group over 64 characters"
            raise WriteError(msg)
        groups.append(text)
    return "=".join(groups).rstrip("=")


def normalise(values: Sequence[str], vr: str) -> list[str]:
    """Values as dcm4che stores them; raises WriteError where it would refuse."""
    out: list[str] = []
    for value in values:
        if vr in _LEAD_TRIM:
            value = value.lstrip(" ").rstrip(" \0")
        elif vr in ("LT", "ST", "UT", "UC"):
            value = value.rstrip(" \0")
        elif vr == "PN":
            value = _person_name(value)
        elif vr in _CHECKS:
            try:
                _CHECKS[vr](value)
            except (ValueError, IndexError) as exc:
                msg = f"not a valid {vr}"
                raise WriteError(msg) from exc
        out.append(value)
    return out


def _encode_numbers(values: Sequence[str], vr: str, little: bool) -> bytes:
    order = "<" if little else ">"
    try:
        if vr in _INTS:
            code, signed = _INTS[vr]
            bits = struct.calcsize("<" + code) * 8
            numbers = [parse_int(trim(v), 64) for v in values]
            limit = (-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else (0, 2**bits)
            if any(not limit[0] <= n < limit[1] for n in numbers):
                msg = f"out of range for {vr}"
                raise WriteError(msg)
            return struct.pack(f"{order}{len(numbers)}{code}", *numbers)
        if vr in _FLOATS:
            return struct.pack(f"{order}{len(values)}{_FLOATS[vr]}", *(parse_float(v) for v in values))
        tags = [int(trim(v), 16) for v in values]  # AT
        return b"".join(struct.pack(f"{order}HH", t >> 16, t & 0xFFFF) for t in tags)
    except (ValueError, struct.error) as exc:
        msg = f"not a valid {vr}"
        raise WriteError(msg) from exc


def encode(value: str, vr: str, chars: Charset, little: bool = True, *, single: bool = False) -> bytes:
    """The bytes dcm4che would write for ``value`` (``\\``-separated) as ``vr``; ``single``:
    as one value, backslashes and all (CTP writes private elements so). Raises WriteError."""
    if value == "":
        return b""
    values = [value] if single else split(value, "\\")
    if vr in _INTS or vr in _FLOATS or vr == "AT":
        return _encode_numbers(values, vr, little)
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN", "SQ"):
        msg = f"a text value cannot be written as {vr}"
        raise WriteError(msg)
    text = "\\".join(normalise(values, vr))
    if vr in TEXT_VRS:
        return _pad(chars.encode(text), vr)
    return _pad(charset.JVM.encode(text), vr)  # dcm4che writes other VRs with the JVM default


def put(ds: Dataset, tag: int, vr: str, data: bytes, implicit: bool, little: bool) -> None:
    """Store raw bytes as element ``tag`` of ``ds`` (replacing it)."""
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(data), data, 0, implicit, little)
