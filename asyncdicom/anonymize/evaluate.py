"""Evaluating a rule's script to a string (spec §6): literal text and ``@function()`` calls, each
call dispatched to :data:`asyncdicom.anonymize.functions.FUNCTIONS`."""

from __future__ import annotations

import functools

from asyncdicom.anonymize.calls import Call, NoParenthesis, parse_call
from asyncdicom.anonymize.context import Context, Quarantine
from asyncdicom.anonymize.functions import FUNCTIONS


def evaluate(ctx: Context, script: str, this: int) -> str:
    """The string a script evaluates to for element ``this``. Raises Quarantine or Skip."""
    out: list[str] = []
    for part in _parts(script):
        if isinstance(part, str):
            out.append(part)
        elif part is None:
            msg = "a script has an @ with no function call after it"
            raise Quarantine(msg)
        else:
            out.append(_dispatch(ctx, part, this))
    return "".join(out)


@functools.lru_cache(maxsize=8192)
def _parts(script: str) -> tuple[str | Call | None, ...]:
    """``script`` split once into literal text and calls, in order (a script is the same text
    in every file); None stands where DAT throws: an ``@`` with no call after it."""
    parts: list[str | Call | None] = []
    text: list[str] = []
    i, escape = 0, False
    while i < len(script):
        char = script[i]
        i += 1
        if escape:
            text.append(char)
            escape = False
        elif char == "\\":
            escape = True
        elif char == "@":
            try:
                call = parse_call(script[i:])
            except NoParenthesis:
                call = None
            if call is not None and call.length == -1:
                break
            if text:
                parts.append("".join(text))
                text = []
            parts.append(call)
            if call is None:
                break
            i += call.length
        else:
            text.append(char)
    if text:
        parts.append("".join(text))
    return tuple(parts)


def _dispatch(ctx: Context, call: Call, this: int) -> str:
    function = FUNCTIONS.get(call.name)
    if function is None:
        return "@" + call.text()
    return function(ctx, call, this)
