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


def test_a_batch_longer_than_the_bound_names_the_row_past_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch CSV may hold MAX_ROWS rows (a million; scripts/hardening_report tries a million and
    one); the first row past it is named, with what to do."""
    from asyncdicom import plan

    monkeypatch.setattr(plan, "MAX_ROWS", 3)
    rows = b"PatientID,StudyDate\n" + b"".join(b"P%d,20200101\n" % n for n in range(4))
    config = Case("bound", csv=rows).write(tmp_path)
    result = cli("check", config)
    assert result.exit_code == 2
    assert "batch.csv:5: more than 3 rows; split the batch" in result.stdout + result.stderr
    config = Case("at-the-bound", csv=rows[: rows.rindex(b"P3")]).write(tmp_path / "ok")
    assert cli("check", config).exit_code == 0
