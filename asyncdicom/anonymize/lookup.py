"""CTP lookup tables: ``keyType/keyValue = replacement`` in a Java ``.properties`` file."""

from __future__ import annotations

from pathlib import Path

from asyncdicom.anonymize import properties
from asyncdicom.anonymize.java import trim
from asyncdicom.errors import AnonymizerInputError


class LookupFailed(LookupError):
    """A lookup that failed (no table, no key, or a broken ``@type/key`` indirection): the
    script's fallback applies, or the file is quarantined."""


class LookupTableError(AnonymizerInputError):
    """A lookup table that cannot be used: where and why."""


class LookupTable:
    """A loaded table (case-sensitive keys, the last duplicate wins)."""

    def __init__(self, entries: dict[str, str], source: str = "") -> None:
        self.entries = entries
        self.source = source

    @classmethod
    def load(cls, path: Path) -> LookupTable:
        """Read ``path`` as UTF-8. Raises LookupTableError when it is missing, not UTF-8 or has a
        malformed ``\\u`` escape (DAT would silently use what it read so far)."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            msg = f"Unable to read the lookup table {path} as it does not exist"
            raise LookupTableError(msg) from None
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            msg = f"Unable to read the lookup table {path}:{line} as it is not UTF-8 text; save it as UTF-8"
            raise LookupTableError(msg) from None
        try:
            entries = properties.parse(text)
        except properties.PropertiesError as exc:
            msg = f"Unable to read the lookup table {path}:{exc.line} as {exc}; write \\uXXXX with 4 hex digits"
            raise LookupTableError(msg) from None
        return cls({entry.key: entry.value for entry in entries}, str(path))

    @classmethod
    def empty(cls) -> LookupTable:
        return cls({})

    def lookup(self, key_type: str | None, key: str | None) -> str:
        """The trimmed replacement for ``keyType/key``, following ``@type/key`` indirections (at
        most 10). Raises LookupFailed."""
        if not self.entries or key is None or key_type is None:
            msg = "missing or empty lookup table"
            raise LookupFailed(msg)
        name = f"{trim(key_type)}/{trim(key)}"
        if name not in self.entries:
            msg = f"no entry for key type {trim(key_type)!r}"
            raise LookupFailed(msg)
        value = trim(self.entries[name])
        rounds = 0
        while value.startswith("@") and "/" in value:
            if rounds == 10:
                msg = "more than 10 indirections in the lookup table"
                raise LookupFailed(msg)
            rounds += 1
            name = trim(value[1:])
            if name not in self.entries:
                msg = "broken indirection in the lookup table"
                raise LookupFailed(msg)
            value = trim(self.entries[name])
        return value
