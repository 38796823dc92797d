"""The live dashboard, rendered from snapshots to a fixed-width console (pure: no run needed)."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from rich.console import Console

from asyncdicom.dashboard import Header, render
from asyncdicom.stats import RunSnapshot
from tests.conftest import LoadedOrthanc, write_yaml
from tests.test_retrieve_orthanc import retrieve_config, write_batch

HEADER = Header(kind="c-get", pacs="PACS@pacs.example.org:4242", output="/data/out", ledger="/data/out/l.sqlite3")


def _snapshot(elapsed: float, **counts: object) -> RunSnapshot:
    base: dict[str, object] = {
        "planned": 400,
        "skipped": 0,
        "done": 0,
        "failed": 0,
        "in_flight": 0,
        "partial": 0,
        "matches": 0,
        "retries": 0,
        "rejections": 0,
        "silent": 0,
        "concurrency": 8,
        "threads": 8,
        "elapsed": elapsed,
    }
    base.update(counts)
    return RunSnapshot(**base)  # type: ignore[arg-type]


def _text(renderable: object, width: int = 120) -> str:
    console = Console(width=width, record=True, color_system=None, force_terminal=False)
    console.print(renderable)
    return console.export_text()


def test_retrieval_dashboard_shows_progress_rates_latency_outcomes_and_problems() -> None:
    earlier = _snapshot(50.0, done=100, instances=2000, bytes=1_000_000_000)
    now = _snapshot(
        60.0,
        done=117,
        partial=1,
        failed=2,
        in_flight=6,
        concurrency=6,
        instances=2400,
        quarantined=14,
        kept_compressed=3,
        retrying=2,
        rejections=4,
        bytes=1_250_000_000,
        expected=9600,
        latency_p50=0.021,
        latency_p95=0.08,
        problems=("PACS busy (temporary congestion); holding at most 6 associations",),
        window="open, closes in 3h 05m",
    )
    text = _text(render(HEADER, now, earlier))
    assert "asyncdicom run · c-get · PACS@pacs.example.org:4242 · elapsed 0:01:00" in text
    assert "120/400  30%  ETA 0:02:20" in text  # 20 requests in the last 10 s: 280 left at 2/s
    assert "2,414/9,600 reported by the PACS so far" in text
    assert "2.0 requests/s · 41 instances/s · 25.0 MB/s" in text
    assert "time to first instance p50 0.021 s · p95 0.080 s" in text
    assert "associations 6 in use, limit 6 of 8" in text
    assert "done 117 · partial 1 · failed 2 · retrying 2 · quarantined 14 · kept compressed 3 · rejections 4" in text
    assert "schedule   open, closes in 3h 05m" in text
    assert "• PACS busy (temporary congestion); holding at most 6 associations" in text
    assert "output     /data/out" in text and "ledger     /data/out/l.sqlite3" in text


def test_find_dashboard_counts_matches_and_round_trips() -> None:
    header = Header(kind="c-find", pacs="PACS@h:1", output="/data/library.csv", ledger="/data/l.sqlite3")
    text = _text(render(header, _snapshot(10.0, done=50, matches=75, latency_p50=0.004)))
    assert "matches" in text and "75" in text
    assert "5.0 requests/s" in text and "MB/s" not in text
    assert "C-FIND round trip p50 0.004 s · p95 –" in text
    assert "instances" not in text
    assert "problems" not in text and "schedule" not in text


def test_a_finished_run_has_no_time_left_and_a_new_one_no_rate_yet() -> None:
    assert "ETA 0:00:00" in _text(render(HEADER, _snapshot(5.0, done=400)))
    assert "0/400  0%  ETA –" in _text(render(HEADER, _snapshot(0.0)))


def test_narrow_terminal_wraps_without_losing_counts() -> None:
    text = _text(render(HEADER, _snapshot(60.0, done=10, failed=1)), width=60)
    assert "failed 1" in text


@pytest.mark.orthanc
@pytest.mark.parametrize("term", ["xterm-256color", "dumb", "no-color"])
def test_dashboard_under_a_pseudo_terminal(tmp_path: Path, orthanc: LoadedOrthanc, term: str) -> None:
    """asyncdicom run on a (pseudo-)terminal shows the live dashboard while it works, then a clean
    final summary; --json still goes to stdout alone. With TERM=dumb or NO_COLOR, no dashboard."""
    studies = sorted({str(ds.StudyInstanceUID) for ds in orthanc.instances})[:40]
    rows = [{"StudyInstanceUID": uid} for uid in studies]
    write_batch(tmp_path, rows)
    doc = retrieve_config(orthanc, "c-get", rows, "STUDY", threads=2)
    doc["request"]["throttle_time"] = 0.05  # long enough for a few frames
    config = write_yaml(tmp_path / "c.yml", doc)
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 140, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "FORCE_COLOR")}
    env.update(TERM="xterm-256color" if term == "no-color" else term, PYTHONUNBUFFERED="1")
    if term == "no-color":
        env["NO_COLOR"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "asyncdicom", "run", str(config), "--json"],
        stdout=subprocess.PIPE,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    screen = bytearray()
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        screen += chunk
    stdout, _ = process.communicate(timeout=120)
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", screen.decode("utf-8", "replace"))
    assert process.returncode == 0, text[-3000:]
    dashboard_shown = "reported by the PACS so far" in text and "instances/s" in text
    assert dashboard_shown is (term == "xterm-256color")
    assert "asyncdicom run: complete" in text  # and the final summary after it
    summary = json.loads(stdout)
    assert (summary["done"], summary["outcome"]) == (40, "complete")


def test_a_plan_gives_the_instance_bar_its_total_and_an_eta() -> None:
    """After `asyncdicom plan`, the instances bar runs to the planned total, with an ETA at the
    instance rate."""
    earlier = _snapshot(50.0, done=10, instances=1000)
    now = _snapshot(60.0, done=12, instances=1500, expected=1600, planned_instances=9600)
    text = _text(render(HEADER, now, earlier))
    assert "1,500/9,600 planned  ETA 0:02:42" in text  # 8,100 left at 50 instances/s


def test_no_escape_codes_reach_a_file(tmp_path: Path) -> None:
    """Where stderr is a file or a pipe (cron), there is no dashboard and no escape code, even with
    a colourful TERM."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm-256color"
    result = subprocess.run(
        [sys.executable, "-m", "asyncdicom", "demo", "--directory", str(tmp_path / "demo")],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert b"\x1b[" not in result.stderr and b"\x1b[" not in result.stdout
    assert b"asyncdicom run: complete" in result.stderr
