"""DICOM element specifications: ``Keyword``, ``Keyword=value``, ``(gggg,eeee)=value``, sequence paths.

Pure: parses and validates text, and builds query identifiers. Raises :class:`ElementError`
with a message that the caller prefixes with a location (config key path or CSV file:line).
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from itertools import pairwise

from pydicom.datadict import dictionary_has_tag, dictionary_VR, keyword_dict, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag

from asyncdicom.errors import ProtocolError


class ElementError(ValueError):
    """An element name or value is invalid; the caller adds where it came from."""


# Keywords that exist in the dictionary but are never query/retrieve keys, with what the
# user most likely meant.
_MISLEADING_KEYWORDS = {
    "Date": "StudyDate",
    "Time": "StudyTime",
    "DateTime": "AcquisitionDateTime",
}

_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


@dataclass(frozen=True, slots=True)
class PathItem:
    """One step of an element path: a tag, and the item index when a sequence is traversed."""

    tag: int
    keyword: str
    vr: str
    index: int | None = None

    @property
    def label(self) -> str:
        """How the item is written back: keyword (or tag) and ``[index]`` if any."""
        name = self.keyword or f"({self.tag >> 16:04X},{self.tag & 0xFFFF:04X})"
        return name if self.index is None else f"{name}[{self.index}]"


@dataclass(frozen=True, slots=True)
class ElementSpec:
    """An element to send in a query: its path and value (``None`` = return key, sent empty)."""

    path: tuple[PathItem, ...]
    value: str | None = None

    @property
    def leaf(self) -> PathItem:
        """The element the value belongs to."""
        return self.path[-1]

    @property
    def name(self) -> str:
        """Dotted path as the user writes it, e.g. ``ReferencedStudySequence[0].ReferencedSOPInstanceUID``."""
        return ".".join(item.label for item in self.path)

    @property
    def tag_text(self) -> str:
        """``(gggg,eeee)`` of the leaf element."""
        tag = self.leaf.tag
        return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"

    def describe(self) -> str:
        """``(gggg,eeee) 'Keyword'`` as used in messages."""
        return f"{self.tag_text} '{self.name}'"

    def with_value(self, value: str | None) -> ElementSpec:
        """The same element with another value (already validated by the caller)."""
        return ElementSpec(self.path, value)


_TAG_RE = re.compile(r"^\(\s*([0-9A-Fa-f]{4})\s*,\s*([0-9A-Fa-f]{4})\s*\)$")
_ITEM_RE = re.compile(r"^(?P<name>\([^)]*\)|[A-Za-z][A-Za-z0-9]*)(?:\[(?P<index>\d+)\])?$")


_UNUSUAL = re.compile("[\x00-\x08\x0b\x0e-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069\ufffd]")


def unusual_values(matches: Iterable[Mapping[str, str]]) -> int:
    """How many values of ``matches`` hold a control character (line breaks and tabs aside), a
    mark that changes the text's direction (U+202E shows ``exe.jpg`` as ``gpj.exe``), or U+FFFD
    (bytes not valid in the declared character set): the CSV files show these as U+FFFD."""
    return sum(1 for match in matches for value in match.values() if _UNUSUAL.search(value))


def is_uid(value: str) -> bool:
    """Whether ``value`` is a UID: at most 64 characters, digits separated by single dots
    (leading zeros in a component, which real archives hold, are let through)."""
    return len(value) <= 64 and _UID_RE.match(value) is not None


def suggest_keyword(name: str) -> str | None:
    """The closest DICOM keyword to a misspelt one (one typed in the wrong case first), if any is close."""
    same_but_case = _by_lower_case().get(name.lower())
    if same_but_case:
        return same_but_case
    matches = difflib.get_close_matches(name, _all_keywords(), n=1, cutoff=0.75)
    return matches[0] if matches else None


@lru_cache(maxsize=1)
def _all_keywords() -> list[str]:
    return list(keyword_dict)


@lru_cache(maxsize=1)
def _by_lower_case() -> dict[str, str]:
    return {keyword.lower(): keyword for keyword in keyword_dict}


def _resolve(name: str) -> tuple[int, str, str]:
    """Tag, keyword and VR of one path item name (keyword or ``(gggg,eeee)``)."""
    match = _TAG_RE.match(name)
    if match:
        tag = int(match.group(1) + match.group(2), 16)
        if tag >> 16 & 1:
            msg = f"private tag {name} cannot be used as its VR is not known; use a public element"
            raise ElementError(msg)
        if not dictionary_has_tag(tag):
            msg = f"tag {name} is not in the DICOM dictionary; check the group and element numbers"
            raise ElementError(msg)
        return tag, keyword_for_tag(tag), dictionary_VR(tag)
    if name in _MISLEADING_KEYWORDS:
        meant = _MISLEADING_KEYWORDS[name]
        tag = keyword_dict[name]
        msg = (
            f"'{name}' ({tag >> 16:04X},{tag & 0xFFFF:04X}) is a structured-report content item, "
            f"not a query key; did you mean '{meant}'?"
        )
        raise ElementError(msg)
    tag_int = keyword_dict.get(name)
    if tag_int is None:
        hint = suggest_keyword(name)
        msg = f"'{name}' is not a DICOM keyword"
        msg += f"; did you mean '{hint}'?" if hint else "; use a keyword from PS3.6 or a (gggg,eeee) tag"
        raise ElementError(msg)
    return tag_int, name, dictionary_VR(tag_int)


@lru_cache(maxsize=4096)
def parse_path(text: str) -> tuple[PathItem, ...]:
    """Parse ``Keyword``, ``(gggg,eeee)`` or ``Seq[0].Keyword`` into path items."""
    text = text.strip()
    if not text:
        msg = "empty element name"
        raise ElementError(msg)
    parts = text.split(".")
    items: list[PathItem] = []
    for position, part in enumerate(parts):
        match = _ITEM_RE.match(part.strip())
        if not match:
            msg = f"cannot read element '{text}'; write Keyword, (gggg,eeee) or Sequence[0].Keyword"
            raise ElementError(msg)
        tag, keyword, vr = _resolve(match.group("name"))
        index = match.group("index")
        last = position == len(parts) - 1
        if not last and vr != "SQ":
            msg = f"'{part}' in '{text}' is not a sequence, so nothing can follow it"
            raise ElementError(msg)
        if not last and index is None:
            index = "0"
        if last and index is not None:
            msg = f"'{part}' in '{text}': an item index needs an element after it"
            raise ElementError(msg)
        items.append(PathItem(tag, keyword, vr, None if index is None else int(index)))
    return tuple(items)


def parse_element(text: str) -> ElementSpec:
    """Parse one element of ``request.elements``: name, optionally ``=value``."""
    name, sep, value = text.partition("=")
    path = parse_path(name)
    if not sep:
        return ElementSpec(path, None)
    spec = ElementSpec(path, None)
    return spec.with_value(check_value(spec, value))


# --- value validation -------------------------------------------------------------------------

_MAX_LEN = {
    "AE": 16,
    "AS": 4,
    "CS": 16,
    "DA": 8,
    "DS": 16,
    "DT": 26,
    "IS": 12,
    "LO": 64,
    "LT": 10240,
    "SH": 16,
    "ST": 1024,
    "TM": 14,
    "UI": 64,
}
_WILDCARD_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UT", "UR"}
_NUMERIC_VRS = {"US", "UL", "SS", "SL", "FL", "FD", "UV", "SV"}
_CS_RE = re.compile(r"^[A-Z0-9 _*?]*$")
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3])([0-5]\d([0-5]\d|60)?)?(\.\d{1,6})?$")
_DT_RE = re.compile(r"^\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?$")
_IS_RE = re.compile(r"^[+-]?\d+$")
_DS_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_AS_RE = re.compile(r"^\d{3}[DWMY]$")


def _check_date(text: str) -> str | None:
    if not re.fullmatch(r"\d{8}", text):
        return "a date must be YYYYMMDD"
    try:
        date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        return "not a calendar date"
    return None


def _check_range(value: str, single: Callable[[str], str | None], *, zoned: bool = False) -> str | None:
    """Check a DA/TM/DT value, which may be a range ``a-b``, ``-b`` or ``a-``.

    ``zoned`` (DT) means a trailing ``-ZZXX`` may be a UTC offset rather than a range.
    """
    single_zoned = zoned and value.count("-") == 1 and re.search(r"\d{8,}-\d{4}$", value)
    if value.count("-") == 1 and not single_zoned:
        low, high = value.split("-")
        if not low and not high:
            return "a range needs at least one end"
        for end in (low, high):
            if end and (problem := single(end)):
                return problem
        return None
    return single(value)


def _check_single(vr: str, value: str) -> str | None:
    if vr in _MAX_LEN and vr not in {"DA", "TM", "DT"} and len(value) > _MAX_LEN[vr]:
        return f"longer than the {_MAX_LEN[vr]} characters allowed for VR {vr}"
    if vr == "DA":
        return _check_range(value, _check_date)
    if vr == "TM":
        return _check_range(value, lambda t: None if _TIME_RE.match(t) else "a time must be HHMMSS[.FFFFFF]")
    if vr == "DT":
        return _check_range(
            value,
            lambda t: None if _DT_RE.match(t) else "a date-time must be YYYYMMDDHHMMSS[.FFFFFF][&ZZXX]",
            zoned=True,
        )
    if vr == "UI":
        if not _UID_RE.match(value):
            return "a UID is digits separated by single dots"
        return None
    if vr == "CS" and not _CS_RE.match(value):
        return "a code string allows only A-Z, 0-9, space and underscore"
    if vr == "IS" and not _IS_RE.match(value):
        return "an integer string must be a whole number"
    if vr == "DS" and not _DS_RE.match(value):
        return "a decimal string must be a number"
    if vr == "AS" and not _AS_RE.match(value):
        return "an age string must be nnnD, nnnW, nnnM or nnnY"
    if vr == "PN":
        for group in value.split("="):
            if len(group) > 64:
                return "a person name component group is longer than 64 characters"
        return None
    if vr in _NUMERIC_VRS:
        try:
            float(value) if vr in {"FL", "FD"} else int(value)
        except ValueError:
            return f"VR {vr} needs a number"
    return None


# C0 controls but ESC (character set escapes), and DEL: never in a text value (PS3.5 6.1.2)
_CONTROL = re.compile("[\x00-\x1a\x1c-\x1f\x7f]")
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f\x7f]")  # LT, ST, UT may hold TAB, LF, FF, CR
_TEXT_VRS = {"LT", "ST", "UT"}
_BINARY_VRS = {"OB", "OW", "OD", "OF", "OL", "OV", "UN"}


def check_value(spec: ElementSpec, value: str) -> str:
    """Validate ``value`` for ``spec``'s VR and return it normalised (surrounding blanks removed).

    Multiple values are separated by backslashes. Wildcards ``*`` and ``?`` are allowed where
    PS3.4 C.2.2.2.4 allows them.
    """
    value = value.strip()
    leaf = spec.leaf
    if leaf.vr == "SQ":
        if value:
            msg = (
                f"{spec.describe()} is a sequence; give values to elements inside it, as '{spec.name}[0].Keyword=value'"
            )
            raise ElementError(msg)
        return value
    if not value:
        return value
    control = (_TEXT_CONTROL if leaf.vr in _TEXT_VRS else _CONTROL).search(value)
    if control is not None and leaf.vr not in _BINARY_VRS:
        msg = (
            f"the value for {spec.describe()} holds control character U+{ord(control.group()):04X} "
            "(a line break, NUL…), which no DICOM text allows; check the quoting of that CSV cell"
        )
        raise ElementError(msg)
    if leaf.keyword == "QueryRetrieveLevel" and value not in _LEVELS:
        msg = f"{spec.describe()} must be one of {', '.join(_LEVELS)}, not '{value}'"
        raise ElementError(msg)
    for single in value.split("\\"):
        check = single
        if leaf.vr in _WILDCARD_VRS:
            check = single.replace("*", "").replace("?", "")
        problem = _check_single(leaf.vr, check) if check else None
        if problem:
            shown = _safe(single, leaf.keyword, leaf.vr)
            msg = f"invalid value '{shown}' for {spec.describe()} (VR {leaf.vr}): {problem}"
            raise ElementError(msg)
    return value


# Keywords whose values identify a patient: never echoed back in messages.
_PHI_VRS = {"PN"}
_PHI_KEYWORDS = {
    "PatientID",
    "PatientName",
    "PatientBirthDate",
    "OtherPatientIDs",
    "AccessionNumber",
    "PatientAddress",
    "PatientTelephoneNumbers",
    "IssuerOfPatientID",
    "PatientBirthName",
    "PatientMotherBirthName",
    "MedicalRecordLocator",
    "OtherPatientNames",
}


def is_phi(keyword: str, vr: str) -> bool:
    """Whether values of this element may identify a patient (kept out of messages)."""
    return vr in _PHI_VRS or vr in {"DA", "DT"} or keyword in _PHI_KEYWORDS


def _safe(value: str, keyword: str, vr: str) -> str:
    """The value as shown in a message: patient data is replaced by a placeholder."""
    if is_phi(keyword, vr) or keyword.startswith("Patient"):
        return "<redacted>"
    return value


# --- identifiers ------------------------------------------------------------------------------


def _typed(vr: str, value: str | None) -> object:
    if value is None or value == "":
        return None
    if vr in _NUMERIC_VRS:
        parts = [float(v) if vr in {"FL", "FD"} else int(v) for v in value.split("\\")]
        return parts[0] if len(parts) == 1 else parts
    return value


def build_identifier(specs: Iterable[ElementSpec]) -> Dataset:
    """The query identifier: every spec set on a fresh dataset (later specs override earlier)."""
    ds = Dataset()
    for spec in specs:
        target = ds
        for item in spec.path[:-1]:
            tag = Tag(item.tag)
            if tag not in target or not target[tag].value:
                target.add_new(tag, "SQ", DicomSequence([]))
            seq = target[tag].value
            assert item.index is not None
            while len(seq) <= item.index:
                seq.append(Dataset())
            target = seq[item.index]
        leaf = spec.leaf
        target.add_new(Tag(leaf.tag), leaf.vr, _typed(leaf.vr, spec.value) if leaf.vr != "SQ" else [])
    return ds


def merge(common: Sequence[ElementSpec], overrides: Sequence[ElementSpec]) -> tuple[ElementSpec, ...]:
    """Common elements with per-row overrides; order of first appearance is kept."""
    merged: dict[str, ElementSpec] = {spec.name: spec for spec in common}
    for spec in overrides:
        merged[spec.name] = spec
    return tuple(merged.values())


def level_of(specs: Iterable[ElementSpec]) -> str | None:
    """The QueryRetrieveLevel value among the specs, if set."""
    for spec in specs:
        if spec.leaf.keyword == "QueryRetrieveLevel" and len(spec.path) == 1:
            return spec.value or None
    return None


def column_text(attrs: Mapping[str, str], column: str) -> str:
    """The library value of ``column`` in a match's ``attrs``: the value itself, or for a path
    into a sequence (``Seq[0].Keyword``) the value found in the sequence's items, which a match
    holds in the DICOM JSON model; "" when the match has none."""
    if column in attrs or ("." not in column and "[" not in column):
        return attrs.get(column, "")
    try:
        path = parse_path(column)
        node: object = json.loads(attrs.get(path[0].keyword, "") or "[]")
    except (ElementError, ValueError):
        return ""
    for previous, step in pairwise(path):
        index = previous.index or 0
        if not isinstance(node, list) or len(node) <= index or not isinstance(node[index], dict):
            return ""
        element = node[index].get(f"{step.tag:08X}")
        node = element.get("Value", []) if isinstance(element, dict) else []
    return "\\".join(_json_text(value) for value in node) if isinstance(node, list) else ""


def _json_text(value: object) -> str:
    """One value of the DICOM JSON model as DICOM writes it (a person name's groups joined by =)."""
    if isinstance(value, dict):
        groups = [str(value.get(group, "")) for group in ("Alphabetic", "Ideographic", "Phonetic")]
        return "=".join(groups).rstrip("=")
    return str(value)


MAX_VALUE = 64 * 1024
"""The longest value kept in the library; a longer one fails the request (a query asks for
short identifying attributes, not documents)."""
UNDEFINED_LENGTH = 0xFFFFFFFF


def identifier_to_text(ds: Dataset) -> dict[str, str]:
    """Top-level elements of a response identifier as keyword → text: values as DICOM writes them
    (multiple values joined by a backslash), a sequence's items in the DICOM JSON model.

    Raises ProtocolError for a value longer than :data:`MAX_VALUE` or one pydicom cannot read."""
    try:
        return _identifier_to_text(ds)
    except ProtocolError:
        raise
    except Exception:  # hostile bytes decoded lazily by pydicom: any failure is the peer's
        msg = "the PACS sent a response identifier with an element that cannot be decoded"
        raise ProtocolError(msg) from None


def _identifier_to_text(ds: Dataset) -> dict[str, str]:
    out: dict[str, str] = {}
    for tag in list(ds.keys()):
        length = getattr(ds.get_item(tag), "length", 0) or 0  # the raw element: nothing decoded yet
        keyword = keyword_for_tag(tag)
        if MAX_VALUE < length != UNDEFINED_LENGTH:  # a sequence of undefined length is bounded below
            msg = (
                f"the PACS returned {Tag(tag)} {keyword or '(private)'} of {length} bytes, more than the "
                f"{MAX_VALUE} a library value may hold; leave it out of request.elements"
            )
            raise ProtocolError(msg)
        if not keyword or tag >> 16 in (0x0000, 0x0002):
            continue
        elem = ds[tag]
        if elem.VR == "SQ":  # the items in the DICOM JSON model (PS3.18 F.2), bounded as a whole
            text = json.dumps([item.to_json_dict() for item in elem.value], ensure_ascii=False)
            if len(text) > MAX_VALUE:
                msg = (
                    f"the PACS returned {Tag(tag)} {keyword} with items of more than the {MAX_VALUE} "
                    "characters a library value may hold; leave it out of request.elements"
                )
                raise ProtocolError(msg)
            out[keyword] = text if elem.value else ""
            continue
        value = elem.value
        if value is None:
            out[keyword] = ""
        elif isinstance(value, bytes | bytearray):
            continue
        elif elem.VM > 1:
            out[keyword] = "\\".join(str(item) for item in value)
        else:
            out[keyword] = str(value)
    return out
