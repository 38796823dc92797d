"""Connections to the ledger's database that reconnect when the server went away, and the
notifications by which hosts of a job tell each other that something was freed."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from asyncdicom.errors import LedgerError
from asyncdicom.ledger.postgres.driver import DriverError, Lost, Session, connect

log = logging.getLogger("asyncdicom.ledger")

CONNECT_TIMEOUT = 10  # seconds to reach the server
STATEMENT_TIMEOUT_MS = 120_000  # no statement of ours takes minutes: a hung server is an error
_T = TypeVar("_T")


class DatabaseLost(LedgerError):
    """The database did not answer for as long as a unit of work could wait (``why``)."""

    def __init__(self, message: str, why: str) -> None:
        super().__init__(message)
        self.why = why


UNIT_LIMIT = STATEMENT_TIMEOUT_MS / 1000 + CONNECT_TIMEOUT  # no unit of work may take longer


class Connection:
    """One server connection that reconnects when the server went away, for up to ``patience``
    seconds, and runs each unit of work in a transaction of its own.

    Each try of a unit is bounded on this side too: by what is left of ``patience`` when
    ``bounded`` (leases, commits: short by nature), else by :data:`UNIT_LIMIT`. A server that
    stops answering without closing the connection (a network cut that drops packets, a frozen
    peer) would otherwise hold a heartbeat for as long as TCP retransmits (many minutes)."""

    def __init__(
        self,
        url: str,
        where: str,
        patience: float,
        *,
        bounded: bool = False,
        idle: float = 30.0,
        on_lost: Callable[[str], str] | None = None,
    ) -> None:
        self.url, self.where, self.patience, self.bounded = url, where, patience, bounded
        self.on_lost = on_lost  # told why when patience runs out; returns the message to raise
        self.idle = idle  # the server ends a transaction left open this long (its client is gone)
        self._conn: Session | None = None
        self._lock = anyio.Lock()
        self._trying: anyio.CancelScope | None = None  # the try under way
        self.gone: str | None = None  # set by give_up()
        self._setup: Callable[[Session], Awaitable[None]] | None = None  # run on each new session

    async def keep(self, setup: Callable[[Session], Awaitable[None]]) -> None:
        """Run ``setup`` on the session now, and again on each new one after a reconnect (set
        afterwards: a reconnect within this first run would otherwise run it twice there)."""
        await self.statement(setup)
        self._setup = setup

    async def _connect(self) -> Session:
        return await connect(
            self.url,
            connect_timeout=CONNECT_TIMEOUT,
            application_name="asyncdicom",
            # a host cut off mid-transaction would otherwise keep its row locks (and so its
            # requests, past its lease) for as long as the server's TCP takes to notice (the
            # server's keepalives find a vanished client within half a minute); on this side,
            # every try of a unit of work is bounded in time (see the class)
            settings={
                "statement_timeout": STATEMENT_TIMEOUT_MS,
                "idle_in_transaction_session_timeout": round(self.idle * 1000),
                "tcp_keepalives_idle": 10,
                "tcp_keepalives_interval": 5,
                "tcp_keepalives_count": 3,
            },
        )

    async def open(self) -> None:
        try:
            self._conn = await self._connect()
        except DriverError as exc:
            msg = (
                f"Unable to reach the ledger database {self.where} as {exc}; check output.ledger_url, "
                "that PostgreSQL runs there, and PGPASSWORD or ~/.pgpass for its password"
            )
            raise LedgerError(msg) from None

    async def run(
        self,
        work: Callable[[Session], Awaitable[_T]],
        *,
        retry: bool = True,
        transaction: bool = True,
        bounded: bool | None = None,
    ) -> _T:
        """``work(connection)`` in a transaction (or as it is: ``transaction=False`` for work that
        opens its own or is a single statement); on a lost connection, reconnect and run it again
        (every unit of work here may run twice) until ``patience`` runs out. ``bounded``: this
        unit's tries end with what is left of ``patience`` (the connection's choice by default)."""
        deadline = time.monotonic() + self.patience
        bounded = self.bounded if bounded is None else bounded
        delay = 0.2
        async with self._lock:
            while True:
                if self.gone is not None:
                    raise LedgerError(self.gone)
                limit = max(0.5, deadline - time.monotonic()) if bounded else UNIT_LIMIT
                why = f"no answer within {limit:.3g} s"
                with anyio.move_on_after(limit) as self._trying:
                    try:
                        return await self._try(work, transaction)
                    except Lost as exc:
                        why = str(exc)
                    except DriverError as exc:
                        msg = f"Unable to use the ledger database {self.where} as {exc}"
                        raise LedgerError(msg) from None
                    finally:
                        self._trying = None  # give_up() cancels only a try under way
                if self.gone is not None:
                    raise LedgerError(self.gone)
                if not retry or time.monotonic() + delay > deadline:
                    msg = (
                        f"Lost the ledger database {self.where} as {why}; what was committed is "
                        "kept, and a new run continues from there"
                    )
                    if self.on_lost is not None and retry:  # patience ran out (not a single try)
                        msg = self.on_lost(why)
                    raise DatabaseLost(msg, why)
                log.warning("the ledger database %s did not answer (%s); trying again", self.where, why)
                if self._conn is not None:
                    with contextlib.suppress(Exception):
                        await self._conn.close()
                self._conn = None
                await anyio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def statement(self, work: Callable[[Session], Awaitable[_T]], *, bounded: bool | None = None) -> _T:
        """As :meth:`run`, for ``work`` that is a single statement (atomic by itself): sent as it
        is, without BEGIN and COMMIT (a round trip each)."""
        return await self.run(work, transaction=False, bounded=bounded)

    def give_up(self, reason: str) -> None:
        """The database is lost for this host (its heartbeat said so): the unit of work under
        way ends now, and every later one at once, with ``reason``."""
        self.gone = reason
        if self._trying is not None:
            self._trying.cancel()

    async def _try(self, work: Callable[[Session], Awaitable[_T]], transaction: bool) -> _T:
        if self._conn is None or self._conn.closed:
            self._conn = await self._connect()
            if self._setup is not None:
                await self._setup(self._conn)
        if not transaction:
            return await work(self._conn)
        async with self._conn.transaction():
            return await work(self._conn)

    async def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


CHANNEL = "asyncdicom"  # NOTIFY channel; the payload is what was freed and the job: "slots:<job>"
SLOTS, REQUESTS = "slots", "requests"  # what a notification tells of: an association slot, or requests
WANTED = "wanted"  # a host waits for a slot: one holding more than its share gives one up


class Wakeups:
    """Notifications that another host freed something of the job: an association slot
    (:data:`SLOTS`), or requests it settled or gave back (:data:`REQUESTS`); or that a host waits
    for a slot (:data:`WANTED`). The lease connection LISTENs (:meth:`listen`, again after each
    reconnect: a connection of its own cost each host a third session); each notification sets
    the current event of its kind (then replaced), so that a host waiting for a slot does not
    wake whenever another host commits a result. A waiter takes :meth:`event` *before* it looks
    in the database, so that a notification sent meanwhile is not missed; it waits with a timeout
    all the same (a host that died notifies nobody: its leases just run out; and while the
    connection is lost, nobody hears anything until a unit of work reconnects it)."""

    def __init__(self, job: str) -> None:
        self.job = job
        self._events = {SLOTS: anyio.Event(), REQUESTS: anyio.Event(), WANTED: anyio.Event()}
        self._mine = {payload(kind, job): kind for kind in self._events}
        self.wakes = 0  # notifications of this job heard so far

    def event(self, kind: str) -> anyio.Event:
        """The event the next notification of ``kind`` sets."""
        return self._events[kind]

    def wake(self, *kinds: str) -> None:
        for kind in kinds:
            self.wakes += 1
            self._events[kind].set()
            self._events[kind] = anyio.Event()

    async def listen(self, session: Session) -> None:
        """Hear the job's notifications on ``session``; wake every waiter (what was freed while
        nobody listened: look again)."""
        await session.listen(CHANNEL, self._heard)
        self.wake(*self._events)

    def _heard(self, note: str) -> None:
        kind = self._mine.get(note)
        if kind is not None:
            self.wake(kind)


async def notify(conn: Session, job: str, *kinds: str) -> None:
    """Tell the job's hosts what happened (``kinds``: slots or requests freed, a slot wanted);
    sent when the transaction commits."""
    for kind in kinds:
        await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload(kind, job)))


def payload(kind: str, job: str) -> str:
    """A notification's text: what happened, in which job."""
    return f"{kind}:{job}"


async def wait_for(event: anyio.Event, seconds: float) -> None:
    with anyio.move_on_after(seconds):
        await event.wait()
