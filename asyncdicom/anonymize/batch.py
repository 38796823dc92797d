"""The ``anonymize`` command's work: one file, or a folder tree into another (structure kept),
on every core, with a summary; originals of quarantined or skipped files can be kept apart."""

from __future__ import annotations

import collections
import os
import re
import shutil
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from asyncdicom.anonymize.worker import anonymize_file_named, anonymizer


@dataclass(frozen=True, slots=True)
class Job:
    script: Path
    lookup_table: Path | None
    mode: str
    quarantine: Path | None = None
    params: tuple[tuple[str, str], ...] = ()
    keep_names: bool = False  # folder mode: keep the input file names (they may be original UIDs)


@dataclass(slots=True)
class Summary:
    ok: int = 0
    skipped: int = 0
    quarantined: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, status: str, reason: str) -> None:
        if status == "ok":
            self.ok += 1
            return
        if status == "skip":
            self.skipped += 1
        else:
            self.quarantined += 1
        self.reasons[f"{status}: {reason}"] += 1


def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            yield path


def _one(job: Job, source: Path, target: Path, relative: Path, rename: bool = False) -> tuple[str, str]:
    status, reason, uid = anonymize_file_named(
        str(job.script),
        str(job.lookup_table) if job.lookup_table else None,
        job.mode,
        str(source),
        str(target),
        job.params,
    )
    if status == "ok" and rename and uid and _SAFE_NAME.fullmatch(uid):
        _rename(target, uid)
    if status != "ok" and job.quarantine is not None:
        held = job.quarantine / relative
        held.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, held)
    return status, reason


_SAFE_NAME = re.compile(r"[0-9A-Za-z._-]{1,64}")


def _rename(target: Path, uid: str) -> None:
    """Name a written file after its anonymized SOP Instance UID (``_1``, ``_2``… if taken)."""
    number = 0
    while True:
        name = f"{uid}.dcm" if number == 0 else f"{uid}_{number}.dcm"
        candidate = target.with_name(name)
        if candidate == target:
            return
        try:
            os.link(target, candidate)  # fails if the name is taken: never overwrite
        except FileExistsError:
            number += 1
            continue
        os.unlink(target)
        return


def run(
    job: Job,
    source: Path,
    target: Path,
    progress: Callable[[int, int, int, int], None] | None = None,
    workers: int | None = None,
) -> Summary:
    """Anonymize ``source`` (a file, or a folder tree mirrored under ``target``); ``progress`` gets
    (files done, files in all, bytes read, files held back so far)."""
    summary = Summary()
    if not source.is_dir():
        summary.add(*_one(job, source, target, Path(source.name)))
        return summary
    files = list(_files(source))
    sizes = [path.stat().st_size for path in files]
    done_bytes = 0
    count = workers or os.cpu_count() or 1
    if count == 1 or len(files) < 2:
        for index, path in enumerate(files):
            relative = path.relative_to(source)
            summary.add(*_one(job, path, target / relative, relative, not job.keep_names))
            done_bytes += sizes[index]
            if progress is not None:
                progress(index + 1, len(files), done_bytes, summary.skipped + summary.quarantined)
        return summary
    warm(job)  # forked workers inherit the loaded script and lookup table
    relatives = [path.relative_to(source) for path in files]
    chunk = max(1, min(16, len(files) // (count * 4)))
    with ProcessPoolExecutor(count) as pool:
        targets = [target / r for r in relatives]
        renames = [not job.keep_names] * len(files)
        results = pool.map(_one, [job] * len(files), files, targets, relatives, renames, chunksize=chunk)
        for index, result in enumerate(results):
            summary.add(*result)
            done_bytes += sizes[index]
            if progress is not None:
                progress(index + 1, len(files), done_bytes, summary.skipped + summary.quarantined)
    return summary


def warm(job: Job) -> None:
    """Load the script and lookup table in this process (workers forked later share them)."""
    anonymizer(str(job.script), str(job.lookup_table) if job.lookup_table else None, job.mode, job.params)
