"""``@encrypt``/``@decrypt``: Blowfish, ECB, PKCS#5 padding, Base64 (pycryptodome)."""

from __future__ import annotations

import base64
import binascii
import re

from Crypto.Cipher import Blowfish
from Crypto.Util.Padding import pad, unpad

from asyncdicom.anonymize.java import trim

_FILL = "tszyihnnphlyeaglle"


def key_bytes(text: str) -> bytes:
    """CTP's key: trimmed, only ``[A-Za-z0-9+/]`` kept, filled to 22 chars, + ``==``, Base64."""
    key = re.sub(r"[^A-Za-z0-9+/]", "", trim(text))
    while len(key) < 22:
        key += _FILL
    return base64.b64decode(key[:22] + "==")


def encrypt(text: str, key: str) -> str:
    cipher = Blowfish.new(key_bytes(key), Blowfish.MODE_ECB)
    return base64.b64encode(cipher.encrypt(pad(text.encode("utf-8"), Blowfish.block_size))).decode("ascii")


def decrypt(text: str, key: str) -> str:
    """Raises ValueError for text that is not a Base64 Blowfish ciphertext under ``key``."""
    cipher = Blowfish.new(key_bytes(key), Blowfish.MODE_ECB)
    try:
        data = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise ValueError(str(exc)) from None
    return unpad(cipher.decrypt(data), Blowfish.block_size).decode("utf-8")
