"""``asyncdicom plan``: what a batch covers, before anything is retrieved.

Each request is asked of the PACS as a C-FIND at its own level, for the keys that identify the
studies and series it matches and for the "Number of … Related Instances" attribute of that
level. Where the PACS does not return that number, the matches are counted one level down
(a series' instances by IMAGE-level matches). Bytes are estimated from the instances this
ledger already holds (their mean size) or, without any, from a stated assumption; the duration
from the instance rate of the ledger's last runs, and it is compared with the schedule window.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from asyncdicom.config import Config
from asyncdicom.elements import ElementSpec, parse_element, parse_path
from asyncdicom.engine.scheduler import Scheduler, settings_for
from asyncdicom.ledger import open_job_ledger
from asyncdicom.models import Request, RequestResult
from asyncdicom.net.base import DicomBackend
from asyncdicom.plan import Plan
from asyncdicom.stats import RunStats

COUNTS = {
    "PATIENT": "NumberOfPatientRelatedInstances",
    "STUDY": "NumberOfStudyRelatedInstances",
    "SERIES": "NumberOfSeriesRelatedInstances",
}
BELOW = {"PATIENT": "STUDY", "STUDY": "SERIES", "SERIES": "IMAGE"}
UNIQUE = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
KEYS = ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "AccessionNumber")
ASSUMED_INSTANCE_BYTES = 525_000  # a 512×512 16-bit CT slice with its header


@dataclass
class PlanReport:
    """What the batch covers, and how long it should take."""

    requests: int
    unmatched_lines: list[int] = field(default_factory=list)
    studies: int = 0
    series: int = 0
    instances: int = 0
    counted_below: int = 0  # matches whose instances were counted one level down
    failed_lines: list[int] = field(default_factory=list)  # requests the PACS refused to answer
    bytes: int = 0
    bytes_basis: str = ""
    seconds: float | None = None
    rate_basis: str = ""
    window: str = ""  # whether it fits the schedule window

    def to_json(self) -> dict[str, Any]:
        return {"schema": 1, "command": "plan", **asdict(self)}


class _Collector:
    def __init__(self) -> None:
        self.results: dict[str, RequestResult] = {}

    async def record(self, request: Request, result: RequestResult) -> None:
        self.results[request.key] = result


def _query(key: str, line: int, level: str, given: dict[str, str]) -> Request:
    """A C-FIND at ``level`` for the identifying keys, with ``given`` values, and the level's count."""
    specs = [ElementSpec(parse_path("QueryRetrieveLevel"), level)]
    for keyword in KEYS:
        if keyword in given or keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
            specs.append(ElementSpec(parse_path(keyword), given.get(keyword) or None))
    if level in COUNTS:
        specs.append(parse_element(COUNTS[level]))
    if level == "STUDY":
        specs.append(parse_element("NumberOfStudyRelatedSeries"))
    return Request(key, line, tuple(specs))


async def _finds(config: Config, backend: DicomBackend, queries: list[Request]) -> dict[str, RequestResult]:
    settings = settings_for(config.request, find=True)
    sink = _Collector()
    await Scheduler(backend, settings, sink, RunStats(len(queries), 0, config.request.workers)).run(queries)
    return sink.results


def _given(request: Request) -> dict[str, str]:
    return {
        s.leaf.keyword: s.value for s in request.elements if len(s.path) == 1 and s.value and s.leaf.keyword in KEYS
    }


async def count(config: Config, plan: Plan, backend: DicomBackend) -> PlanReport:
    """Ask the PACS what each request matches and count studies, series and instances."""
    report = PlanReport(requests=len(plan.requests))
    studies: set[str] = set()
    series: set[str] = set()
    series_numbers = 0  # Number of Study Related Series, where the PACS gives it
    pending = [_query(r.key, r.line, r.level or "STUDY", _given(r)) for r in plan.requests]
    matched: dict[int, bool] = defaultdict(bool)
    first_pass = True
    while pending:
        results = await _finds(config, backend, pending)
        below: list[Request] = []
        for query in pending:
            result = results.get(query.key)
            level = query.level or "STUDY"
            if result is None or result.state != "done":
                report.failed_lines.append(query.line)
                continue
            matched[query.line] |= bool(result.matches)
            for index, match in enumerate(result.matches):
                studies.update(v for v in [match.get("StudyInstanceUID")] if v)
                series.update(v for v in [match.get("SeriesInstanceUID")] if v)
                if level == "IMAGE":
                    report.instances += 1
                    continue
                number = match.get(COUNTS[level], "")
                if number.strip().isdigit():
                    report.instances += int(number)
                    related = match.get("NumberOfStudyRelatedSeries", "").strip() if level == "STUDY" else ""
                    series_numbers += int(related) if related.isdigit() else 0  # else counted below, by UID
                    continue
                report.counted_below += first_pass
                narrowed = {k: match[k] for k in KEYS if match.get(k)}
                below.append(_query(f"{query.key}/{index}", query.line, BELOW[level], narrowed))
        pending, first_pass = below, False
    report.studies, report.series = len(studies), len(series) + series_numbers
    report.unmatched_lines = sorted(line for line, hit in matched.items() if not hit)
    report.failed_lines = sorted(set(report.failed_lines))
    return report


@dataclass(frozen=True, slots=True)
class Sample:
    """A short retrieve made for the estimate: how many instances, bytes and seconds, of how many requests."""

    requests: int
    instances: int
    bytes: int
    seconds: float


async def estimate(config: Config, report: PlanReport, sample: Sample | None = None) -> PlanReport:
    """Bytes and duration from what this ledger already knows, else from ``sample``; the fit in the
    schedule window. The plan is kept in the ledger's meta table."""
    async with open_job_ledger(config) as ledger:
        rows = [row for row in await ledger.instance_rows() if row.state in ("stored", "renamed")]
        runs = [run for run in await ledger.runs(limit=20) if run.finished and run.counts.get("instances")]
        if rows:
            mean = sum(row.size for row in rows) / len(rows)
            report.bytes = int(mean * report.instances)
            report.bytes_basis = f"the mean size of the {len(rows)} instances this ledger holds"
        elif sample is not None and sample.instances:
            report.bytes = int(sample.bytes / sample.instances * report.instances)
            report.bytes_basis = f"the mean size of the {sample.instances} instances of a sample retrieve"
        else:
            report.bytes = ASSUMED_INSTANCE_BYTES * report.instances
            report.bytes_basis = f"an assumed {ASSUMED_INSTANCE_BYTES / 1e6:.3f} MB per instance (a CT slice)"
        if runs:
            instances = sum(run.counts["instances"] for run in runs)
            seconds = sum((run.finished or run.started) - run.started for run in runs)
            rate = instances / seconds if seconds > 0 else 0.0
            if rate > 0:
                report.seconds = report.instances / rate
                report.rate_basis = f"{rate:.0f} instances/s, as measured by this ledger's last {len(runs)} runs"
        if report.seconds is None and sample is not None and sample.instances and sample.seconds > 0:
            rate = sample.instances / sample.seconds
            report.seconds = report.instances / rate
            report.rate_basis = (
                f"{rate:.0f} instances/s, as measured by retrieving {sample.requests} requests as a sample "
                "(its files were deleted)"
            )
        if report.seconds is None:
            report.rate_basis = "no earlier run of this ledger to measure a rate by (plan --sample N makes one)"
        report.window = _window(config, report.seconds)
        await ledger.remember("plan", json.dumps(report.to_json()))
    return report


def _window(config: Config, seconds: float | None) -> str:
    schedule = config.schedule
    if not schedule.enabled or schedule.start_time is None or schedule.end_time is None:
        return "no schedule window: runs whenever started"
    day = date(2000, 1, 1)
    start = datetime.combine(day, schedule.start_time, tzinfo=UTC)
    end = datetime.combine(day, schedule.end_time, tzinfo=UTC)
    length = (end - start) % timedelta(days=1) or timedelta(days=1)
    if seconds is None:
        return f"a window of {length.total_seconds() / 3600:.1f} h a day; the duration is unknown"
    nights = max(1, math.ceil(seconds / length.total_seconds()))
    if nights == 1:
        return f"fits in one {length.total_seconds() / 3600:.1f} h window"
    return f"needs about {nights} windows of {length.total_seconds() / 3600:.1f} h"


def as_find(config: Config) -> Config:
    """The config with its request as a C-FIND (the model stays), for asking what it covers."""
    return replace(config, request=replace(config.request, type="c-find"))
