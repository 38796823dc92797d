"""Retrieves in flight: message IDs, which request a received instance belongs to, and when
every instance a request caused is safely on disk.

Flights are opened and closed on the event loop thread; receive threads attribute instances
and count them handed over, so those and the counters are under a lock.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio

from asyncdicom.models import Request

UID_KEYS = ("PatientID", "AccessionNumber", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")


def uid_keys(request: Request) -> dict[str, frozenset[str]]:
    """The key values a request asks for, by keyword (lists split on backslashes)."""
    keys: dict[str, frozenset[str]] = {}
    for spec in request.elements:
        if len(spec.path) == 1 and spec.leaf.keyword in UID_KEYS and spec.value:
            keys[spec.leaf.keyword] = frozenset(spec.value.split("\\"))
    return keys


@dataclass(eq=False)
class Flight:
    """One C-MOVE or C-GET in progress."""

    request: Request
    message_id: int
    keys: dict[str, frozenset[str]]
    received: set[str] = field(default_factory=set)
    stored: int = 0
    duplicates: int = 0
    arrived: int = 0  # instances received and accepted, the same UID twice counting twice
    pending: int = 0
    waiting: bool = False  # the retrieve is over and its task waits for the last instances
    opened: float = field(default_factory=time.monotonic)
    first: float | None = None  # when its first instance was handed over
    last: float | None = None  # when its latest instance was handed over (progress for the idle watchdog)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    def matches(self, attrs: Mapping[str, str]) -> bool:
        """Whether an instance with these UIDs answers this request (every given key must agree)."""
        if not self.keys:
            return False
        return all(attrs.get(keyword, "") in values for keyword, values in self.keys.items())

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def wait_idle(self) -> None:
        """Return once every instance handed over for this request has been placed."""
        while self.pending:
            await self._changed.wait()


class Tracker:
    """Allocates message IDs and attributes received instances to flights."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[int, Flight] = {}
        self._next_id = 0
        self.refused = 0

    def open(self, request: Request) -> Flight:
        """Register a retrieve about to be sent, with a random message ID unique among those in
        flight: a sender cannot guess the IDs of the moves in flight from their order (and an
        instance must match its request's UIDs anyway, :meth:`attribute`)."""
        with self._lock:
            while True:
                self._next_id = secrets.randbelow(65535) + 1
                if self._next_id not in self._flights:
                    break
            flight = Flight(request, self._next_id, uid_keys(request))
            self._flights[flight.message_id] = flight
            return flight

    def close(self, flight: Flight) -> None:
        """The retrieve is over; instances arriving for it later are refused."""
        with self._lock:
            self._flights.pop(flight.message_id, None)

    def attribute(self, message_id: int | None, attrs: Mapping[str, str]) -> Flight | None:
        """The flight a received instance belongs to: the one its Move Originator Message ID
        names, if the instance's UIDs answer that request; else the first whose UIDs it answers.
        An instance that answers no request in flight belongs to none (it is refused, and never
        counts towards a request's completeness). A request with no UID keys to check (none of
        patient, accession, study, series or instance) is attributed by its message ID alone."""
        with self._lock:
            flight = self._flights.get(message_id) if message_id is not None else None
            if flight is not None and (not flight.keys or flight.matches(attrs)):
                return flight
            for candidate in self._flights.values():
                if candidate.matches(attrs):
                    return candidate
        return None

    def handed_over(self, flight: Flight) -> None:
        """An instance of ``flight`` was received and is on its way to its final path (any thread)."""
        with self._lock:
            flight.pending += 1

    def placed(self, flight: Flight, sop_uid: str, duplicate: bool) -> None:
        """An instance of ``flight`` is durable at its final path (event loop thread)."""
        with self._lock:
            flight.pending -= 1
            idle = flight.pending == 0
        flight.received.add(sop_uid)
        flight.arrived += 1
        if duplicate:
            flight.duplicates += 1
        else:
            flight.stored += 1
        if idle:  # only wait_idle listens, and only for zero
            flight._notify()

    def lost(self, flight: Flight) -> None:
        """An instance of ``flight`` could not be placed (event loop thread)."""
        with self._lock:
            flight.pending -= 1
            idle = flight.pending == 0
        if idle:
            flight._notify()
