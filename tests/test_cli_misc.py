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
    assert result.stdout.strip() == f"asyncdicom {asyncdicom.__version__}"  # the output, on stdout


def test_help_shows_no_placeholders_on_flags() -> None:
    """Boolean flags read as flags in --help (typer's rich help showed '--json <bool>')."""
    from tests.cli_helpers import cli

    result = cli("run", "--help")
    assert result.exit_code == 0
    flags = [line for line in result.output.splitlines() if line.strip().startswith(("--json", "--restart", "-h,"))]
    assert len(flags) == 3, result.output
    assert not any("<bool>" in line for line in result.output.splitlines()), result.output


def test_json_error_document(tmp_path: Path) -> None:
    """With --json an early error (here an invalid config) is still one JSON document on stdout,
    so a cron line appending to runs.jsonl records it."""
    from tests.cli_helpers import cli_json

    config = tmp_path / "c.yml"
    config.write_text("pacs: {hostname: h, port: 99999, aet: A}\nrequest: {type: c-find, elements: [PatientID]}\n")
    result, doc = cli_json("run", config)
    assert result.exit_code == 2
    assert doc == {
        "schema": 1,
        "command": "run",
        "ok": False,
        "exit_code": 2,
        "error": "pacs.port: port 99999 is out of range; use 1 to 65535",
    }


def test_log_file_gets_plain_lines_even_with_quiet(tmp_path: Path) -> None:
    """--log-file appends the run's log as plain lines (info and up), even when -q keeps stderr to
    warnings; an unwritable path is a usage error."""
    from tests.cli_helpers import cli
    from tests.conftest import find_config, write_yaml
    from tests.pacs_servers import free_port

    doc = find_config(free_port(), unreachable_timeout=0)
    config = write_yaml(tmp_path / "c.yml", doc)
    result = cli("run", config, "-q", "--log-file", tmp_path / "logs" / "run.log")
    assert result.exit_code == 1
    text = (tmp_path / "logs" / "run.log").read_text()
    assert " INFO plan: 1 requests" in text and "\x1b[" not in text
    assert "plan: 1 requests" not in result.stderr  # -q: stderr has warnings and errors only
    (tmp_path / "blocked").write_text("a file, not a folder")
    bad = cli("run", config, "--log-file", tmp_path / "blocked" / "run.log")
    assert bad.exit_code == 2 and "--log-file: unable to open" in bad.stderr
