"""Times as people and reports read them (a module of its own: the command line's start-up
imports it without the ledger)."""

from __future__ import annotations

from datetime import datetime


def iso_time(epoch: float | None) -> str | None:
    """Epoch seconds as ISO 8601 in local time with its offset, to the second."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch).astimezone().isoformat(timespec="seconds")
