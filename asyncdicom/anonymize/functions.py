"""The script functions (spec §7): one function per ``@name()``, and :data:`FUNCTIONS`, the one
registry of their names. A function that evaluates a sub-script (``@if``, ``@select``…) calls
the interpreter through ``ctx.evaluate``, which :mod:`asyncdicom.anonymize.evaluate` provides."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from asyncdicom.anonymize import crypto, dates, hashing, values
from asyncdicom.anonymize.calls import Call
from asyncdicom.anonymize.context import Context, Quarantine, Skip
from asyncdicom.anonymize.java import (
    divide_float,
    float32,
    int32,
    lower,
    parse_float,
    parse_int,
    regex,
    replace_all,
    round_float,
    split,
    trim,
    upper,
    utf16_len,
    utf16_slice,
)
from asyncdicom.anonymize.lookup import LookupFailed

_WHITE = re.compile(r"[ \t\n\x0b\f\r]")


def _contents(ctx: Context, call: Call, index: int, this: int) -> str | None:
    return ctx.contents(call.arg(index), this)


def _required(call: Call) -> None:
    if not call.args:
        msg = f"@{call.name}() needs an element name"
        raise Quarantine(msg)


# --- functions ----------------------------------------------------------------------------------


def fn_contents(ctx: Context, call: Call, this: int) -> str:
    _required(call)
    value = _contents(ctx, call, 0, this) or ""
    if len(call.args) == 1:
        return value
    if len(call.args) > 3:
        return ""
    try:
        pattern = regex(call.arg(1))
        return replace_all(pattern, call.arg(2) if len(call.args) == 3 else "", value)
    except (re.error, IndexError) as exc:
        msg = f"@contents() has an invalid regular expression ({exc})"
        raise Quarantine(msg) from None


def fn_value(ctx: Context, call: Call, this: int) -> str:
    _required(call)
    value = _contents(ctx, call, 0, this) or ""
    return value if value else call.arg(1)


def fn_truncate(ctx: Context, call: Call, this: int) -> str:
    _required(call)
    value = _contents(ctx, call, 0, this) or ""
    if len(call.args) < 2:
        return value
    try:
        n = parse_int(trim(call.args[1]))
    except ValueError:
        return value
    if n >= 0:
        return utf16_slice(value, 0, min(n, utf16_len(value)))
    value = trim(value)
    length = utf16_len(value)
    return utf16_slice(value, max(0, length + n))


def fn_date(ctx: Context, call: Call, this: int) -> str:
    now = CLOCK()
    sep = call.arg(0)
    return f"{now.year:04d}{sep}{now.month:02d}{sep}{now.day:02d}"


def fn_time(ctx: Context, call: Call, this: int) -> str:
    now = CLOCK()
    sep = call.arg(0)
    return f"{now.hour:02d}{sep}{now.minute:02d}{sep}{now.second:02d}"


def _hash_error(ctx: Context, call: Call) -> str:
    """DAT stores the argument text when a hash function fails (e.g. an undefined parameter);
    ``safe`` mode quarantines instead."""
    if ctx.mode == "safe":
        msg = f"@{call.name}() failed (an undefined parameter or a bad argument), which DAT would store as text"
        raise Quarantine(msg)
    return "(" + ",".join(call.args) + ")"


def _limit(ctx: Context, call: Call, index: int) -> int | None:
    """An optional digit count (a parameter position): 0 (no limit) when absent or not an
    integer, None when it names an undefined parameter (the caller's error)."""
    if len(call.args) <= index:
        return 0
    text = ctx.param(call.arg(index))
    if text is None:
        return None
    try:
        return parse_int(text)
    except ValueError:
        return 0


def fn_hash(ctx: Context, call: Call, this: int) -> str:
    value = _contents(ctx, call, 0, this)
    if value is None:
        return "@remove()"
    maxlen = _limit(ctx, call, 1)
    if maxlen is None:
        return _hash_error(ctx, call)
    return hashing.hash_text(value, maxlen)


def fn_hashname(ctx: Context, call: Call, this: int) -> str:
    if len(call.args) < 2:
        return _hash_error(ctx, call)
    value = _contents(ctx, call, 0, this) or ""
    try:
        length = parse_int(ctx.param(call.arg(1)))
    except ValueError:
        length = 4
    words = split(value, "^")
    if len(call.args) > 2:
        try:
            count = parse_int(ctx.param(call.arg(2)))
        except ValueError:
            count = 0
        if count > 0:
            words = words[:count]
    name = upper(re.sub(r"[ \t\n\x0b\f\r,'^.]", "", "".join(words)))
    return hashing.hash_text(name, length)


def fn_hashptid(ctx: Context, call: Call, this: int) -> str:
    if len(call.args) < 2:
        return _hash_error(ctx, call)
    site = trim(ctx.param(call.arg(0)) or "")
    value = trim(_contents(ctx, call, 1, this) or "")
    maxlen = _limit(ctx, call, 2)
    if maxlen is None:
        return _hash_error(ctx, call)
    return hashing.hash_text(f"[{site}]{value}", maxlen)


def fn_hashuid(ctx: Context, call: Call, this: int) -> str:
    if len(call.args) < 2:
        return _hash_error(ctx, call)
    prefix = ctx.param(call.arg(0))
    if prefix is None:
        return _hash_error(ctx, call)
    uid = _contents(ctx, call, 1, this)
    if uid is None:
        return "@remove()"
    if not prefix.endswith("."):
        prefix += "."
    if len(call.args) > 2:
        other = ctx.tag_of(call.arg(2), ctx.current_in)
        if other and other in ctx.table:
            uid += ctx.evaluate(ctx, ctx.table[other], other)
    return hashing.hash_uid(prefix, uid)


def _shift(value: str, days: int) -> str:
    return "\\".join(dates.increment(part, days) for part in value.split("\\"))


def _date_function(ctx: Context, call: Call, this: int, change: Callable[[str], str]) -> str:
    """What @hashdate, @incrementdate and @modifydate share (§6.5): an absent date element gives
    ``@remove()``; a value shorter than a date, or any error in ``change``, ``@empty()``."""
    value = _contents(ctx, call, 0, this)
    if value is None:
        return "@remove()"
    if len(value) < 8:
        return "@empty()"
    try:
        return change(value)
    except (ValueError, IndexError, OverflowError):
        return "@empty()"


def fn_hashdate(ctx: Context, call: Call, this: int) -> str:
    def change(value: str) -> str:
        key = _contents(ctx, call, 1, this)
        if key is None:
            return "@remove()"
        return _shift(value, -(int(hashing.usmd5(key)[-4:]) % 3650))

    return _date_function(ctx, call, this, change)


def fn_incrementdate(ctx: Context, call: Call, this: int) -> str:
    return _date_function(ctx, call, this, lambda value: _shift(value, parse_int(ctx.param(call.arg(1)), 64)))


def _field(text: str | None) -> int:
    text = trim(text) if text is not None else None
    if text is None:
        msg = "undefined parameter"
        raise ValueError(msg)
    if text in ("*", ""):
        return -1
    try:
        return parse_int(text)
    except ValueError:
        return -1


def fn_modifydate(ctx: Context, call: Call, this: int) -> str:
    def change(value: str) -> str:
        year, month, day = (_field(ctx.param(call.arg(i))) for i in (1, 2, 3))
        return "\\".join(dates.modify(part, year, month, day) for part in value.split("\\"))

    return _date_function(ctx, call, this, change)


def _lookup(ctx: Context, key_type: str | None, key: str | None) -> str:
    return ctx.lookup.lookup(key_type, key)


def fn_lookup(ctx: Context, call: Call, this: int) -> str:
    if len(call.args) < 2:
        msg = "@lookup() needs an element and a key type"
        raise Quarantine(msg)
    parts = [(ctx.contents(name, this) or "") for name in call.arg(0).split("|")]
    key = "|".join(parts).replace("\\", "")
    try:
        return _lookup(ctx, call.arg(1), key)
    except LookupFailed as exc:
        action = trim(call.arg(2)) if len(call.args) > 2 else ""
        if action == "keep":
            return "@keep()"
        if action == "remove":
            return "@remove()"
        if action == "empty":
            return "@empty()"
        if action == "default" and len(call.args) > 3:
            return trim(call.arg(3))
        if action == "ignore" and len(call.args) > 3:
            try:
                if regex(trim(call.arg(3))).fullmatch(key):
                    return key
            except re.error:
                pass
        msg = f"@lookup() failed: {exc}"
        raise Quarantine(msg) from None


def fn_dateinterval(ctx: Context, call: Call, this: int) -> str:
    if len(call.args) < 3:
        msg = "@dateinterval() needs three arguments"
        raise Quarantine(msg)
    try:
        name = call.arg(2)
        key = ctx.contents(name if name.startswith("root:") else "root:" + name, this)  # always the root
        base_text = trim(_lookup(ctx, call.arg(1), key))
        base = dates.parse_month_day_year(base_text)
        date = dates.parse_compact((_contents(ctx, call, 0, this) or "")[:8])
        days = date - base
        if len(call.args) < 4:
            return str(days)
        origin = ctx.param(call.arg(3)) or ""
        return dates.increment(origin, days)
    except (LookupFailed, ValueError, IndexError, OverflowError) as exc:
        msg = f"@dateinterval() failed ({type(exc).__name__})"
        raise Quarantine(msg) from None


def fn_if(ctx: Context, call: Call, this: int) -> str:
    true, false = ([*call.clauses, "", ""])[:2]
    return ctx.evaluate(ctx, true if _condition(ctx, call, this) else false, this)


def _condition(ctx: Context, call: Call, this: int) -> bool:
    if len(call.args) < 2:
        return False
    name = call.arg(0)
    condition = call.args[1]
    if condition == "exists":
        tag = this if trim(name) in ("", "this") else ctx.tag_of(name, ctx.current_in)
        return tag != 0 and ctx.has(tag)
    element = ctx.contents(name, this) if trim(name) != "" else None
    if condition == "isblank":
        return element is None or trim(element) == ""
    if element is None or len(call.args) < 3:
        return False
    value = call.arg(2)
    if value.startswith("@"):
        value = ctx.param(value) or value
    if condition == "equals":
        return lower(element) == lower(value)
    if condition == "contains":
        return lower(value) in lower(element)
    if condition == "matches":
        try:
            return regex(trim(value)).fullmatch(element) is not None
        except re.error as exc:
            msg = f"@if(…,matches,…) has an invalid regular expression ({exc})"
            raise Quarantine(msg) from None
    if condition == "greaterthan":
        return _number(element) > _number(value)
    return False


def _number(text: str) -> int:
    """StringUtil.getInt of the digits: a Java int, 0 when empty or beyond 32 bits."""
    digits = re.sub(r"[^0-9]", "", text)
    try:
        return parse_int(digits) if digits else 0
    except ValueError:
        return 0


def fn_select(ctx: Context, call: Call, this: int) -> str:
    root, item = ([*call.clauses, "", ""])[:2]
    return ctx.evaluate(ctx, root if ctx.at_root else item, this)


def fn_append(ctx: Context, call: Call, this: int) -> str:
    value = ctx.evaluate(ctx, ([*call.clauses, ""])[0], this)
    if values.multiplicity(ctx.current_in, this) == 0:  # CTP asks dcm4che for the VM, not the text
        return value
    return (ctx.contents("this", this) or "") + "\\" + value


def fn_always(ctx: Context, call: Call, this: int) -> str:
    return ""


def fn_case(convert: Callable[[str], str]) -> Callable[[Context, Call, int], str]:
    def function(ctx: Context, call: Call, this: int) -> str:
        _required(call)
        return convert(_contents(ctx, call, 0, this) or "")

    return function


def fn_initials(ctx: Context, call: Call, this: int) -> str:
    _required(call)
    text = trim(re.sub(r"\s+", " ", (_contents(ctx, call, 0, this) or "").replace("^", " ").replace(",", " ")))
    letters = [utf16_slice(word, 0, 1) for word in text.split(" ") if word]  # Java's charAt(0)
    initials = upper("".join(letters[1:] + letters[:1])) if text else "X"  # the offset applies to X too
    if len(call.args) > 1:
        try:
            offset = parse_int(trim(call.arg(1)))
        except ValueError:
            offset = 0
        initials = "".join(_caesar(c, offset) for c in initials)
    return initials


def _caesar(char: str, offset: int) -> str:
    for start, size in (("a", 26), ("A", 26), ("0", 10)):
        base = ord(start)
        if base <= ord(char) < base + size:
            return chr(base + (ord(char) - base + offset) % size)
    return char


def fn_integer(ctx: Context, call: Call, this: int) -> str:
    msg = "@integer() needs CTP's integer table, which DAT does not have"
    raise Quarantine(msg)


def fn_param(ctx: Context, call: Call, this: int) -> str:
    _required(call)
    value = ctx.param(call.arg(0))
    if value is None and ctx.mode == "safe":
        msg = f"@param({call.arg(0)}) names an undefined parameter, which DAT would store as null"
        raise Quarantine(msg)
    return "null" if value is None else value


def fn_quarantine(ctx: Context, call: Call, this: int) -> str:
    msg = "the script called @quarantine()"
    raise Quarantine(msg)


def fn_skip(ctx: Context, call: Call, this: int) -> str:
    msg = "the script called @skip()"
    raise Skip(msg)


def fn_require(ctx: Context, call: Call, this: int) -> str:
    if ctx.has(this):
        return "@keep()"
    if not call.args:
        return ""
    tag = ctx.tag_of(call.arg(0), ctx.current_in) if trim(call.arg(0)) not in ("", "this") else this
    value = ctx.contents(call.arg(0), this) if tag and ctx.has(tag) else call.arg(1)
    value = value or ""
    if trim(value) == "" and value != "":
        return f"@blank({len(value)})"
    return value


def fn_round(ctx: Context, call: Call, this: int) -> str:
    try:
        text = trim(_contents(ctx, call, 0, this) or "")
        size_text = ctx.param(call.arg(1))
        if size_text is None:
            return _hash_error(ctx, call)
        size = parse_int(trim(size_text))
        if not text:
            return ""
        number = float32(parse_float(re.sub(r"[^0-9]", "", text)))  # Java float arithmetic, int result
        rounded = int32(round_float(divide_float(number, float(size))) * size)
        result = str(rounded) + re.sub(r"[0-9]", "", text)
        return "0" + result if len(result) % 2 else result
    except ValueError:
        return _hash_error(ctx, call)


def fn_process(ctx: Context, call: Call, this: int) -> str:
    ctx.process_items(ctx, this)
    return "@keep()"


def fn_call(ctx: Context, call: Call, this: int) -> str:
    msg = "@call() plugins are not supported"
    raise Quarantine(msg)


def fn_pathelement(ctx: Context, call: Call, this: int) -> str:
    _required(call)
    value = _contents(ctx, call, 0, this) or ""
    parts = split(value, "/")
    try:
        index = parse_int(trim(call.arg(1)))
    except ValueError:
        return value
    if index < 0:
        index += len(parts)
    return parts[index] if 0 <= index < len(parts) else value


def fn_encrypt(ctx: Context, call: Call, this: int) -> str:
    return _crypt(ctx, call, this, crypto.encrypt)


def fn_decrypt(ctx: Context, call: Call, this: int) -> str:
    return _crypt(ctx, call, this, crypto.decrypt)


def _crypt(ctx: Context, call: Call, this: int, operation: Callable[[str, str], str]) -> str:
    if len(call.args) < 2:
        return _hash_error(ctx, call)
    key = ctx.param(call.arg(1))
    if key is None:
        return _hash_error(ctx, call)
    try:
        return operation(_contents(ctx, call, 0, this) or "", key)
    except (ValueError, UnicodeDecodeError):
        return _hash_error(ctx, call)


def CLOCK() -> dt.datetime:
    return dt.datetime.now()


Function = Callable[[Context, Call, int], str]

FUNCTIONS: dict[str, Function] = {
    "contents": fn_contents,
    "value": fn_value,
    "truncate": fn_truncate,
    "date": fn_date,
    "time": fn_time,
    "dateinterval": fn_dateinterval,
    "decrypt": fn_decrypt,
    "encrypt": fn_encrypt,
    "hash": fn_hash,
    "hashname": fn_hashname,
    "hashptid": fn_hashptid,
    "hashuid": fn_hashuid,
    "if": fn_if,
    "select": fn_select,
    "append": fn_append,
    "always": fn_always,
    "hashdate": fn_hashdate,
    "incrementdate": fn_incrementdate,
    "lowercase": fn_case(lower),
    "uppercase": fn_case(upper),
    "modifydate": fn_modifydate,
    "initials": fn_initials,
    "lookup": fn_lookup,
    "integer": fn_integer,
    "param": fn_param,
    "quarantine": fn_quarantine,
    "require": fn_require,
    "round": fn_round,
    "skip": fn_skip,
    "process": fn_process,
    "call": fn_call,
    "pathelement": fn_pathelement,
}

ACTIONS = ("keep", "remove", "empty", "blank")
"""What a rule's whole script may be instead of a value; the engine acts on them."""
NAMES = frozenset(FUNCTIONS) | frozenset(ACTIONS)
"""Every function name DAT knows: anything else in a script is written as literal text."""
