"""Load and validate the YAML configuration (the pydicom-batch format, extended).

Everything is checked up front, before any network traffic: every problem is a
:class:`~asyncdicom.errors.ConfigError` naming the dotted key path. Relative paths resolve
against the folder of the config file. The result is a tree of frozen dataclasses.
"""

from __future__ import annotations

import difflib
import hashlib
import ipaddress
import json
import re
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

import yaml

from asyncdicom.elements import ElementError, ElementSpec, parse_element, parse_path
from asyncdicom.errors import ConfigError
from asyncdicom.net.storage import COMMON_IMAGES, MAX_CONTEXTS, OTHER_CLASSES, QUERY_CONTEXTS
from asyncdicom.write.paths import collision_warning

RequestType = Literal["c-find", "c-move", "c-get", "c-echo"]
Model = Literal["patient", "study", "psonly"]
Mode = Literal["faithful", "safe"]

DEFAULT_THREADS = 4
KNOWN_STORAGE_CLASSES = frozenset(COMMON_IMAGES + OTHER_CLASSES)
MAX_EXTRA_CLASSES = MAX_CONTEXTS - QUERY_CONTEXTS - len(KNOWN_STORAGE_CLASSES)
DEFAULT_LOCAL_AET = "ASYNCDICOM"
DEFAULT_LOCAL_PORT = 11112


@dataclass(frozen=True, kw_only=True)
class PacsConfig:
    """The PACS to query: ``pacs`` section."""

    hostname: str
    port: int
    aet: str


@dataclass(frozen=True, kw_only=True)
class LocalConfig:
    """Our own application entity: ``local`` section."""

    port: int = DEFAULT_LOCAL_PORT
    aet: str = DEFAULT_LOCAL_AET
    allowed_aets: tuple[str, ...] = ()  # calling AE titles our storage SCP accepts; empty = pacs.aet
    bind_address: str = ""  # the address our storage SCP listens on; empty = every interface


@dataclass(frozen=True, kw_only=True)
class RequestConfig:
    """What to ask for, and how hard: ``request`` section."""

    type: RequestType
    model: Model = "study"
    threads: int = DEFAULT_THREADS
    throttle_time: float = 0.0
    max_rate: float = 0.0
    elements_batch_file: Path | None = None
    elements: tuple[ElementSpec, ...] = ()
    timeout: float = 30.0
    connect_timeout: float = 10.0
    unreachable_timeout: float = 60.0  # give up once the PACS has been unreachable this long
    retries: int = 3
    sop_classes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """When requests may be sent: ``schedule`` section."""

    enabled: bool = False
    start_time: time | None = None
    end_time: time | None = None
    timezone: str | None = None


@dataclass(frozen=True, kw_only=True)
class AnonymizationConfig:
    """CTP DicomAnonymizer settings: ``anonymization`` section."""

    enabled: bool = False
    script: Path | None = None
    lookup_table: Path | None = None
    mode: Mode = "faithful"
    quarantine_directory: Path | None = None


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    """Where results go: ``output`` section."""

    directory: Path | None = None
    library_file: Path | None = None
    directory_structure: tuple[str, ...] = ()
    filename: str = "SOPInstanceUID"
    decompress: bool = False
    ledger_file: Path


@dataclass(frozen=True, kw_only=True)
class Config:
    """A validated configuration."""

    source: Path
    pacs: PacsConfig
    local: LocalConfig
    request: RequestConfig
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    anonymization: AnonymizationConfig = field(default_factory=AnonymizationConfig)
    output: OutputConfig
    warnings: tuple[str, ...] = ()

    def query_fingerprint(self) -> str:
        """Hash of every setting that changes what a request asks the PACS for.

        Requests are keyed by it together with their own elements, so a changed PACS, request
        type, model or element list makes earlier results not count for the new plan.
        """
        material = {
            "pacs": [self.pacs.hostname, self.pacs.port, self.pacs.aet],
            "type": self.request.type,
            "model": self.request.model,
        }
        return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()[:16]


# --- validation helpers ---------------------------------------------------------------------

_T = TypeVar("_T")

_SECTIONS: dict[str, tuple[str, ...]] = {
    "pacs": ("hostname", "port", "aet"),
    "local": ("port", "aet", "allowed_aets", "bind_address"),
    "request": (
        "type",
        "model",
        "threads",
        "concurrency",
        "throttle_time",
        "max_rate",
        "elements_batch_file",
        "elements",
        "timeout",
        "connect_timeout",
        "unreachable_timeout",
        "retries",
        "sop_classes",
    ),
    "schedule": ("enabled", "start_time", "end_time", "timezone"),
    "anonymization": ("enabled", "script", "lookup_table", "mode", "quarantine_directory"),
    "output": (
        "directory",
        "library_file",
        "database_file",
        "directory_structure",
        "filename",
        "decompress",
        "ledger_file",
    ),
}

# Keys found in pydicom-batch's own sample files that its code never read.
_LEGACY_KEYS = {
    "output.anonymization_script": "anonymization.script",
    "output.anonymization_lookup_table": "anonymization.lookup_table",
}

_AE_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


def _suggest(name: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(choices)}"


def _typename(value: object) -> str:
    if value is None:
        return "nothing"
    return {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
    }.get(type(value), type(value).__name__)


class _Section:
    """Typed access to one mapping of the YAML document, recording which keys were used."""

    def __init__(self, raw: object, path: str) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(path, f"expected a mapping of keys, got {_typename(raw)}")
        self.raw: dict[str, Any] = raw
        self.path = path

    def where(self, key: str) -> str:
        return f"{self.path}.{key}"

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def get(self, key: str, check: Callable[[object, str], _T], default: _T) -> _T:
        if self.raw.get(key) is None:
            return default
        return check(self.raw[key], self.where(key))

    def require(self, key: str, check: Callable[[object, str], _T]) -> _T:
        if self.raw.get(key) is None:
            raise ConfigError(self.where(key), "required key is missing")
        return check(self.raw[key], self.where(key))


def _as_str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, f"expected a non-empty string, got {_typename(value)}")
    return value.strip()


def _as_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {_typename(value)}")
    return value


def _as_port(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"expected a port number, got {_typename(value)}")
    if not 1 <= value <= 65535:
        raise ConfigError(where, f"port {value} is out of range; use 1 to 65535")
    return value


def _as_ae(value: object, where: str) -> str:
    if not isinstance(value, str):
        hint = " (quote it in the YAML file)" if isinstance(value, int | float) else ""
        raise ConfigError(where, f"expected an AE title string, got {_typename(value)}{hint}")
    title = value.strip()
    if not title:
        raise ConfigError(where, "an AE title cannot be empty")
    if len(title) > 16:
        raise ConfigError(where, f"AE title '{title}' has {len(title)} characters; at most 16 are allowed")
    if _AE_FORBIDDEN.search(title):
        raise ConfigError(where, "an AE title cannot contain backslashes or control characters")
    return title


def _ip_address(value: object, where: str) -> str:
    text = _as_str(value, where).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(
            where, f"{text!r} is not an IP address; give this machine's address on the PACS's network, e.g. 10.1.2.3"
        ) from None


def _ae_list(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(where, f"expected a list of AE titles, got {_typename(value)}")
    return tuple(_as_ae(item, f"{where}[{index}]") for index, item in enumerate(value))


def _uid_list(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(where, f"expected a list of SOP Class UIDs, got {_typename(value)}")
    uids = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", item.strip()) or len(item) > 64:
            raise ConfigError(f"{where}[{index}]", "expected a UID such as 1.2.840.10008.5.1.4.1.1.2")
        uids.append(item.strip())
    return tuple(uids)


def _positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"expected a whole number, got {_typename(value)}")
    if value < 1:
        raise ConfigError(where, f"must be at least 1, got {value}")
    return value


def _non_negative_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(where, f"expected a whole number of 0 or more, got {_typename(value)}")
    return value


def _non_negative_float(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, f"expected a number of seconds, got {_typename(value)}")
    if value < 0:
        raise ConfigError(where, f"must be 0 or more, got {value}")
    return float(value)


def _positive_float(value: object, where: str) -> float:
    result = _non_negative_float(value, where)
    if result == 0:
        raise ConfigError(where, "must be more than 0")
    return result


def _choice(*choices: str) -> Callable[[object, str], str]:
    def check(value: object, where: str) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            shown = value if isinstance(value, str) else _typename(value)
            raise ConfigError(where, f"'{shown}' is not one of {', '.join(choices)}")
        return value.strip().lower()

    return check


def _as_time(value: object, where: str) -> time:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 17:13 as the base-60 integer 1033.
        raise ConfigError(where, "write the time in quotes, as '17:13', so YAML keeps it as text")
    if not isinstance(value, str) or not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d", value.strip()):
        raise ConfigError(where, f"expected a 24-hour time 'HH:MM', got {_typename(value)}")
    hours, minutes = value.strip().split(":")
    return time(int(hours), int(minutes))


def _as_timezone(value: object, where: str) -> str:
    name = _as_str(value, where)
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(where, f"unknown time zone '{name}'; use an IANA name such as America/New_York") from None
    return name


class _Paths:
    """Resolve paths relative to the config file's folder."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def path(self, value: object, where: str) -> Path:
        text = _as_str(value, where)
        path = Path(text).expanduser()
        return path if path.is_absolute() else (self.base / path).resolve()

    def existing_file(self, value: object, where: str) -> Path:
        path = self.path(value, where)
        if not path.is_file():
            raise ConfigError(
                where, f"file {path} does not exist; fix the path (relative paths start at the config file's folder)"
            )
        return path


def _keyword(value: object, where: str) -> str:
    text = _as_str(value, where)
    try:
        path = parse_path(text)
    except ElementError as exc:
        raise ConfigError(where, str(exc)) from None
    if len(path) != 1 or path[0].vr == "SQ":
        raise ConfigError(where, f"'{text}' must be a single non-sequence keyword")
    return path[0].keyword


def _elements(value: object, where: str) -> tuple[ElementSpec, ...]:
    if not isinstance(value, list):
        raise ConfigError(where, f"expected a list of elements, got {_typename(value)}")
    specs: list[ElementSpec] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        item_where = f"{where}[{index}]"
        if not isinstance(item, str):
            raise ConfigError(item_where, f"expected 'Keyword' or 'Keyword=value', got {_typename(item)} (quote it)")
        try:
            spec = parse_element(item)
        except ElementError as exc:
            raise ConfigError(item_where, str(exc)) from None
        if spec.name in seen:
            raise ConfigError(item_where, f"{spec.describe()} is already listed at {where}[{seen[spec.name]}]")
        seen[spec.name] = index
        specs.append(spec)
    return tuple(specs)


def _structure(value: object, where: str) -> tuple[str, ...]:
    text = _as_str(value, where)
    return tuple(_keyword(part, where) for part in text.split("/") if part.strip())


# --- loading --------------------------------------------------------------------------------


def load_config(path: str | Path, *, batch_file: Path | None = None) -> Config:
    """Read and validate a YAML config; ``batch_file`` overrides ``request.elements_batch_file``."""
    source = Path(path).expanduser().resolve()
    try:
        text = source.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(str(path), "config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), f"unable to read the config file as {exc}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(where, f"invalid YAML: {problem}") from None
    return parse_config(raw, source=source, batch_file=batch_file)


def parse_config(raw: object, *, source: Path, batch_file: Path | None = None) -> Config:
    """Validate an already-parsed YAML document (see :func:`load_config`)."""
    if not isinstance(raw, dict):
        raise ConfigError(str(source), f"expected a mapping of sections, got {_typename(raw)}")
    warnings: list[str] = []
    for key in raw:
        if key not in _SECTIONS:
            raise ConfigError(str(key), f"unknown section{_suggest(str(key), list(_SECTIONS))}")
    sections = {name: _Section(raw.get(name), name) for name in _SECTIONS}
    for name, section in sections.items():
        for key in section.raw:
            dotted = f"{name}.{key}"
            if dotted in _LEGACY_KEYS:
                warnings.append(
                    f"{dotted}: ignored, as pydicom-batch also ignored it; to use it, move it to {_LEGACY_KEYS[dotted]}"
                )
            elif key not in _SECTIONS[name]:
                raise ConfigError(dotted, f"unknown key{_suggest(str(key), _SECTIONS[name])}")
    paths = _Paths(source.parent)

    pacs_s = sections["pacs"]
    if not raw.get("pacs"):
        raise ConfigError("pacs", "required section is missing; give hostname, port and aet")
    pacs = PacsConfig(
        hostname=pacs_s.require("hostname", _as_str),
        port=pacs_s.require("port", _as_port),
        aet=pacs_s.require("aet", _as_ae),
    )
    local_s = sections["local"]
    local = LocalConfig(
        port=local_s.get("port", _as_port, DEFAULT_LOCAL_PORT),
        aet=local_s.get("aet", _as_ae, DEFAULT_LOCAL_AET),
        allowed_aets=local_s.get("allowed_aets", _ae_list, ()) or (pacs.aet,),
        bind_address=local_s.get("bind_address", _ip_address, ""),
    )
    request = _request(sections["request"], paths, batch_file)
    schedule = _schedule(sections["schedule"])
    anonymization = _anonymization(sections["anonymization"], paths)
    output = _output(sections["output"], paths, request, source)
    if request.type in ("c-move", "c-get"):
        collision = collision_warning(output.directory_structure, output.filename)
        if collision:
            warnings.append(collision)
    return Config(
        source=source,
        pacs=pacs,
        local=local,
        request=request,
        schedule=schedule,
        anonymization=anonymization,
        output=output,
        warnings=tuple(warnings),
    )


def _request(section: _Section, paths: _Paths, batch_file: Path | None) -> RequestConfig:
    if not section.raw:
        raise ConfigError("request", "required section is missing; give at least its type")
    kind = cast(RequestType, section.require("type", _choice("c-find", "c-move", "c-get", "c-echo")))
    threads = section.get("threads", _positive_int, 0)
    concurrency = section.get("concurrency", _positive_int, 0)
    if threads and concurrency and threads != concurrency:
        raise ConfigError(
            "request.concurrency", f"is {concurrency} but request.threads is {threads}; give only one of them"
        )
    if batch_file is not None:
        if not batch_file.is_file():
            raise ConfigError("--csv", f"file {batch_file} does not exist")
        batch: Path | None = batch_file.resolve()
    else:
        batch = section.get("elements_batch_file", paths.existing_file, None)
    no_elements: tuple[ElementSpec, ...] = ()
    elements = section.get("elements", _elements, no_elements)
    if kind != "c-echo" and not elements and batch is None:
        raise ConfigError("request.elements", "required for a query or retrieve: list the elements to send")
    no_classes: tuple[str, ...] = ()
    sop_classes = section.get("sop_classes", _uid_list, no_classes)
    if len(set(sop_classes) - KNOWN_STORAGE_CLASSES) > MAX_EXTRA_CLASSES:
        raise ConfigError(
            "request.sop_classes",
            f"adds more than {MAX_EXTRA_CLASSES} SOP classes, which would not fit in one association's "
            "128 presentation contexts; list only the classes your studies contain",
        )
    return RequestConfig(
        type=kind,
        model=cast(Model, section.get("model", _choice("patient", "study", "psonly"), "study")),
        threads=threads or concurrency or DEFAULT_THREADS,
        throttle_time=section.get("throttle_time", _non_negative_float, 0.0),
        max_rate=section.get("max_rate", _non_negative_float, 0.0),
        elements_batch_file=batch,
        elements=elements,
        timeout=section.get("timeout", _positive_float, 30.0),
        connect_timeout=section.get("connect_timeout", _positive_float, 10.0),
        unreachable_timeout=section.get("unreachable_timeout", _non_negative_float, 60.0),
        retries=section.get("retries", _non_negative_int, 3),
        sop_classes=sop_classes,
    )


def _schedule(section: _Section) -> ScheduleConfig:
    enabled = section.get("enabled", _as_bool, False)
    start = section.get("start_time", _as_time, None)
    end = section.get("end_time", _as_time, None)
    timezone = section.get("timezone", _as_timezone, None)
    if enabled:
        for key, value in (("start_time", start), ("end_time", end)):
            if value is None:
                raise ConfigError(f"schedule.{key}", "required when schedule.enabled is true ('HH:MM')")
        if start == end:
            raise ConfigError("schedule.end_time", "equals schedule.start_time, so the window would be empty")
    return ScheduleConfig(enabled=enabled, start_time=start, end_time=end, timezone=timezone)


def _anonymization(section: _Section, paths: _Paths) -> AnonymizationConfig:
    enabled = section.get("enabled", _as_bool, False)
    check_file = paths.existing_file if enabled else paths.path
    script = section.get("script", check_file, None)
    if enabled and script is None:
        raise ConfigError("anonymization.script", "required when anonymization.enabled is true")
    lookup_table = section.get("lookup_table", check_file, None)
    if enabled:
        _check_anonymizer(script, lookup_table)
    return AnonymizationConfig(
        enabled=enabled,
        script=script,
        lookup_table=lookup_table,
        mode=cast(Mode, section.get("mode", _choice("faithful", "safe"), "faithful")),
        quarantine_directory=section.get("quarantine_directory", paths.path, None),
    )


def _check_anonymizer(script: Path | None, lookup_table: Path | None) -> None:
    """Load the script and lookup table once at start-up: an error there is a config error."""
    from asyncdicom.anonymize.lookup import LookupTable, LookupTableError
    from asyncdicom.anonymize.script import ScriptError, load

    try:
        if script is not None:
            load(script)
    except ScriptError as exc:
        raise ConfigError("anonymization.script", str(exc)) from None
    try:
        if lookup_table is not None:
            LookupTable.load(lookup_table)
    except LookupTableError as exc:
        raise ConfigError("anonymization.lookup_table", str(exc)) from None


def _output(section: _Section, paths: _Paths, request: RequestConfig, source: Path) -> OutputConfig:
    directory = section.get("directory", paths.path, None)
    library = section.get("library_file", paths.path, None)
    database = section.get("database_file", paths.path, None)
    if library and database and library != database:
        raise ConfigError("output.database_file", "names another file than output.library_file; give only one of them")
    library = library or database
    if request.type == "c-find" and library is None:
        if directory is None:
            raise ConfigError("output.library_file", "required for c-find (or give output.directory)")
        library = directory / "library.csv"
    if request.type in {"c-move", "c-get"} and directory is None:
        raise ConfigError("output.directory", f"required for {request.type}: where to store the images")
    state_dir = directory or (library.parent if library else source.parent)
    ledger = section.get("ledger_file", paths.path, state_dir / ".asyncdicom" / f"{source.stem}.sqlite3")
    return OutputConfig(
        directory=directory,
        library_file=library,
        directory_structure=section.get("directory_structure", _structure, ()),
        filename=section.get("filename", _keyword, "SOPInstanceUID"),
        decompress=section.get("decompress", _as_bool, False),
        ledger_file=ledger,
    )


def describe(config: Config) -> Mapping[str, object]:
    """A JSON-ready summary of the effective configuration (no secrets are held in it)."""
    return {
        "pacs": f"{config.pacs.aet}@{config.pacs.hostname}:{config.pacs.port}",
        "local_aet": config.local.aet,
        "type": config.request.type,
        "model": config.request.model,
        "threads": config.request.threads,
        "library_file": str(config.output.library_file) if config.output.library_file else None,
        "ledger_file": str(config.output.ledger_file),
    }
