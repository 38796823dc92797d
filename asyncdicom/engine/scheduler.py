"""Workers: window gate → throttle → association capacity → blocking backend call in a thread.

Each worker owns one :class:`~asyncdicom.net.base.DicomSession` (one association, reused).
Decisions come from the pure :mod:`asyncdicom.engine.retry` and :mod:`asyncdicom.engine.limits`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from asyncdicom.config import RequestConfig, ScheduleConfig
from asyncdicom.elements import unusual_values
from asyncdicom.engine import failures
from asyncdicom.engine.gates import Throttle, WindowGate
from asyncdicom.engine.limits import AdaptiveConcurrency, AutoConcurrency, LatencyTracker
from asyncdicom.engine.retry import Action, Decision, RetryPolicy, Unreachable, status_category, status_meaning
from asyncdicom.errors import ConnectionFailed, FatalRunError, NetworkError, SilentPeer, WindowClosed
from asyncdicom.events import emit
from asyncdicom.models import Request, RequestResult, RequestState, SharedBudget, narrow
from asyncdicom.net.base import DicomBackend, DicomSession, FindOutcome, RetrieveOutcome
from asyncdicom.net.pace import Pacer
from asyncdicom.problems import GroupedLog
from asyncdicom.stats import RunStats

log = logging.getLogger("asyncdicom.engine")

WATCH_INTERVAL = 0.1


Outcome = FindOutcome | RetrieveOutcome


class Operation(Protocol):
    """What a worker does with a request on its session (a C-FIND by default)."""

    async def __call__(self, session: DicomSession, request: Request, threads: anyio.CapacityLimiter) -> Outcome:
        """Run the request; raise a NetworkError or return its outcome."""


class ResultSink(Protocol):
    """Where settled requests go (the ledger)."""

    async def record(self, request: Request, result: RequestResult) -> None:
        """Queue a result for durable storage."""


@dataclass(frozen=True)
class EngineSettings:
    """Engine knobs taken from ``request``."""

    threads: int  # the most associations (max_threads with auto)
    auto: bool = False  # request.threads: auto: find the level the PACS serves best
    throttle_time: float = 0.0
    max_rate: float = 0.0
    timeout: float = 30.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    adaptive_silence: bool = True  # False for retrieves: a big instance may legitimately take long
    idle_timeout: float = 300.0  # retrieves: abort after this long with no response and no instance
    drain: float = 60.0  # seconds in-flight requests get to finish when the window closes or a signal comes
    exit_when_closed: bool = False  # schedule.outside_window: exit: end the run when the window closes


def settings_for(request: RequestConfig, *, find: bool, destination: str = "our AE title") -> EngineSettings:
    """The engine's knobs from the config's ``request`` section (``find``: adaptive silence;
    ``destination``: our C-MOVE destination in words, for the 0xA801 message)."""
    return EngineSettings(
        threads=request.workers,
        auto=request.auto_threads,
        throttle_time=request.throttle_time,
        max_rate=request.max_rate,
        timeout=request.timeout,
        idle_timeout=request.idle_timeout,
        policy=RetryPolicy(
            retries=request.retries,
            give_up_unreachable=request.unreachable_timeout,
            jitter=0.25,
            destination=destination,
        ),
        adaptive_silence=find,
    )


def with_schedule(settings: EngineSettings, schedule: ScheduleConfig) -> EngineSettings:
    """The settings with the schedule's drain time and closing behaviour."""
    return replace(settings, drain=schedule.drain_seconds, exit_when_closed=schedule.outside_window == "exit")


async def _find(session: DicomSession, request: Request, threads: anyio.CapacityLimiter) -> Outcome:
    """The default operation: one C-FIND in a worker thread."""
    return await anyio.to_thread.run_sync(session.find, request, limiter=threads)


Hook = Callable[[], Awaitable[None]]


IDLE_GRACE = 1.0  # seconds a worker of a shared job keeps its association with nothing to do


async def _next(receive: MemoryObjectReceiveStream[Request]) -> Request | None:
    """The next request, or None when there are no more."""
    try:
        return await receive.receive()
    except anyio.EndOfStream:
        return None


_NOTHING = Request("", 0, ())


async def _next_within(
    receive: MemoryObjectReceiveStream[Request], seconds: float, keep: Callable[[], bool]
) -> Request | None:
    """The next request if one comes within ``seconds`` and while ``keep()`` holds (None when
    there are no more), else ``_NOTHING``. It looks every 50 ms rather than wait in ``receive``:
    a receive cancelled at its deadline could lose the request handed to it at that moment."""
    deadline = anyio.current_time() + seconds
    while True:
        try:
            return receive.receive_nowait()
        except anyio.WouldBlock:
            pass
        except anyio.EndOfStream:
            return None
        if anyio.current_time() >= deadline or not keep():
            return _NOTHING
        await anyio.sleep(0.05)


async def _each(requests: Iterable[Request] | AsyncIterator[Request]) -> AsyncIterator[Request]:
    if isinstance(requests, AsyncIterator):
        async for request in requests:
            yield request
    else:
        for request in requests:
            yield request


class _Slot:
    """One worker's claim on the association limiter (held while it keeps an association), and
    on the job's shared budget when several hosts run the job."""

    def __init__(self, limiter: anyio.CapacityLimiter, shared: SharedBudget | None = None) -> None:
        self._limiter = limiter
        self._shared = shared
        self.held = False

    async def acquire(self) -> None:
        if not self.held:
            await self._limiter.acquire_on_behalf_of(self)
            if self._shared is not None:
                try:
                    await self._shared.acquire(self)
                except BaseException:
                    self._limiter.release_on_behalf_of(self)
                    raise
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
            if self._shared is not None:
                self._shared.release(self)
            self._limiter.release_on_behalf_of(self)


class Scheduler:
    """Runs requests through ``threads`` workers until all are settled."""

    def __init__(
        self,
        backend: DicomBackend,
        settings: EngineSettings,
        sink: ResultSink,
        stats: RunStats,
        gate: WindowGate | None = None,
        operation: Operation | None = None,
        problems: GroupedLog | None = None,
        on_open: Hook | None = None,
        on_close: Hook | None = None,
        progress: Callable[[DicomSession], float | None] | None = None,
        pacer: Pacer | None = None,
        shared: SharedBudget | None = None,
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.sink = sink
        self.stats = stats
        self.gate = gate or WindowGate(None)
        self.throttle = Throttle(settings.max_rate)
        self.concurrency: AdaptiveConcurrency | AutoConcurrency = (
            AutoConcurrency(settings.threads) if settings.auto else AdaptiveConcurrency(settings.threads)
        )
        self.latency = LatencyTracker(
            ceiling=settings.timeout if settings.adaptive_silence else settings.idle_timeout,
            min_samples=50 if settings.adaptive_silence else 1 << 62,
        )
        self.operation: Operation = operation or _find
        self._associations = anyio.CapacityLimiter(self.concurrency.limit)
        stats.threads = settings.threads
        stats.concurrency = self.concurrency.limit
        self._threads = anyio.CapacityLimiter(settings.threads + 2)
        self._active: dict[DicomSession, int] = {}
        self.problems = problems or GroupedLog(log)
        self._down_since: float | None = None  # first connection failure of the current run of them
        self._rounds = 0  # rounds of reconnection tries since then
        self._next_round = 0.0  # monotonic time of the next round: every worker tries then
        self._on_open, self._on_close = on_open, on_close
        self._progress = progress  # retrieves: when the session's request last delivered an instance
        self._pacer = pacer  # the cap on received bytes: a new request waits while it is in debt
        self._shared = shared  # the job's associations, when several hosts share it
        self._byte_rate = pacer.rate if pacer is not None else 0.0
        self._window_open = False  # requests may start (the schedule is open and on_open has run)
        self._stopping = False  # a signal came: no request starts any more
        self._changed = anyio.Event()  # set (and replaced) when the two flags above change
        self._finished = anyio.Event()  # set (and replaced) each time a request's attempt ends
        self._duplicates: dict[str, int] = {}  # request key → duplicates of its earlier attempts
        self._in_hand = 0  # requests between starting an attempt and being settled or set aside
        self._cut: set[DicomSession] = set()  # sessions aborted by a drain: their attempt does not count
        self._scope: anyio.CancelScope | None = None

    def __repr__(self) -> str:
        return (
            f"<Scheduler limit={self.concurrency.limit}/{self.settings.threads} "
            f"active={len(self._active)} deadline={self.latency.deadline():.2f}s>"
        )

    def share(self, hosts: int) -> None:
        """Several hosts run the job: this one keeps its share (1/``hosts``) of request.max_rate
        and of the byte cap, so that the job as a whole keeps to them."""
        hosts = max(1, hosts)
        self.throttle.set_rate(self.settings.max_rate / hosts)
        if self._pacer is not None:
            self._pacer.set_rate(self._byte_rate / hosts)

    async def run(self, requests: Iterable[Request] | AsyncIterator[Request]) -> None:
        """Process every request (a list, or requests claimed as the run goes); raises
        FatalRunError when the run cannot go on."""
        send, receive = anyio.create_memory_object_stream[Request](0)
        async with anyio.create_task_group() as tg:
            self._scope = tg.cancel_scope
            tg.start_soon(self._watchdog)
            tg.start_soon(self._windows)
            async with anyio.create_task_group() as workers:
                for _ in range(self.settings.threads):
                    workers.start_soon(self._worker, receive.clone())
                receive.close()
                async with send:
                    async for request in _each(requests):
                        if self._stopping:
                            break
                        try:
                            await send.send(request)
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                            break  # every worker has stopped (their error is what the group raises)
            tg.cancel_scope.cancel()

    def _set_state(self, *, window_open: bool | None = None, stopping: bool | None = None) -> None:
        if window_open is not None:
            self._window_open = window_open
        if stopping is not None:
            self._stopping = stopping
        self._changed.set()
        self._changed = anyio.Event()

    async def _may_start(self) -> bool:
        """Wait until a request may start; False once the run is stopping."""
        while not self._stopping and not self._window_open:
            await self._changed.wait()
        return not self._stopping

    async def _windows(self) -> None:
        """Open and close the way for requests as the schedule says; at closing time, drain."""
        while True:
            await self.gate.wait_open()
            if self._on_open is not None:
                await self._on_open()
            self._set_state(window_open=True)
            if self.gate.schedule is not None:
                emit("window", state="open", closes_in=round(self.gate.seconds_until_close()))
            await self.gate.wait_closed()
            self._set_state(window_open=False)
            emit("window", state="closed", in_flight=self._in_hand, drain_seconds=self.settings.drain)
            log.info(
                "the schedule window has closed: no new request starts; %d in flight get %s s to finish",
                self._in_hand,
                f"{self.settings.drain:g}",
            )
            await self.drain(self.settings.drain)
            if self._on_close is not None:
                with anyio.CancelScope(shield=True):
                    await self._on_close()
            if self.settings.exit_when_closed:
                msg = "the schedule window closed; unfinished requests continue on the next run"
                raise WindowClosed(msg)

    async def drain(self, seconds: float) -> None:
        """Give requests in flight ``seconds`` to finish, then abort those left; they stay
        resumable (their attempt does not count, and what they received is kept)."""
        with anyio.move_on_after(seconds):
            while self._in_hand:
                await self._finished.wait()
        left = list(self._active)
        if left:
            log.warning(
                "%d requests still in flight after %s s: aborting them; they resume later", len(left), f"{seconds:g}"
            )
            self._cut.update(left)
            emit("drain-abort", requests=len(left), after_seconds=seconds)
            for session in left:
                await anyio.to_thread.run_sync(functools.partial(session.abort, silent=False))
            with anyio.move_on_after(10):
                while self._in_hand:
                    await self._finished.wait()

    async def stop(self, drain: float | None = None) -> None:
        """After a signal: start nothing more, let requests in flight finish within the drain time
        (the settings' by default), abort the rest, and end :meth:`run`."""
        self._set_state(stopping=True)
        await self.drain(self.settings.drain if drain is None else drain)
        if self._scope is not None:
            self._scope.cancel()

    async def abort_all(self) -> None:
        """Abort every in-flight association (used on Ctrl-C so workers return promptly)."""
        for session in list(self._active):
            await anyio.to_thread.run_sync(functools.partial(session.abort, silent=False))

    async def _worker(self, receive: MemoryObjectReceiveStream[Request]) -> None:
        session = self.backend.session()
        slot = _Slot(self._associations, self._shared)
        try:
            async with receive:
                request: Request | None = await _next(receive)
                while request is not None:
                    await self._process(session, request, slot)
                    if self._shared is None or not slot.held:
                        request = await _next(receive)
                        continue
                    if self._shared.over_share():  # another host waits: the slot goes to the job
                        await anyio.to_thread.run_sync(session.close, limiter=self._threads)
                        slot.release()
                        request = await _next(receive)
                        continue
                    # the claims may be on their way (unless this host has none left to claim)
                    request = await _next_within(receive, IDLE_GRACE, self._shared.keep_idle)
                    if request is not _NOTHING:
                        continue
                    # nothing to do: the job's slot goes to whichever host has work
                    await anyio.to_thread.run_sync(session.close, limiter=self._threads)
                    slot.release()
                    request = await _next(receive)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close, limiter=self._threads)
                slot.release()

    async def _process(self, session: DicomSession, request: Request, slot: _Slot) -> None:
        """Settle one request, holding an association slot while talking to the PACS."""
        attempt = 0
        received: set[str] = set()  # instances of this request stored by any attempt so far
        got_any = False  # some attempt stored instances (counted when the UIDs are unknown)
        while True:
            if not await self._may_start():
                return  # stopping: the request stays pending, and what it received is kept
            await self.throttle.acquire()
            if self._pacer is not None and (debt := self._pacer.debt()) > 0:
                await anyio.sleep(debt)
            await slot.acquire()
            self._in_hand += 1  # until settled or set aside: a drain waits for it
            try:
                self._active[session] = attempt
                self.stats.in_flight += 1
                error: NetworkError | None = None
                outcome: Outcome | None = None
                try:
                    outcome = await self.operation(session, request, self._threads)
                except NetworkError as exc:
                    error = exc
                finally:
                    self.stats.in_flight -= 1
                    self._active.pop(session, None)
                if isinstance(outcome, RetrieveOutcome):
                    received |= outcome.received
                    if outcome.duplicates:
                        self._duplicates[request.key] = self._duplicates.get(request.key, 0) + outcome.duplicates
                got_any = got_any or bool(received) or (error is not None and error.received > 0)
                if session in self._cut:
                    self._cut.discard(session)
                    if outcome is None:  # aborted by the drain: not an attempt; resumes when the way opens
                        slot.release()
                        continue
                decision = self._decide(outcome, error, attempt)
                if decision.action is Action.DONE:
                    assert outcome is not None
                    self.latency.add(outcome.elapsed / (outcome.pending + 1))
                    if isinstance(outcome, FindOutcome):
                        self.stats.latencies.append(outcome.elapsed)
                    work = len(outcome.received) + 1 if isinstance(outcome, RetrieveOutcome) else 1
                    self._set_limit(self.concurrency.on_success(time.monotonic(), work, outcome.elapsed))
                    with anyio.CancelScope(shield=True):  # a stop after the drain must not lose it
                        await self._settle(request, RequestState.DONE, attempt, outcome, None)
                    break
                if decision.action is Action.FATAL:
                    raise FatalRunError(decision.reason)
                if decision.action in (Action.PARTIAL, Action.FAIL):
                    state = (
                        RequestState.PARTIAL if decision.action is Action.PARTIAL or got_any else RequestState.FAILED
                    )
                    with anyio.CancelScope(shield=True):
                        await self._settle(
                            request, state, attempt, outcome, decision.reason, error, len(received), decision.transient
                        )
                    break
            finally:
                self._in_hand -= 1
                self._finished.set()
                self._finished = anyio.Event()
            if decision.action in (Action.SLOW_DOWN, Action.RECONNECT):
                slot.release()
                await anyio.sleep(decision.delay)
                continue
            assert decision.action is Action.RETRY
            attempt += 1
            self.stats.retries += 1
            emit(
                "retry",
                key=request.key,
                line=request.line,
                attempt=attempt + 1,
                reason=decision.reason,
                delay=round(decision.delay, 3),
            )
            if isinstance(outcome, RetrieveOutcome) and outcome.failed_uids:
                request = narrow(request, outcome.failed_uids) or request
            self.stats.retrying += 1
            try:
                await anyio.sleep(decision.delay)
            finally:
                self.stats.retrying -= 1
        if self.settings.throttle_time:
            await anyio.sleep(self.settings.throttle_time)
        if slot.held and self._associations.borrowed_tokens > self._associations.total_tokens:
            # The PACS asked us to hold fewer associations: give this one up.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close, limiter=self._threads)
            slot.release()

    def _decide(self, outcome: Outcome | None, error: NetworkError | None, attempt: int) -> Decision:
        """The policy's decision for one attempt, keeping the counters it depends on."""
        policy = self.settings.policy
        if not isinstance(error, ConnectionFailed):
            self._down_since, self._rounds = None, 0
        if outcome is not None:
            if self.settings.auto and 0xA700 <= outcome.status <= 0xA7FF:  # out of resources: too many
                self._set_limit(self.concurrency.on_rejected(time.monotonic()))
            if isinstance(outcome, RetrieveOutcome):
                return policy.for_retrieve(outcome, attempt)
            return policy.for_status(outcome.status, attempt)
        assert error is not None
        if isinstance(error, ConnectionFailed):
            return self._reconnect(error, attempt)
        decision = policy.for_error(error, attempt)
        if decision.action is Action.SLOW_DOWN:
            self.stats.rejections += 1
            self._set_limit(self.concurrency.on_rejected(time.monotonic()))
            emit("refused", reason=decision.reason, limit=self.concurrency.limit)
            self.problems.warning(
                "association refused: PACS busy",
                f"PACS busy ({decision.reason}); holding at most {self.concurrency.limit} associations",
            )
        elif isinstance(error, SilentPeer):
            self.stats.silent += 1
            if self.settings.auto:  # a timeout: maybe too many associations for the PACS
                self._set_limit(self.concurrency.on_rejected(time.monotonic()))
        return decision

    def _reconnect(self, error: ConnectionFailed, attempt: int) -> Decision:
        """The PACS cannot be reached: every worker waits for the same next round of tries, and the
        run gives up ``give_up_unreachable`` seconds after the first failure, however many workers."""
        now = time.monotonic()
        if self._down_since is None:
            self._down_since, self._rounds, self._next_round = now, 0, now
        if now < self._next_round:  # another worker has planned the next round: join it
            return Decision(Action.RECONNECT, self._next_round - now, str(error))
        self._rounds += 1
        decision = self.settings.policy.for_error(error, attempt, Unreachable(now - self._down_since, self._rounds))
        if decision.action is Action.RECONNECT:
            self._next_round = now + decision.delay
            log.warning("%s; trying again in %.1f s", decision.reason, decision.delay)
        return decision

    def _set_limit(self, limit: int) -> None:
        if self._associations.total_tokens != limit:
            self._associations.total_tokens = limit
            self.stats.concurrency = limit
            emit("concurrency", limit=limit)

    async def _settle(
        self,
        request: Request,
        state: RequestState,
        attempt: int,
        outcome: Outcome | None,
        error: str | None,
        exception: NetworkError | None = None,
        received: int = 0,
        transient: bool = False,
    ) -> None:
        status = outcome.status if outcome else None
        result = RequestResult(
            state=state,
            attempts=attempt + 1,
            status=status,
            category=status_category(status) if status is not None else "network",
            error=error or (outcome.comment if outcome else None),
            matches=outcome.matches if isinstance(outcome, FindOutcome) else (),
            elapsed=outcome.elapsed if outcome else 0.0,
            transient=transient and state is RequestState.FAILED,
        )
        if exception is not None and exception.received:
            result = replace(result, received=exception.received)
        if isinstance(outcome, RetrieveOutcome):
            total = max(received, len(outcome.received))
            result = replace(
                result,
                counts=outcome.counts,
                received=total,
                missing=outcome.failed_uids,
                duplicates=self._duplicates.pop(request.key, 0),
            )
            for uid in outcome.refused:
                self.stats.refused_classes[uid] = self.stats.refused_classes.get(uid, 0) + 1
        where = f"CSV line {request.line}" if request.line else "the request"
        unusual = unusual_values(result.matches)
        if unusual:
            self.problems.warning(
                "values with control, direction or undecodable characters",
                f"{where}: the PACS returned {unusual} value(s) with control characters, marks that change the "
                "text's direction, or bytes not valid in their character set; the CSV files show those as "
                "U+FFFD, the ledger keeps them as received",
            )
        if state is not RequestState.DONE:
            meaning = f" ({status_meaning(status)})" if status is not None else ""
            failed_ops = bool(result.missing) or bool((result.counts or {}).get("failed"))
            failure = failures.for_status(status, failed_ops) if status is not None else None
            if isinstance(outcome, RetrieveOutcome) and outcome.refused:
                failure = failures.REFUSED_CLASS
            if failure is None:
                failure = failures.for_error(exception) if exception is not None else failures.SUB_OPERATIONS
            self.problems.warning(
                f"request {state}: {result.category}{meaning}",
                f"{where} {'partly retrieved' if state is RequestState.PARTIAL else 'failed'}: "
                f"{result.error or result.category}{meaning}; what to do: {failure.advice} "
                "(docs/troubleshooting.md)",
            )
        await self.sink.record(request, result)

    async def _watchdog(self) -> None:
        """Abort associations whose PACS has been silent for longer than the adaptive deadline."""
        while True:
            await anyio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            for session, attempt in list(self._active.items()):
                since = session.busy_since
                if since is not None and self._progress is not None:
                    since = max(since, self._progress(session) or since)
                if since is not None and now - since > self.latency.deadline(attempt):
                    what = "no response" if self._progress is None else "no response and no instance"
                    emit("silent", seconds=round(now - since, 1), attempt=attempt + 1)
                    self.problems.warning(
                        "silent PACS: association aborted",
                        f"{what} for {now - since:.1f} s; aborting the association and retrying",
                    )
                    self._active.pop(session, None)
                    await anyio.to_thread.run_sync(functools.partial(session.abort, silent=True))
