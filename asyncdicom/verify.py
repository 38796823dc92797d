"""``asyncdicom verify``: the ledger against the disk. Every instance the ledger says is stored must
be at its path with the size it had; what is missing or changed becomes work to do again.

A changed file is moved aside, to ``<output>/.asyncdicom/changed/`` under its relative path (never
deleted), so that the next run can place a fresh copy where it was."""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass

import anyio

from asyncdicom.config import Config
from asyncdicom.ledger import open_job_ledger
from asyncdicom.ledger.base import InstanceRow

STORED = frozenset({"stored", "renamed", "duplicate"})


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What ``verify`` found: instances checked, missing, changed (another size), and the requests
    made partial so that the next run fetches those instances again."""

    checked: int
    missing: int
    changed: int
    requests: int

    @property
    def ok(self) -> bool:
        return not (self.missing or self.changed)


def _problem(root: str, row: InstanceRow, digests: dict[tuple[str, str], str] | None) -> str | None:
    """The problem of one stored instance: "missing", "changed" (then moved aside) or None. With
    ``digests``, the file's SHA-256 is compared with the one kept by an earlier check (and is put
    there for the ledger to keep when it has none)."""
    path = os.path.join(root, row.path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    same = size == row.size
    if same and digests is not None:
        digest = _sha256(path)
        if row.sha256 is None:
            digests[row.sop_uid, row.path] = digest
        same = row.sha256 in (None, digest)
    if same:
        return None
    aside = os.path.join(root, ".asyncdicom", "changed", row.path)
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    os.replace(path, aside)
    return "changed"


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _here(row: InstanceRow, root: str) -> bool:
    """Whether this host holds ``row``'s file: always with a ledger of one host; with a shared
    one, when this host stored it under this output directory."""
    return row.host is None or (row.host == socket.gethostname() and row.directory == root)


async def verify(config: Config, checksums: bool = False) -> VerifyReport:
    """Check every stored instance of the plan's requests; forget those missing or changed. With
    ``checksums``, read every file too: a SHA-256 kept by an earlier ``verify --checksums`` must
    match (the first such check keeps them)."""
    assert config.output.directory is not None
    root = str(config.output.directory)
    async with open_job_ledger(config) as ledger:
        rows = [row for row in await ledger.instance_rows() if row.state in STORED and _here(row, root)]
        digests: dict[tuple[str, str], str] | None = {} if checksums else None
        found = await anyio.to_thread.run_sync(lambda: [_problem(root, row, digests) for row in rows])
        if digests:
            await ledger.checksums([(uid, path, digest) for (uid, path), digest in digests.items()])
        bad = [row.sop_uid for row, problem in zip(rows, found, strict=True) if problem]
        # anonymized files carry new UIDs the PACS does not know: their requests are asked for whole
        requests = await ledger.forget_instances(bad, ask_again_for_them=not config.anonymization.enabled)
    return VerifyReport(len(rows), found.count("missing"), found.count("changed"), requests)
