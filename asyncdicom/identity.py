"""Who asyncdicom says it is, to peers and in the files it writes (defined once)."""

from __future__ import annotations

from asyncdicom import __version__

IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.8.498.1.48.1"
"""Under pydicom's UID root, as pydicom-based tools do: in A-ASSOCIATE user information and in
the (0002,0012) of every file asyncdicom writes."""
IMPLEMENTATION_VERSION_NAME = "ASYNCDICOM_" + __version__.replace(".", "")[:5]
"""(0002,0013) and the A-ASSOCIATE version name: at most 16 characters (PS3.7 D.3.3.2.3)."""
