"""Post-processing of received instances (pure file-to-file steps, run in a worker process).

Decompression writes Explicit VR Little Endian with pydicom 3's pixel handlers (pylibjpeg's
libjpeg, openjpeg and rle plugins, and GDCM). An instance that cannot be decoded is kept as
received, with a warning: an instance is never lost.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian


@dataclass(frozen=True, slots=True)
class Transformed:
    """The file to place next, and a warning if a step could not be applied."""

    path: Path
    warning: str | None = None


def decompress_file(source: Path) -> Transformed:
    """Rewrite ``source`` (a spool file) as Explicit VR Little Endian if its pixel data is
    compressed or its data set deflated; the SOP Instance UID is kept."""
    data, warning = decoded(source)
    if data is None:
        return Transformed(source, warning)
    target = source.with_name(source.stem + ".decompressed.part")
    try:
        with target.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:  # never lose the instance: it stays as received
        target.unlink(missing_ok=True)
        return Transformed(source, f"kept as received: unable to write it decompressed ({exc.strerror})")
    final = source.with_name(source.stem + ".decompressed.dcm")
    os.replace(target, final)
    source.unlink()
    return Transformed(final)


def decoded(source: Path) -> tuple[bytes | None, str | None]:
    """``source`` as an Explicit VR Little Endian Part 10 file in memory, when its pixel data is
    compressed or its data set deflated: (bytes, None); (None, None) when it needs no decoding;
    (None, why) when it cannot be decoded (it is then kept as received)."""
    try:
        syntax = read_file_meta_info(source).TransferSyntaxUID  # the meta alone: cheap for the common case
    except Exception as exc:  # any reader failure: keep the file as it came
        return None, f"kept as received: unable to read it as {type(exc).__name__}"
    if not (syntax.is_compressed or syntax.is_deflated):
        return None, None
    try:
        ds = dcmread(source)
        if syntax.is_compressed:
            ds.decompress(generate_instance_uid=False)  # pydicom 3.0 would otherwise replace the UID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buffer = BytesIO()
        dcmwrite(buffer, ds, enforce_file_format=True)
    except Exception as exc:  # decoders raise many types; never lose the instance
        why = " ".join(str(exc).split())[:300]  # one line: it is grouped and shown by reason
        return None, f"kept as received ({syntax.name}): unable to decompress as {why}"
    return buffer.getvalue(), None


def ready() -> None:
    """Nothing: a worker process that ran it has imported this module, pydicom and its decoders."""


AnonymizeFile = Callable[[str, "str | None", str, "str | BinaryIO", str], tuple[str, str]]
"""(script, lookup table, mode, source file or its bytes, target) → (status, reason): a
module-level function, so that worker processes can run it (the anonymizer's, handed in by the
retriever)."""


Then = Callable[[str], object]
"""What a worker does with each file it wrote, there and then (the pipeline reads its header)."""


AnonymizeMany = Callable[
    [str, "str | None", str, list[tuple[str, str]], "Then | None", bool], list[tuple[str, str, object]]
]
"""(script, lookup table, mode, [(source, target), …], then, remove sources) → [(status, reason,
then(target) or None), …]: the same for a batch of files, in one worker call; with remove
sources, the source of each target written is removed once the batch is done, unless ``then``
returned an exception for it."""


def decompress_and_anonymize(
    function: AnonymizeFile, script: str, lookup_table: str | None, mode: str, source: str, target: str
) -> tuple[str, str, str | None]:
    """Decode ``source`` in memory and anonymize the decoded file into ``target``, in one worker
    call and with no file between the two steps: (status, reason, decompression warning). The
    anonymizer reads the very bytes :func:`decompress_file` would have written; an instance that
    cannot be decoded is anonymized as received, with the warning."""
    data, warning = decoded(Path(source))
    status, reason = function(script, lookup_table, mode, BytesIO(data) if data is not None else source, target)
    return status, reason, warning


def decompress_and_anonymize_many(
    function: AnonymizeFile,
    script: str,
    lookup_table: str | None,
    mode: str,
    pairs: list[tuple[str, str]],
    then: Then | None = None,
    remove_sources: bool = False,
) -> list[tuple[str, str, str | None, object]]:
    """:func:`decompress_and_anonymize` on each (source, target) pair, in one worker call, and
    ``then`` and ``remove_sources`` as for :data:`AnonymizeMany`."""
    results: list[tuple[str, str, str | None, object]] = []
    for source, target in pairs:
        status, reason, warning = decompress_and_anonymize(function, script, lookup_table, mode, source, target)
        results.append((status, reason, warning, then(target) if then is not None and status == "ok" else None))
    if remove_sources:  # not where ``then`` found a problem with the target: the source stays
        for (source, _), (status, _, _, then_) in zip(pairs, results, strict=True):
            if status == "ok" and not isinstance(then_, Exception):
                Path(source).unlink(missing_ok=True)
    return results
