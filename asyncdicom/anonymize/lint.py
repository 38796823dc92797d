"""What ``check`` says about a script: what DAT would silently ignore in it (rules that name no
element, unknown flags) and function names it would write as literal text."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydicom.datadict import keyword_for_tag

from asyncdicom.anonymize.calls import NoParenthesis, parse_call
from asyncdicom.anonymize.dictionary import standard_tag
from asyncdicom.anonymize.functions import NAMES
from asyncdicom.anonymize.lookup import LookupFailed, LookupTable
from asyncdicom.anonymize.script import Script, load

_CALL = re.compile(r"(?<!\\)@\s*([^(\s@]*)\s*\(")


def warnings(script: Script) -> list[str]:
    """The script's warnings, with ``file:line``, in rule order."""
    found = list(script.warnings)
    for rule in script.rules.values():
        for match in _CALL.finditer(rule.script):
            name = re.sub(r"\s", "", match.group(1))
            if name not in NAMES:
                found.append(
                    f"{script.source}:{rule.line}: @{name}() is not a CTP function; DAT writes it as literal text"
                )
    return found


def check(path: Path) -> list[str]:
    """Load the script at ``path`` (ScriptError if it cannot be) and return its warnings."""
    return warnings(load(path))


_FALLBACKS = ("keep", "remove", "empty", "default", "ignore")


def lookups(script: Script) -> list[tuple[str, str, int]]:
    """(keyword, key type, script line) of each rule that looks its own element up in the lookup
    table with no fallback: a value missing from the table quarantines the file."""
    found = []
    for rule in script.rules.values():
        keyword = keyword_for_tag(standard_tag(rule.spec)) if standard_tag(rule.spec) else ""
        start = rule.script.find("@lookup")
        while keyword and start >= 0:
            try:
                call = parse_call(rule.script[start + 1 :])
            except NoParenthesis:
                break
            own = call.arg(0).lower() in ("this", keyword.lower())
            if call.name == "lookup" and own and len(call.args) >= 2 and call.arg(2) not in _FALLBACKS:
                found.append((keyword, call.arg(1), rule.line))
            start = rule.script.find("@lookup", start + 1)
    return found


def lookup_misses(script: Script, table: LookupTable, requests: Sequence[tuple[int, Mapping[str, str]]]) -> list[str]:
    """Warnings for values the batch supplies that a rule would look up and the table lacks:
    how many requests and their CSV lines, never the values. ``requests`` holds each request's
    CSV line and its single-valued top-level elements (keyword → value)."""
    out = []
    for keyword, key_type, line in lookups(script):
        missing = []
        for csv_line, values in requests:
            value = values.get(keyword)
            if not value or any(char in value for char in "*?\\"):
                continue  # not supplied, or a wildcard or a list: the PACS decides what comes back
            try:
                table.lookup(key_type, value)
            except LookupFailed:
                missing.append(csv_line)
        if missing:
            shown = ", ".join(map(str, missing[:10])) + (", …" if len(missing) > 10 else "")
            out.append(
                f"{table.source or 'the lookup table'} has no {key_type!r} entry for the {keyword} of "
                f"{len(missing)} requests (CSV lines {shown}); the rule at {script.source}:{line} would "
                "quarantine their instances: add the entries, or a fallback such as @lookup(this,"
                f"{key_type},keep)"
            )
    return out
