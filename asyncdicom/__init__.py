"""asyncdicom: pull large image datasets out of a PACS for AI research."""

from __future__ import annotations

__version__ = "0.1.0"
