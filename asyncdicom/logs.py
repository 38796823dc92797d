"""Logging to stderr: rich on a terminal, plain lines otherwise.

asyncdicom never logs element values; pynetdicom's own logger is kept quiet because its
standard handlers can print identifiers (patient data).
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from asyncdicom.errors import ConfigError

_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"  # one format on the terminal and in log files


def setup(
    verbosity: int = 0, quiet: bool = False, console: Console | None = None, log_file: Path | None = None
) -> None:
    """Configure the ``asyncdicom`` logger: -q warnings only, default info, -v debug; on a
    terminal through ``console`` (shared with the live dashboard, so lines scroll above it); with
    ``log_file``, also appended there as plain lines at info level or more detailed (whatever -q says)."""
    level = logging.WARNING if quiet else logging.DEBUG if verbosity > 0 else logging.INFO
    logger = logging.getLogger("asyncdicom")
    for old in list(logger.handlers):
        logger.removeHandler(old)
        old.close()  # a log file of an earlier setup (tests run several commands in one process)
    console = console or Console(stderr=True)
    handler: logging.Handler
    if console.is_terminal:
        handler = RichHandler(
            console=console, show_path=False, markup=False, rich_tracebacks=False, log_time_format=_DATE_FORMAT
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT))
    handler.setLevel(level)
    logger.addHandler(handler)
    if log_file is not None:
        try:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            to_file = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as exc:
            where, message = "--log-file", f"unable to open {log_file} as {exc.strerror}"
            raise ConfigError(where, message) from None
        to_file.setFormatter(logging.Formatter(_FORMAT, datefmt=_DATE_FORMAT))
        to_file.setLevel(min(level, logging.INFO))
        logger.addHandler(to_file)
        level = min(level, logging.INFO)
    logger.setLevel(level)
    logger.propagate = False
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbosity > 2 else logging.CRITICAL)
    # pydicom warns about invalid values by quoting them (patient data): neither its log nor its
    # warnings reach the user
    logging.getLogger("pydicom").setLevel(logging.DEBUG if verbosity > 2 else logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
