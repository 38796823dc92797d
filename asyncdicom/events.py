"""The run's event log: one JSON object a line, beside the ledger, for unattended runs.

Modules say what happened with :func:`emit`; only a run that opened the file with
:func:`recording` writes anything. Events carry request keys, CSV lines, DIMSE statuses, counts
and DICOM UIDs, never names, IDs or other values of the data (the file sits beside the ledger,
which holds the original identifiers anyway: ``<output>-private`` with anonymization on).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_log = logging.getLogger("asyncdicom.events")
_log.propagate = False  # never on the terminal or in --log-file
_log.setLevel(logging.INFO)


def emit(event: str, **fields: object) -> None:
    """Record one event (a no-op unless a run is recording)."""
    if _log.handlers:
        _log.info(event, extra={"fields": fields})


class _JsonLines(logging.Handler):
    def __init__(self, path: Path) -> None:
        super().__init__(logging.INFO)
        self._file = path.open("a", encoding="utf-8", buffering=1)  # line-buffered: each event is written whole
        self._broken = False

    def emit(self, record: logging.LogRecord) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(record.created))
        zone = time.strftime("%z", time.localtime(record.created))
        document = {"time": f"{stamp}{zone[:3]}:{zone[3:]}", "event": record.msg, **getattr(record, "fields", {})}
        if self._broken:
            return
        try:
            self._file.write(json.dumps(document, default=str) + "\n")
        except OSError as exc:  # a full disk must not stop the run; the ledger is the record
            self._broken = True
            logging.getLogger("asyncdicom").warning(
                "the event log cannot be written (%s); no more events are recorded in this run", exc.strerror or exc
            )

    def close(self) -> None:
        self._file.close()
        super().close()


def events_file(ledger: Path) -> Path:
    """Where a ledger's event log is: ``job.sqlite3`` → ``job.events.jsonl`` in the same folder."""
    return ledger.with_name(f"{ledger.stem}.events.jsonl")


@contextmanager
def recording(path: Path) -> Iterator[None]:
    """Append this run's events to ``path`` while the block runs (without them, with a warning,
    when the file cannot be opened)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)  # a shared ledger makes no folder of its own here
        handler = _JsonLines(path)
    except OSError as exc:
        logging.getLogger("asyncdicom").warning(
            "the event log %s cannot be opened (%s); this run records no events", path, exc.strerror or exc
        )
        yield
        return
    _log.addHandler(handler)
    try:
        yield
    finally:
        _log.removeHandler(handler)
        handler.close()
