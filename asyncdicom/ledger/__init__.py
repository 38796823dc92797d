"""The job's ledger: :mod:`asyncdicom.ledger.base` says what it offers, :mod:`.sqlite` stores it."""

from __future__ import annotations

from asyncdicom.ledger.base import Ledger, LedgerSummary, Recorder, SyncReport
from asyncdicom.ledger.sqlite import open_ledger

__all__ = ["Ledger", "LedgerSummary", "Recorder", "SyncReport", "open_ledger"]
