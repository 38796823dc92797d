"""The ``anonymize`` command's work: one file, or a folder tree into another, with a summary."""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asyncdicom.anonymize.files import Anonymizer, Outcome


@dataclass(slots=True)
class Summary:
    ok: int = 0
    skipped: int = 0
    quarantined: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)

    def add(self, outcome: Outcome) -> None:
        if outcome.status == "ok":
            self.ok += 1
            return
        if outcome.status == "skip":
            self.skipped += 1
        else:
            self.quarantined += 1
        self.reasons[f"{outcome.status}: {outcome.reason}"] += 1


def _files(folder: Path) -> Iterator[Path]:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            yield path


def run(
    anonymizer: Anonymizer, source: Path, target: Path, progress: Callable[[int, int], None] | None = None
) -> Summary:
    """Anonymize ``source`` (a file, or a folder tree mirrored under ``target``)."""
    summary = Summary()
    if source.is_dir():
        files = list(_files(source))
        for index, path in enumerate(files):
            summary.add(anonymizer.file(path, target / path.relative_to(source)))
            if progress is not None:
                progress(index + 1, len(files))
    else:
        summary.add(anonymizer.file(source, target))
    return summary
