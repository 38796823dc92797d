"""Checks of single YAML values: each returns the typed value or raises a ConfigError naming
the key path and what to write instead."""

from __future__ import annotations

import difflib
import ipaddress
import re
import shlex
import urllib.parse
import zoneinfo
from collections.abc import Callable
from datetime import time
from pathlib import Path
from typing import Any, TypeVar, cast

from asyncdicom.config.schema import DAY_NAMES, EVERY_DAY, WindowConfig
from asyncdicom.elements import ElementError, ElementSpec, parse_element, parse_path
from asyncdicom.errors import ConfigError

_T = TypeVar("_T")
_AE_FORBIDDEN = re.compile(r"[\\\x00-\x1f\x7f]")


def suggest(name: str, choices: tuple[str, ...] | list[str]) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(choices)}"


def typename(value: object) -> str:
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


_SCHEMA_DEFAULT: Any = object()


class Section:
    """Typed access to one mapping of the YAML document; a key it leaves out takes the default
    that ``schema`` (the section's dataclass) states."""

    def __init__(self, raw: object, path: str, schema: type[Any]) -> None:
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise ConfigError(path, f"expected a mapping of keys, got {typename(raw)}")
        self.raw: dict[str, Any] = raw
        self.path = path
        self.schema = schema

    def where(self, key: str) -> str:
        return f"{self.path}.{key}"

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def get(self, key: str, check: Callable[[object, str], _T], absent: Any = _SCHEMA_DEFAULT) -> _T:
        """The checked value of ``key``; when the YAML leaves it out, ``absent`` if given (a marker
        for a key with no field of its own), else the schema's default."""
        if self.raw.get(key) is None:
            if absent is _SCHEMA_DEFAULT:
                from asyncdicom.config.schema import default

                return cast(_T, default(self.schema, key))
            return cast(_T, absent)
        return check(self.raw[key], self.where(key))

    def require(self, key: str, check: Callable[[object, str], _T]) -> _T:
        if self.raw.get(key) is None:
            raise ConfigError(self.where(key), "required key is missing")
        return check(self.raw[key], self.where(key))


def as_str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(where, f"expected a non-empty string, got {typename(value)}")
    return value.strip()


def as_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(where, f"expected true or false, got {typename(value)}")
    return value


def as_port(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"expected a port number, got {typename(value)}")
    if not 1 <= value <= 65535:
        raise ConfigError(where, f"port {value} is out of range; use 1 to 65535")
    return value


def as_ae(value: object, where: str) -> str:
    if not isinstance(value, str):
        hint = " (quote it in the YAML file)" if isinstance(value, int | float) else ""
        raise ConfigError(where, f"expected an AE title string, got {typename(value)}{hint}")
    title = value.strip()
    if not title:
        raise ConfigError(where, "an AE title cannot be empty")
    if len(title) > 16:
        raise ConfigError(where, f"AE title '{title}' has {len(title)} characters; at most 16 are allowed")
    if _AE_FORBIDDEN.search(title):
        raise ConfigError(where, "an AE title cannot contain backslashes or control characters")
    return title


def ip_address(value: object, where: str) -> str:
    text = as_str(value, where).strip()
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        raise ConfigError(
            where, f"{text!r} is not an IP address; give this machine's address on the PACS's network, e.g. 10.1.2.3"
        ) from None


MAX_HOSTS = 256


def host_list(value: object, where: str) -> tuple[str, ...]:
    """IP addresses or CIDR ranges (``10.1.2.3``, ``10.1.0.0/16``, ``fd00::/8``), normalised."""
    if not isinstance(value, list) or not value:
        raise ConfigError(where, f"expected a list of IP addresses or CIDR ranges, got {typename(value)}")
    if len(value) > MAX_HOSTS:
        raise ConfigError(where, f"lists {len(value)} entries; at most {MAX_HOSTS}: use CIDR ranges")
    hosts = []
    for index, item in enumerate(value):
        text = as_str(item, f"{where}[{index}]").strip()
        try:
            hosts.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise ConfigError(
                f"{where}[{index}]", f"{text[:60]!r} is not an IP address or CIDR range, e.g. 10.1.2.3 or 10.1.0.0/16"
            ) from None
    return tuple(hosts)


def ae_list(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(where, f"expected a list of AE titles, got {typename(value)}")
    return tuple(as_ae(item, f"{where}[{index}]") for index, item in enumerate(value))


def uid_list(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ConfigError(where, f"expected a list of SOP Class UIDs, got {typename(value)}")
    uids = []
    for index, item in enumerate(value):
        if not isinstance(item, str) or not re.fullmatch(r"[0-9]+(\.[0-9]+)*", item.strip()) or len(item) > 64:
            raise ConfigError(f"{where}[{index}]", "expected a UID such as 1.2.840.10008.5.1.4.1.1.2")
        uids.append(item.strip())
    return tuple(uids)


def positive_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"expected a whole number, got {typename(value)}")
    if value < 1:
        raise ConfigError(where, f"must be at least 1, got {value}")
    return value


def non_negative_int(value: object, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(where, f"expected a whole number of 0 or more, got {typename(value)}")
    return value


def non_negative_float(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(where, f"expected a number of seconds, got {typename(value)}")
    if value < 0:
        raise ConfigError(where, f"must be 0 or more, got {value}")
    return float(value)


def positive_float(value: object, where: str) -> float:
    result = non_negative_float(value, where)
    if result == 0:
        raise ConfigError(where, "must be more than 0")
    return result


def choice(*choices: str) -> Callable[[object, str], str]:
    def check(value: object, where: str) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            shown = value if isinstance(value, str) else typename(value)
            raise ConfigError(where, f"'{shown}' is not one of {', '.join(choices)}")
        return value.strip().lower()

    return check


def as_time(value: object, where: str) -> time:
    if isinstance(value, int) and not isinstance(value, bool):
        # YAML 1.1 reads an unquoted 17:13 as the base-60 integer 1033.
        raise ConfigError(where, "write the time in quotes, as '17:13', so YAML keeps it as text")
    if not isinstance(value, str) or not re.fullmatch(r"([01]?\d|2[0-3]):[0-5]\d(:[0-5]\d)?", value.strip()):
        shown = repr(value) if isinstance(value, str) else typename(value)
        raise ConfigError(
            where, f"expected a 24-hour time in the form HH:MM (or HH:MM:SS), such as '19:00' or '06:30', got {shown}"
        )
    hours, minutes, *seconds = value.strip().split(":")
    return time(int(hours), int(minutes), int(seconds[0]) if seconds else 0)


MAX_THREADS = 64  # associations at once: more would hurt a clinical PACS and gain nothing


def thread_count(value: object, where: str) -> int:
    """``request.threads``: 1 to :data:`MAX_THREADS`, or ``auto`` (returned as 0)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"expected a whole number of associations or auto, got {typename(value)}")
    return thread_count_max(value, where)


def thread_count_max(value: object, where: str) -> int:
    """A number of associations: 1 to :data:`MAX_THREADS`."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(where, f"expected a whole number of associations, got {typename(value)}")
    if not 1 <= value <= MAX_THREADS:
        raise ConfigError(where, f"{value} is out of range; use 1 to {MAX_THREADS}")
    return value


MAX_WINDOWS = 64
_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(text: str, where: str) -> int:
    name = text.strip().lower()
    for number, (short, full) in enumerate(zip(DAY_NAMES, _FULL_DAYS, strict=True)):
        if name in (short, full):
            return number
    raise ConfigError(
        where, f"'{text}' is not a day; use mon, tue, wed, thu, fri, sat or sun, or a range such as mon-fri"
    )


def as_days(value: object, where: str) -> tuple[int, ...]:
    """Days as numbers (0 = Monday) from ``[mon, tue]``, ``mon-fri`` or ``[mon-thu, sat]``; a range
    may wrap round the week (``fri-mon``)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise ConfigError(where, f"expected a list of days such as [mon, tue, wed], got {typename(value)}")
    if len(items) > 7 * 4:
        raise ConfigError(where, f"lists {len(items)} items; a week has 7 days")
    days: set[int] = set()
    for index, item in enumerate(items):
        item_where = where if isinstance(value, str) else f"{where}[{index}]"
        if not isinstance(item, str):
            raise ConfigError(item_where, f"expected a day name such as mon, got {typename(item)}")
        if "-" in item:
            first, _, last = item.partition("-")
            start, end = _day(first, item_where), _day(last, item_where)
            days.update((start + step) % 7 for step in range((end - start) % 7 + 1))
        else:
            days.add(_day(item, item_where))
    return tuple(sorted(days))


def as_windows(value: object, where: str) -> tuple[WindowConfig, ...]:
    """``schedule.windows``: a list of ``{days, start_time, end_time}``."""
    if not isinstance(value, list) or not value:
        raise ConfigError(
            where,
            "expected a list of windows such as [{days: [sat, sun], start_time: '00:00', end_time: '00:00'}], "
            f"got {typename(value)}",
        )
    if len(value) > MAX_WINDOWS:
        raise ConfigError(where, f"lists {len(value)} windows; at most {MAX_WINDOWS} are allowed")
    windows = []
    for index, item in enumerate(value):
        item_where = f"{where}[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(
                item_where,
                f"expected a mapping with days, start_time and end_time, got {typename(item)}",
            )
        for key in item:
            if key not in ("days", "start_time", "end_time"):
                raise ConfigError(
                    f"{item_where}.{key}",
                    f"unknown key{suggest(str(key), ['days', 'start_time', 'end_time'])}",
                )
        for key in ("start_time", "end_time"):
            if item.get(key) is None:
                raise ConfigError(f"{item_where}.{key}", "required key is missing ('HH:MM')")
        days = as_days(item["days"], f"{item_where}.days") if item.get("days") is not None else EVERY_DAY
        windows.append(
            WindowConfig(
                days=days,
                start_time=as_time(item["start_time"], f"{item_where}.start_time"),
                end_time=as_time(item["end_time"], f"{item_where}.end_time"),
            )
        )
    return tuple(windows)


def as_timezone(value: object, where: str) -> str:
    name = as_str(value, where)
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(where, f"unknown time zone '{name}'; use an IANA name such as America/New_York") from None
    return name


class Paths:
    """Resolve paths relative to the config file's folder."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def path(self, value: object, where: str) -> Path:
        text = as_str(value, where)
        path = Path(text).expanduser()
        return path if path.is_absolute() else (self.base / path).resolve()

    def existing_file(self, value: object, where: str) -> Path:
        path = self.path(value, where)
        if not path.is_file():
            text = as_str(value, where)
            from_here = Path(text).expanduser().resolve()
            if not Path(text).expanduser().is_absolute() and from_here.is_file():
                raise ConfigError(
                    where,
                    f"file {path} does not exist: relative paths start at the config file's folder "
                    f"({self.base}); it exists as {from_here}, from the current directory, so write that path "
                    "or one relative to the config file",
                )
            raise ConfigError(
                where, f"file {path} does not exist; fix the path (relative paths start at the config file's folder)"
            )
        return path


def keyword(value: object, where: str) -> str:
    text = as_str(value, where)
    try:
        path = parse_path(text)
    except ElementError as exc:
        raise ConfigError(where, str(exc)) from None
    if len(path) != 1 or path[0].vr == "SQ":
        raise ConfigError(where, f"'{text}' must be a single non-sequence keyword")
    return path[0].keyword


def elements(value: object, where: str) -> tuple[ElementSpec, ...]:
    if not isinstance(value, list):
        raise ConfigError(where, f"expected a list of elements, got {typename(value)}")
    specs: list[ElementSpec] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(value):
        item_where = f"{where}[{index}]"
        if not isinstance(item, str):
            raise ConfigError(item_where, f"expected 'Keyword' or 'Keyword=value', got {typename(item)} (quote it)")
        try:
            spec = parse_element(item)
        except ElementError as exc:
            raise ConfigError(item_where, str(exc)) from None
        if spec.name in seen:
            raise ConfigError(item_where, f"{spec.describe()} is already listed at {where}[{seen[spec.name]}]")
        seen[spec.name] = index
        specs.append(spec)
    return tuple(specs)


def structure(value: object, where: str) -> tuple[str, ...]:
    text = as_str(value, where)
    return tuple(keyword(part, where) for part in text.split("/") if part.strip())


# --- loading --------------------------------------------------------------------------------


MAX_URL = 2048
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


def _split_url(text: str, where: str, example: str) -> urllib.parse.SplitResult:
    """``text``'s parts, or a config error (an unclosed [IPv6 address], say)."""
    if len(text) > MAX_URL:
        raise ConfigError(where, f"a URL of {len(text)} characters; at most {MAX_URL} are allowed")
    try:
        return urllib.parse.urlsplit(text)
    except ValueError as exc:
        raise ConfigError(where, f"{text[:200]!r} is not a URL ({exc}); {example}") from None


def web_url(value: object, where: str) -> str:
    """A DICOMweb base URL: http or https, a host, no credentials, query or fragment; no trailing /."""
    text = as_str(value, where)
    example = "write e.g. https://pacs.example.org/dicom-web"
    parts = _split_url(text, where, example)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(where, f"{text!r} is not an http(s) URL; {example}")
    if parts.username or parts.password:
        raise ConfigError(where, "the URL holds a user name or password; remove it and use pacs.auth")
    if parts.query or parts.fragment:
        raise ConfigError(where, "the base URL cannot have a query (?…) or fragment (#…); remove it")
    try:
        parts.port  # noqa: B018 (raises for a port out of range)
    except ValueError:
        raise ConfigError(where, "the URL's port is out of range; use 1 to 65535") from None
    return text.rstrip("/")


_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_DATABASE_SCHEMES = ("postgresql", "postgres")


def database_url(value: object, where: str) -> str:
    """A PostgreSQL connection URL (``postgresql://user@host:port/dbname``, libpq's form), with
    no password: libpq takes it from PGPASSWORD or ~/.pgpass, never from the YAML."""
    text = as_str(value, where)
    example = "write e.g. postgresql://asyncdicom@db.example.org:5432/research"
    parts = _split_url(text, where, example)
    if parts.scheme not in _DATABASE_SCHEMES:
        raise ConfigError(where, f"{text!r} is not a postgresql:// URL; {example}")
    if parts.password is not None or any(
        name.strip().lower() == "password" for name, _ in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ):
        raise ConfigError(
            where, "the URL holds a password; remove it and set PGPASSWORD or a ~/.pgpass line for this host instead"
        )
    if not parts.path.strip("/"):
        raise ConfigError(where, f"the URL names no database; {example}")
    if parts.fragment or any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ConfigError(where, f"the URL holds a fragment (#…) or control characters; {example}")
    try:
        parts.port  # noqa: B018 (raises for a port out of range)
    except ValueError:
        raise ConfigError(where, "the URL's port is out of range; use 1 to 65535") from None
    return text


def job_name(value: object, where: str) -> str:
    """A job's name in a shared ledger: letters, digits, '.', '_' and '-', at most 64."""
    text = as_str(value, where)
    if not _JOB_NAME.fullmatch(text):
        raise ConfigError(
            where, f"{text[:80]!r} is not a job name; use up to 64 letters, digits, '.', '_' or '-' (e.g. lung-ct-2026)"
        )
    return text


def env_name(value: object, where: str) -> str:
    """The name of an environment variable (never its value: secrets stay out of the YAML)."""
    text = as_str(value, where)
    if not _ENV_NAME.fullmatch(text):
        raise ConfigError(where, f"{text!r} is not an environment variable's name; write e.g. DICOMWEB_TOKEN")
    return text


def command_line(value: object, where: str) -> str:
    """A command to run without a shell (split like a shell would split it)."""
    text = as_str(value, where)
    if len(text) > 1024:
        raise ConfigError(where, f"a command of {len(text)} characters; at most 1024 are allowed")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ConfigError(where, f"cannot split the command into words ({exc}); check its quotes") from None
    if not words:
        raise ConfigError(where, "the command is empty")
    return text
