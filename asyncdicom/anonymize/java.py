"""The Java behaviours CTP's results depend on: String.trim/split, parseInt, Math.round,
Float/Double.toString, case mapping, and the regex dialect (translated to Python's ``re``)."""

from __future__ import annotations

import math
import re
import struct

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


def float32(value: float) -> float:
    """``value`` rounded to a Java ``float``."""
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:
        return math.copysign(math.inf, value)


def int32(value: int) -> int:
    """Java ``int`` arithmetic: wrap around at 32 bits."""
    return (value + 2**31) % 2**32 - 2**31


def round_float(value: float) -> int:
    """Java ``Math.round(float)``: floor(x + 0.5), NaN is 0, beyond int saturates."""
    if math.isnan(value):
        return 0
    if math.isinf(value):
        return 2**31 - 1 if value > 0 else -(2**31)
    return max(-(2**31), min(2**31 - 1, math.floor(value + 0.5)))


def divide_float(dividend: float, divisor: float) -> float:
    """Java ``float`` division (by zero gives an infinity, or NaN for 0/0)."""
    if divisor == 0:
        if dividend == 0 or math.isnan(dividend):
            return math.nan
        return math.copysign(math.inf, dividend) * math.copysign(1, divisor)
    return float32(dividend / divisor)


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


def substring(text: str, begin: int, end: int | None = None) -> str:
    """Java ``substring``: an end past the string raises (Python's slice would shorten)."""
    stop = len(text) if end is None else end
    if begin < 0 or stop > len(text) or begin > stop:
        msg = f"substring({begin}, {stop}) of a string of length {len(text)}"
        raise IndexError(msg)
    return text[begin:stop]


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


def replace_all(pattern: re.Pattern[str], template: str, text: str) -> str:
    """Java ``String.replaceAll``: ``$n``, ``${name}`` and ``\\x`` in ``template`` are read per
    match, so a bad reference fails only when something matches (raises IndexError)."""
    return pattern.sub(lambda match: _expand(match, template), text)


def _expand(match: re.Match[str], template: str) -> str:
    out: list[str] = []
    groups = match.re.groups
    i = 0
    while i < len(template):
        char = template[i]
        i += 1
        if char == "\\":
            if i >= len(template):
                msg = "character to be escaped is missing"
                raise IndexError(msg)
            out.append(template[i])
            i += 1
        elif char == "$":
            if i < len(template) and template[i] == "{":
                end = template.find("}", i)
                name = template[i + 1 : end] if end > 0 else ""
                if not name or name not in match.re.groupindex:
                    msg = "no such named group"
                    raise IndexError(msg)
                out.append(match.group(name) or "")
                i = end + 1
                continue
            if i >= len(template) or not "0" <= template[i] <= "9":
                msg = "illegal group reference"
                raise IndexError(msg)
            number = int(template[i])
            i += 1
            while i < len(template) and "0" <= template[i] <= "9" and number * 10 + int(template[i]) <= groups:
                number = number * 10 + int(template[i])  # Java takes more digits while the group exists
                i += 1
            if number > groups:
                msg = f"no group {number}"
                raise IndexError(msg)
            out.append(match.group(number) or "")
        else:
            out.append(char)
    return "".join(out)


# --- java.util.Properties ------------------------------------------------------------------------


def string_hash(text: str) -> int:
    """Java ``String.hashCode`` (over UTF-16 code units, 32-bit)."""
    value = 0
    for unit in memoryview(text.encode("utf-16-le", "surrogatepass")).cast("H"):
        value = (31 * value + unit) & 0xFFFFFFFF
    return value


def properties_order(keys: list[str]) -> list[str]:
    """The order ``Properties.keys()`` enumerates ``keys`` put in this order (Java 9+: a
    ConcurrentHashMap of initial capacity 8, i.e. 16 bins, doubled at 3/4 full; bins are walked
    in index order; a resize splits each bin keeping the longest same-side tail in order and
    pushing the nodes before it in reverse, as ``transfer`` does)."""
    size = 16
    table: list[list[tuple[int, str]]] = [[] for _ in range(size)]
    seen: set[str] = set()
    for key in keys:
        if key in seen:
            continue  # a repeated key replaces the value in place
        seen.add(key)
        h = string_hash(key)
        spread = (h ^ (h >> 16)) & 0x7FFFFFFF
        table[spread & (size - 1)].append((spread, key))
        if len(seen) >= size - (size >> 2):
            table = _transfer(table)
            size *= 2
    return [key for chain in table for _, key in chain]


def _transfer(table: list[list[tuple[int, str]]]) -> list[list[tuple[int, str]]]:
    n = len(table)
    grown: list[list[tuple[int, str]]] = [[] for _ in range(2 * n)]
    for index, chain in enumerate(table):
        if not chain:
            continue
        last = 0  # start of the longest tail whose nodes all go to the same side
        for position in range(1, len(chain)):
            if chain[position][0] & n != chain[position - 1][0] & n:
                last = position
        low = [node for node in chain[last:] if not node[0] & n]
        high = [node for node in chain[last:] if node[0] & n]
        for node in chain[:last]:
            (high if node[0] & n else low).insert(0, node)
        grown[index], grown[index + n] = low, high
    return grown
