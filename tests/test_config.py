"""Config loading: the ancestor's samples, validation messages with key paths, defaults."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from asyncdicom.config import Config, load_config
from asyncdicom.errors import ConfigError, ExitCode
from tests.conftest import SAMPLES, find_config, write_yaml


def _sample(tmp_path: Path, name: str) -> Path:
    """Copy a pydicom-batch sample config and its files, pointing absolute paths at the copies."""
    for item in SAMPLES.iterdir():
        (tmp_path / item.name).write_bytes(item.read_bytes())
    text = (SAMPLES / name).read_text()
    text = re.sub(r"/home/[^/]+/[^/]+/config/", f"{tmp_path}/", text)
    text = re.sub(r"/home/[^/]+/[^/]+/data", f"{tmp_path}/data", text)
    target = tmp_path / name
    target.write_text(text)
    return target


class TestAncestorSamples:
    def test_c_find_sample_loads_with_legacy_warnings(self, tmp_path: Path) -> None:
        """The ancestor's C-FIND sample loads; its ignored output.anonymization_* keys warn where they belong."""
        config = load_config(_sample(tmp_path, "sample-c-find-config.yml"))
        assert config.request.type == "c-find"
        assert config.request.model == "patient"
        assert config.request.threads == 1
        assert [s.name for s in config.request.elements][:3] == ["PatientID", "PatientName", "PatientSex"]
        assert config.output.library_file == tmp_path / "data" / "database-c-find.csv"
        assert config.output.directory_structure == ("PatientID", "StudyInstanceUID")
        assert config.warnings == (
            "output.anonymization_script: ignored, as pydicom-batch also ignored it; "
            "to use it, move it to anonymization.script",
            "output.anonymization_lookup_table: ignored, as pydicom-batch also ignored it; "
            "to use it, move it to anonymization.lookup_table",
        )

    def test_c_move_sample_loads(self, tmp_path: Path) -> None:
        """The ancestor's C-MOVE sample loads with schedule, anonymization and output settings."""
        config = load_config(_sample(tmp_path, "sample-c-move-config.yml"))
        assert config.request.type == "c-move"
        assert config.request.threads == 8
        assert config.schedule.enabled and str(config.schedule.start_time) == "17:13:00"
        assert config.schedule.timezone == "America/New_York"
        assert config.anonymization.enabled
        assert config.anonymization.script == tmp_path / "sample-dicom-anonymizer.script"
        assert config.output.filename == "InstanceNumber"
        assert config.output.decompress is True
        assert config.warnings == (
            f"output.library_file: {tmp_path / 'data' / 'database-c-move.csv'} is inside the output tree, which is "
            "anonymized, but it holds the batch's original identifiers; put it beside the tree",
            "output.filename InstanceNumber repeats across series, and output.directory_structure has no "
            "series-level key (SeriesInstanceUID): files of different series will collide and be suffixed _1, _2…; "
            "add SeriesInstanceUID to the structure",
        )


def _error(tmp_path: Path, document: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(write_yaml(tmp_path / "c.yml", document))
    assert info.value.exit_code == ExitCode.USAGE
    return str(info.value)


def _with(section: str, key: str, value: Any) -> dict[str, Any]:
    doc = find_config(4242)
    doc.setdefault(section, {})[key] = value
    return doc


class TestValidation:
    @pytest.mark.parametrize(
        ("doc", "message"),
        [
            (_with("pacs", "hostnme", "x"), "pacs.hostnme: unknown key; did you mean 'hostname'?"),
            (_with("request", "treads", 4), "request.treads: unknown key; did you mean 'threads'?"),
            (_with("pacs", "port", 70000), "pacs.port: port 70000 is out of range; use 1 to 65535"),
            (_with("pacs", "port", "4242"), "pacs.port: expected a port number, got a string"),
            (
                _with("pacs", "aet", "A" * 17),
                f"pacs.aet: AE title '{'A' * 17}' has 17 characters; at most 16 are allowed",
            ),
            (
                _with("local", "aet", "BAD\\AE"),
                "local.aet: an AE title cannot contain backslashes or control characters",
            ),
            (
                _with("local", "aet", "BAD\x01"),
                "local.aet: an AE title cannot contain backslashes or control characters",
            ),
            (
                _with("pacs", "aet", 1234),
                "pacs.aet: expected an AE title string, got an integer (quote it in the YAML file)",
            ),
            (
                _with("local", "bind_address", "pacs-net"),
                "local.bind_address: 'pacs-net' is not an IP address; give this machine's address on the PACS's "
                "network, e.g. 10.1.2.3",
            ),
            (_with("request", "unreachable_timeout", -5), "request.unreachable_timeout: must be 0 or more, got -5"),
            (
                _with("schedule", "start_time", "7pm"),
                "schedule.start_time: expected a 24-hour time in the form HH:MM (or HH:MM:SS), such as '19:00' or "
                "'06:30', got '7pm'",
            ),
            (_with("request", "threads", 0), "request.threads: 0 is out of range; use 1 to 64"),
            (_with("request", "threads", 65), "request.threads: 65 is out of range; use 1 to 64"),
            (_with("request", "max_threads", 100), "request.max_threads: 100 is out of range; use 1 to 64"),
            (
                _with("request", "threads", "four"),
                "request.threads: expected a whole number of associations or auto, got a string",
            ),
            (_with("request", "throttle_time", -1), "request.throttle_time: must be 0 or more, got -1"),
            (
                _with("request", "type", "c-fetch"),
                "request.type: 'c-fetch' is not one of c-find, c-move, c-get, c-echo",
            ),
            (_with("request", "model", "series"), "request.model: 'series' is not one of patient, study, psonly"),
            (
                _with("request", "elements", ["PatientID", "Date"]),
                "request.elements[1]: 'Date' (0040,A121) is a structured-report content item, not a query key; "
                "did you mean 'StudyDate'?",
            ),
            (
                _with("request", "elements", ["PatientID", "PatientID"]),
                "request.elements[1]: (0010,0020) 'PatientID' is already listed at request.elements[0]",
            ),
            (_with("request", "elements_batch_file", "missing.csv"), None),
            (
                _with("request", "concurrency", 3),
                "request.concurrency: is 3 but request.threads is 4; give only one of them",
            ),
            (
                _with("output", "directory_structure", "PatientID/Nope"),
                "output.directory_structure: 'Nope' is not a DICOM keyword; use a keyword from PS3.6 or a (gggg,eeee) tag",
            ),
        ],
    )
    def test_messages(self, tmp_path: Path, doc: dict[str, Any], message: str | None) -> None:
        """Each invalid setting is a one-line error naming its key path."""
        text = _error(tmp_path, doc)
        if message is None:
            assert text.startswith("request.elements_batch_file: file ") and text.endswith(
                "does not exist; fix the path (relative paths start at the config file's folder)"
            )
        else:
            assert text == message

    def test_missing_sections_and_keys(self, tmp_path: Path) -> None:
        """Missing required sections and keys are named."""
        doc = find_config(4242)
        del doc["pacs"]["aet"]
        assert _error(tmp_path, doc) == "pacs.aet: required key is missing"
        assert _error(tmp_path, {"request": {"type": "c-echo"}}) == (
            "pacs: required section is missing; give hostname, port and aet (or url, for DICOMweb)"
        )
        assert (
            _error(tmp_path, {**find_config(4242), "shedule": {}})
            == "shedule: unknown section; did you mean 'schedule'?"
        )

    def test_unquoted_schedule_time(self, tmp_path: Path) -> None:
        """YAML 1.1 turns 17:13 into 1033; the error says to quote it."""
        doc = find_config(4242)
        doc["schedule"] = {"enabled": True, "start_time": 1033, "end_time": "18:00"}
        assert _error(tmp_path, doc) == (
            "schedule.start_time: write the time in quotes, as '17:13', so YAML keeps it as text"
        )
        doc["schedule"] = {"enabled": True, "start_time": "17:00", "end_time": "18:00", "timezone": "Mars/Base"}
        assert _error(tmp_path, doc) == (
            "schedule.timezone: unknown time zone 'Mars/Base'; use an IANA name such as America/New_York"
        )

    def test_retrieve_settings(self, tmp_path: Path) -> None:
        """C-GET SOP classes must be UIDs and fit the 128 presentation contexts; allowed AEs default to pacs.aet."""
        doc = find_config(4242)
        doc["request"].update(type="c-get", sop_classes=["1.2.3.x"])
        doc["output"] = {"directory": "out"}
        assert _error(tmp_path, doc) == "request.sop_classes[0]: expected a UID such as 1.2.840.10008.5.1.4.1.1.2"
        doc["request"]["sop_classes"] = [f"1.2.840.99.{i}" for i in range(80)]
        assert _error(tmp_path, doc).startswith("request.sop_classes: adds more than 76 SOP classes")
        doc["request"]["sop_classes"] = ["1.2.840.10008.5.1.4.1.1.88.71"]
        config = load_config(write_yaml(tmp_path / "c.yml", doc))
        assert config.local.allowed_aets == ("ORTHANC",)
        assert config.request.sop_classes == ("1.2.840.10008.5.1.4.1.1.88.71",)

    def test_anonymization_script_must_exist_when_enabled(self, tmp_path: Path) -> None:
        """An enabled anonymization without a readable script is a config error."""
        doc = find_config(4242)
        doc["anonymization"] = {"enabled": True}
        assert _error(tmp_path, doc) == "anonymization.script: required when anonymization.enabled is true"

    def test_invalid_yaml_names_line(self, tmp_path: Path) -> None:
        """Broken YAML reports file:line:column."""
        path = tmp_path / "bad.yml"
        path.write_text("pacs:\n  hostname: [unclosed\n")
        with pytest.raises(ConfigError) as info:
            load_config(path)
        assert str(info.value).startswith(f"{path}:")
        assert "invalid YAML" in str(info.value)


class TestDefaults:
    def test_relative_paths_and_defaults(self, tmp_path: Path) -> None:
        """Relative paths resolve against the config's folder; defaults fill the rest."""
        (tmp_path / "sub").mkdir()
        (tmp_path / "sub" / "batch.csv").write_text("PatientID\n1\n")
        doc = find_config(4242, batch="batch.csv")
        doc["output"] = {"directory": "data"}
        del doc["request"]["threads"]
        config = load_config(write_yaml(tmp_path / "sub" / "c.yml", doc))
        assert config.request.elements_batch_file == tmp_path / "sub" / "batch.csv"
        assert config.output.library_file == tmp_path / "sub" / "data" / "library.csv"
        assert config.output.ledger_file == tmp_path / "sub" / "data" / ".asyncdicom" / "c.sqlite3"
        assert config.request.threads == 4
        assert config.request.timeout == 30.0

    def test_left_out_keys_take_the_schema_defaults(self, tmp_path: Path) -> None:
        """Every key a YAML leaves out takes its dataclass default: the schema states each once."""
        from asyncdicom.config.schema import SECTIONS, default, keys

        doc = {
            "pacs": {"hostname": "h", "port": 4242, "aet": "A"},
            "request": {"type": "c-find", "elements": ["PatientID"]},
            "output": {"library_file": "l.csv"},
        }
        config = load_config(write_yaml(tmp_path / "c.yml", doc))
        computed = {
            "local.allowed_aets",
            "request.elements",
            "output.library_file",
            "output.ledger_file",
            "output.job_name",
        }
        checked = 0
        for name, cls in SECTIONS.items():
            section = getattr(config, name)
            for item in dataclasses.fields(cls):
                dotted = f"{name}.{item.name}"
                if item.name in doc.get(name, {}) or dotted in computed or item.name not in keys(name):
                    continue
                assert getattr(section, item.name) == default(cls, item.name), dotted
                checked += 1
        assert checked >= 20

    def test_concurrency_alias(self, tmp_path: Path) -> None:
        """request.concurrency is accepted as another name for request.threads."""
        doc = find_config(4242)
        del doc["request"]["threads"]
        doc["request"]["concurrency"] = 12
        assert load_config(write_yaml(tmp_path / "c.yml", doc)).request.threads == 12

    def test_example_configs_load(self) -> None:
        """Every commented example config shipped in config/ loads."""
        folder = Path(__file__).resolve().parents[1] / "config"
        examples = sorted(folder.glob("*.yaml"))
        assert examples, "config/ has no examples"
        for path in examples:
            assert load_config(path).request.type in ("c-find", "c-move", "c-get", "c-echo"), path


def test_anonymized_trees_keep_ledger_and_spool_beside_them(tmp_path: Path) -> None:
    """With anonymization on, the ledger (original identifiers) defaults to <output>-private, and a
    request CSV put inside the anonymized tree is warned about."""
    (tmp_path / "anon.script").write_text('<script><e en="T" t="00100010">@empty()</e></script>\n')
    doc = find_config(4242)
    doc["request"]["type"] = "c-get"
    doc["output"] = {"directory": "images", "database_file": "images/requests.csv"}
    doc["anonymization"] = {"enabled": True, "script": "anon.script"}
    config = load_config(write_yaml(tmp_path / "c.yml", doc))
    assert config.output.ledger_file == tmp_path / "images-private" / "c.sqlite3"
    [warning] = config.warnings
    assert warning.startswith(f"output.library_file: {tmp_path / 'images' / 'requests.csv'} is inside the output tree")
    doc["anonymization"]["enabled"] = False
    assert load_config(write_yaml(tmp_path / "c.yml", doc)).output.ledger_file == (
        tmp_path / "images" / ".asyncdicom" / "c.sqlite3"
    )


def test_check_shows_the_window_and_when_it_next_opens(tmp_path: Path) -> None:
    """check says whether the schedule window is open, and when it opens, locally and in UTC."""
    from datetime import UTC, datetime, timedelta

    from tests.cli_helpers import cli_json

    now = datetime.now(UTC)
    for start, end, expected in ((2, 3, "closed, opens in 1h 5"), (-1, 1, "open, closes in 5")):
        doc = find_config(4242)
        doc["schedule"] = {
            "enabled": True,
            "start_time": f"{(now + timedelta(hours=start)):%H:%M}",
            "end_time": f"{(now + timedelta(hours=end)):%H:%M}",
            "timezone": "UTC",
        }
        result, report = cli_json("check", write_yaml(tmp_path / "c.yml", doc))
        assert result.exit_code == 0, result.stderr
        assert report["schedule"].startswith("every day ") and f" (UTC); {expected}" in report["schedule"]
        if start > 0:
            assert " UTC (" in report["schedule"] and report["schedule"].count("Z)") == 1


class TestScheduleWindows:
    """schedule.days and schedule.windows: what loads, and errors that name the key path."""

    def _load(self, tmp_path: Path, schedule: dict[str, object]) -> Config:
        doc = find_config(4242)
        doc["schedule"] = {"enabled": True, **schedule}
        return load_config(write_yaml(tmp_path / "c.yml", doc))

    def test_days_and_ranges(self, tmp_path: Path) -> None:
        config = self._load(tmp_path, {"start_time": "19:00", "end_time": "06:00", "days": ["mon-wed", "Friday"]})
        assert config.schedule.days == (0, 1, 2, 4)
        assert self._load(tmp_path, {"start_time": "08:00", "end_time": "08:00", "days": "fri-mon"}).schedule.days == (
            0,
            4,
            5,
            6,
        )
        assert config.schedule.describe() == "mon-wed, fri 19:00-06:00 (local time)"

    def test_times_to_the_second(self, tmp_path: Path) -> None:
        config = self._load(tmp_path, {"start_time": "19:00:30", "end_time": "06:00"})
        assert (str(config.schedule.start_time), str(config.schedule.end_time)) == ("19:00:30", "06:00:00")
        assert config.schedule.describe() == "every day 19:00:30-06:00 (local time)"
        with pytest.raises(ConfigError, match=r"schedule.end_time: expected a 24-hour time .* got '06:00:60'"):
            self._load(tmp_path, {"start_time": "19:00", "end_time": "06:00:60"})

    def test_windows(self, tmp_path: Path) -> None:
        config = self._load(
            tmp_path,
            {
                "timezone": "Europe/Paris",
                "windows": [
                    {"days": ["mon-fri"], "start_time": "19:00", "end_time": "06:00"},
                    {"days": ["sat", "sun"], "start_time": "00:00", "end_time": "00:00"},
                ],
            },
        )
        assert [w.days for w in config.schedule.all_windows()] == [(0, 1, 2, 3, 4), (5, 6)]
        assert config.schedule.describe() == "mon-fri 19:00-06:00, sat, sun 00:00-00:00 (Europe/Paris)"

    @pytest.mark.parametrize(
        ("schedule", "message"),
        [
            (
                {"start_time": "19:00", "end_time": "06:00", "days": ["mon", "funday"]},
                "schedule.days[1]: 'funday' is not a day",
            ),
            ({"start_time": "19:00", "end_time": "06:00", "days": []}, "schedule.days: expected a list of days"),
            (
                {"windows": [{"days": ["sat"], "start_time": "25:00", "end_time": "06:00"}]},
                "schedule.windows[0].start_time: expected a 24-hour time",
            ),
            (
                {"windows": [{"days": ["sat"], "start_time": "01:00"}]},
                "schedule.windows[0].end_time: required key is missing",
            ),
            (
                {"windows": [{"start_time": "01:00", "end_time": "02:00", "day": ["sat"]}]},
                "schedule.windows[0].day: unknown key; did you mean 'days'?",
            ),
            ({"windows": "weekends"}, "schedule.windows: expected a list of windows"),
            (
                {"windows": [{"start_time": "01:00", "end_time": "02:00"}] * 65},
                "schedule.windows: lists 65 windows; at most 64",
            ),
            (
                {"start_time": "01:00", "end_time": "02:00", "windows": [{"start_time": "01:00", "end_time": "02:00"}]},
                "schedule.start_time: give either schedule.windows or start_time/end_time/days",
            ),
            (
                {"drain_seconds": -1, "start_time": "01:00", "end_time": "02:00"},
                "schedule.drain_seconds: must be 0 or more",
            ),
        ],
    )
    def test_errors_name_the_key_path(self, tmp_path: Path, schedule: dict[str, object], message: str) -> None:
        with pytest.raises(ConfigError) as caught:
            self._load(tmp_path, schedule)
        assert str(caught.value).startswith(message), str(caught.value)
