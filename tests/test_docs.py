"""The documentation cannot drift: docs/configuration.md against the config loader's schema."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from asyncdicom.config.schema import ALIASES, SECTIONS, default, keys

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _tables() -> dict[str, dict[str, str]]:
    """Section → key → the default cell, from the reference's tables."""
    tables: dict[str, dict[str, str]] = {}
    section = ""
    for line in (DOCS / "configuration.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"## `(\w+)`", line)
        if heading:
            section = heading.group(1)
            tables[section] = {}
        elif line.startswith("#"):  # a subsection of prose and tables of its own
            section = ""
        elif section and line.startswith("| ") and not line.startswith(("| key", "| ---")):
            cells = [cell.strip() for cell in line.strip("|").split("|")]
            tables[section][cells[0]] = cells[2]
    return tables


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def test_every_key_is_documented_with_the_loaders_default() -> None:
    tables = _tables()
    assert set(tables) == set(SECTIONS)
    for section, cls in SECTIONS.items():
        assert set(tables[section]) == set(keys(section)), section
        for key, cell in tables[section].items():
            dotted = f"{section}.{key}"
            if cell == "required" or dotted in ALIASES:
                continue
            try:
                value = default(cls, key)
            except KeyError:  # computed by the loader from other keys (the ledger's path)
                value = None
            if cell.startswith("`"):
                assert cell == f"`{_literal(value)}`", dotted
            else:  # "none…": only where the loader has no value of its own
                assert cell.startswith("none") and value in (None, "", (), 0), dotted  # 0: no port


def test_required_keys_have_no_default() -> None:
    for section, cls in SECTIONS.items():
        for key, cell in _tables()[section].items():
            if cell == "required":
                try:
                    default(cls, key)
                except KeyError:
                    continue
                raise AssertionError(f"{section}.{key} is documented as required but has a default")
