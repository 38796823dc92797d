"""Logging to stderr: rich on a terminal, plain lines otherwise.

asyncdicom never logs element values; pynetdicom's own logger is kept quiet because its
standard handlers can print identifiers (patient data).
"""

from __future__ import annotations

import logging
import sys
import warnings

from rich.console import Console
from rich.logging import RichHandler

_FORMAT = "%(asctime)s %(levelname)s %(message)s"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"  # one format on the terminal and in log files


def setup(verbosity: int = 0, quiet: bool = False, console: Console | None = None) -> None:
    """Configure the ``asyncdicom`` logger: -q warnings only, default info, -v debug; on a
    terminal through ``console`` (shared with the live dashboard, so lines scroll above it)."""
    level = logging.WARNING if quiet else logging.DEBUG if verbosity > 0 else logging.INFO
    logger = logging.getLogger("asyncdicom")
    for old in list(logger.handlers):
        logger.removeHandler(old)
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
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False
    logging.getLogger("pynetdicom").setLevel(logging.DEBUG if verbosity > 2 else logging.CRITICAL)
    # pydicom warns about invalid values by quoting them (patient data): neither its log nor its
    # warnings reach the user
    logging.getLogger("pydicom").setLevel(logging.DEBUG if verbosity > 2 else logging.CRITICAL)
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
