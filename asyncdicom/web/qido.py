"""QIDO-RS queries from C-FIND requests, and their answers as library matches (pure).

A request's level picks the resource (studies, series, instances, below the study and series
when the request names one each); keys with a value become query parameters, keys without one
``includefield``; a UID list (``a\\b``) is written with commas, as QIDO-RS wants it; a path into a
sequence is asked for by its sequence and matched as ``Sequence.Keyword``. Answers are DICOM JSON
data sets, turned into the same keyword → text matches a C-FIND gives
(:func:`asyncdicom.elements.identifier_to_text`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Sequence
from typing import Any

from pydicom.dataset import Dataset

from asyncdicom.elements import ElementSpec, PathItem, identifier_to_text
from asyncdicom.errors import HttpRefused
from asyncdicom.models import Request

UNIQUE = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
_PLAIN_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def _name(item: PathItem) -> str:
    return item.keyword or f"{item.tag:08X}"


def _value(spec: ElementSpec) -> str:
    value = spec.value or ""
    return value.replace("\\", ",") if spec.leaf.vr == "UI" else value


def query(request: Request) -> tuple[str, list[tuple[str, str]], tuple[str, ...]]:
    """(resource path below the base URL, query parameters, the match keys to keep)."""
    level = request.level or "STUDY"
    if level not in UNIQUE:  # a CSV row may name its own level
        msg = f"QIDO-RS has no {level} level; ask at STUDY level with PatientID as a key"
        raise HttpRefused(msg)
    given: dict[str, str] = {}
    params: list[tuple[str, str]] = []
    wanted: list[str] = [UNIQUE.get(level, "StudyInstanceUID")]
    for spec in request.elements:
        top = _name(spec.path[0])
        if top == "QueryRetrieveLevel":
            continue
        wanted.append(top)
        if len(spec.path) == 1 and spec.value:
            given[top] = spec.value
        elif spec.value:
            params.append((".".join(_name(item) for item in spec.path), _value(spec)))
        else:
            params.append(("includefield", top))
    study, series = given.get("StudyInstanceUID", ""), given.get("SeriesInstanceUID", "")
    in_path: set[str] = set()
    if level == "STUDY":
        path = "studies"
    elif _PLAIN_UID.fullmatch(study) and level == "SERIES":
        path, in_path = f"studies/{study}/series", {"StudyInstanceUID"}
    elif level == "SERIES":
        path = "series"
    elif _PLAIN_UID.fullmatch(study) and _PLAIN_UID.fullmatch(series):
        path, in_path = f"studies/{study}/series/{series}/instances", {"StudyInstanceUID", "SeriesInstanceUID"}
    elif _PLAIN_UID.fullmatch(study):
        path, in_path = f"studies/{study}/instances", {"StudyInstanceUID"}
    else:
        path = "instances"
    by_keyword = {_name(spec.path[0]): spec for spec in request.elements if len(spec.path) == 1}
    matching = [(keyword, _value(by_keyword[keyword])) for keyword in given if keyword not in in_path]
    return path, [*matching, *params], tuple(dict.fromkeys(wanted))


def matches(answer: Sequence[dict[str, Any]], keep: Sequence[str], where: str) -> list[dict[str, str]]:
    """The library matches of a QIDO-RS answer: each data set's ``keep`` keys as text."""
    found = []
    for number, item in enumerate(answer):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a server's invalid values are kept as they are
                ds = Dataset.from_json(item, bulk_data_uri_handler=_no_bulk_data)
        except Exception:  # hostile JSON: any failure to read it is the server's
            msg = f"{where} answered data set {number + 1} in a form that cannot be read as DICOM JSON"
            raise HttpRefused(msg) from None
        text = identifier_to_text(ds)
        found.append({key: text[key] for key in keep if key in text})
    return found


def _no_bulk_data(*_: object) -> bytes:
    """Bulk data is never fetched for the library (binary values are not library values)."""
    return b""
