"""The README's first command on a plain Debian python3: scripts/setup installs into a virtual
environment and runs the demo (``python3 -m pip install .`` stops there with
"externally-managed-environment")."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEBIAN_PYTHON = Path("/usr/bin/python3")


def _checkout(target: Path) -> Path:
    """The repository's files (tracked and new, not ignored), as a fresh checkout would have them."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    for name in filter(None, listed):
        source = ROOT / name.decode()
        if source.is_file():
            destination = target / name.decode()
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(source.read_bytes())
            destination.chmod(source.stat().st_mode)
    return target


@pytest.mark.skipif(not DEBIAN_PYTHON.is_file(), reason="needs Debian's /usr/bin/python3")
@pytest.mark.timeout(600)  # pip may download the wheels on a machine without a warm cache
def test_setup_installs_into_a_venv_and_runs_the_demo(tmp_path: Path) -> None:
    checkout = _checkout(tmp_path / "checkout")
    env = {
        "PATH": f"{DEBIAN_PYTHON.parent}:/bin",
        "HOME": os.environ.get("HOME", str(tmp_path)),
        "NO_COLOR": "1",
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    }
    plain = subprocess.run(
        ["python3", "-m", "pip", "install", "--dry-run", "."], cwd=checkout, env=env, capture_output=True, text=True
    )
    if "externally-managed-environment" not in plain.stderr:
        pytest.skip("this python3 is not externally managed, so the defect cannot show here")
    result = subprocess.run(
        ["scripts/setup", "--directory", str(tmp_path / "demo"), "--json"],
        cwd=checkout,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)
    assert (summary["find"]["outcome"], summary["retrieve"]["outcome"]) == ("complete", "complete")
    assert summary["retrieve"]["instances_new"] == 72
    assert (checkout / ".venv" / "bin" / "asyncdicom").is_file()
    version = subprocess.run(
        [str(checkout / ".venv" / "bin" / "asyncdicom"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0
