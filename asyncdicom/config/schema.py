"""The configuration's schema: one frozen dataclass per YAML section, with every default stated
here and nowhere else (the loader takes what a YAML file leaves out from these fields)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, time
from pathlib import Path
from typing import Any, Literal

from asyncdicom.elements import ElementSpec

RequestType = Literal["c-find", "c-move", "c-get", "c-echo"]
Model = Literal["patient", "study", "psonly"]
Mode = Literal["faithful", "safe"]


@dataclass(frozen=True, kw_only=True)
class AuthConfig:
    """How to authenticate to a DICOMweb source: ``pacs.auth``. Secrets are never in the YAML:
    a bearer token comes from an environment variable or a command's output, a password from an
    environment variable."""

    type: Literal["bearer", "basic"]
    token_env: str = ""
    token_command: str = ""
    username: str = ""
    password_env: str = ""


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """DICOM TLS for associations: ``pacs.tls`` (ours to the PACS) and ``local.tls`` (our storage
    SCP). PEM files; TLS 1.2 or newer; certificates checked by the standard library's ``ssl``."""

    ca_file: Path | None = None  # the CA certificates that sign the peer's certificate
    cert_file: Path | None = None  # our certificate (chain), shown to the peer
    key_file: Path | None = None  # its private key (unencrypted PEM)
    verify_hostname: bool = True  # pacs.tls: the PACS's certificate must name pacs.hostname
    require_client_cert: bool = True  # local.tls: a peer must show a certificate ca_file signs


@dataclass(frozen=True, kw_only=True)
class PacsConfig:
    """The PACS to query: ``pacs`` section. A DIMSE peer by ``hostname``, ``port`` and ``aet``, or
    a DICOMweb source by ``url``."""

    hostname: str = ""
    port: int = 0
    aet: str = ""
    url: str = ""  # a DICOMweb base URL (QIDO-RS and WADO-RS); replaces hostname, port and aet
    auth: AuthConfig | None = None  # DICOMweb only
    ca_file: Path | None = None  # DICOMweb only: the CA certificates that sign the server's
    tls: TlsConfig | None = None  # DIMSE only: DICOM TLS
    username: str = ""  # DIMSE only: a user identity sent with every association (PS3.7 D.3.3.7)
    password_env: str = ""  # the environment variable holding its passcode (never the YAML)
    password_file: Path | None = None  # or a file holding it (first line)

    @property
    def web(self) -> bool:
        """A DICOMweb source."""
        return bool(self.url)

    @property
    def where(self) -> str:
        """The source as messages name it."""
        return self.url if self.web else f"{self.aet}@{self.hostname}:{self.port}"


@dataclass(frozen=True, kw_only=True)
class LocalConfig:
    """Our own application entity: ``local`` section."""

    port: int = 11112
    aet: str = "ASYNCDICOM"
    allowed_aets: tuple[str, ...] = ()  # calling AE titles our storage SCP accepts; empty = pacs.aet
    bind_address: str = ""  # the address our storage SCP listens on; empty = every interface
    tls: TlsConfig | None = None  # our storage SCP speaks DICOM TLS only
    allowed_hosts: tuple[str, ...] = ()  # addresses or CIDR ranges our storage SCP accepts; empty = any
    max_instance_megabytes: float = 0.0  # a larger instance aborts its association; 0: no limit
    max_associations_per_host: int = 0  # connections at once from one address; 0: the SCP's own limit


@dataclass(frozen=True, kw_only=True)
class RequestConfig:
    """What to ask for, and how hard: ``request`` section."""

    type: RequestType
    model: Model = "study"
    threads: int = 4  # associations at once; 0: auto (find the PACS's limit, up to max_threads)
    max_threads: int = 16  # with threads: auto
    throttle_time: float = 0.0
    max_rate: float = 0.0
    max_megabytes_per_second: float = 0.0  # cap on received C-GET/C-MOVE data; 0: none
    elements_batch_file: Path | None = None
    elements: tuple[ElementSpec, ...] = ()
    timeout: float = 30.0
    idle_timeout: float = 300.0  # a C-MOVE/C-GET with no response and no instance this long is aborted
    connect_timeout: float = 10.0
    unreachable_timeout: float = 60.0  # give up once the PACS has been unreachable this long
    retries: int = 3
    sop_classes: tuple[str, ...] = ()

    @property
    def auto_threads(self) -> bool:
        """``threads: auto``: the engine finds how many associations the PACS serves best."""
        return self.threads == 0

    @property
    def workers(self) -> int:
        """The most associations a run may hold: ``threads``, or ``max_threads`` with auto."""
        return self.max_threads if self.auto_threads else self.threads


DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
EVERY_DAY = tuple(range(7))  # 0 = Monday


@dataclass(frozen=True, kw_only=True)
class WindowConfig:
    """One item of ``schedule.windows``: on ``days``, from ``start_time`` to ``end_time``."""

    days: tuple[int, ...] = EVERY_DAY
    start_time: time
    end_time: time  # earlier than start_time: the next day; equal: 24 hours


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """When requests may be sent: ``schedule`` section."""

    enabled: bool = False
    start_time: time | None = None
    end_time: time | None = None
    days: tuple[int, ...] = ()  # the days start_time/end_time apply to; empty: every day
    windows: tuple[WindowConfig, ...] = ()  # instead of start_time/end_time/days
    timezone: str | None = None
    outside_window: Literal["wait", "exit"] = "wait"  # exit: end at once with exit code 5, sending nothing
    drain_seconds: float = 60.0  # at closing time, how long requests in flight may take to finish

    def all_windows(self) -> tuple[WindowConfig, ...]:
        """Every window: ``windows``, or the one ``start_time``/``end_time``/``days`` describe."""
        if self.windows:
            return self.windows
        if self.start_time is None or self.end_time is None:
            return ()
        days = self.days or EVERY_DAY
        return (WindowConfig(days=days, start_time=self.start_time, end_time=self.end_time),)

    def describe(self) -> str:
        """The windows in words: "mon-fri 19:00-06:00, sat-sun 00:00-00:00 (Europe/Paris)"."""
        parts = [f"{days_text(w.days)} {clock(w.start_time)}-{clock(w.end_time)}" for w in self.all_windows()]
        return ", ".join(parts) + f" ({self.timezone or 'local time'})"


def clock(moment: time | datetime) -> str:
    """A time of day as written in the config: HH:MM, or HH:MM:SS when it has seconds."""
    return f"{moment:%H:%M:%S}" if moment.second else f"{moment:%H:%M}"


def days_text(days: tuple[int, ...]) -> str:
    """``every day``, ``mon-fri``, ``mon, wed, fri``: runs of three or more days as ranges."""
    if len(days) == 7:
        return "every day"
    runs: list[list[int]] = []
    for day in days:
        if runs and runs[-1][-1] == day - 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    words: list[str] = []
    for run in runs:
        if len(run) >= 3:
            words.append(f"{DAY_NAMES[run[0]]}-{DAY_NAMES[run[-1]]}")
        else:
            words.extend(DAY_NAMES[day] for day in run)
    return ", ".join(words)


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
    ledger_url: str | None = None  # a PostgreSQL ledger shared by every host running the job
    job_name: str = ""  # the job's name in a shared ledger (the config file's name unless given)
    lease_seconds: float = 30.0  # a host that stops renewing its claims loses them after this long
    csv_formula_guard: bool = True  # prefix cells a spreadsheet would run as formulas with '
    permissions: Literal["private", "group", "inherit"] = "private"  # of every file and folder a run writes


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


def state_folder(directory: Path, anonymized: bool) -> Path:
    """Where the ledger and the spool live by default: inside the output tree (``.asyncdicom``), or,
    with anonymization on, beside it (``<directory>-private``): they hold original identifiers,
    which an anonymized tree must not."""
    return directory.parent / f"{directory.name}-private" if anonymized else directory / ".asyncdicom"


def default(section: type[Any], name: str) -> Any:
    """The default of a section's field, as the dataclass states it."""
    for item in dataclasses.fields(section):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return item.default
            if item.default_factory is not dataclasses.MISSING:
                return item.default_factory()
    msg = f"{section.__name__}.{name} has no default"
    raise KeyError(msg)


SECTIONS: dict[str, type[Any]] = {
    "pacs": PacsConfig,
    "local": LocalConfig,
    "request": RequestConfig,
    "schedule": ScheduleConfig,
    "anonymization": AnonymizationConfig,
    "output": OutputConfig,
}
ALIASES = {
    "request.concurrency": "request.threads",
    "output.database_file": "output.library_file",  # pydicom-batch's name
}
AUTH_KEYS = tuple(item.name for item in dataclasses.fields(AuthConfig))
PACS_TLS_KEYS = ("ca_file", "cert_file", "key_file", "verify_hostname")
LOCAL_TLS_KEYS = ("ca_file", "cert_file", "key_file", "require_client_cert")

LEGACY_KEYS = {
    # keys found in pydicom-batch's own sample files that its code never read
    "output.anonymization_script": "anonymization.script",
    "output.anonymization_lookup_table": "anonymization.lookup_table",
}


def keys(section: str) -> tuple[str, ...]:
    """The keys a YAML section may hold: its dataclass's fields and their aliases."""
    names = [item.name for item in dataclasses.fields(SECTIONS[section])]
    names += [alias.split(".", 1)[1] for alias in ALIASES if alias.startswith(section + ".")]
    return tuple(names)
