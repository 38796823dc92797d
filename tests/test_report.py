"""Text for people: the progress line and the run summary."""

from __future__ import annotations

import dataclasses

import pytest

from asyncdicom.report import progress_line, summary
from asyncdicom.stats import RunSnapshot, RunStats


def test_progress_line() -> None:
    """The progress line shows settled/total, rate, in-flight and any trouble counters."""
    snap = RunSnapshot(
        planned=100,
        skipped=20,
        done=30,
        failed=2,
        partial=0,
        in_flight=4,
        matches=61,
        retries=3,
        rejections=0,
        silent=1,
        concurrency=4,
        elapsed=8.0,
    )
    assert progress_line(snap) == (
        "32/80 requests (30 done, 2 failed), 61 matches, 4.0 req/s, 4 in flight, 3 retries, 1 silent aborts"
    )
    assert snap.remaining == 48
    retrieval = dataclasses.replace(snap, instances=561, expected=600, bytes=80_000_000)
    assert progress_line(retrieval, retrieve=True) == (
        "32/80 requests (30 done, 2 failed), 561/600 instances, 10.0 MB/s, 4.0 req/s, 4 in flight, 3 retries, "
        "1 silent aborts"
    )


def test_stats_snapshot_is_frozen_copy() -> None:
    """snapshot() copies the counters; later changes do not touch it."""
    clock = iter([0.0, 2.0, 4.0])
    stats = RunStats(10, 0, 2, clock=lambda: next(clock))
    stats.done = 4
    snap = stats.snapshot()
    stats.done = 5
    assert (snap.done, snap.elapsed, snap.rate) == (4, 2.0, 2.0)
    assert repr(stats) == "<RunStats done=5 failed=0 in_flight=0 remaining=5 concurrency=2>"


def test_summary_goes_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    """The run summary is for people: stderr only, with library and ledger paths."""
    summary(
        {
            "outcome": "complete",
            "planned": 2,
            "done": 2,
            "failed": 0,
            "pending": 0,
            "skipped": 0,
            "matches": 3,
            "retries": 0,
            "elapsed": 0.5,
            "library_file": "/x/lib.csv",
            "library_rows": 3,
            "ledger_file": "/x/l.sqlite3",
            "message": None,
        }
    )
    out, err = capsys.readouterr()
    assert out == ""
    assert "library: /x/lib.csv (3 rows)" in err
    assert "ledger: /x/l.sqlite3" in err
