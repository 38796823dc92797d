"""Load and validate the YAML configuration (the pydicom-batch format, extended).

Everything is checked up front, before any network traffic: every problem is a
:class:`~asyncdicom.errors.ConfigError` naming the dotted key path. Relative paths resolve
against the folder of the config file. The result is the frozen tree of :mod:`.schema`, whose
defaults fill in what the YAML leaves out.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, cast

import yaml

from asyncdicom.config.checks import (
    Paths,
    Section,
    ae_list,
    as_ae,
    as_bool,
    as_days,
    as_port,
    as_str,
    as_time,
    as_timezone,
    as_windows,
    choice,
    command_line,
    database_url,
    elements,
    env_name,
    host_list,
    ip_address,
    job_name,
    keyword,
    non_negative_float,
    non_negative_int,
    positive_float,
    structure,
    suggest,
    thread_count,
    thread_count_max,
    typename,
    uid_list,
    web_url,
)
from asyncdicom.config.schema import (
    AUTH_KEYS,
    LEGACY_KEYS,
    LOCAL_TLS_KEYS,
    PACS_TLS_KEYS,
    SECTIONS,
    AnonymizationConfig,
    AuthConfig,
    Config,
    LocalConfig,
    Mode,
    Model,
    OutputConfig,
    PacsConfig,
    RequestConfig,
    RequestType,
    ScheduleConfig,
    TlsConfig,
    default,
    keys,
    state_folder,
)
from asyncdicom.errors import ConfigError
from asyncdicom.net.storage import COMMON_IMAGES, MAX_CONTEXTS, OTHER_CLASSES, QUERY_CONTEXTS
from asyncdicom.net.tls import TlsFiles
from asyncdicom.net.tls import check as check_tls
from asyncdicom.write.paths import collision_warning

KNOWN_STORAGE_CLASSES = frozenset(COMMON_IMAGES + OTHER_CLASSES)
MAX_EXTRA_CLASSES = MAX_CONTEXTS - QUERY_CONTEXTS - len(KNOWN_STORAGE_CLASSES)


MAX_CONFIG_BYTES = 1024 * 1024  # a config is a few KB; element lists belong in the batch CSV


def load_config(path: str | Path, *, batch_file: Path | None = None) -> Config:
    """Read and validate a YAML config; ``batch_file`` overrides ``request.elements_batch_file``."""
    source = Path(path).expanduser().resolve()
    try:
        size = source.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                str(path), f"the config file has {size} bytes, more than {MAX_CONFIG_BYTES}; put long lists in a CSV"
            )
        data = source.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), "config file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "is a folder, not a config file") from None
    except OSError as exc:
        raise ConfigError(str(path), f"unable to read the config file as {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{source}:{line}", "the config file is not UTF-8; save it as UTF-8") from None
    if "\0" in text:
        line = text[: text.index("\0")].count("\n") + 1
        raise ConfigError(f"{source}:{line}", "the config file holds a NUL byte; it is not a text file")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(where, f"invalid YAML: {problem}") from None
    except RecursionError:
        raise ConfigError(str(source), "invalid YAML: nested too deeply") from None
    return parse_config(raw, source=source, batch_file=batch_file)


def parse_config(raw: object, *, source: Path, batch_file: Path | None = None) -> Config:
    """Validate an already-parsed YAML document (see :func:`load_config`)."""
    if not isinstance(raw, dict):
        raise ConfigError(str(source), f"expected a mapping of sections, got {typename(raw)}")
    warnings: list[str] = []
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(str(key), f"unknown section{suggest(str(key), list(SECTIONS))}")
    sections = {name: Section(raw.get(name), name, cls) for name, cls in SECTIONS.items()}
    for name, section in sections.items():
        for key in section.raw:
            dotted = f"{name}.{key}"
            if dotted in LEGACY_KEYS:
                warnings.append(
                    f"{dotted}: ignored, as pydicom-batch also ignored it; to use it, move it to {LEGACY_KEYS[dotted]}"
                )
            elif key not in keys(name):
                raise ConfigError(dotted, f"unknown key{suggest(str(key), keys(name))}")
    paths = Paths(source.parent)

    if not raw.get("pacs"):
        raise ConfigError("pacs", "required section is missing; give hostname, port and aet (or url, for DICOMweb)")
    pacs = _pacs(sections["pacs"], paths)
    local_s = sections["local"]
    local = LocalConfig(
        port=local_s.get("port", as_port),
        aet=local_s.get("aet", as_ae),
        allowed_aets=local_s.get("allowed_aets", ae_list) or ((pacs.aet,) if pacs.aet else ()),
        bind_address=local_s.get("bind_address", ip_address),
        tls=_tls(local_s.raw["tls"], "local.tls", paths, server=True) if local_s.has("tls") else None,
        allowed_hosts=local_s.get("allowed_hosts", host_list),
        max_instance_megabytes=local_s.get("max_instance_megabytes", non_negative_float),
        max_associations_per_host=local_s.get("max_associations_per_host", non_negative_int),
    )
    for tls, where, server in ((pacs.tls, "pacs.tls", False), (local.tls, "local.tls", True)):
        if tls is not None:
            warnings.extend(check_tls(tls_files(tls, where), server=server))
    request = _request(sections["request"], paths, batch_file)
    if pacs.web:
        _check_web_request(request)
    schedule = _schedule(sections["schedule"])
    anonymization = _anonymization(sections["anonymization"], paths)
    output = _output(sections["output"], paths, request, source, anonymization.enabled)
    if anonymization.enabled and output.directory is not None:
        for key, path in (("library_file", output.library_file), ("ledger_file", output.ledger_file)):
            if path is not None and path.is_relative_to(output.directory):
                warnings.append(
                    f"output.{key}: {path} is inside the output tree, which is anonymized, but it holds the "
                    "batch's original identifiers; put it beside the tree"
                )
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


def _pacs(section: Section, paths: Paths) -> PacsConfig:
    """A DIMSE peer (hostname, port, aet) or a DICOMweb source (url, auth, ca_file)."""
    if not section.has("url"):
        for key in ("auth", "ca_file"):
            if section.has(key):
                raise ConfigError(section.where(key), "applies to a DICOMweb source only: give pacs.url, or remove it")
        username, password_env, password_file = _identity(section, paths)
        return PacsConfig(
            hostname=section.require("hostname", as_str),
            port=section.require("port", as_port),
            aet=section.require("aet", as_ae),
            tls=_tls(section.raw["tls"], "pacs.tls", paths, server=False) if section.has("tls") else None,
            username=username,
            password_env=password_env,
            password_file=password_file,
        )
    if section.has("tls"):
        raise ConfigError(
            section.where("tls"), "DICOM TLS is for a DIMSE peer; a DICOMweb source takes an https URL and pacs.ca_file"
        )
    for key in ("username", "password_env", "password_file"):
        if section.has(key):
            raise ConfigError(section.where(key), "is a DICOM user identity; a DICOMweb source takes pacs.auth")
    for key in ("hostname", "port"):
        if section.has(key):
            raise ConfigError(section.where(key), "pacs.url replaces hostname, port and aet; remove it")
    return PacsConfig(
        url=section.get("url", web_url),
        aet=section.get("aet", as_ae, ""),
        auth=_auth(section.raw["auth"], section.where("auth")) if section.has("auth") else None,
        ca_file=section.get("ca_file", paths.existing_file, None),
    )


MAX_PASSCODE = 1024  # bytes: a user identity field we send (the PDU allows 65535)


def _identity(section: Section, paths: Paths) -> tuple[str, str, Path | None]:
    """``pacs.username`` and where its passcode comes from (checked now, read when associating)."""
    username = section.get("username", as_str, "")
    password_env = section.get("password_env", env_name, "")
    password_file: Path | None = section.get("password_file", paths.existing_file, None)
    if len(username.encode("utf-8")) > MAX_PASSCODE:
        raise ConfigError(section.where("username"), f"is longer than {MAX_PASSCODE} bytes")
    if (password_env or password_file is not None) and not username:
        raise ConfigError(section.where("username"), "a password needs a user name; give pacs.username")
    if password_env and password_file is not None:
        raise ConfigError(section.where("password_file"), "give password_env or password_file, not both")
    if username:
        passcode(password_env, password_file)  # unset, empty or unreadable: said now, with the key path
    return username, password_env, password_file


def passcode(password_env: str, password_file: Path | None) -> bytes:
    """The passcode of the user identity: the environment variable's value, or the first line of
    the file (at most :data:`MAX_PASSCODE` bytes); b"" for none. Never logged."""
    if password_env:
        value = os.environ.get(password_env)
        if not value:
            raise ConfigError("pacs.password_env", f"the environment variable {password_env} is not set or empty")
        data = value.encode("utf-8")
    elif password_file is not None:
        try:
            size = password_file.stat().st_size
            if size > MAX_PASSCODE + 2:
                raise ConfigError("pacs.password_file", f"{password_file} is longer than a passcode ({size} bytes)")
            lines = password_file.read_bytes().splitlines()
        except OSError as exc:
            raise ConfigError("pacs.password_file", f"unable to read {password_file} as {exc.strerror}") from None
        data = lines[0] if lines else b""
        if not data:
            raise ConfigError("pacs.password_file", f"{password_file} is empty")
    else:
        return b""
    if len(data) > MAX_PASSCODE:
        raise ConfigError(
            "pacs.password_env" if password_env else "pacs.password_file",
            f"the passcode is longer than {MAX_PASSCODE} bytes",
        )
    return data


def _tls(raw: object, where: str, paths: Paths, *, server: bool) -> TlsConfig:
    """``pacs.tls`` or ``local.tls``: PEM files (checked when the whole config is read)."""
    section = Section(raw, where, TlsConfig)
    allowed = LOCAL_TLS_KEYS if server else PACS_TLS_KEYS
    for key in section.raw:
        if key not in allowed:
            other = PACS_TLS_KEYS if server else LOCAL_TLS_KEYS
            hint = f" (it belongs to {'pacs' if server else 'local'}.tls)" if key in other else ""
            raise ConfigError(f"{where}.{key}", f"unknown key{hint}{suggest(str(key), list(allowed))}")
    return TlsConfig(
        ca_file=section.get("ca_file", paths.existing_file, None),
        cert_file=section.get("cert_file", paths.existing_file, None),
        key_file=section.get("key_file", paths.existing_file, None),
        verify_hostname=section.get("verify_hostname", as_bool, True),
        require_client_cert=section.get("require_client_cert", as_bool, True),
    )


def tls_files(tls: TlsConfig, where: str) -> TlsFiles:
    """The network layer's view of a TLS section."""
    return TlsFiles(where, tls.ca_file, tls.cert_file, tls.key_file, tls.verify_hostname, tls.require_client_cert)


def _auth(raw: object, where: str) -> AuthConfig:
    section = Section(raw, where, AuthConfig)
    for key in section.raw:
        if key not in AUTH_KEYS:
            raise ConfigError(f"{where}.{key}", f"unknown key{suggest(str(key), list(AUTH_KEYS))}")
    kind = section.require("type", choice("bearer", "basic"))
    if kind == "bearer":
        given = [key for key in ("token_env", "token_command") if section.has(key)]
        if len(given) != 1:
            raise ConfigError(
                where, "a bearer token comes from token_env (an environment variable's name) or token_command; give one"
            )
        for key in ("username", "password_env"):
            if section.has(key):
                raise ConfigError(section.where(key), "belongs to type: basic; remove it")
        return AuthConfig(
            type="bearer",
            token_env=section.get("token_env", env_name, ""),
            token_command=section.get("token_command", command_line, ""),
        )
    for key in ("token_env", "token_command"):
        if section.has(key):
            raise ConfigError(section.where(key), "belongs to type: bearer; remove it")
    username = section.require("username", as_str)
    if len(username) > 256 or ":" in username:
        raise ConfigError(section.where("username"), "a user name has at most 256 characters and no colon")
    return AuthConfig(type="basic", username=username, password_env=section.require("password_env", env_name))


def _check_web_request(request: RequestConfig) -> None:
    """What a DICOMweb source cannot do, refused before any traffic."""
    if request.type == "c-move":
        raise ConfigError(
            "request.type", "a DICOMweb source has no C-MOVE; use c-get, which retrieves by WADO-RS into the same tree"
        )
    if request.model == "psonly":
        raise ConfigError("request.model", "QIDO-RS has no patient/study-only model; use study")
    level = next((spec.value for spec in request.elements if spec.leaf.keyword == "QueryRetrieveLevel"), None)
    if level == "PATIENT":
        raise ConfigError(
            "request.elements", "QIDO-RS has no PATIENT level; ask at STUDY level with PatientID as a key"
        )


def _request(section: Section, paths: Paths, batch_file: Path | None) -> RequestConfig:
    if not section.raw:
        raise ConfigError("request", "required section is missing; give at least its type")
    kind = cast(RequestType, section.require("type", choice("c-find", "c-move", "c-get", "c-echo")))
    threads = section.get("threads", thread_count, -1)  # -1: not given; 0: auto
    concurrency = section.get("concurrency", thread_count, -1)
    if threads >= 0 and concurrency >= 0 and threads != concurrency:
        raise ConfigError(
            "request.concurrency", f"is {concurrency} but request.threads is {threads}; give only one of them"
        )
    if batch_file is not None:
        if not batch_file.is_file():
            raise ConfigError("--csv", f"file {batch_file} does not exist")
        batch: Path | None = batch_file.resolve()
    else:
        batch = section.get("elements_batch_file", paths.existing_file)
    specs = section.get("elements", elements)
    if kind != "c-echo" and not specs and batch is None:
        raise ConfigError("request.elements", "required for a query or retrieve: list the elements to send")
    sop_classes = section.get("sop_classes", uid_list)
    if len(set(sop_classes) - KNOWN_STORAGE_CLASSES) > MAX_EXTRA_CLASSES:
        raise ConfigError(
            "request.sop_classes",
            f"adds more than {MAX_EXTRA_CLASSES} SOP classes, which would not fit in one association's "
            "128 presentation contexts; list only the classes your studies contain",
        )
    return RequestConfig(
        type=kind,
        model=cast(Model, section.get("model", choice("patient", "study", "psonly"))),
        threads=next((n for n in (threads, concurrency) if n >= 0), default(RequestConfig, "threads")),
        max_threads=section.get("max_threads", thread_count_max),
        throttle_time=section.get("throttle_time", non_negative_float),
        max_rate=section.get("max_rate", non_negative_float),
        elements_batch_file=batch,
        elements=specs,
        timeout=section.get("timeout", positive_float),
        connect_timeout=section.get("connect_timeout", positive_float),
        max_megabytes_per_second=section.get("max_megabytes_per_second", non_negative_float),
        idle_timeout=section.get("idle_timeout", positive_float),
        unreachable_timeout=section.get("unreachable_timeout", non_negative_float),
        retries=section.get("retries", non_negative_int),
        sop_classes=sop_classes,
    )


def _schedule(section: Section) -> ScheduleConfig:
    enabled = section.get("enabled", as_bool)
    start = section.get("start_time", as_time)
    end = section.get("end_time", as_time)
    days = section.get("days", as_days)
    windows = section.get("windows", as_windows)
    timezone = section.get("timezone", as_timezone)
    outside = cast(Literal["wait", "exit"], section.get("outside_window", choice("wait", "exit")))
    drain = section.get("drain_seconds", non_negative_float)
    if windows:
        for key in ("start_time", "end_time", "days"):
            if section.has(key):
                raise ConfigError(
                    f"schedule.{key}", "give either schedule.windows or start_time/end_time/days, not both"
                )
    elif enabled:
        for key, value in (("start_time", start), ("end_time", end)):
            if value is None:
                raise ConfigError(
                    f"schedule.{key}",
                    "required when schedule.enabled is true ('HH:MM' or 'HH:MM:SS'), unless schedule.windows is given",
                )
    return ScheduleConfig(
        enabled=enabled,
        start_time=start,
        end_time=end,
        days=days,
        windows=windows,
        timezone=timezone,
        outside_window=outside,
        drain_seconds=drain,
    )


def _anonymization(section: Section, paths: Paths) -> AnonymizationConfig:
    enabled = section.get("enabled", as_bool)
    check_file = paths.existing_file if enabled else paths.path
    script = section.get("script", check_file)
    if enabled and script is None:
        raise ConfigError("anonymization.script", "required when anonymization.enabled is true")
    lookup_table = section.get("lookup_table", check_file)
    if enabled:
        _check_anonymizer(script, lookup_table)
    return AnonymizationConfig(
        enabled=enabled,
        script=script,
        lookup_table=lookup_table,
        mode=cast(Mode, section.get("mode", choice("faithful", "safe"))),
        quarantine_directory=section.get("quarantine_directory", paths.path),
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


def _output(section: Section, paths: Paths, request: RequestConfig, source: Path, anonymized: bool) -> OutputConfig:
    directory: Path | None = section.get("directory", paths.path)
    library: Path | None = section.get("library_file", paths.path)
    database: Path | None = section.get("database_file", paths.path, None)  # the alias: not given
    if library and database and library != database:
        raise ConfigError("output.database_file", "names another file than output.library_file; give only one of them")
    library = library or database
    if request.type == "c-find" and library is None:
        if directory is None:
            raise ConfigError("output.library_file", "required for c-find (or give output.directory)")
        library = directory / "library.csv"
    if request.type in {"c-move", "c-get"} and directory is None:
        raise ConfigError("output.directory", f"required for {request.type}: where to store the images")
    if directory is not None:
        state_dir = state_folder(directory, anonymized)
    else:
        state_dir = (library.parent if library else source.parent) / ".asyncdicom"
    ledger = section.get("ledger_file", paths.path, state_dir / f"{source.stem}.sqlite3")
    ledger_url: str | None = section.get("ledger_url", database_url)
    if ledger_url is not None and section.has("ledger_file"):
        raise ConfigError("output.ledger_url", "give output.ledger_file or output.ledger_url, not both")
    job = section.get("job_name", job_name, None) or _default_job_name(source)
    lease = section.get("lease_seconds", positive_float)
    if not MIN_LEASE <= lease <= MAX_LEASE:
        raise ConfigError("output.lease_seconds", f"{lease:g} is out of range; use {MIN_LEASE:g} to {MAX_LEASE:g}")
    return OutputConfig(
        directory=directory,
        library_file=library,
        directory_structure=section.get("directory_structure", structure),
        filename=section.get("filename", keyword),
        decompress=section.get("decompress", as_bool),
        ledger_file=ledger,
        ledger_url=ledger_url,
        job_name=job,
        lease_seconds=lease,
        csv_formula_guard=section.get("csv_formula_guard", as_bool),
        permissions=cast(
            Literal["private", "group", "inherit"], section.get("permissions", choice("private", "group", "inherit"))
        ),
    )


MIN_LEASE, MAX_LEASE = 2.0, 3600.0


def _default_job_name(source: Path) -> str:
    """The config file's name as a job name (characters a job name cannot hold become '-')."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", source.stem).lstrip("._-")[:64]
    return cleaned or "job"


def describe(config: Config) -> Mapping[str, object]:
    """A JSON-ready summary of the effective configuration (no secrets are held in it)."""
    return {
        "pacs": config.pacs.where,
        "local_aet": config.local.aet,
        "type": config.request.type,
        "model": config.request.model,
        "threads": "auto" if config.request.auto_threads else config.request.threads,
        "library_file": str(config.output.library_file) if config.output.library_file else None,
        "ledger_file": str(config.output.ledger_file),
        **(
            {"ledger_url": config.output.ledger_url, "job_name": config.output.job_name}
            if config.output.ledger_url
            else {}
        ),
    }
