"""Anonymization as a picklable call for worker processes: the script and lookup table are
loaded once per process and kept."""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from pydicom.dataset import Dataset

from asyncdicom.anonymize.files import Anonymizer
from asyncdicom.anonymize.lookup import LookupTable
from asyncdicom.anonymize.script import load


@functools.lru_cache(maxsize=4)
def anonymizer(script: str, lookup_table: str | None, mode: str, params: tuple[tuple[str, str], ...]) -> Anonymizer:
    table = LookupTable.load(Path(lookup_table)) if lookup_table else LookupTable.empty()
    return Anonymizer(load(Path(script)), table, dict(params), mode)


def prepare(script: str, lookup_table: str | None, mode: str) -> None:
    """Load the script and lookup table into this worker process's cache, before any file."""
    anonymizer(script, lookup_table, mode, ())


def anonymize_file(
    script: str,
    lookup_table: str | None,
    mode: str,
    source: str | BinaryIO | Dataset,
    target: str,
    params: tuple[tuple[str, str], ...] = (),
) -> tuple[str, str]:
    """(status, reason) of anonymizing ``source`` into ``target``; ``params`` override the script's."""
    status, reason, _ = anonymize_file_named(script, lookup_table, mode, source, target, params)
    return status, reason


def anonymize_spooled(
    script: str, lookup_table: str | None, mode: str, source: str | BinaryIO | Dataset, target: str
) -> tuple[str, str]:
    """:func:`anonymize_file` for the retrieval pipeline, whose ``target`` is a scratch name of
    its own in the spool (written directly, no temporary file and rename)."""
    status, reason, _ = anonymize_file_named(script, lookup_table, mode, source, target, scratch=True)
    return status, reason


def anonymize_spooled_many(
    script: str,
    lookup_table: str | None,
    mode: str,
    pairs: list[tuple[str, str]],
    then: Callable[[str], object] | None = None,
    remove_sources: bool = False,
) -> list[tuple[str, str, object]]:
    """:func:`anonymize_spooled` on each (source, target) pair, in one call: the retrieval
    pipeline hands a worker process a batch at a time (a hop to a process costs the event
    loop about 0.13 ms). ``then``, when given, is called on each target written, here in the
    worker (the pipeline reads the new file's header so): its result comes back with the
    outcome, None where nothing was written. With ``remove_sources``, the source of each target
    written is removed once the whole batch is done (if the process dies before, every source
    is still there for the batch to be run again), unless ``then`` returned an exception for
    it (then the source stays, for the next run)."""
    results: list[tuple[str, str, object]] = []
    for source, target in pairs:
        status, reason = anonymize_spooled(script, lookup_table, mode, source, target)
        results.append((status, reason, then(target) if then is not None and status == "ok" else None))
    if remove_sources:  # not where ``then`` found a problem with the target: the source stays for the next run
        written = zip(pairs, results, strict=True)
        remove([source for (source, _), (status, _, then_) in written if status == "ok" and not _failed(then_)])
    return results


def _failed(result: object) -> bool:
    """Whether ``then`` said something went wrong (it returns errors rather than raise them)."""
    return isinstance(result, Exception)


def remove(paths: list[str]) -> None:
    """Unlink each of ``paths`` that still exists."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def anonymize_file_named(
    script: str,
    lookup_table: str | None,
    mode: str,
    source: str | BinaryIO | Dataset,
    target: str,
    params: tuple[tuple[str, str], ...] = (),
    *,
    scratch: bool = False,
) -> tuple[str, str, str]:
    """As :func:`anonymize_file`, with the anonymized SOP Instance UID ("" if the script removed
    it); ``scratch`` as for :meth:`Anonymizer.file`."""
    data = Path(source) if isinstance(source, str) else source  # a file, bytes in memory, or a data set read
    outcome = anonymizer(script, lookup_table, mode, params).file(data, Path(target), scratch=scratch)
    return outcome.status, outcome.reason, outcome.sop_instance_uid
