"""The expression syntax of CTP scripts: ``@name(args){clause}{clause}`` calls (§6.2)."""

from __future__ import annotations

from dataclasses import dataclass

from asyncdicom.anonymize.java import trim

CLAUSES = {"if": 2, "select": 2, "append": 1}


class NoParenthesis(Exception):
    """An ``@`` with no ``(`` after it (DAT 2021 throws: the file is quarantined)."""


@dataclass(slots=True)
class Call:
    """One parsed call; ``length`` counts the characters after ``@`` it used (-1: malformed)."""

    name: str
    args: list[str]
    clauses: list[str]
    length: int

    def arg(self, index: int) -> str:
        """Argument ``index`` trimmed and without one pair of surrounding quotes ("" if absent)."""
        if index >= len(self.args):
            return ""
        text = trim(self.args[index])
        if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
            return text[1:-1]
        return text

    def text(self) -> str:
        """How an unknown function is written back: ``name(arg,arg)``."""
        return f"{self.name}({','.join(self.args)})"


def _arg(text: str, index: int) -> tuple[str | None, int]:
    """One argument starting at ``index``; (None, index) at ``)`` or the end."""
    while index < len(text) and text[index].isspace():
        index += 1
    if index >= len(text) or text[index] == ")":
        return None, index
    escape = quote = False
    brackets = parens = 0
    out: list[str] = []
    char = ""
    while index < len(text):
        char = text[index]
        if not escape and not quote and not brackets and not parens and char in ",)":
            break
        if not escape and char == "\\":
            escape = True
        else:
            out.append(char)
            if char == '"':
                quote = not quote
            if not quote:
                if char == "[":
                    brackets += 1
                elif brackets and char == "]":
                    brackets -= 1
                elif char == "(":
                    parens += 1
                elif parens and char == ")":
                    parens -= 1
            escape = False
        index += 1
    if index >= len(text):
        return None, index
    if char == ",":
        index += 1
    return trim("".join(out)), index


def _clause(text: str, index: int) -> tuple[str | None, int]:
    while index < len(text) and text[index].isspace():
        index += 1
    if index >= len(text) or text[index] != "{":
        return None, index
    index += 1
    depth, out = 1, []
    while index < len(text):
        char = text[index]
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
        if depth == 0:
            break
        out.append(char)
        index += 1
    if index >= len(text):
        return None, index
    return trim("".join(out)), index


def parse_call(text: str) -> Call:
    """Parse the call at the start of ``text`` (the text after an ``@``)."""
    paren = text.find("(")
    if paren < 0:
        raise NoParenthesis
    name = "".join(text[:paren].split())
    args: list[str] = []
    index = paren + 1
    while True:
        arg, index = _arg(text, index)
        if arg is None:
            break
        args.append(arg)
    if index >= len(text):
        return Call(name, args, [], -1)
    index += 1
    clauses: list[str] = []
    for _ in range(CLAUSES.get(name, 0)):
        clause, index = _clause(text, index)
        if clause is None:
            clauses += [""] * (CLAUSES[name] - len(clauses))
            return Call(name, args, clauses, len(text))
        clauses.append(clause)
        index += 1
    return Call(name, args, clauses, index)
