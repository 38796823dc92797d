"""Specific Character Set as dcm4che 1.4 (DAT's DICOM library) applies it.

dcm4che maps only the *first* term of (0008,0005) to a Java charset. With more than one
term it decodes ISO 2022 escape sequences, but still encodes with the first term's charset
(so a Japanese name written into a ``\\ISO 2022 IR 87`` data set becomes ``?``). When
dcm4che knows no charset for the first term (``ISO_IR 6`` included), or there is no
(0008,0005), CTP sets ``ISO_IR 100`` in both data sets. Non-text VRs (AE, CS, DA, UI...) are
read with the data set's charset but written with the JVM default (UTF-8). Decoding replaces
malformed bytes with U+FFFD, and encoding replaces what a charset cannot hold with its
replacement (``?``), as Java's String does.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

_JAVA = {
    "": "US-ASCII",
    "ISO_IR 100": "ISO-8859-1",
    "ISO_IR 101": "ISO-8859-2",
    "ISO_IR 109": "ISO-8859-3",
    "ISO_IR 110": "ISO-8859-4",
    "ISO_IR 144": "ISO-8859-5",
    "ISO_IR 127": "ISO-8859-6",
    "ISO_IR 126": "ISO-8859-7",
    "ISO_IR 138": "ISO-8859-8",
    "ISO_IR 148": "ISO-8859-9",
    "ISO_IR 13": "JIS_X0201",
    "ISO_IR 166": "TIS-620",
    "ISO 2022 IR 6": "US-ASCII",
    "ISO 2022 IR 100": "ISO-8859-1",
    "ISO 2022 IR 101": "ISO-8859-2",
    "ISO 2022 IR 109": "ISO-8859-3",
    "ISO 2022 IR 110": "ISO-8859-4",
    "ISO 2022 IR 144": "ISO-8859-5",
    "ISO 2022 IR 127": "ISO-8859-6",
    "ISO 2022 IR 126": "ISO-8859-7",
    "ISO 2022 IR 138": "ISO-8859-8",
    "ISO 2022 IR 148": "ISO-8859-9",
    "ISO 2022 IR 13": "JIS_X0201",
    "ISO 2022 IR 166": "TIS-620",
    "ISO 2022 IR 87": "JIS0208",
    "ISO 2022 IR 159": "JIS0212",
    "ISO 2022 IR 149": "cp949",
    "ISO_IR 192": "UTF-8",
    "GB18030": "GB18030",
}
_CODEC = {
    "US-ASCII": "ascii",
    "ISO-8859-1": "latin_1",
    "ISO-8859-2": "iso8859_2",
    "ISO-8859-3": "iso8859_3",
    "ISO-8859-4": "iso8859_4",
    "ISO-8859-5": "iso8859_5",
    "ISO-8859-6": "iso8859_6",
    "ISO-8859-7": "iso8859_7",
    "ISO-8859-8": "iso8859_8",
    "ISO-8859-9": "iso8859_9",
    "TIS-620": "tis_620",
    "cp949": "cp949",
    "UTF-8": "utf-8",
    "GB18030": "gb18030",
}
# the 94x94 JIS sets have no bare Python codec: their bytes are decoded inside the escapes
# ISO-2022-JP uses for them
_JIS_ESCAPES = {"JIS0208": (b"\x1b$B", "iso2022_jp"), "JIS0212": (b"\x1b$(D", "iso2022_jp_2")}
# ESC sequences dcm4che's ISO 2022 decoder switches on (the two bytes after ESC)
_SWITCH = {
    b"$B": ("JIS0208", 2),
    b"(B": ("US-ASCII", 1),
    b"(J": ("JIS_X0201", 1),
    b")I": ("JIS_X0201", 1),
    b"-A": ("ISO-8859-1", 1),
    b"-B": ("ISO-8859-2", 1),
    b"-C": ("ISO-8859-3", 1),
    b"-D": ("ISO-8859-4", 1),
    b"-F": ("ISO-8859-7", 1),
    b"-G": ("ISO-8859-6", 1),
    b"-H": ("ISO-8859-8", 1),
    b"-L": ("ISO-8859-5", 1),
    b"-M": ("ISO-8859-9", 1),
    b"-T": ("TIS-620", 1),
}
JVM_DEFAULT = "UTF-8"  # DAT's JVM default charset (what String.getBytes() uses)


class CharsetError(ValueError):
    """dcm4che throws reading this value (an ISO 2022 value cut short): it reads as null."""


@dataclass(frozen=True, slots=True)
class Charset:
    """``java``: the Java charset of the first term (the JVM default when dcm4che has none);
    ``iso2022``: more than one term, so escape sequences are decoded."""

    java: str = JVM_DEFAULT
    iso2022: bool = False

    def decode(self, raw: bytes) -> str:
        if raw.isascii() and (0x1B not in raw or not self.iso2022) and self.java in _ASCII_COMPATIBLE:
            return raw.decode("ascii")
        if self.iso2022:
            return _decode_iso2022(raw, self.java)
        return _decode(raw, self.java)

    def encode(self, text: str) -> bytes:
        return _encode(text, self.java)


JVM = Charset()  # what String.getBytes() uses
LATIN_1 = Charset("ISO-8859-1")
_ASCII_COMPATIBLE = frozenset(_CODEC)  # charsets that read ASCII bytes as ASCII


@functools.lru_cache(maxsize=64)
def from_value(value: str) -> Charset | None:
    """The charset of a (0008,0005) value string (trimmed as a whole, then split on ``\\``);
    None when dcm4che knows no charset for its first term."""
    value = value.strip(" \0")
    if not value:  # an empty element: no codes, no charset
        return None
    terms = value.split("\\")
    java = _JAVA.get(terms[0])
    if java is None:
        return None
    return Charset(java, len(terms) > 1)


def _decode(raw: bytes, java: str) -> str:
    if java == "JIS_X0201":
        return "".join(_x0201_char(b) for b in raw)
    if java in _JIS_ESCAPES:
        escape, codec = _JIS_ESCAPES[java]
        return (escape + raw + b"\x1b(B").decode(codec, "replace")
    return raw.decode(_CODEC[java], "replace")


def _x0201_char(byte: int) -> str:
    if byte < 0x80:  # Java's JIS_X0201 reads 0x5C and 0x7E as ASCII, not as YEN and OVERLINE
        return chr(byte)
    if 0xA1 <= byte <= 0xDF:
        return chr(0xFF61 + byte - 0xA1)
    return "\ufffd"


def _decode_iso2022(raw: bytes, java: str) -> str:
    """dcm4che's ISO2022.decode, step for step (its out-of-range reads are CharsetError)."""
    out: list[str] = []
    off = cur = 0
    step = 1
    size = len(raw)
    while cur < size:
        if raw[cur] == 0x1B:
            if off < cur:
                out.append(_decode(raw[off:cur], java))
            cur += 3
            if cur > size:
                raise CharsetError
            pair = raw[cur - 2 : cur]
            if pair in (b"$(", b"$)"):
                if cur >= size:
                    raise CharsetError
                final = raw[cur]
                cur += 1
                if pair == b"$(" and final == 0x44:
                    java, step = "JIS0212", 2
                elif pair == b"$)" and final == 0x43:
                    java, step = "cp949", -1
                else:  # an unknown escape is decoded as text
                    out.append(_decode(raw[cur - 4 : cur], java))
            elif pair in _SWITCH:
                java, step = _SWITCH[pair]
            else:
                out.append(_decode(raw[cur - 3 : cur], java))
            off = cur
        else:
            cur += step if step > 0 else (2 if raw[cur] >= 0x80 else 1)
    if cur > size:
        raise CharsetError
    if off < cur:
        out.append(_decode(raw[off:cur], java))
    return "".join(out)


def _encode(text: str, java: str) -> bytes:
    if java == "JIS_X0201":
        return b"".join(_x0201_byte(char) for char in text)
    if java in _JIS_ESCAPES:
        return b"".join(_jis_bytes(char, java) for char in text)
    return text.encode(_CODEC[java], "replace")


def _x0201_byte(char: str) -> bytes:
    code = ord(char)
    if char == "\u00a5":
        return b"\x5c"
    if char == "\u203e":
        return b"\x7e"
    if code < 0x80:
        return bytes([code])
    if 0xFF61 <= code <= 0xFF9F:
        return bytes([code - 0xFF61 + 0xA1])
    return b"?"


def _jis_bytes(char: str, java: str) -> bytes:
    escape, codec = _JIS_ESCAPES[java]
    try:
        encoded = char.encode(codec)
    except UnicodeEncodeError:
        return b"!)"  # FULLWIDTH QUESTION MARK, Java's replacement in the JIS sets
    if not encoded.startswith(escape):
        return b"!)"
    return encoded[len(escape) :].split(b"\x1b", 1)[0]
