"""``@encrypt``/``@decrypt``: Blowfish, ECB, PKCS#5 padding, Base64 (pycryptodome, imported on
first use: loading it costs a run's start-up ~30 ms, and few scripts encrypt)."""

from __future__ import annotations

import base64
import binascii
import re

from asyncdicom.anonymize.java import trim

_FILL = "tszyihnnphlyeaglle"
_BLOCK = 8  # Blowfish's block size in bytes


def key_bytes(text: str) -> bytes:
    """CTP's key: trimmed, only ``[A-Za-z0-9+/]`` kept, filled to 22 chars, + ``==``, Base64."""
    key = re.sub(r"[^A-Za-z0-9+/]", "", trim(text))
    while len(key) < 22:
        key += _FILL
    return base64.b64decode(key[:22] + "==")


def _ecb(key: str, data: bytes, *, decrypt: bool = False) -> bytes:
    from Crypto.Cipher import Blowfish

    cipher = Blowfish.new(key_bytes(key), Blowfish.MODE_ECB)
    return cipher.decrypt(data) if decrypt else cipher.encrypt(data)


def encrypt(text: str, key: str) -> str:
    from Crypto.Util.Padding import pad

    data = pad(text.encode("utf-8"), _BLOCK)
    return base64.b64encode(_ecb(key, data)).decode("ascii")


def decrypt(text: str, key: str) -> str:
    """Raises ValueError for text that is not a Base64 Blowfish ciphertext under ``key``."""
    from Crypto.Util.Padding import unpad

    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
    return unpad(_ecb(key, data, decrypt=True), _BLOCK).decode("utf-8")
