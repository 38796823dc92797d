"""Problems that repeat, logged once per kind and counted: a night of 2,000 identical warnings
is one line, a count in the summary, and the details in the ledger."""

from __future__ import annotations

import logging
import threading
from collections import Counter


class GroupedLog:
    """Logs the first problem of each kind at WARNING and counts every one (thread-safe)."""

    def __init__(self, logger: logging.Logger) -> None:
        self._log = logger
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def warning(self, kind: str, message: str) -> None:
        """Count a problem of ``kind``; log ``message`` (no patient data) if it is the first of it."""
        with self._lock:
            self._counts[kind] += 1
            first = self._counts[kind] == 1
        if first:
            self._log.warning("%s (more like this are counted in the summary)", message)

    def counts(self) -> dict[str, int]:
        """How many of each kind, most frequent first."""
        with self._lock:
            return dict(self._counts.most_common())
