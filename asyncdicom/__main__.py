"""``python -m asyncdicom``."""

from __future__ import annotations

# Guarded: anyio's worker processes run the main module again (as "__mp_main__"); they must
# neither start a run nor import the command line (rich, typer, the ledger): about 1.3 s of CPU
# and tens of MB per worker process.
if __name__ == "__main__":
    from asyncdicom.cli import main

    main()
