"""``asyncdicom verify``: the ledger against the disk. Every instance the ledger says is stored must
be at its path with the size it had; what is missing or changed becomes work to do again.

A changed file is moved aside, to ``<output>/.asyncdicom/changed/`` under its relative path (never
deleted), so that the next run can place a fresh copy where it was."""

from __future__ import annotations

import os
from dataclasses import dataclass

import anyio

from asyncdicom.config import Config
from asyncdicom.ledger import open_ledger
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


def _problem(root: str, row: InstanceRow) -> str | None:
    """The problem of one stored instance: "missing", "changed" (then moved aside) or None."""
    path = os.path.join(root, row.path)
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing"
    if size == row.size:
        return None
    aside = os.path.join(root, ".asyncdicom", "changed", row.path)
    os.makedirs(os.path.dirname(aside), exist_ok=True)
    os.replace(path, aside)
    return "changed"


async def verify(config: Config) -> VerifyReport:
    """Check every stored instance of the plan's requests; forget those missing or changed."""
    assert config.output.directory is not None
    root = str(config.output.directory)
    async with open_ledger(config.output.ledger_file) as ledger:
        rows = [row for row in await ledger.instance_rows() if row.state in STORED]
        found = await anyio.to_thread.run_sync(lambda: [_problem(root, row) for row in rows])
        bad = [row.sop_uid for row, problem in zip(rows, found, strict=True) if problem]
        # anonymized files carry new UIDs the PACS does not know: their requests are asked for whole
        requests = await ledger.forget_instances(bad, ask_again_for_them=not config.anonymization.enabled)
    return VerifyReport(len(rows), found.count("missing"), found.count("changed"), requests)
