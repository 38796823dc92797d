"""Every hostile config and CSV of tests/hostile_inputs.py through `asyncdicom check`: the exit
code it should get, a message naming where, no traceback, nothing written anywhere (#15)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli_helpers import cli
from tests.hostile_inputs import CASES, Case


def test_the_corpus_is_large_enough() -> None:
    assert len(CASES) >= 60
    assert len({case.name for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_hostile_input(tmp_path: Path, case: Case) -> None:
    root = tmp_path / "root"
    config = case.write(root)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    result = cli("check", config)
    output = result.stdout + result.stderr
    assert result.exit_code == case.exit_code, output[-2000:]
    assert "Traceback" not in output
    assert case.expect in output, output[-2000:]
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # check writes nothing
