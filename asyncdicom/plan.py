"""Turn the config's elements and the batch CSV into a validated, de-duplicated plan (pure).

Each CSV row becomes one request whose values override the common elements. Problems are
reported as :class:`~asyncdicom.errors.PlanError` with ``file:line`` and the column.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from asyncdicom.config import Config
from asyncdicom.elements import ElementError, ElementSpec, check_value, merge, parse_path
from asyncdicom.errors import PlanError
from asyncdicom.models import Request

# Levels each query/retrieve information model allows (PS3.4 C.6).
MODEL_LEVELS = {
    "patient": ("PATIENT", "STUDY", "SERIES", "IMAGE"),
    "study": ("STUDY", "SERIES", "IMAGE"),
    "psonly": ("PATIENT", "STUDY"),
}


@dataclass(frozen=True, slots=True)
class Plan:
    """The validated list of requests of one run."""

    requests: tuple[Request, ...]
    columns: tuple[str, ...]
    source: Path | None
    rows: int
    duplicates: int
    blank_lines: int
    warnings: tuple[str, ...] = ()


def request_key(fingerprint: str, elements: tuple[ElementSpec, ...]) -> str:
    """Stable identity of a request: the config's query fingerprint and its sorted elements."""
    material = fingerprint + json.dumps(sorted((s.name, s.value or "") for s in elements))
    return hashlib.blake2b(material.encode(), digest_size=12).hexdigest()


def _header(path: Path, row: list[str]) -> tuple[ElementSpec, ...]:
    specs: list[ElementSpec] = []
    seen: dict[str, int] = {}
    for column, cell in enumerate(row, start=1):
        where = f"{path}:1"
        if not cell.strip():
            raise PlanError(
                where, f"column {column} of the header is empty; every column needs a keyword or (gggg,eeee) tag"
            )
        if "=" in cell:
            raise PlanError(
                where, f"column {column} header '{cell.strip()}' holds a value; the header names elements only"
            )
        if ";" in cell or "\t" in cell:
            separator = "';'" if ";" in cell else "a tab"
            raise PlanError(
                where,
                f"column {column} header '{cell.strip()}' looks like several columns separated by {separator}; "
                "the batch CSV is comma-separated (save it as CSV with ',' between values)",
            )
        try:
            spec = ElementSpec(parse_path(cell))
        except ElementError as exc:
            raise PlanError(where, f"column {column}: {exc}") from None
        if spec.name in seen:
            raise PlanError(where, f"column {column} repeats {spec.describe()} of column {seen[spec.name]}")
        seen[spec.name] = column
        specs.append(spec)
    return tuple(specs)


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """CSV rows with the line they start on; handles a UTF-8 BOM and CRLF."""
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            line = 1
            for row in reader:
                yield line, row
                line = reader.line_num + 1
    except UnicodeDecodeError:
        line = _first_non_utf8_line(path)
        raise PlanError(f"{path}:{line}", "unable to read the CSV as it is not UTF-8; save it as UTF-8") from None
    except csv.Error as exc:
        raise PlanError(str(path), f"unable to read the CSV as {exc}") from None
    except OSError as exc:
        raise PlanError(str(path), f"unable to read the CSV as {exc.strerror}") from None


def _first_non_utf8_line(path: Path) -> int:
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            return number
    return 1  # pragma: no cover - the decoder failed, so some line is not UTF-8


_TAG_START = re.compile(r"^\s*\([0-9A-Fa-f]{4}\s*$")
_TAG_END = re.compile(r"^\s*[0-9A-Fa-f]{4}\s*\)\s*$")


def _join_split_tags(row: list[str]) -> list[str]:
    """Rejoin ``(gggg,eeee)`` header cells that an unquoted comma split in two."""
    cells: list[str] = []
    for cell in row:
        if cells and _TAG_START.match(cells[-1]) and _TAG_END.match(cell):
            cells[-1] = f"{cells[-1].strip()},{cell.strip()}"
        else:
            cells.append(cell)
    return cells


def library_columns(elements: tuple[ElementSpec, ...], header: tuple[ElementSpec, ...]) -> tuple[str, ...]:
    """Columns of the library file: requested elements in the order given, config first; a
    sequence by its keyword (its items in the DICOM JSON model), a path into one by its path."""
    columns: list[str] = []
    for spec in (*elements, *header):
        name = spec.leaf.keyword if len(spec.path) == 1 else spec.name
        if name and name != "QueryRetrieveLevel" and name not in columns:
            columns.append(name)
    return tuple(columns)


def _check_level(config: Config, request: Request, where: str) -> None:
    if config.request.type == "c-echo":
        return
    level = request.level
    allowed = MODEL_LEVELS[config.request.model]
    if level is None:
        raise PlanError(
            where,
            "(0008,0052) 'QueryRetrieveLevel' is not set; "
            f"add QueryRetrieveLevel={allowed[0]} to request.elements or a column",
        )
    if level not in allowed:
        raise PlanError(
            where,
            f"QueryRetrieveLevel {level} is not allowed by the {config.request.model} model (request.model); "
            f"use one of {', '.join(allowed)}",
        )


MAX_ROWS = 1_000_000
"""Rows a batch CSV may hold: a plan is kept in memory (a million rows: ~450 MB and ~27 s for
``check``, ~750 MB for ``run``, measured)."""


def build_plan(config: Config) -> Plan:
    """Read ``request.elements_batch_file`` (if any) and build the plan."""
    common = config.request.elements
    fingerprint = config.query_fingerprint()
    path = config.request.elements_batch_file
    if path is None:
        request = Request(request_key(fingerprint, common), 0, common)
        _check_level(config, request, "request.elements")
        return Plan((request,), library_columns(common, ()), None, 1, 0, 0)

    rows = _rows(path)
    header: tuple[ElementSpec, ...] | None = None
    requests: list[Request] = []
    seen: set[str] = set()
    duplicates = blanks = count = 0
    for line, row in rows:
        if not row or all(not cell.strip() for cell in row):
            blanks += header is not None
            continue
        if header is None:
            header = _header(path, _join_split_tags(row))
            continue
        if len(row) != len(header):
            raise PlanError(f"{path}:{line}", f"row has {len(row)} values but the header has {len(header)} columns")
        values: list[ElementSpec] = []
        for column, (spec, cell) in enumerate(zip(header, row, strict=True), start=1):
            try:
                values.append(spec.with_value(check_value(spec, cell)))
            except ElementError as exc:
                raise PlanError(f"{path}:{line}", f"column {column}: {exc}") from None
        count += 1
        if count > MAX_ROWS:
            msg = f"more than {MAX_ROWS} rows; split the batch into several CSV files, each run with its own config"
            raise PlanError(f"{path}:{line}", msg)
        elements = merge(common, values)
        key = request_key(fingerprint, elements)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        request = Request(key, line, elements)
        _check_level(config, request, f"{path}:{line}")
        requests.append(request)
    if header is None:
        raise PlanError(str(path), "the CSV is empty; its first line must name the columns")
    if not requests:
        raise PlanError(str(path), "the CSV has a header but no rows")
    columns = library_columns(common, header)
    return Plan(tuple(requests), columns, path, count, duplicates, blanks, _list_warnings(path, requests))


SINGLE_VALUED = ("PatientID", "AccessionNumber")
"""Keys a batch names one of per row: a backslash makes the PACS read a list of them."""


def _list_warnings(path: Path, requests: Sequence[Request]) -> tuple[str, ...]:
    """A warning per single-valued key that some rows give as a DICOM list (values not shown)."""
    out = []
    for keyword in SINGLE_VALUED:
        lines = [
            request.line
            for request in requests
            if any(s.leaf.keyword == keyword and len(s.path) == 1 and "\\" in (s.value or "") for s in request.elements)
        ]
        if lines:
            shown = ", ".join(map(str, lines[:10])) + (", …" if len(lines) > 10 else "")
            out.append(
                f"{path}: the {keyword} of {len(lines)} rows (lines {shown}) holds a backslash, which DICOM reads as "
                f"a list of several {keyword}s; if that is not meant, remove the backslash"
            )
    return tuple(out)
