"""The short version of every scenario of scripts/faults: 0 files lost, partial or stray."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fault_scenarios import Data, make_data, scenarios

pytestmark = [pytest.mark.orthanc, pytest.mark.network]

_MADE: dict[tuple[int, int, int], Data] = {}
_FOLDER: list[Path] = []


def _data_for(studies: int, per_study: int, rows: int) -> Data:
    key = (studies, per_study, rows)
    if key not in _MADE:
        _MADE[key] = make_data(_FOLDER[0] / f"data-{studies}x{per_study}x{rows}", studies, per_study, rows)
    return _MADE[key]


NAMES = list(scenarios(lambda s, p, r: Data([], Path(), {}, []), short=True))


@pytest.fixture(scope="module", autouse=True)
def _data_folder(tmp_path_factory: pytest.TempPathFactory) -> None:
    _FOLDER[:] = [tmp_path_factory.mktemp("fault-data")]


@pytest.mark.parametrize("name", NAMES)
def test_scenario_loses_nothing(tmp_path: Path, name: str) -> None:
    result = scenarios(_data_for, short=True)[name](tmp_path)
    if result.note.startswith("skipped"):
        pytest.skip(result.note)
    assert result.tries >= 1
    assert (result.lost, result.partial, result.stray) == (0, 0, 0), result
    assert result.survived == result.tries, result
