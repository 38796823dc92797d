"""The scheduler with MockBackend: settling, retries, silence, rejections, fatal errors."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from datetime import time as clock_time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import anyio
import pytest

from asyncdicom.elements import parse_element
from asyncdicom.engine.gates import WindowGate
from asyncdicom.engine.retry import RetryPolicy
from asyncdicom.engine.schedule import Schedule, Window
from asyncdicom.engine.scheduler import EngineSettings, Scheduler
from asyncdicom.errors import (
    AssociationAborted,
    AssociationRejected,
    ConnectionFailed,
    FatalRunError,
    WindowClosed,
    leaves,
)
from asyncdicom.events import recording
from asyncdicom.models import Request, RequestResult
from asyncdicom.net.base import FindOutcome
from asyncdicom.net.mock import SILENT, MockBackend
from asyncdicom.stats import RunStats

pytestmark = pytest.mark.anyio


def _requests(n: int) -> list[Request]:
    return [
        Request(f"k{i}", i + 2, (parse_element("QueryRetrieveLevel=STUDY"), parse_element(f"PatientID={i}")))
        for i in range(n)
    ]


class Sink:
    def __init__(self) -> None:
        self.results: dict[str, RequestResult] = {}

    async def record(self, request: Request, result: RequestResult) -> None:
        assert request.key not in self.results, "a request was settled twice"
        self.results[request.key] = result


def _ok(request: Request) -> FindOutcome:
    return FindOutcome(status=0, matches=({"PatientID": request.key},), elapsed=0.001, pending=1)


def _scheduler(backend: MockBackend, sink: Sink, n: int, **settings: object) -> Scheduler:
    opts: dict[str, object] = {"threads": 4, "timeout": 30.0, "policy": RetryPolicy(retries=2, base_delay=0.01)}
    opts.update(settings)
    return Scheduler(backend, EngineSettings(**opts), sink, RunStats(n, 0, int(opts["threads"])))  # type: ignore[arg-type]


async def test_every_request_settled_once() -> None:
    """Each request is recorded exactly once; each worker had one session, closed at the end."""
    backend, sink = MockBackend(_ok), Sink()
    await _scheduler(backend, sink, 50).run(_requests(50))
    assert len(sink.results) == 50
    assert {r.state for r in sink.results.values()} == {"done"}
    assert len(backend.sessions) == 4
    assert all(s.closed for s in backend.sessions)


async def test_failure_status_is_recorded() -> None:
    """A failure status settles the request as failed with its status and reason."""
    backend, sink = MockBackend(lambda r: FindOutcome(status=0xC000, comment="bad query")), Sink()
    await _scheduler(backend, sink, 1).run(_requests(1))
    result = sink.results["k0"]
    assert (result.state, result.status, result.category, result.attempts) == ("failed", 0xC000, "failure", 1)
    assert result.error == "failure status 0xC000"


async def test_silent_request_is_aborted_and_retried() -> None:
    """A request the PACS never answers is aborted at the deadline and retried on a fresh try."""
    calls: Counter[str] = Counter()
    lock = threading.Lock()

    def handler(request: Request) -> object:
        with lock:
            calls[request.key] += 1
            first = calls[request.key] == 1
        return SILENT if request.key == "k3" and first else _ok(request)

    backend, sink = MockBackend(handler), Sink()
    scheduler = _scheduler(backend, sink, 5, timeout=0.3)
    start = time.monotonic()
    await scheduler.run(_requests(5))
    assert time.monotonic() - start < 5
    assert sink.results["k3"].state == "done"
    assert sink.results["k3"].attempts == 2
    assert (scheduler.stats.silent, scheduler.stats.retries) == (1, 1)


async def test_silence_deadline_adapts_to_latency() -> None:
    """After fast responses, a silent request is given up long before the 30 s DIMSE timeout."""
    count = Counter[str]()

    def handler(request: Request) -> object:
        count[request.key] += 1
        return SILENT if request.key == "k80" and count[request.key] == 1 else _ok(request)

    backend, sink = MockBackend(handler), Sink()
    scheduler = _scheduler(backend, sink, 100, threads=1, timeout=30.0)
    start = time.monotonic()
    await scheduler.run(_requests(100))
    assert time.monotonic() - start < 10
    assert scheduler.stats.silent == 1
    assert len(sink.results) == 100


async def test_transient_rejections_lower_concurrency() -> None:
    """A PACS that rejects associations makes the engine hold fewer, and nothing fails."""
    rejections = iter(range(3))

    def handler(request: Request) -> FindOutcome:
        if next(rejections, None) is not None:
            raise AssociationRejected(2, 3, 2, "local limit exceeded")
        return _ok(request)

    backend, sink = MockBackend(handler), Sink()
    scheduler = _scheduler(backend, sink, 20)
    await scheduler.run(_requests(20))
    assert {r.state for r in sink.results.values()} == {"done"}
    assert scheduler.stats.rejections == 3
    assert scheduler.concurrency.limit == 1
    assert "limit=1/4" in repr(scheduler)


async def test_permanent_rejection_stops_the_run() -> None:
    """A permanent rejection raises FatalRunError with the PACS's reason."""

    def handler(request: Request) -> FindOutcome:
        raise AssociationRejected(1, 1, 3, "calling AE title not recognised")

    backend, sink = MockBackend(handler), Sink()
    with pytest.raises(BaseExceptionGroup) as info:
        await _scheduler(backend, sink, 5).run(_requests(5))
    assert info.group_contains(FatalRunError, match="calling AE title not recognised")
    assert sink.results == {}


async def test_fatal_error_while_the_feeder_waits_raises_only_the_error() -> None:
    """With one worker the feeder is blocked handing over the next request when the worker stops
    with a fatal error: the run raises that error alone (the feeder's BrokenResourceError once
    escaped beside it and surfaced as "internal error: ExceptionGroup")."""

    def handler(request: Request) -> FindOutcome:
        raise AssociationRejected(1, 1, 3, "calling AE title not recognised")

    for _ in range(20):  # the race needed the worker to die while the feeder waited
        with pytest.raises(BaseExceptionGroup) as info:
            await _scheduler(MockBackend(handler), Sink(), 5, threads=1).run(_requests(5))
        assert [type(leaf) for leaf in leaves(info.value)] == [FatalRunError]


async def test_unreachable_pacs_gives_up_after_the_same_time_for_any_thread_count() -> None:
    """Connection failures are retried in rounds shared by every worker, and the run stops once the
    PACS has been unreachable for give_up_unreachable seconds, whatever the number of workers."""

    def handler(request: Request) -> FindOutcome:
        raise ConnectionFailed("Unable to connect")

    elapsed = {}
    for threads in (1, 4):
        policy = RetryPolicy(retries=2, base_delay=0.05, give_up_unreachable=1.0)
        start = time.monotonic()
        with pytest.raises(BaseExceptionGroup) as info:
            await _scheduler(MockBackend(handler), Sink(), 8, threads=threads, policy=policy).run(_requests(8))
        elapsed[threads] = time.monotonic() - start
        assert info.group_contains(FatalRunError, match=r"gave up after 1 s \(request.unreachable_timeout\)")
    assert 1.0 <= elapsed[1] < 1.5
    assert 1.0 <= elapsed[4] < 1.5


async def test_throttle_time_pauses_after_each_request() -> None:
    """throttle_time keeps its pydicom-batch meaning: each worker pauses after each request."""
    backend, sink = MockBackend(_ok), Sink()
    start = time.monotonic()
    await _scheduler(backend, sink, 5, threads=1, throttle_time=0.05).run(_requests(5))
    assert time.monotonic() - start >= 0.25
    assert len(sink.results) == 5


async def test_max_rate_limits_requests_per_second() -> None:
    """max_rate spaces requests out across all workers."""
    backend, sink = MockBackend(_ok), Sink()
    start = time.monotonic()
    await _scheduler(backend, sink, 11, threads=4, max_rate=20.0).run(_requests(11))
    assert time.monotonic() - start >= 0.45


class _Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


OPEN = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)  # 20:00 in New York: inside 19:00-06:00
CLOSED = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)  # 07:00 in New York


def _gated(backend: MockBackend, sink: Sink, clock: _Clock, **settings: object) -> tuple[Scheduler, dict[str, Any]]:
    """A one-thread scheduler behind a 19:00-06:00 New York window read from ``clock``; its open and
    close hooks record how many requests the backend had seen at each call."""
    seen: dict[str, Any] = {"opened": [], "closed": [], "closed_event": anyio.Event()}
    calls: list[str] = settings.pop("calls")  # type: ignore[assignment]

    async def opened() -> None:
        seen["opened"].append(len(calls))

    async def closed() -> None:
        seen["closed"].append(len(calls))
        seen["closed_event"].set()

    schedule = Schedule((Window(clock_time(19, 0), clock_time(6, 0)),), ZoneInfo("America/New_York"))
    gate = WindowGate(schedule, now=clock, poll=0.005)
    opts: dict[str, object] = {"threads": 1, "policy": RetryPolicy(retries=2, base_delay=0.01), "drain": 0.2}
    opts.update(settings)
    scheduler = Scheduler(
        backend,
        EngineSettings(**opts),
        sink,
        RunStats(5, 0, 1),
        gate,
        on_open=opened,
        on_close=closed,  # type: ignore[arg-type]
    )
    return scheduler, seen


async def test_window_close_drains_and_the_run_continues_when_it_reopens() -> None:
    """At closing time no request starts; the one in flight past the drain is aborted without
    counting as an attempt; the way closes (hook) and reopens with the window, and every request
    ends done."""
    calls: list[str] = []
    first = threading.Event()

    def handler(request: Request) -> object:
        calls.append(request.key)
        if request.key == "k0" and not first.is_set():
            first.set()
            return SILENT
        return _ok(request)

    backend, sink, clock = MockBackend(handler), Sink(), _Clock(OPEN)
    scheduler, seen = _gated(backend, sink, clock, calls=calls)

    async def control() -> None:
        await anyio.to_thread.run_sync(backend.silent_started.wait)
        clock.now = CLOSED
        await seen["closed_event"].wait()
        clock.now = OPEN + timedelta(days=1)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(control)
            await scheduler.run(_requests(5))
    assert seen["opened"] == [0, 1]  # nothing was sent between closing and reopening
    assert seen["closed"] == [1]
    assert calls == ["k0", "k0", "k1", "k2", "k3", "k4"]
    assert {key: (r.state, r.attempts) for key, r in sink.results.items()} == {f"k{i}": ("done", 1) for i in range(5)}
    assert scheduler.stats.retries == 0 and scheduler.stats.silent == 0


async def test_window_close_with_exit_ends_the_run_after_the_drain(tmp_path: Path) -> None:
    """schedule.outside_window: exit: after the drain the run ends with WindowClosed; the request
    cut by the drain is not recorded (it stays pending, resumable), and nothing else started."""
    calls: list[str] = []

    def handler(request: Request) -> object:
        calls.append(request.key)
        return SILENT if request.key == "k1" else _ok(request)

    backend, sink, clock = MockBackend(handler), Sink(), _Clock(OPEN)
    scheduler, seen = _gated(backend, sink, clock, calls=calls, exit_when_closed=True)

    async def control() -> None:
        await anyio.to_thread.run_sync(backend.silent_started.wait)
        clock.now = CLOSED

    async def go() -> None:
        async with anyio.create_task_group() as tg:
            tg.start_soon(control)
            await scheduler.run(_requests(5))

    with anyio.fail_after(10), pytest.raises(BaseException) as caught, recording(tmp_path / "e.jsonl"):
        await go()
    assert any(isinstance(leaf, WindowClosed) for leaf in leaves(caught.value))
    events = [json.loads(line) for line in (tmp_path / "e.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["window", "window", "drain-abort"]
    assert (events[0]["state"], events[1]["state"], events[2]["requests"]) == ("open", "closed", 1)
    assert calls == ["k0", "k1"]
    assert set(sink.results) == {"k0"}
    assert seen["closed"] == [2]


async def test_stop_lets_the_request_in_flight_finish() -> None:
    """A signal's stop: the request in flight completes within the drain and is recorded as done;
    no other request starts; run() returns."""
    calls: list[str] = []
    release = threading.Event()
    started = threading.Event()

    def handler(request: Request) -> object:
        calls.append(request.key)
        started.set()
        release.wait(5)
        return _ok(request)

    backend, sink = MockBackend(handler), Sink()
    scheduler = _scheduler(backend, sink, 5, threads=1, drain=5.0)

    async def control() -> None:
        await anyio.to_thread.run_sync(started.wait)
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.stop)
            await anyio.wait_all_tasks_blocked()
            release.set()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(control)
            await scheduler.run(_requests(5))
    assert calls == ["k0"]
    assert {k: r.state for k, r in sink.results.items()} == {"k0": "done"}


async def test_a_request_that_received_instances_is_partial_not_failed() -> None:
    """Instances arrived in the first attempt, then the PACS froze through every retry: the request
    is partial (a plain rerun continues it), never failed (a rerun used to skip it)."""
    attempts: list[int] = []

    def handler(request: Request) -> object:
        attempts.append(1)
        error = AssociationAborted("the association was aborted")
        error.received = 5 if len(attempts) == 1 else 0
        raise error

    async def operation(session: Any, request: Request, threads: anyio.CapacityLimiter) -> Any:
        return await anyio.to_thread.run_sync(session.retrieve, request, 1, None)

    sink = Sink()
    settings = EngineSettings(threads=1, policy=RetryPolicy(retries=2, base_delay=0.01))
    scheduler = Scheduler(MockBackend(handler), settings, sink, RunStats(1, 0, 1), operation=operation)
    await scheduler.run(_requests(1))
    result = sink.results["k0"]
    assert (result.state, result.attempts, len(attempts)) == ("partial", 3, 3)


async def test_a_shared_job_divides_the_rates_among_its_hosts() -> None:
    """Several hosts run the job: each keeps its share of request.max_rate and of the byte cap,
    re-divided when the number of hosts changes (never below one host)."""
    from asyncdicom.net.pace import Pacer

    pacer = Pacer(8 * 1024 * 1024)
    scheduler = Scheduler(
        MockBackend(_ok),
        EngineSettings(threads=2, max_rate=6.0),
        Sink(),
        RunStats(1, 0, 2),
        pacer=pacer,
    )
    scheduler.share(3)
    assert (scheduler.throttle._bucket.rate, pacer.rate) == (2.0, 8 * 1024 * 1024 / 3)
    scheduler.share(0)  # the count is the database's; this host runs the job in any case
    assert (scheduler.throttle._bucket.rate, pacer.rate) == (6.0, 8 * 1024 * 1024)


class _Budget:
    """A shared budget of one slot, as the PostgreSQL ledger's: who holds it, and how often it was taken."""

    def __init__(self, keep: bool = True, over: bool = False) -> None:
        self.held: set[object] = set()
        self.acquired = 0
        self.free = anyio.Event()
        self.keep = keep  # whether idle workers keep their slot for the grace (False: nothing left to claim)
        self.over = over  # this host holds more than its share while another host waits

    async def acquire(self, owner: object) -> None:
        while self.held:
            await self.free.wait()
        self.held.add(owner)
        self.acquired += 1

    def release(self, owner: object) -> None:
        self.held.discard(owner)
        self.free.set()
        self.free = anyio.Event()

    def keep_idle(self) -> bool:
        return self.keep

    def over_share(self) -> bool:
        return self.over


async def test_workers_hold_the_shared_budget_while_talking_and_give_it_up_when_idle() -> None:
    """With a shared budget of one slot, four workers settle every request one association at a
    time, and every slot is given back at the end."""
    backend, sink, budget = MockBackend(_ok), Sink(), _Budget()
    scheduler = Scheduler(backend, EngineSettings(threads=4, timeout=30.0), sink, RunStats(12, 0, 4), shared=budget)
    await scheduler.run(_requests(12))
    assert len(sink.results) == 12
    assert budget.acquired >= 1 and not budget.held  # taken to talk, given back by the idle workers


async def test_an_idle_worker_gives_its_slot_up_at_once_when_its_host_has_nothing_left_to_claim() -> None:
    """The host's claims found nothing left (the rest is held by other hosts): a worker that
    settled its request gives the job's slot up at once, not after the idle grace, so that a
    host with work gets it."""
    from asyncdicom.engine.scheduler import IDLE_GRACE

    backend, sink, budget = MockBackend(_ok), Sink(), _Budget(keep=False)
    first, second = _requests(2)
    given_up = 0.0

    async def claims() -> AsyncIterator[Request]:
        nonlocal given_up
        yield first
        start = anyio.current_time()
        with anyio.fail_after(10):
            while not sink.results or budget.held:  # settled, then the slot goes
                await budget.free.wait()
        given_up = anyio.current_time() - start
        yield second

    scheduler = Scheduler(backend, EngineSettings(threads=1, timeout=30.0), sink, RunStats(2, 0, 1), shared=budget)
    await scheduler.run(claims())
    assert set(sink.results) == {first.key, second.key}
    assert given_up < IDLE_GRACE / 2
    assert budget.acquired == 2  # taken again for the second request


@pytest.mark.parametrize("over", [False, True])
async def test_a_worker_beyond_its_hosts_share_gives_its_slot_up_after_each_request(over: bool) -> None:
    """While its host holds more than its share of the job's slots and another host waits, a
    worker gives its slot (and association) up when its request ends, even with the next
    request at hand; within its share it keeps both."""
    backend, sink, budget = MockBackend(_ok), Sink(), _Budget(over=over)
    scheduler = Scheduler(backend, EngineSettings(threads=1, timeout=30.0), sink, RunStats(3, 0, 1), shared=budget)
    await scheduler.run(_requests(3))
    assert len(sink.results) == 3
    assert budget.acquired == (3 if over else 1)  # given up and taken again for each request, or kept
