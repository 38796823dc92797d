"""The processing algorithm (§5): insertion for absent rules, then every element of the input
in tag order through the decision table, recursing into sequence items on ``@process()``."""

from __future__ import annotations

from pydicom.datadict import keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from asyncdicom.anonymize import dictionary, values
from asyncdicom.anonymize.context import Context, Quarantine
from asyncdicom.anonymize.evaluate import evaluate
from asyncdicom.anonymize.java import trim

DEIDENTIFICATION_CODES = 0x00120064
SPECIFIC_CHARACTER_SET = 0x00080005
_ALWAYS_KEPT = {0x00080016, 0x00080018, 0x0020000D}
_CODE_MEANINGS = {
    "113100": "Basic Application Confidentiality Profile",
    "113101": "Clean Pixel Data Option",
    "113102": "Clean Recognizable Visual Features Option",
    "113103": "Clean Graphics Option",
    "113104": "Clean Structured Content Option",
    "113105": "Clean Descriptors Option",
    "113106": "Retain Longitudinal Temporal Information Full Dates Option",
    "113107": "Retain Longitudinal Temporal Information Modified Dates Option",
    "113108": "Retain Patient Characteristics Option",
    "113109": "Retain Device Identity Option",
    "113110": "Retain UIDs",
    "113111": "Retain Safe Private Option",
    "113112": "Retain Institution Identity Option",
}


def anonymize(ctx: Context) -> None:
    """Run both phases on the root datasets. Raises Quarantine or Skip."""
    ctx.process_items = process_items
    ctx.evaluate = evaluate
    insert(ctx)
    process(ctx)


# --- writing --------------------------------------------------------------------------------------


def store(ctx: Context, tag: int, vr: str, value: str) -> bool:
    """Store ``value`` in the current OUT dataset as dcm4che would; False (original kept) when
    it refuses the value."""
    out = ctx.current_out
    if tag >> 16 & 1:
        return _store_private(ctx, tag, value)
    if value == "":
        if vr == "SQ":
            if tag not in out:
                out[tag] = _empty_sequence(tag)
            return True
        values.put(out, tag, vr, b"", ctx.implicit, ctx.little)
        if tag == SPECIFIC_CHARACTER_SET:
            ctx.out_charset_changed()
        return True
    try:
        data = values.encode(value, vr, ctx.out_chars, ctx.little)
    except values.WriteError:
        return False
    values.put(out, tag, vr, data, ctx.implicit, ctx.little)
    if tag == SPECIFIC_CHARACTER_SET:
        ctx.out_charset_changed()
    return True


def _store_private(ctx: Context, tag: int, value: str) -> bool:
    out = ctx.current_out
    if tag & 0xFFFF < 0x100:
        return _put_text(ctx, tag, "LO", value)
    creator = values.creator_of(out, tag) or values.creator_of(ctx.current_in, tag)
    if creator:
        entry = dictionary.private_entry(tag, creator)
        if entry and entry[0]:
            try:
                if entry[0] in ("US", "SS", "UL", "SL", "FL", "FD", "AT") and "\\" in value:
                    msg = "dcm4che reads the whole text as one number"
                    raise values.WriteError(msg)
                if entry[0] in ("OB", "OF", "OW", "OD", "OL", "OV", "UN", "SQ"):
                    msg = "dcm4che puts no text, not even an empty one, as this VR"
                    raise values.WriteError(msg)
                data = values.encode(value, entry[0], ctx.out_chars, ctx.little, single=True)
                values.put(out, tag, entry[0], data, ctx.implicit, ctx.little)
                return True
            except values.WriteError:
                pass
    return _put_text(ctx, tag, "LO" if len(value) <= 64 else "LT", value)


def _put_text(ctx: Context, tag: int, vr: str, value: str) -> bool:
    try:
        data = values.encode(value, vr, ctx.out_chars, ctx.little, single=True) if value else b""
    except values.WriteError:
        return False
    values.put(ctx.current_out, tag, vr, data, ctx.implicit, ctx.little)
    return True


def _empty_sequence(tag: int) -> DataElement:
    return DataElement(tag, "SQ", Sequence())


# --- phase 1 --------------------------------------------------------------------------------------


def insert(ctx: Context) -> None:
    for tag, rule in ctx.script.sorted_rules() if ctx.fixed else sorted(ctx.table.items()):
        if not (rule.startswith("@always()") or tag == DEIDENTIFICATION_CODES) or values.has(ctx.root_out, tag):
            continue  # (rules are stored trimmed) only @always() rules and the code sequence insert anything
        script = trim(rule)
        vr = dictionary.dictionary_vr(tag) or "SH"
        if script.startswith("@always()") and vr != "SQ":
            value = evaluate(ctx, script, tag)
            if value in ("@keep()", "@remove()"):
                continue
            if value.startswith("@blank(") or value == "@empty()":
                value = ""
            store(ctx, tag, vr, value)
        elif script.startswith("@always()@require()") and vr == "SQ":
            ctx.root_out[tag] = _empty_sequence(tag)
        elif tag == DEIDENTIFICATION_CODES:
            _deidentification_codes(ctx, script, tag)


# --- phase 2 --------------------------------------------------------------------------------------


def process(ctx: Context) -> None:
    """Phase 2 on the current (IN, OUT) pair."""
    script = ctx.script
    source = ctx.current_in
    for tag in sorted(int(t) for t in source.keys()):  # noqa: SIM118 - iterating converts elements
        if tag >= 0x7FE00010 and ctx.at_root:
            break
        group = tag >> 16
        private = bool(group & 1)
        overlay = (group & 0xFF00) == 0x6000
        curve = (group & 0xFF00) == 0x5000
        creator_element = private and (tag & 0xFF00) == 0
        rule = ctx.table.get(tag)
        keep = (
            group in script.keep_groups
            or (creator_element and script.keep_safe_private)
            or (
                private
                and not creator_element
                and script.keep_safe_private
                and dictionary.is_safe(tag, values.creator_of(ctx.current_in, tag))
            )
            or tag in _ALWAYS_KEPT
            or group in (0x0002, 0x0028, 0x7FE0)
            or (overlay and not script.rol and not (private and script.rpg))
            or (curve and not script.rc and not (private and script.rpg))
        )
        if (
            (script.rpg and private and rule is None and not keep)
            or (script.rue and rule is None and not keep)
            or (script.rol and overlay)
            or (ctx.mode == "safe" and script.rc and curve)  # DAT's remove.curves does nothing on its own
        ):
            _remove(ctx, tag)
        elif rule is not None:
            if tag == DEIDENTIFICATION_CODES:
                _deidentification_codes(ctx, rule, tag)
            else:
                _apply(ctx, tag, trim(evaluate(ctx, rule, tag)))


def _remove(ctx: Context, tag: int) -> None:
    if values.has(ctx.current_out, tag):
        del ctx.current_out[tag]
        if tag == SPECIFIC_CHARACTER_SET:
            ctx.out_charset_changed()


def _apply(ctx: Context, tag: int, value: str) -> None:
    if "@remove()" in value:
        _remove(ctx, tag)
    elif value == "@keep()":
        return
    else:
        elem = values.element(ctx.current_in, tag)
        vr = values.vr_of(elem, ctx.current_in) if elem is not None else (dictionary.dictionary_vr(tag) or "SH")
        if value.startswith("@blank("):
            digits = "".join(
                c for c in value[len("@blank(") : value.find(")") if ")" in value else None] if c.isdigit()
            )
            value = " " * min(int(digits or "0"), 55)
        elif value == "@empty()":
            value = ""
        if not store(ctx, tag, vr, value) and ctx.mode == "safe":
            msg = f"the replacement for {describe(tag)} cannot be written as {vr}, so DAT would keep the original value"
            raise Quarantine(msg)


def describe(tag: int) -> str:
    """``(gggg,eeee) Keyword`` for messages (never a value)."""
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {keyword_for_tag(tag) or 'private'}"


def process_items(ctx: Context, tag: int) -> None:
    """``@process()``: phase 2 on each item pair of sequence ``tag``."""
    source, target = values.element(ctx.current_in, tag), values.element(ctx.current_out, tag)
    if source is None:  # CTP reads the element's VR without a null check and throws
        msg = f"@process() on {describe(tag)}, which the file does not have"
        raise Quarantine(msg)
    if values.vr_of(source, ctx.current_in) != "SQ":
        return
    items_in = ctx.current_in[tag].value
    if target is None:
        if items_in:  # ...and asks the removed OUT sequence for its first item
            msg = f"@process() on {describe(tag)}, which an earlier rule removed"
            raise Quarantine(msg)
        return
    items_out = ctx.current_out[tag].value
    for item_in, item_out in zip(items_in, items_out, strict=False):
        ctx.enter(item_in, item_out)
        try:
            process(ctx)
        finally:
            ctx.leave()


def _deidentification_codes(ctx: Context, rule: str, tag: int) -> None:
    script = trim(rule)
    if script == "" or script == "@keep()":
        return
    if script == "@remove()":
        _remove(ctx, tag)
        return
    value = trim(evaluate(ctx, script, tag))
    out = ctx.current_out
    if tag not in out:
        out[tag] = _empty_sequence(tag)
    for code in value.split("/"):
        code = trim(code)
        if code.lower() == "reset":
            out[tag] = _empty_sequence(tag)
            continue
        item = Dataset()
        meaning = _CODE_MEANINGS.get(code)
        for item_tag, item_vr, text in (
            (0x00080100, "SH", code),
            (0x00080102, "SH", "DCM" if meaning else "UNKNOWN"),
            (0x00080104, "LO", meaning or "UNKNOWN"),
        ):
            values.put(
                item,
                item_tag,
                item_vr,
                values.encode(text, item_vr, ctx.out_chars) if text else b"",
                ctx.implicit,
                ctx.little,
            )
        out[tag].value.append(item)
