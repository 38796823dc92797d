"""The job's association budget, shared by every host that runs it."""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from asyncdicom.errors import LedgerError
from asyncdicom.ledger.postgres.connection import CHANNEL, SLOTS, WANTED, payload
from asyncdicom.ledger.postgres.driver import Session
from asyncdicom.ledger.postgres.sql import GIVE_SLOTS, TAKE_SLOT

if TYPE_CHECKING:
    from asyncdicom.ledger.postgres.ledger import PgLedger


class SharedSlots:
    """The job's associations as ``count`` leased rows: a worker holds one while its association
    is open, on whichever host it runs, so the PACS never sees more than ``count`` from the job.

    A slot this host releases goes straight to one of its own waiting workers if there is one;
    otherwise it is given back to the database (by a task, as release is called from sync code).
    """

    def __init__(self, ledger: PgLedger, count: int) -> None:
        self._ledger = ledger
        self.count = count
        self._owned: dict[object, int] = {}  # owner → slot number
        self._idle: list[int] = []  # slots held in the database that no worker of ours uses
        self._waiters = 0
        self._freed = anyio.Event()
        self._asking = anyio.Lock()  # held by the one worker asking the database for a slot
        self._send: MemoryObjectSendStream[int] | None = None
        self.refused = anyio.Event()  # set (and replaced) each time the database had no slot free

    async def prepare(self) -> None:
        """Make the job's slot rows number exactly ``count`` (the config every host shares)."""
        ledger = self._ledger

        async def make(conn: Session) -> None:
            await conn.execute(
                "INSERT INTO asyncdicom.slots (job, n) SELECT %s, generate_series(0, %s - 1) ON CONFLICT DO NOTHING",
                (ledger.job, self.count),
            )
            await conn.execute("DELETE FROM asyncdicom.slots WHERE job = %s AND n >= %s", (ledger.job, self.count))

        await ledger.leases.run(make)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SharedSlots]:
        """While inside, released slots are given back to the database."""
        send, receive = anyio.create_memory_object_stream[int](max(16, self.count * 2))
        self._send = send
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._giver, receive)
            try:
                yield self
            finally:
                send.close()
                self._send = None

    async def _giver(self, receive: MemoryObjectReceiveStream[int]) -> None:
        ledger = self._ledger
        with anyio.CancelScope(shield=True):
            async with receive:
                async for n in receive:
                    batch = [n]
                    while True:
                        try:
                            batch.append(receive.receive_nowait())
                        except (anyio.WouldBlock, anyio.EndOfStream):
                            break
                    with contextlib.suppress(LedgerError):
                        give = functools.partial(self._give, numbers=batch)
                        await ledger.leases.statement(give)

    async def _give(self, conn: Session, numbers: list[int]) -> None:
        ledger = self._ledger
        freed = payload(SLOTS, ledger.job)
        params = {"job": ledger.job, "holder": ledger.holder, "numbers": numbers, "channel": CHANNEL, "freed": freed}
        await conn.execute(GIVE_SLOTS, params)

    async def acquire(self, owner: object) -> None:
        """Wait for a slot of the job's budget for ``owner``: one worker of this host at a time
        asks the database, again whenever another host frees a slot (its notification) and at
        least once a second (a dead host's slots come free when their lease runs out); the others
        wait for a slot this host frees, or for their turn to ask."""
        wakeups = self._ledger.wakeups
        while True:
            if self._idle:
                self._owned[owner] = self._idle.pop()
                return
            if not self._asking.locked():
                async with self._asking:
                    poll = 0.05
                    while not self._idle:
                        # taken before asking: a slot freed meanwhile, here or elsewhere, wakes us
                        here, elsewhere = self._freed, wakeups.event(SLOTS)
                        n = await self._ledger.leases.statement(self._take)
                        if n is not None:
                            self._owned[owner] = n
                            if self._idle and not self._waiters:  # handed to us while we asked: surplus
                                self._give_to_job(self._idle.pop())
                            return
                        await self._wait(poll, here, elsewhere)
                        poll = min(poll * 2, 1.0)
                continue
            await self._wait(1.0, self._freed)

    async def _wait(self, seconds: float, *events: anyio.Event) -> None:
        """Wait as one of this host's waiting workers, until one of ``events`` is set or
        ``seconds`` pass."""
        self._waiters += 1
        try:
            await _first_of(seconds, *events)
        finally:
            self._waiters -= 1

    @property
    def _wanting(self) -> bool:
        """Whether a worker of this host waits for a slot, or asks the database for one."""
        return self._waiters > 0 or self._asking.locked()

    @property
    def held(self) -> int:
        """Slots this host holds: its workers' and the idle ones."""
        return len(self._owned) + len(self._idle)

    async def reserve(self) -> None:
        """Hold a slot for this host's next request, unless it holds one already: a host claims
        requests only while it holds a slot, so that requests never wait on a host that cannot
        run them while another host could."""
        if self.held:
            return
        owner = object()
        await self.acquire(owner)
        self._hand_over(self._owned.pop(owner))  # a worker waiting for a slot takes it

    def give_back_idle(self) -> None:
        """Give the slots no worker uses back to the job (this host has nothing left to claim),
        unless a worker of this host waits for one (a slot just handed to it)."""
        if self._wanting:
            return
        idle, self._idle = self._idle, []
        for n in idle:
            self._give_to_job(n)

    def keep_idle(self) -> bool:
        """Whether a worker with nothing to do keeps its slot a moment: not once this host has
        nothing left to claim, nor beyond its share while another host waits (the slot is better
        with a host that has work)."""
        return not self._ledger.dry and not self.over_share()

    async def _take(self, conn: Session) -> int | None:
        """A free slot, unless this host holds its share already while another host waits for one;
        refused, this host tells the others that it waits."""
        ledger = self._ledger
        params = {"holder": ledger.holder, "lease": ledger.lease, "job": ledger.job}
        # served, this host still waits if another of its workers does (its flag cleared, another
        # host beyond its share could take the next slot freed before that worker asks again)
        more = self._waiters > 0
        told = {"channel": CHANNEL, "wanted": payload(WANTED, ledger.job)}
        row = await conn.row(TAKE_SLOT, {**params, **told, "held": self.held, "count": self.count, "more": more})
        if row is None or row[0] is None:
            self.refused.set()
            self.refused = anyio.Event()
            return None
        return int(row[0])

    @property
    def share(self) -> int:
        """This host's fair share of the job's slots: an even split among the hosts running it."""
        return math.ceil(self.count / max(1, self._ledger.hosts))

    def over_share(self) -> bool:
        """Whether this host holds more than its share while another host waits for a slot (as
        last heard: the heartbeat, sooner when a host says it waits): then a worker gives its
        slot to the job when its request ends."""
        return self._ledger.others_want and self.held > self.share

    def release(self, owner: object) -> None:
        """Give ``owner``'s slot to a waiting worker of this host, or back to the job (always
        when this host holds more than its share and another host waits)."""
        shedding = self.over_share()
        n = self._owned.pop(owner, None)
        if n is None:
            return
        if self._wanting and not shedding:  # (one asking the database gets it as well)
            self._hand_over(n)
        else:
            self._give_to_job(n)

    def _hand_over(self, n: int) -> None:
        """Slot ``n`` to this host's next worker that asks (a waiting one wakes for it)."""
        self._idle.append(n)
        self._freed.set()
        self._freed = anyio.Event()

    def _give_to_job(self, n: int) -> None:
        """Slot ``n`` back to the database, by the giver task (outside :meth:`running`, or with its
        queue full, it stays idle: renewed with the others, given back when the run ends)."""
        if self._send is not None:
            try:
                self._send.send_nowait(n)
                return
            except (anyio.WouldBlock, anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
        self._idle.append(n)


async def _first_of(seconds: float, *events: anyio.Event) -> None:
    """Until one of ``events`` is set, or ``seconds`` pass."""
    with anyio.move_on_after(seconds):
        if len(events) == 1:
            await events[0].wait()
            return
        async with anyio.create_task_group() as tg:

            async def first(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            for event in events:
                tg.start_soon(first, event)
