"""The queued route of the writer pipeline, without a network."""

from __future__ import annotations

from collections.abc import Callable
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


def copy_or_crash(script: str, lookup_table: str | None, mode: str, source: object, target: str) -> tuple[str, str]:
    """A stand-in anonymizer: copies the file, and kills its worker process on a file named crash…"""
    import os
    import shutil

    if Path(str(source)).name.startswith("crash"):
        os._exit(3)
    shutil.copyfile(str(source), target)
    return "ok", ""


def copy_or_crash_many(
    script: str,
    lookup_table: str | None,
    mode: str,
    pairs: list[tuple[str, str]],
    then: Callable[[str], object] | None = None,
    remove_sources: bool = False,
) -> list[tuple[str, str, object]]:
    """The batch form; notes each batch's size beside the script, seen from outside."""
    with Path(script).with_suffix(".batches").open("a") as handle:
        handle.write(f"{len(pairs)}\n")
    outcomes = [copy_or_crash(script, lookup_table, mode, source, target) for source, target in pairs]
    if remove_sources:
        for source, _ in pairs:
            Path(source).unlink()
    return [
        (status, reason, then(target) if then else None)
        for (status, reason), (_, target) in zip(outcomes, pairs, strict=True)
    ]


class Recording:
    def __init__(self) -> None:
        self.records: list[InstanceRecord] = []

    async def record_instance(self, record: InstanceRecord) -> None:
        self.records.append(record)


def test_a_crash_in_a_batch_quarantines_only_the_instance_that_caused_it(tmp_path: Path) -> None:
    """Instances reach worker processes in batches; when one of them kills its worker, the batch
    is run again instance by instance: that one is quarantined as received, the others are
    placed and recorded, and the spool ends empty."""
    from pydicom import dcmread

    from asyncdicom.models import InstanceState
    from asyncdicom.write.pipeline import Spooled
    from tests.factory import StudySpec, write_files

    script = tmp_path / "anon.script"
    script.write_text("<script/>")
    spool = tmp_path / "spool"
    written = write_files([StudySpec("P1", "A^B", "1.2.3", "ACC1", "20200101", "CT", 1, 6)], spool)
    paths = sorted(spool.iterdir())
    crashed = dcmread(paths[2]).SOPInstanceUID
    paths[2] = paths[2].rename(spool / f"crash-{paths[2].name}")
    settings = AnonymizeSettings(
        script, None, "faithful", tmp_path / "quarantine", copy_or_crash, None, copy_or_crash_many
    )
    sink = Recording()
    pipeline = Pipeline(
        root=tmp_path / "out", structure=(), filename="SOPInstanceUID", sink=sink, tracker=Tracker(), anonymize=settings
    )

    async def main() -> None:
        for path in paths:  # all queued before the writers start: the first writer takes them at once
            await pipeline.enqueue(Spooled(path, None, request_key="k"))
        async with anyio.create_task_group() as tg:
            tg.start_soon(pipeline.run)
            pipeline.close()

    anyio.run(main)
    assert max(int(size) for size in script.with_suffix(".batches").read_text().split()) > 1
    states = {record.sop_uid: record.state for record in sink.records}
    assert states.pop(crashed) is InstanceState.QUARANTINED
    assert dcmread(tmp_path / "quarantine" / f"{crashed}.dcm").SOPInstanceUID == crashed
    assert sorted(states.values()) == [InstanceState.STORED] * 5
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted(
        f"{ds.SOPInstanceUID}.dcm" for ds in written if ds.SOPInstanceUID != crashed
    )
    assert list(spool.iterdir()) == []
