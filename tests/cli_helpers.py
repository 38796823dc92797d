"""Run the asyncdicom CLI in-process (CliRunner) or as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from typer.testing import CliRunner, Result

from asyncdicom.cli import app


def cli(*args: object) -> Result:
    """The CLI in this process; the umask a run sets (output.permissions) is restored after it."""
    mask = os.umask(0o022)
    os.umask(mask)
    try:
        return CliRunner().invoke(app, [str(a) for a in args])
    finally:
        os.umask(mask)


def cli_json(*args: object) -> tuple[Result, dict[str, Any]]:
    result = cli(*args, "--json")
    try:
        return result, json.loads(result.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"no JSON on stdout (exit {result.exit_code}): {result.stderr[-3000:]}") from None


def spawn(*args: object, cwd: Path | None = None) -> subprocess.Popen[str]:
    env = dict(os.environ, NO_COLOR="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "asyncdicom", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def library(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def ledger_instances(ledger: Path) -> int:
    """Instance rows in another process's ledger, read-only (0 while it cannot be read yet)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=1) as db:
            return int(db.execute("SELECT COUNT(*) FROM instances").fetchone()[0])
    except sqlite3.Error:
        return 0
