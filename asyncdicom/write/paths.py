"""Directory and file names from DICOM attributes: sanitised, bounded, confined (pure)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath

MAX_COMPONENT_BYTES = 100
_FORBIDDEN = re.compile(r'[\x00-\x1f\x7f/\\<>:"|?*]')
_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Zl", "Zp"})  # shown as nothing, or as something else
_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}


def placeholder(keyword: str) -> str:
    """The visible name used when an attribute is missing or empty."""
    return f"NO_{keyword}"


def sanitize(value: str, keyword: str) -> str:
    """One safe path component for ``value``: no separators, control, format (bidirectional
    overrides such as U+202E, which make a name read backwards) or reserved characters, never
    ``.``/``..``, at most 100 bytes (long values keep a hash suffix so they stay distinct)."""
    text = unicodedata.normalize("NFC", value).strip()
    text = _FORBIDDEN.sub("_", text)
    if not text.isascii():  # C1 controls, bidirectional overrides (U+202E), zero-width and line separators
        text = "".join("_" if unicodedata.category(char) in _INVISIBLE else char for char in text)
    text = text.strip(" .")
    if not text or set(text) <= {"_"}:
        return placeholder(keyword)
    if text.upper().split(".")[0] in _RESERVED:
        text = "_" + text
    raw = text.encode("utf-8")
    if len(raw) > MAX_COMPONENT_BYTES:
        digest = hashlib.sha256(raw).hexdigest()[:12]
        text = raw[: MAX_COMPONENT_BYTES - 13].decode("utf-8", "ignore").rstrip(" .") + "_" + digest
    return text


def cleaned(value: str) -> bool:
    """Whether :func:`sanitize` replaces characters of ``value`` (separators, controls, marks that
    change the text's direction, a name of dots only), rather than just using it."""
    text = unicodedata.normalize("NFC", value).strip()
    if _FORBIDDEN.search(text) or (text and not text.strip(" .")):
        return True
    return not text.isascii() and any(unicodedata.category(char) in _INVISIBLE for char in text)


def render_parts(structure: Sequence[str], filename: str, attrs: Mapping[str, str]) -> tuple[str, ...]:
    """The components of ``<structure…>/<filename>.dcm`` from the attribute values."""
    return (
        *(sanitize(attrs.get(keyword, ""), keyword) for keyword in structure),
        sanitize(attrs.get(filename, ""), filename) + ".dcm",
    )


def render(structure: Sequence[str], filename: str, attrs: Mapping[str, str]) -> PurePosixPath:
    """Relative path ``<structure…>/<filename>.dcm`` from the attribute values."""
    return PurePosixPath(*render_parts(structure, filename, attrs))


def confine(root: Path, relative: PurePosixPath) -> Path:
    """``root / relative``, refusing anything that would land outside ``root``."""
    target = (root / relative).resolve()
    base = root.resolve()
    if target != base and base not in target.parents:
        msg = f"Unable to use the path {relative} as it leaves the output directory"
        raise ValueError(msg)
    return target


def collision_warning(structure: Sequence[str], filename: str) -> str | None:
    """A warning when different instances can render to the same path."""
    unique = {"SOPInstanceUID", "MediaStorageSOPInstanceUID"}
    if filename in unique:
        return None
    if filename in {"InstanceNumber", "AcquisitionNumber", "SliceLocation", "ImageIndex"}:
        if "SeriesInstanceUID" not in structure and "SeriesNumber" not in structure:
            return (
                f"output.filename {filename} repeats across series, and output.directory_structure has no "
                "series-level key (SeriesInstanceUID): files of different series will collide and be "
                "suffixed _1, _2…; add SeriesInstanceUID to the structure"
            )
        return None
    return (
        f"output.filename {filename} may repeat across instances: colliding files will be suffixed _1, _2…; "
        "SOPInstanceUID never collides"
    )
