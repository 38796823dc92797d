"""Loading DicomAnonymizer scripts (XML or legacy properties) into rules, parameters and flags.

DAT turns a malformed or missing script into "no rules, status OK"; here that is an error with
the file and line (in every mode): a run must not pass identifying data through because of a
typo. Rules that cannot apply (a tag DAT would silently drop) and unknown function names are
reported as warnings with their line, for ``asyncdicom check`` and ``safe`` mode.
"""

from __future__ import annotations

import re
import xml.parsers.expat
from dataclasses import dataclass, field
from pathlib import Path

from asyncdicom.anonymize import properties
from asyncdicom.anonymize.dictionary import standard_tag
from asyncdicom.anonymize.java import properties_order, trim
from asyncdicom.errors import AnonymizerInputError

FLAGS = ("privategroups", "unspecifiedelements", "overlays", "curves")
_XML = re.compile(r"^\s*<", re.MULTILINE)


class ScriptError(AnonymizerInputError):
    """A script that cannot be used: file, line and how to fix it."""


@dataclass(frozen=True, slots=True)
class Rule:
    """An enabled ``<e>`` rule: the text inside ``set.[…]``, its name label and script."""

    spec: str
    name: str
    script: str
    line: int


@dataclass(slots=True)
class Script:
    """A loaded script: the flat table CTP builds, decoded."""

    source: str = ""
    params: dict[str, str] = field(default_factory=dict)
    rules: dict[str, Rule] = field(default_factory=dict)  # by CTP key: later same key wins
    keep_groups: list[int] = field(default_factory=list)
    remove: frozenset[str] = frozenset()
    keep_safe_private: bool = False
    warnings: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)  # every property key CTP makes, in script order
    _resolved: tuple[tuple[int, Rule, str], ...] | None = field(default=None, init=False, repr=False, compare=False)
    _fixed: tuple[dict[int, str], dict[str, int]] | None = field(default=None, init=False, repr=False, compare=False)
    _sorted: list[tuple[int, str]] | None = field(default=None, init=False, repr=False, compare=False)

    def resolved(self) -> tuple[tuple[int, Rule, str], ...]:
        """The rules in the order CTP enumerates its Properties (where two rules name the same
        element, the later one wins), each with its standard tag (0: a private block name,
        resolved per file) and its lower-cased name label; computed once."""
        if self._resolved is None:
            ordered = [self.rules[key] for key in properties_order(self.keys) if key in self.rules]
            ordered += [rule for key, rule in self.rules.items() if key not in self.keys]
            self._resolved = tuple((standard_tag(r.spec), r, trim(r.name).lower()) for r in ordered)
        return self._resolved

    def fixed_table(self) -> tuple[dict[int, str], dict[str, int]] | None:
        """(element → rule script, private name label → element) as every file's context builds
        them from :meth:`resolved`, when no rule needs a data set to find its element (a private
        block name); computed once; None otherwise. Callers copy before changing them."""
        if self._fixed is None:
            resolved = self.resolved()
            if any(not tag for tag, _, _ in resolved):
                return None
            table = {tag: rule.script for tag, rule, _ in resolved}
            names = {label: tag for tag, _, label in resolved if tag >> 16 & 1 and label}
            self._fixed = table, names
        return self._fixed

    def sorted_rules(self) -> list[tuple[int, str]]:
        """:meth:`fixed_table`'s rules in element order (computed once); only for a fixed table."""
        if self._sorted is None:
            fixed = self.fixed_table()
            assert fixed is not None
            self._sorted = sorted(fixed[0].items())
        return self._sorted

    @property
    def rpg(self) -> bool:
        return "privategroups" in self.remove

    @property
    def rue(self) -> bool:
        return "unspecifiedelements" in self.remove

    @property
    def rol(self) -> bool:
        return "overlays" in self.remove

    @property
    def rc(self) -> bool:
        return "curves" in self.remove


def load(path: Path) -> Script:
    """Read and parse ``path``. Raises ScriptError."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        msg = f"Unable to read the anonymizer script {path} as {exc.strerror or exc}; check anonymization.script"
        raise ScriptError(msg) from None
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        msg = f"Unable to read the anonymizer script {path}:{line} as it is not UTF-8 text; save it as UTF-8"
        raise ScriptError(msg) from None
    return parse(text, str(path))


def parse(text: str, source: str = "<script>") -> Script:
    """Parse script text (XML when some line starts with ``<``, else legacy properties)."""
    script = _parse_xml(text, source) if _XML.search(text) else _parse_properties(text, source)
    _check(script)
    return script


def _key(tag_text: str, name: str) -> str:
    return f"set.[{tag_text[:4]},{tag_text[4:]}]{name}"


def _parse_xml(text: str, source: str) -> Script:
    script = Script(source)
    parser = xml.parsers.expat.ParserCreate()
    depth = 0
    current: dict[str, str] | None = None
    kind = ""
    start_line = 0
    chunks: list[str] = []
    keep: list[tuple[str, int]] = []
    removes: set[str] = set()

    def start(name: str, attrs: dict[str, str]) -> None:
        nonlocal depth, current, kind, start_line
        depth += 1
        if depth == 2:
            current, kind, start_line = attrs, name, parser.CurrentLineNumber
            chunks.clear()

    def end(name: str) -> None:
        nonlocal depth, current
        if depth == 2 and current is not None:
            content = "".join(chunks)
            enabled = current.get("en") == "T"
            t = current.get("t", "")
            if kind in ("p", "e", "k", "r"):
                script.keys.append(_property_key(kind, t, current.get("n", ""), enabled))
            if kind == "p":
                script.params[t] = content
            elif kind == "e":
                key = _key(t, current.get("n", ""))
                if enabled:
                    script.rules[key] = Rule(key[5 : _closing(key, 4)], current.get("n", ""), trim(content), start_line)
            elif kind == "k" and enabled:
                if t.startswith("safe"):
                    script.keep_safe_private = True
                else:
                    keep.append((t, start_line))
            elif kind == "r" and enabled and t in FLAGS:
                removes.add(t)
            elif kind == "r" and enabled:
                script.warnings.append(f"{source}:{start_line}: <r t={t!r}> is not a removal flag DAT knows; ignored")
            current = None
        depth -= 1

    def data(content: str) -> None:
        if depth >= 2 and current is not None:
            chunks.append(content)

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = data
    try:
        parser.Parse(text, True)
    except xml.parsers.expat.ExpatError as exc:
        reason = xml.parsers.expat.ErrorString(exc.code)
        msg = f"Unable to read the anonymizer script {source}:{exc.lineno} as its XML is malformed ({reason})"
        raise ScriptError(msg) from None
    script.keep_groups = sorted(_group(t, line, script) for t, line in keep)
    script.remove = frozenset(removes)
    return script


def _property_key(kind: str, t: str, name: str, enabled: bool) -> str:
    """The key DAScript.makeProperties gives an element of the script."""
    sel = "" if enabled else "#"
    if kind == "p":
        return "param." + t
    if kind == "e":
        return sel + _key(t, name)
    if kind == "k":
        return sel + ("keep.safeprivateelements" if t.startswith("safe") else "keep.group" + t)
    return sel + "remove." + t


def _group(text: str, line: int, script: Script) -> int:
    try:
        return int(trim(text), 16)
    except ValueError:
        script.warnings.append(f"{script.source}:{line}: keep group {text!r} is not hexadecimal; ignored")
        return 0


def _closing(key: str, start: int) -> int:
    """Index of the ``]`` matching the ``[`` at ``start`` (-1 if none), as CTP counts."""
    count = 0
    for index in range(start, len(key)):
        if key[index] == "[":
            count += 1
        elif key[index] == "]":
            count -= 1
        if count == 0:
            return index
    return -1


def _parse_properties(text: str, source: str) -> Script:
    script = Script(source)
    try:
        entries = properties.parse(text)
    except properties.PropertiesError as exc:
        msg = f"Unable to read the anonymizer script {source}:{exc.line} as {exc}"
        raise ScriptError(msg) from None
    keep: list[tuple[str, int]] = []
    removes: set[str] = set()
    for entry in entries:
        key = entry.key
        script.keys.append(key)
        if key.startswith("param."):
            script.params[key[len("param.") :]] = entry.value
        elif key.startswith("set.["):
            close = _closing(key, 4)
            name = trim(key[close + 1 :]) if close > 0 else ""
            script.rules[key] = Rule(key[5:close] if close > 0 else "", name, trim(entry.value), entry.line)
        elif key.startswith("keep.group"):
            keep.append((key[len("keep.group") :], entry.line))
        elif key == "keep.safeprivateelements":
            script.keep_safe_private = True
        elif key.startswith("remove.") and key[len("remove.") :] in FLAGS:
            removes.add(key[len("remove.") :])
    script.keep_groups = sorted(_group(t, line, script) for t, line in keep)
    script.remove = frozenset(removes)
    return script


def _check(script: Script) -> None:
    """Warnings for rules DAT would drop (unknown function names: :func:`..lint.warnings`)."""
    private_form = re.compile(r"([0-9a-fA-F]{1,4}),?\[([^\]]*)\],?([0-9a-fA-F]{1,2})?")
    for rule in script.rules.values():
        spec = rule.spec
        bare = spec.strip("[]() ")
        if standard_tag(spec) == 0 and not private_form.fullmatch(bare):
            script.warnings.append(
                f'{script.source}:{rule.line}: the rule for {spec!r} names no element (write t="ggggeeee" '
                'or t="gggg[Creator]ee"); DAT ignores it'
            )
