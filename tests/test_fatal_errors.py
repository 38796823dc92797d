"""Fatal errors end as the project's own message and exit code, never as "internal error":
an unreachable PACS (any thread count), a host name that does not resolve, a full output volume."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli_helpers import cli_json
from tests.conftest import LoadedOrthanc, find_config, write_yaml
from tests.pacs_servers import free_port
from tests.test_retrieve_orthanc import retrieve_config, write_batch


def _unreachable_run(tmp_path: Path, hostname: str, port: int, threads: int, patience: float) -> tuple[int, str, dict]:  # type: ignore[type-arg]
    (tmp_path / "batch.csv").write_text("PatientID\n" + "\n".join(f"P{i}" for i in range(10)) + "\n")
    doc = find_config(port, batch="batch.csv", threads=threads, unreachable_timeout=patience, connect_timeout=2)
    doc["pacs"]["hostname"] = hostname
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    return result.exit_code, result.stderr, summary


@pytest.mark.parametrize("threads", [1, 4])
def test_unreachable_pacs_gives_up_after_the_stated_time(tmp_path: Path, threads: int) -> None:
    """The ancestor's C-FIND sample uses one thread: with nothing listening on the port, the run
    once backed off for 60 s and then printed "internal error: ExceptionGroup" with no JSON. Now it
    gives up after request.unreachable_timeout whatever the thread count, says why, announces
    only the retries it makes, and --json still prints the summary."""
    port = free_port()
    start = time.monotonic()
    code, stderr, summary = _unreachable_run(tmp_path, "127.0.0.1", port, threads, 1.5)
    elapsed = time.monotonic() - start
    assert code == 1, stderr
    assert "internal error" not in stderr
    refused = f"Unable to connect to ORTHANC@127.0.0.1:{port} as the connection was refused"
    assert summary["outcome"] == "fatal"
    assert summary["message"].startswith(refused)
    assert re.search(r"; gave up after 1\.5\d* s \(request.unreachable_timeout\)$", summary["message"])
    assert summary["pending"] == 10
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d", summary["started"])  # ISO 8601, with zone
    assert 1.5 <= elapsed < 8
    # rounds of 1 s then 0.5 s (cut at the 1.5 s mark): two announced retries, shared by the workers
    assert stderr.count("trying again in") == 2, stderr


def test_host_that_does_not_resolve_is_named(tmp_path: Path) -> None:
    """A host name that does not resolve is told apart from a refused connection."""
    code, stderr, summary = _unreachable_run(tmp_path, "no-such-host.invalid", 4242, 1, 0)
    assert code == 1
    assert summary["message"] == (
        "Unable to connect to ORTHANC@no-such-host.invalid:4242 as the host name 'no-such-host.invalid' "
        "does not resolve; check pacs.hostname"
    )
    assert "trying again" not in stderr


@contextlib.contextmanager
def _small_volume(path: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size``: writes beyond it fail with ENOSPC, as on a full disk."""
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {mounted.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.orthanc
@pytest.mark.parametrize("kind", ["c-get", "c-move"])
def test_full_output_volume_is_its_own_error(tmp_path: Path, orthanc: LoadedOrthanc, kind: str) -> None:
    """The output volume fills up during a retrieve: exit 4 with a message saying so (it was
    "internal error: OSError" with nothing on stdout), the JSON summary and the ledger are
    written, and nothing is marked done that is not stored."""
    studies = sorted({str(ds.StudyInstanceUID) for ds in orthanc.instances})[:120]
    rows = [{"StudyInstanceUID": uid} for uid in studies]
    write_batch(tmp_path, rows)
    with _small_volume(tmp_path / "volume", "600k") as volume:
        doc = retrieve_config(orthanc, kind, rows, "STUDY", threads=2)
        doc["output"] = {
            "directory": str(volume / "out"),
            "ledger_file": str(tmp_path / "ledger.sqlite3"),
            "database_file": str(tmp_path / "retrieved.csv"),
        }
        result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
        assert result.exit_code == 4, result.stderr
        assert "internal error" not in result.stderr
        assert summary["outcome"] == "output-error"
        assert "as the output volume is full (No space left on device)" in summary["message"]
        assert summary["done"] < len(rows)
        assert summary["done"] + summary["failed"] + summary["partial"] + summary["pending"] == len(rows)
        files = [p for p in (volume / "out").rglob("*.dcm") if ".asyncdicom" not in p.parts]
        assert summary["instances"] <= len(files)
    assert (tmp_path / "retrieved.csv").is_file()


def test_outside_the_window_with_exit_sends_nothing(tmp_path: Path) -> None:
    """schedule.outside_window: exit ends a run started outside the window at once, with exit code 5,
    the JSON summary, and every request still pending (nothing listens on the port: a single
    request sent would have ended the run with exit 1)."""
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    (tmp_path / "batch.csv").write_text("PatientID\nP1\nP2\n")
    doc = find_config(free_port(), batch="batch.csv", unreachable_timeout=0)
    doc["schedule"] = {
        "enabled": True,
        "start_time": f"{now + timedelta(hours=2):%H:%M}",
        "end_time": f"{now + timedelta(hours=3):%H:%M}",
        "timezone": "UTC",
        "outside_window": "exit",
    }
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 5, result.stderr
    assert (summary["outcome"], summary["pending"], summary["ran"]) == ("outside-window", 2, 0)
    assert "outside the schedule window, so nothing was sent; it opens at " in result.stderr
    assert " UTC (" in summary["notes"][-1]


@pytest.mark.orthanc
def test_a_failed_batch_flush_places_nothing_and_marks_nothing_done(
    tmp_path: Path, orthanc: LoadedOrthanc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Received files become durable a batch at a time before they get a name in the tree: when
    that flush fails (an I/O error), none of the batch is placed or recorded, and the run ends
    as an output error naming it."""
    import errno

    from asyncdicom.write import pipeline
    from tests.cli_helpers import ledger_instances

    def failing(files: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(pipeline, "flush_files", failing)
    rows = [{"StudyInstanceUID": orthanc.studies[0].study_uid}]
    write_batch(tmp_path, rows)
    doc = retrieve_config(orthanc, "c-get", rows, "STUDY", threads=1)
    result, summary = cli_json("run", write_yaml(tmp_path / "c.yml", doc))
    assert result.exit_code == 4, result.stderr
    assert summary["outcome"] == "output-error"
    assert summary["message"].startswith("Unable to write received instances durably as Input/output error")
    assert (summary["done"], summary["instances"]) == (0, 0)
    assert not [p for p in (tmp_path / "out").rglob("*.dcm") if ".asyncdicom" not in p.parts]
    assert not list((tmp_path / "out" / ".asyncdicom" / "spool").glob("*"))
    ledger = tmp_path / "out" / ".asyncdicom" / "c.sqlite3"
    assert ledger.is_file() and ledger_instances(ledger) == 0
