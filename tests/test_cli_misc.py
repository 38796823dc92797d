"""The command line as a process: entry points behave under re-import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import asyncdicom


def test_main_module_reimport_does_not_run_the_cli() -> None:
    """anyio's worker processes re-import the main module: importing asyncdicom.__main__ under another
    name must not start the CLI (it once re-ran the whole job in every decompression worker)."""
    main = Path(asyncdicom.__file__).with_name("__main__.py")
    code = f"import runpy; runpy.run_path({str(main)!r}, run_name='__mp_main__'); print('imported only')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported only"


def test_python_m_asyncdicom_version() -> None:
    """python -m asyncdicom still runs the CLI."""
    result = subprocess.run(
        [sys.executable, "-m", "asyncdicom", "--version"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0
    assert result.stderr.strip() == f"asyncdicom {asyncdicom.__version__}"
