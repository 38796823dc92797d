"""Every third-party module the package and its tests import is declared in pyproject.toml.

A module that arrives only as another package's dependency (click came with older typer) works
on a machine that happens to have it and fails on a fresh one: the suite once stopped with 7
test files unable to import.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    specs = [*project["dependencies"], *project["optional-dependencies"]["test"]]
    return {re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in specs}


def _imported_top_levels(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.rglob("*.py")):
        if "data" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], path)
    return found


def test_every_imported_distribution_is_declared() -> None:
    distributions = importlib.metadata.packages_distributions()
    declared = _declared()
    undeclared = {}
    for folder in (ROOT / "asyncdicom", ROOT / "tests"):
        for module, path in _imported_top_levels(folder).items():
            if module in sys.stdlib_module_names or module in ("asyncdicom", "tests"):
                continue
            owners = {name.lower().replace("_", "-") for name in distributions.get(module, [])}
            if not owners & declared:
                undeclared[module] = str(path.relative_to(ROOT))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"


def test_the_check_sees_a_transitive_only_module() -> None:
    """The check itself: importlib.metadata maps click to its own distribution, not to typer's."""
    owners = importlib.metadata.packages_distributions().get("typer", [])
    assert "typer" in [name.lower() for name in owners]
    assert "click" not in _declared()
