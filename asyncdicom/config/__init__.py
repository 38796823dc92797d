"""The configuration: :mod:`.schema` (sections and their defaults), :mod:`.checks` (one value
at a time), :mod:`.load` (the YAML file, cross-checks, warnings)."""

from __future__ import annotations

from asyncdicom.config.load import describe, load_config, parse_config
from asyncdicom.config.schema import (
    AnonymizationConfig,
    Config,
    LocalConfig,
    Mode,
    Model,
    OutputConfig,
    PacsConfig,
    RequestConfig,
    RequestType,
    ScheduleConfig,
)

__all__ = [
    "AnonymizationConfig",
    "Config",
    "LocalConfig",
    "Mode",
    "Model",
    "OutputConfig",
    "PacsConfig",
    "RequestConfig",
    "RequestType",
    "ScheduleConfig",
    "describe",
    "load_config",
    "parse_config",
]
