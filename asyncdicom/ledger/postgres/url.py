"""A ledger URL in words, for messages (the driver is not needed for that)."""

from __future__ import annotations

import urllib.parse


def describe_url(url: str) -> str:
    """``host:port/dbname`` of a ledger URL, for messages (never a password: the config refuses one)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "localhost"
    return f"{host}:{parts.port or 5432}/{parts.path.strip('/')}"
