"""Per-file state of an anonymization: the IN and OUT datasets (and items being processed),
the rule table resolved against this file, parameters, lookup table, and element lookup."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset

from asyncdicom.anonymize import dictionary, values
from asyncdicom.anonymize.charset import JVM, Charset
from asyncdicom.anonymize.java import trim
from asyncdicom.anonymize.lookup import LookupTable
from asyncdicom.anonymize.script import Script

_CREATORS = Charset("ISO-8859-1")  # private creator strings are compared as Latin-1
_PRIVATE = re.compile(r"([0-9a-fA-F]{1,4}),?\[([^\]]*)\],?([0-9a-fA-F]{1,2})?")


class Quarantine(Exception):
    """The file must not be written: the reason says why (no patient data in it)."""


class Skip(Exception):
    """``@skip()``: the file is deliberately not written."""


def _no_processing(ctx: Context, tag: int) -> None:
    msg = "@process() needs the engine"
    raise Quarantine(msg)


def _no_evaluation(ctx: Context, script: str, tag: int) -> str:
    msg = "a sub-script needs the interpreter"
    raise Quarantine(msg)


@dataclass(slots=True)
class Context:
    script: Script
    lookup: LookupTable
    root_in: Dataset
    root_out: Dataset
    meta: Dataset
    chars: Charset  # the root data sets' (CTP has set ISO_IR 100 when dcm4che knew none)
    implicit: bool
    little: bool
    mode: str = "faithful"
    params: dict[str, str] = field(default_factory=dict)
    table: dict[int, str] = field(default_factory=dict)
    private_names: dict[str, int] = field(default_factory=dict)
    fixed: bool = False  # the table is the script's fixed table (no rule depended on the file)
    stack: list[tuple[Dataset, Dataset]] = field(default_factory=list)
    charsets: list[tuple[Charset, Charset]] = field(default_factory=list)  # (IN, OUT) per frame
    process_items: Callable[[Context, int], None] = _no_processing
    """``@process()``'s phase 2 on each item of a sequence: set by the engine, which the functions
    (below it) cannot import."""
    evaluate: Callable[[Context, str, int], str] = _no_evaluation
    """The interpreter, for functions that evaluate a sub-script: set by the engine."""

    def __post_init__(self) -> None:
        self.stack = [(self.root_in, self.root_out)]
        self.charsets = [(self.chars, self.chars)]
        fixed = self.script.fixed_table() if not self.table and not self.private_names else None
        if fixed is not None:  # no rule depends on the file: the script's own table, copied
            self.table, self.private_names, self.fixed = dict(fixed[0]), dict(fixed[1]), True
            return
        table, names = self.table, self.private_names
        for tag, rule, label in self.script.resolved():
            if not tag:
                tag = self.tag_of(rule.spec, self.root_in)
                if not tag:
                    continue
            table[tag] = rule.script
            if tag >> 16 & 1 and label:
                names[label] = tag

    @property
    def current_in(self) -> Dataset:
        return self.stack[-1][0]

    @property
    def current_out(self) -> Dataset:
        return self.stack[-1][1]

    @property
    def at_root(self) -> bool:
        return len(self.stack) == 1

    @property
    def out_chars(self) -> Charset:
        """What values written into the current OUT data set are encoded with."""
        return self.charsets[-1][1]

    def enter(self, item_in: Dataset, item_out: Dataset) -> None:
        """Process an item pair next: an item without a charset dcm4che knows inherits one."""
        parent_in, parent_out = self.charsets[-1]
        self.stack.append((item_in, item_out))
        self.charsets.append((values.charset_of(item_in) or parent_in, values.charset_of(item_out) or parent_out))

    def leave(self) -> None:
        self.stack.pop()
        self.charsets.pop()

    def out_charset_changed(self) -> None:
        """(0008,0005) was written or removed in the current OUT data set: dcm4che encodes later
        values with the new charset, or the parent's (the JVM default at the root) without one."""
        inherited = self.charsets[-2][1] if len(self.charsets) > 1 else JVM
        self.charsets[-1] = (self.charsets[-1][0], values.charset_of(self.current_out) or inherited)

    def param(self, text: str | None) -> str | None:
        """A parameter position: ``@NAME``/``$NAME`` is the parameter's value (None if undefined)."""
        if text is not None and text[:1] in ("@", "$"):
            return self.params.get(text[1:])
        return text

    # --- element names --------------------------------------------------------------------------

    def tag_of(self, name: str, ds: Dataset) -> int:
        """CTP's getElementTag: standard names and hex, registered private names, then the
        ``gggg[Creator]ee`` block form resolved in ``ds``; 0 when nothing matches."""
        name = trim(name)
        if len(name) >= 2 and (name[0], name[-1]) in (("[", "]"), ("(", ")")):
            name = trim(name[1:-1])
        tag = dictionary.standard_tag(name)
        if tag:
            return tag
        tag = self.private_names.get(name.lower(), 0)
        if tag:
            return tag
        return self._private_block(name, ds)

    @staticmethod
    def _private_block(name: str, ds: Dataset) -> int:
        if len(name) >= 2 and (name[0], name[-1]) in (("[", "]"), ("(", ")")):
            name = trim(name[1:-1])
        match = _PRIVATE.fullmatch(name)
        if not match:
            return 0
        group = int(match.group(1), 16)
        if not group & 1:
            return 0
        block = trim(match.group(2))
        element = int(match.group(3), 16) if match.group(3) else 0
        for index in range(1, 256):
            if values.contents(ds, (group << 16) | index, _CREATORS) == block:
                return (group << 16) | (index << 8) | element
        return 0

    def resolve(self, name: str, this: int) -> tuple[Dataset, int, Charset] | None:
        """The dataset and tag an element reference (``this``, names, ``root:``, ``A::B``) reads,
        and the charset that data set is read with."""
        name = trim(name)
        ds, chars = self.current_in, self.charsets[-1][0]
        if name.startswith("root:"):
            ds, chars, name = self.root_in, self.chars, name[len("root:") :]
        parts = name.split("::")
        for part in parts[:-1]:
            tag = this if trim(part) == "this" else self.tag_of(part, ds)
            elem = values.element(ds, tag) if tag else None
            if elem is None:
                return None
            sequence = ds[tag].value
            if values.vr_of(ds[tag], ds) != "SQ" or not sequence:
                return None
            ds = sequence[0]
            chars = values.charset_of(ds) or chars
        last = trim(parts[-1])
        tag = this if last == "this" else self.tag_of(last, ds)
        return (ds, tag, chars) if tag else None

    def contents(self, name: str, this: int) -> str | None:
        """The value string of the element ``name`` refers to (None when it is missing)."""
        found = self.resolve(name, this)
        if found is None:
            return None
        ds, tag, chars = found
        if tag >> 16 < 0x0008:
            return values.contents(self.meta, tag, chars, True)
        return values.contents(ds, tag, chars, self.little)

    def has(self, tag: int) -> bool:
        """Whether ``tag`` is present in the current IN dataset."""
        if tag >> 16 < 0x0008:
            return values.has(self.meta, tag)
        return values.has(self.current_in, tag)
