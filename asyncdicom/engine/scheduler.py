"""Workers: window gate → throttle → association capacity → blocking backend call in a thread.

Each worker owns one :class:`~asyncdicom.net.base.DicomSession` (one association, reused).
Decisions come from the pure :mod:`asyncdicom.engine.retry` and :mod:`asyncdicom.engine.limits`.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

import anyio
from anyio.abc import ObjectReceiveStream

from asyncdicom.config import RequestConfig
from asyncdicom.engine.gates import Throttle, WindowGate
from asyncdicom.engine.limits import AdaptiveConcurrency, LatencyTracker
from asyncdicom.engine.retry import Action, Decision, RetryPolicy, Unreachable, status_category, status_meaning
from asyncdicom.errors import ConnectionFailed, FatalRunError, NetworkError, SilentPeer
from asyncdicom.models import Request, RequestResult, RequestState, narrow
from asyncdicom.net.base import DicomBackend, DicomSession, FindOutcome, RetrieveOutcome
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

    threads: int
    throttle_time: float = 0.0
    max_rate: float = 0.0
    timeout: float = 30.0
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    adaptive_silence: bool = True  # False for retrieves: a big instance may legitimately take long


def settings_for(request: RequestConfig, *, find: bool) -> EngineSettings:
    """The engine's knobs from the config's ``request`` section (``find``: adaptive silence)."""
    return EngineSettings(
        threads=request.threads,
        throttle_time=request.throttle_time,
        max_rate=request.max_rate,
        timeout=request.timeout,
        policy=RetryPolicy(retries=request.retries, give_up_unreachable=request.unreachable_timeout),
        adaptive_silence=find,
    )


async def _find(session: DicomSession, request: Request, threads: anyio.CapacityLimiter) -> Outcome:
    """The default operation: one C-FIND in a worker thread."""
    return await anyio.to_thread.run_sync(session.find, request, limiter=threads)


class _Slot:
    """One worker's claim on the association limiter (held while it keeps an association)."""

    def __init__(self, limiter: anyio.CapacityLimiter) -> None:
        self._limiter = limiter
        self.held = False

    async def acquire(self) -> None:
        if not self.held:
            await self._limiter.acquire_on_behalf_of(self)
            self.held = True

    def release(self) -> None:
        if self.held:
            self.held = False
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
    ) -> None:
        self.backend = backend
        self.settings = settings
        self.sink = sink
        self.stats = stats
        self.gate = gate or WindowGate(None)
        self.throttle = Throttle(settings.max_rate)
        self.concurrency = AdaptiveConcurrency(settings.threads)
        self.latency = LatencyTracker(
            ceiling=settings.timeout, min_samples=50 if settings.adaptive_silence else 1 << 62
        )
        self.operation: Operation = operation or _find
        self._associations = anyio.CapacityLimiter(settings.threads)
        self._threads = anyio.CapacityLimiter(settings.threads + 2)
        self._active: dict[DicomSession, int] = {}
        self.problems = problems or GroupedLog(log)
        self._down_since: float | None = None  # first connection failure of the current run of them
        self._rounds = 0  # rounds of reconnection tries since then
        self._next_round = 0.0  # monotonic time of the next round: every worker tries then

    def __repr__(self) -> str:
        return (
            f"<Scheduler limit={self.concurrency.limit}/{self.settings.threads} "
            f"active={len(self._active)} deadline={self.latency.deadline():.2f}s>"
        )

    async def run(self, requests: Sequence[Request]) -> None:
        """Process every request; raises FatalRunError when the run cannot go on."""
        send, receive = anyio.create_memory_object_stream[Request](0)
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._watchdog)
            async with anyio.create_task_group() as workers:
                for _ in range(self.settings.threads):
                    workers.start_soon(self._worker, receive.clone())
                receive.close()
                async with send:
                    for request in requests:
                        try:
                            await send.send(request)
                        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                            break  # every worker has stopped (their error is what the group raises)
            tg.cancel_scope.cancel()

    async def abort_all(self) -> None:
        """Abort every in-flight association (used on Ctrl-C so workers return promptly)."""
        for session in list(self._active):
            await anyio.to_thread.run_sync(functools.partial(session.abort, silent=False))

    async def _worker(self, receive: ObjectReceiveStream[Request]) -> None:
        session = self.backend.session()
        slot = _Slot(self._associations)
        try:
            async with receive:
                async for request in receive:
                    await self._process(session, request, slot)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(session.close, limiter=self._threads)
                slot.release()

    async def _process(self, session: DicomSession, request: Request, slot: _Slot) -> None:
        """Settle one request, holding an association slot while talking to the PACS."""
        attempt = 0
        received: set[str] = set()  # instances of this request stored by any attempt so far
        while True:
            await self.gate.wait_open()
            await self.throttle.acquire()
            await slot.acquire()
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
            decision = self._decide(outcome, error, attempt)
            if decision.action is Action.DONE:
                assert outcome is not None
                self.latency.add(outcome.elapsed / (outcome.pending + 1))
                if isinstance(outcome, FindOutcome):
                    self.stats.latencies.append(outcome.elapsed)
                self._set_limit(self.concurrency.on_success())
                await self._settle(request, RequestState.DONE, attempt, outcome, None)
                break
            if decision.action is Action.FATAL:
                raise FatalRunError(decision.reason)
            if decision.action is Action.SLOW_DOWN:
                slot.release()
                await anyio.sleep(decision.delay)
                continue
            if decision.action is Action.RECONNECT:
                slot.release()
                await anyio.sleep(decision.delay)
                continue
            if decision.action is Action.RETRY:
                attempt += 1
                self.stats.retries += 1
                if isinstance(outcome, RetrieveOutcome) and outcome.failed_uids:
                    request = narrow(request, outcome.failed_uids) or request
                self.stats.retrying += 1
                try:
                    await anyio.sleep(decision.delay)
                finally:
                    self.stats.retrying -= 1
                continue
            partly = decision.action is Action.PARTIAL or bool(received) or (error is not None and error.received > 0)
            state = RequestState.PARTIAL if partly else RequestState.FAILED
            await self._settle(request, state, attempt, outcome, decision.reason, error, len(received))
            break
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
            if isinstance(outcome, RetrieveOutcome):
                return policy.for_retrieve(outcome, attempt)
            return policy.for_status(outcome.status, attempt)
        assert error is not None
        if isinstance(error, ConnectionFailed):
            return self._reconnect(error, attempt)
        decision = policy.for_error(error, attempt)
        if decision.action is Action.SLOW_DOWN:
            self.stats.rejections += 1
            self._set_limit(self.concurrency.on_rejected())
            self.problems.warning(
                "association refused: PACS busy",
                f"PACS busy ({decision.reason}); holding at most {self.concurrency.limit} associations",
            )
        elif isinstance(error, SilentPeer):
            self.stats.silent += 1
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

    async def _settle(
        self,
        request: Request,
        state: RequestState,
        attempt: int,
        outcome: Outcome | None,
        error: str | None,
        exception: NetworkError | None = None,
        received: int = 0,
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
        )
        if exception is not None and exception.received:
            result = replace(result, received=exception.received)
        if isinstance(outcome, RetrieveOutcome):
            total = max(received, len(outcome.received))
            result = replace(result, counts=outcome.counts, received=total, missing=outcome.failed_uids)
        if state is not RequestState.DONE:
            meaning = f" ({status_meaning(status)})" if status is not None else ""
            where = f"CSV line {request.line}" if request.line else "the request"
            self.problems.warning(
                f"request {state}: {result.category}{meaning}",
                f"{where} {'partly retrieved' if state is RequestState.PARTIAL else 'failed'}: "
                f"{result.error or result.category}{meaning}; see asyncdicom status and docs/troubleshooting.md",
            )
        await self.sink.record(request, result)

    async def _watchdog(self) -> None:
        """Abort associations whose PACS has been silent for longer than the adaptive deadline."""
        while True:
            await anyio.sleep(WATCH_INTERVAL)
            now = time.monotonic()
            for session, attempt in list(self._active.items()):
                since = session.busy_since
                if since is not None and now - since > self.latency.deadline(attempt):
                    self.problems.warning(
                        "silent PACS: association aborted",
                        f"no response for {now - since:.1f} s; aborting the association and retrying",
                    )
                    self._active.pop(session, None)
                    await anyio.to_thread.run_sync(functools.partial(session.abort, silent=True))
