"""What ``check`` says about a script: what DAT would silently ignore in it (rules that name no
element, unknown flags) and function names it would write as literal text."""

from __future__ import annotations

import re
from pathlib import Path

from asyncdicom.anonymize.functions import NAMES
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
