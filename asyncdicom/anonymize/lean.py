"""The anonymizer's worker functions for processes that never decode pixel data (a retrieval
without ``output.decompress``).

A worker process imports the module a function it is handed comes from; from here, pydicom is
loaded without its pixel libraries (see :mod:`asyncdicom.anonymize.startup`): about 0.1 s of
CPU and 20 MB less per process. A run that decompresses uses :mod:`asyncdicom.anonymize.worker`
itself, so that its processes can decode.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

from asyncdicom.anonymize.startup import without_pixel_libraries

with without_pixel_libraries():
    from asyncdicom.anonymize import worker


def anonymize_spooled(
    script: str, lookup_table: str | None, mode: str, source: str | BinaryIO | Dataset, target: str
) -> tuple[str, str]:
    """:func:`asyncdicom.anonymize.worker.anonymize_spooled`, in a lean process."""
    return worker.anonymize_spooled(script, lookup_table, mode, source, target)


def anonymize_spooled_many(
    script: str,
    lookup_table: str | None,
    mode: str,
    pairs: list[tuple[str, str]],
    then: Callable[[str], object] | None = None,
    remove_sources: bool = False,
) -> list[tuple[str, str, object]]:
    """:func:`asyncdicom.anonymize.worker.anonymize_spooled_many`, in a lean process."""
    return worker.anonymize_spooled_many(script, lookup_table, mode, pairs, then, remove_sources)


def prepare(script: str, lookup_table: str | None, mode: str) -> None:
    """:func:`asyncdicom.anonymize.worker.prepare`, in a lean process."""
    worker.prepare(script, lookup_table, mode)
