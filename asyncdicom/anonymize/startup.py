"""A lighter start for the ``anonymize`` command.

pydicom imports every pixel-data library it can find (numpy, gdcm, pylibjpeg and its plugins,
Pillow) and ``requests`` when it is first imported: ~0.3 s, most of the command's start-up.
The anonymizer never decodes pixel data, so the command imports pydicom as if those were not
installed. They are hidden only while pydicom loads; later imports find them as usual (the
Java number formatting imports numpy on first use)."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

PIXEL_LIBRARIES = ("numpy", "gdcm", "pylibjpeg", "openjpeg", "libjpeg", "rle", "jpeg_ls", "PIL", "requests")


@contextlib.contextmanager
def without_pixel_libraries() -> Iterator[None]:
    """Imports inside see no pixel libraries, unless pydicom (or the library) is loaded already."""
    hidden = [] if "pydicom" in sys.modules else [name for name in PIXEL_LIBRARIES if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # "import name" raises ImportError
    try:
        yield
    finally:
        for name in hidden:
            if name in sys.modules and sys.modules[name] is None:
                del sys.modules[name]
