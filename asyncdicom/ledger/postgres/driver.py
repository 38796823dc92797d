"""PostgreSQL's driver (asyncpg) behind one module: sessions that run our statements (their
parameters written ``%(name)s`` or ``%s``, as psycopg and the tests write them), copy rows in,
and run transactions; the notifications of a channel; and which errors mean that the server
went away (try again) rather than that it refused a statement. Nothing else in asyncdicom
imports the driver.

asyncpg rather than psycopg 3 (both made for asyncio): measured here, its import costs 18 ms of
CPU in an asyncdicom process against psycopg's 60, and its statements about half the client
CPU; each host of a shared job pays the import once, and a job of a few thousand instances
spread over three hosts felt it (``scripts/bench_multihost``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import asyncpg

Params = Mapping[str, Any] | Sequence[Any] | None
Row = tuple[Any, ...]

# SQLSTATE classes of a server that went away or gave up on a statement for reasons of its own
# (connection exception, transaction rollback (deadlock, serialization), insufficient
# resources, object not in prerequisite state (a lock not available), operator intervention
# (shutdown, a statement cancelled by its timeout), system error): the work may be tried again
_LOST_CLASSES = frozenset({"08", "40", "53", "55", "57", "58"})
_PARAMETER = re.compile(r"%\((\w+)\)s|%s|%%")
# what a statement may raise: the server's errors, the client's (a closed connection, a value
# of the wrong type) and the socket's
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)


def first_line(exc: BaseException) -> str:
    """An error's first line, on one line and at most 300 characters (the server's messages
    name our statements' values only in their detail lines, which are left out)."""
    text = str(exc).strip().splitlines()
    return " ".join(text[0].split())[:300] if text else type(exc).__name__


class DriverError(Exception):
    """The server refused a statement (an error in it, or in the data); ``str`` says why."""


class Lost(DriverError):
    """The server went away, did not answer in time or is shutting down: the work may be tried
    again on a new session."""


@functools.lru_cache(maxsize=512)
def _numbered(sql: str) -> tuple[str, tuple[str, ...] | int]:
    """``sql`` with its parameters numbered as the server wants them (``$1``…), and the names
    they stand for in order (or how many positional ones there are)."""
    names: list[str] = []
    positional = 0

    def number(match: re.Match[str]) -> str:
        nonlocal positional
        if match.group(0) == "%%":
            return "%"
        name = match.group(1)
        if name is None:
            positional += 1
            return f"${positional}"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    text = _PARAMETER.sub(number, sql)
    if names and positional:
        msg = "a statement mixes named and positional parameters"
        raise ValueError(msg)
    return text, tuple(names) if names else positional


def _bind(sql: str, params: Params) -> tuple[str, Sequence[Any]]:
    if params is None:
        return sql, ()
    text, names = _numbered(sql)
    if isinstance(params, Mapping):
        assert isinstance(names, tuple), "named parameters expected"
        return text, [params[name] for name in names]
    return text, params


class Session:
    """One connection to the server, as a unit of work uses it (each statement a transaction of
    its own, unless inside :meth:`transaction`)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    @property
    def closed(self) -> bool:
        return self._conn.is_closed()

    def _error(self, exc: Exception) -> DriverError:
        state = (exc.sqlstate or "")[:2] if isinstance(exc, asyncpg.PostgresError) else ""
        # lost: the server's kind of error says so, or the socket failed, or the connection ended
        lost = state in _LOST_CLASSES or isinstance(exc, OSError) or self._conn.is_closed()
        why = first_line(exc)
        if state == "22" or isinstance(exc, ValueError):  # a data error, or a parameter's value of the
            why = why.split(":", 1)[0]  # wrong type, names the value (a UID, a path): its kind only
        return (Lost if lost else DriverError)(why)

    @contextmanager
    def _mapped(self) -> Iterator[None]:
        """The driver's failures inside, as :class:`Lost` or :class:`DriverError`."""
        try:
            yield
        except _FAILURES as exc:
            raise self._error(exc) from None

    async def _call(self, call: Callable[..., Any], sql: str, params: Params) -> Any:
        text, args = _bind(sql, params)
        with self._mapped():
            return await call(text, *args)

    async def execute(self, sql: str, params: Params = None) -> int:
        """Run ``sql``; returns the rows it changed (or returned)."""
        status = await self._call(self._conn.execute, sql, params)
        count = str(status).rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def rows(self, sql: str, params: Params = None) -> list[Row]:
        return [tuple(record) for record in await self._call(self._conn.fetch, sql, params)]

    async def row(self, sql: str, params: Params = None) -> Row | None:
        record = await self._call(self._conn.fetchrow, sql, params)
        return None if record is None else tuple(record)

    async def copy(self, table: str, columns: Sequence[str], rows: Iterable[Row]) -> None:
        """Copy ``rows`` into ``table`` (a name of ours, not from outside)."""
        with self._mapped():
            await self._conn.copy_records_to_table(table, records=rows, columns=list(columns))

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """The statements inside, committed together (rolled back on an error)."""
        with self._mapped():
            async with self._conn.transaction():
                yield

    async def listen(self, channel: str, heard: Callable[[str], None]) -> None:
        """Hear ``channel``'s notifications on this session (whenever they arrive, while it is
        idle too): ``heard(payload)`` is called for each, on the event loop."""

        def deliver(_conn: object, _pid: int, _channel: str, payload: object) -> None:
            heard(str(payload))

        with self._mapped():
            await self._conn.add_listener(channel, deliver)

    async def close(self) -> None:
        """End the session at once: the socket is closed without waiting for the server (one
        that went silent would hold a polite close for its timeout; the server ends the session
        when it reads the end of the stream, and rolls back whatever was left open)."""
        if not self._conn.is_closed():
            self._conn.terminate()


async def connect(
    url: str,
    *,
    connect_timeout: float,
    application_name: str,
    settings: Mapping[str, object] | None = None,
) -> Session:
    """A session at ``url`` (password from PGPASSWORD or ~/.pgpass), with the server's
    ``settings`` for it. Raises :class:`Lost` when the server cannot be reached or refuses us."""
    server = {"application_name": application_name, **{k: str(v) for k, v in (settings or {}).items()}}
    try:
        conn = await asyncpg.connect(url, timeout=connect_timeout, server_settings=server)
    except (*_FAILURES, ValueError) as exc:
        raise Lost(first_line(exc)) from None  # a ValueError: a query parameter the driver cannot read
    return Session(conn)
