"""``python -m asyncdicom``."""

from __future__ import annotations

from asyncdicom.cli import main

# Guarded: anyio's worker processes re-import the main module, which must not start a run.
if __name__ == "__main__":
    main()
