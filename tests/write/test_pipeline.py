"""The queued route of the writer pipeline, without a network."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from asyncdicom.models import InstanceRecord
from asyncdicom.write.pipeline import AnonymizeSettings, Pipeline
from asyncdicom.write.tracker import Tracker


def mark_ready(script: str, lookup_table: str | None, mode: str) -> None:
    """A worker's preparation, seen from outside: a file beside the script naming the mode."""
    Path(script).with_suffix(".ready").write_text(f"{mode} {lookup_table}")


def never_called(script: str, lookup_table: str | None, mode: str, source: object, target: str) -> tuple[str, str]:
    raise AssertionError("no instance was handed over")


class Sink:
    async def record_instance(self, record: InstanceRecord) -> None:
        raise AssertionError("nothing to record")


def test_worker_processes_are_prepared_before_the_first_instance(tmp_path: Path) -> None:
    """With anonymization on, the pipeline starts its worker processes at once and has each
    load the script and lookup table, before any instance arrives."""
    script = tmp_path / "anon.script"
    script.write_text("<script/>")
    settings = AnonymizeSettings(script, None, "faithful", tmp_path / "quarantine", never_called, mark_ready)
    pipeline = Pipeline(
        root=tmp_path / "out",
        structure=(),
        filename="SOPInstanceUID",
        sink=Sink(),
        tracker=Tracker(),
        anonymize=settings,
    )

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.run)
            pipeline.close()  # run() returns only once its warm-up calls have returned

    anyio.run(main)
    assert (tmp_path / "anon.ready").read_text() == "faithful None"


def test_receive_threads_wait_while_the_outbox_is_full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Back-pressure on the direct route: a receive thread that finds the outbox full waits for
    the drain to take a batch, instead of piling up notes (and unplaced files)."""
    import threading

    from asyncdicom.write import pipeline as module
    from asyncdicom.write.pipeline import Noted

    monkeypatch.setattr(module, "OUTBOX_LIMIT", 4)
    pipeline = Pipeline(root=tmp_path / "out", structure=(), filename="SOPInstanceUID", sink=Sink(), tracker=Tracker())
    posted: list[int] = []
    done = threading.Event()

    def receive() -> None:
        for number in range(6):
            pipeline._post(Noted(None, "", None, None))
            posted.append(number)
        done.set()

    thread = threading.Thread(target=receive, daemon=True)
    thread.start()
    assert not done.wait(1.0)  # the fourth note filled the outbox: the thread waits there
    assert len(posted) == 3
    anyio.run(pipeline._record_outbox)  # the drain takes the batch (lost notes: nothing to record)
    assert done.wait(10)
    assert len(posted) == 6
    pipeline.close()
    pipeline._receive.close()  # the writers that would have closed it never ran
