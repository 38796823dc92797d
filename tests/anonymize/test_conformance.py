"""The shared conformance vectors: 300 cases recorded from DAT, compared element by element
by their own compare.py, running the real command line."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

VECTORS = Path(__file__).resolve().parents[1] / "data" / "ctp-vectors"


@pytest.mark.timeout(900)
def test_all_vectors_pass() -> None:
    command = (
        f"{shlex.quote(sys.executable)} -m asyncdicom anonymize -q --script {{script}} {{lut_opt}} {{input}} {{output}}"
    )
    result = subprocess.run(
        [sys.executable, str(VECTORS / "compare.py"), str(VECTORS), command, "-j", "2"],
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.stdout.strip().splitlines()[-1] == "300 passed, 0 failed", (
        result.stdout[-3000:] + result.stderr[-2000:]
    )
