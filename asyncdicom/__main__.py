"""``python -m asyncdicom``."""

from __future__ import annotations

from asyncdicom.cli import main

main()
