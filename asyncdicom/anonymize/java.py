"""The Java behaviours CTP's results depend on: String.trim/split, parseInt, Math.round,
Float/Double.toString, case mapping, and the regex dialect (translated to Python's ``re``)."""

from __future__ import annotations

import math
import re

_INT = re.compile(r"[+-]?[0-9]+")


_AT_MOST_SPACE = "".join(chr(code) for code in range(0x21))


def trim(text: str) -> str:
    """Java ``String.trim``: strips every char <= U+0020 at both ends."""
    return text.strip(_AT_MOST_SPACE)


def split(text: str, separator: str) -> list[str]:
    """Java ``String.split`` with a literal one-char separator: trailing empty strings dropped
    (and ``""`` splits to ``[""]``)."""
    if text == "":
        return [""]
    parts = text.split(separator)
    while parts and parts[-1] == "":
        parts.pop()
    return parts


def parse_int(text: str | None, bits: int = 32) -> int:
    """Java ``Integer.parseInt``/``Long.parseLong``: optional sign, ASCII digits, no spaces.
    Raises ValueError."""
    if text is None or not _INT.fullmatch(text):
        msg = f"not an integer: {text!r}"
        raise ValueError(msg)
    value = int(text)
    if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
        msg = f"out of range: {text!r}"
        raise ValueError(msg)
    return value


def parse_float(text: str) -> float:
    """Java ``Float.parseFloat``/``Double.parseDouble``: trimmed, optional f/d suffix."""
    value = trim(text)
    if value[-1:] in ("f", "F", "d", "D"):
        value = value[:-1]
    if not re.fullmatch(r"[+-]?(NaN|Infinity|([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?)", value):
        msg = f"not a number: {text!r}"
        raise ValueError(msg)
    return float(value.replace("Infinity", "inf"))


def round_half_up(value: float) -> int:
    """Java ``Math.round``: floor(x + 0.5)."""
    return math.floor(value + 0.5)


def _java_digits(shortest: str) -> str:
    """Java's Float/Double.toString from Python's shortest scientific repr ``d.ddde±x``."""
    mantissa, _, exponent_text = shortest.partition("e")
    exponent = int(exponent_text or "0")
    negative = mantissa.startswith("-")
    digits = mantissa.lstrip("-").replace(".", "")
    sign = "-" if negative else ""
    if -3 <= exponent < 7:
        point = exponent + 1
        if point <= 0:
            text = "0." + "0" * (-point) + digits
        elif point >= len(digits):
            text = digits + "0" * (point - len(digits)) + ".0"
        else:
            text = digits[:point] + "." + digits[point:]
        return sign + text
    fraction = digits[1:] or "0"
    return f"{sign}{digits[0]}.{fraction}E{exponent}"


def double_to_string(value: float) -> str:
    """Java ``Double.toString``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1, value) < 0 else "0.0"
    import numpy as np  # imported when first needed: few scripts format numbers (start-up time)

    return _java_digits(np.format_float_scientific(value, unique=True, trim="-"))


def float_to_string(value: float) -> str:
    """Java ``Float.toString`` (shortest digits of the 32-bit value)."""
    import numpy as np

    single = np.float32(value)
    if math.isnan(single):
        return "NaN"
    if math.isinf(single):
        return "Infinity" if single > 0 else "-Infinity"
    if single == 0:
        return "-0.0" if math.copysign(1, float(single)) < 0 else "0.0"
    return _java_digits(np.format_float_scientific(single, unique=True, trim="-"))


def upper(text: str) -> str:
    """Java ``toUpperCase`` (locale-independent; ß becomes SS as in Java)."""
    return text.upper()


def lower(text: str) -> str:
    return text.lower()


def utf16_len(text: str) -> int:
    """Length in UTF-16 code units, as Java counts."""
    return len(text.encode("utf-16-le")) // 2


def utf16_slice(text: str, start: int, end: int | None = None) -> str:
    """``substring`` in UTF-16 code units; a surrogate pair cut in half becomes ``?``, as
    Java's encoders write a lone surrogate."""
    units = text.encode("utf-16-le", "surrogatepass")
    stop = len(units) if end is None else end * 2
    piece = units[start * 2 : stop].decode("utf-16-le", "surrogatepass")
    return re.sub("[\ud800-\udfff]", "?", piece)


# --- regular expressions ------------------------------------------------------------------------

_POSIX = {
    "Lower": "a-z",
    "Upper": "A-Z",
    "ASCII": "\\x00-\\x7f",
    "Alpha": "a-zA-Z",
    "Digit": "0-9",
    "Alnum": "a-zA-Z0-9",
    "Punct": "!-/:-@\\[-`{-~",
    "Space": " \\t\\n\\x0b\\f\\r",
    "XDigit": "0-9a-fA-F",
    "L": "^\\W\\d_",
    "IsAlphabetic": "^\\W\\d_",
    "IsDigit": "\\d",
    "Lu": "A-Z",
    "Ll": "a-z",
}


def regex(pattern: str) -> re.Pattern[str]:
    """Compile a Java regular expression with Python's ``re`` (ASCII ``\\d \\s \\w`` as in Java;
    ``\\p{...}`` classes and possessive quantifiers translated). Raises re.error."""
    out: list[str] = []
    i, in_class = 0, False
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            if nxt in "pP" and i + 2 < len(pattern) and pattern[i + 2] == "{":
                end = pattern.index("}", i + 3)
                name = pattern[i + 3 : end].removeprefix("Is").removeprefix("javaLowerCase")
                body = _POSIX.get(pattern[i + 3 : end], _POSIX.get(name))
                if body is None:
                    msg = f"unknown character class {pattern[i : end + 1]}"
                    raise re.error(msg)
                negate = nxt == "P"
                if body.startswith("^"):
                    body, negate = body[1:], not negate
                out.append(("[^" if negate else "[") + body + "]" if not in_class else body)
                i = end + 1
                continue
            if nxt == "Q":
                end = pattern.find("\\E", i + 2)
                literal = pattern[i + 2 :] if end < 0 else pattern[i + 2 : end]
                out.append(re.escape(literal))
                i = len(pattern) if end < 0 else end + 2
                continue
            out.append(pattern[i : i + 2])
            i += 2
            continue
        if char == "[" and not in_class:
            in_class = True
        elif char == "]" and in_class:
            in_class = False
        elif char == "+" and not in_class and out and out[-1] in ("*", "+", "?", "}"):
            out.append("")  # possessive quantifier: the match is the same for a full match
            i += 1
            continue
        out.append(char)
        i += 1
    return re.compile("".join(out), re.ASCII)


def replacement(text: str) -> str:
    """A Java ``replaceAll`` replacement (``$1``, ``\\$``) as a Python ``re.sub`` template."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            out.append(text[i + 1].replace("\\", "\\\\"))
            i += 2
        elif char == "$":
            match = re.match(r"\$(\d+|\{\w+\})", text[i:])
            if not match:
                msg = "illegal group reference"
                raise re.error(msg)
            group = match.group(1).strip("{}")
            out.append(f"\\g<{group}>")
            i += len(match.group(0))
        else:
            out.append("\\\\" if char == "\\" else char)
            i += 1
    return "".join(out)
