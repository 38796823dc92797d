"""The job's ledger: :mod:`asyncdicom.ledger.base` says what it offers; :mod:`.sqlite` stores it
in a file for one host, :mod:`.postgres` in a PostgreSQL database shared by several."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from asyncdicom.config import Config
from asyncdicom.ledger.base import Ledger, LedgerSummary, Recorder, SyncReport
from asyncdicom.ledger.sqlite import open_ledger

__all__ = ["Ledger", "LedgerSummary", "Recorder", "SyncReport", "open_job_ledger", "open_ledger", "where"]


@asynccontextmanager
async def open_job_ledger(config: Config, *, readonly: bool = False) -> AsyncIterator[Ledger]:
    """The config's ledger: PostgreSQL's for ``output.ledger_url``, else the SQLite file."""
    output = config.output
    if output.ledger_url is None:
        async with open_ledger(output.ledger_file, readonly=readonly) as ledger:
            yield ledger
        return
    from asyncdicom.ledger.postgres import ledger as postgres  # the driver only where a shared ledger is used

    async with postgres.open_ledger(
        output.ledger_url, output.job_name, lease=output.lease_seconds, directory=output.directory, readonly=readonly
    ) as shared:
        yield shared


def where(config: Config) -> str:
    """The config's ledger in words: its file, or its database and job."""
    output = config.output
    if output.ledger_url is None:
        return str(output.ledger_file)
    from asyncdicom.ledger.postgres.url import describe_url

    return f"postgresql {describe_url(output.ledger_url)}, job {output.job_name}"
