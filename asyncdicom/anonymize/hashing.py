"""CTP's hashes: MD5 as an unsigned decimal string, and UIDs built from it."""

from __future__ import annotations

import hashlib

from asyncdicom.anonymize.java import trim


def usmd5(text: str) -> str:
    """MD5 of the UTF-8 bytes of ``text``, as an unsigned base-10 integer."""
    return str(int.from_bytes(hashlib.md5(text.encode("utf-8", "surrogatepass")).digest(), "big"))


def hash_text(text: str, maxlen: int = 0) -> str:
    """``usmd5`` cut to ``maxlen`` digits (``maxlen`` < 1: all of them)."""
    digits = usmd5(text)
    return digits[:maxlen] if maxlen > 0 else digits


def hash_uid(prefix: str, uid: str) -> str:
    """``prefix.`` + usmd5(uid) (a 9 in front if it would start with 0), at most 64 chars."""
    prefix = trim(prefix)
    if prefix and not prefix.endswith("."):
        prefix += "."
    digits = usmd5(uid)
    return (prefix + ("9" if digits.startswith("0") else "") + digits)[:64]
