"""The element names CTP scripts use (dcm4che-1.4) and CTP's private tag dictionary.

Both tables are generated from their upstream XML by ``scripts/gen_ctp_tables`` (see there
for sources and licences) and loaded once.
"""

from __future__ import annotations

import functools
import re
from importlib.resources import files

from asyncdicom.anonymize.java import trim

_HEX = re.compile(r"[0-9a-fA-F]{1,8}")
_HEX_COMMA = re.compile(r"([0-9a-fA-F]{0,4}),([0-9a-fA-F]{1,4})")


def _rows(name: str) -> list[list[str]]:
    text = files("asyncdicom.anonymize").joinpath("data", name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


@functools.cache
def names() -> dict[str, int]:
    """dcm4che-1.4 keyword → tag (case-sensitive)."""
    return {key: int(tag, 16) for key, tag, _ in _rows("dcm4che_dictionary.tsv")}


@functools.cache
def vrs() -> dict[int, str]:
    """tag → dcm4che dictionary VR (the first of alternatives such as ``US,SS``)."""
    table: dict[int, str] = {}
    for _, tag, vr in _rows("dcm4che_dictionary.tsv"):
        table.setdefault(int(tag, 16), vr.split(",")[0])
    return table


@functools.cache
def private_tags() -> dict[tuple[int, str, int], tuple[str, str]]:
    """(group, upper-cased creator, element byte) → (VR, code) from CTP's PrivateTagDictionary."""
    return {(int(g, 16), creator, int(e, 16)): (vr, code) for g, creator, e, vr, code in _rows("private_tags.tsv")}


def dictionary_vr(tag: int) -> str:
    """dcm4che's VR for ``tag``, or ``""`` when it does not know the tag."""
    return vrs().get(tag, "")


def private_entry(tag: int, creator: str | None) -> tuple[str, str] | None:
    """(VR, code) of a private data element under ``creator``, if CTP's dictionary has it."""
    if creator is None:
        return None
    return private_tags().get((tag >> 16, creator.upper(), tag & 0xFF))


def is_safe(tag: int, creator: str | None) -> bool:
    """Whether CTP's dictionary codes this private data element ``K`` (kept as safe)."""
    entry = private_entry(tag, creator)
    return entry is not None and entry[1] == "K"


def _hex_int(text: str) -> int:
    try:
        return int(text, 16) if text else 0
    except ValueError:
        return 0


@functools.lru_cache(maxsize=4096)
def standard_tag(name: str) -> int:
    """dcm4che's ``getElementTag``: keyword, ``ggggeeee`` (1–8 hex digits) or ``gggg,eeee``,
    optionally wrapped in ``{}``, ``[]`` or ``()``; 0 when it is none of these."""
    name = trim(name)
    if len(name) >= 2 and name[0] == "{" and name[-1] == "}":
        name = name[1:-1]
    elif (len(name) >= 2 and name[0] == "[" and name[-1] == "]") or (
        len(name) >= 2 and name[0] == "(" and name[-1] == ")"
    ):
        name = trim(name[1:-1])
    tag = names().get(name)
    if tag is not None:
        return tag
    if _HEX.fullmatch(name):
        return _hex_int(name)
    match = _HEX_COMMA.fullmatch(name)
    if match:
        return (_hex_int(match.group(1)) << 16) | (_hex_int(match.group(2)) & 0xFFFF)
    return 0
