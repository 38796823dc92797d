"""PostgreSQL's driver (psycopg 3, async) behind one module: sessions that run our statements
(parameters written ``%(name)s`` or ``%s``), copy rows in, and run transactions; the
notifications of a channel; and which of the server's errors mean that it went away (try
again) rather than that it refused a statement. Nothing else in asyncdicom imports the driver.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

import psycopg

# psycopg's own warnings (a query whose cancellation was cut short, a pipeline left on a closed
# connection) come with a lost database, which asyncdicom reports in its own words
logging.getLogger("psycopg").setLevel(logging.ERROR)

Params = Mapping[str, Any] | Sequence[Any] | None
Row = tuple[Any, ...]


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


def _error(exc: psycopg.Error) -> DriverError:
    return (Lost if isinstance(exc, psycopg.OperationalError) else DriverError)(first_line(exc))


class Session:
    """One connection to the server, as a unit of work uses it (autocommit: each statement is
    a transaction of its own, unless inside :meth:`transaction`)."""

    def __init__(self, conn: psycopg.AsyncConnection[Any]) -> None:
        self._conn = conn

    @property
    def closed(self) -> bool:
        return self._conn.closed

    async def execute(self, sql: str, params: Params = None) -> int:
        """Run ``sql``; returns the rows it changed (or returned)."""
        try:
            cursor = await self._conn.execute(sql, params)  # our statements are literals
        except psycopg.Error as exc:
            raise _error(exc) from None
        return cursor.rowcount

    async def rows(self, sql: str, params: Params = None) -> list[Row]:
        try:
            cursor = await self._conn.execute(sql, params)
            return list(await cursor.fetchall())
        except psycopg.Error as exc:
            raise _error(exc) from None

    async def row(self, sql: str, params: Params = None) -> Row | None:
        try:
            cursor = await self._conn.execute(sql, params)
            return await cursor.fetchone()
        except psycopg.Error as exc:
            raise _error(exc) from None

    async def copy(self, table: str, columns: Sequence[str], rows: Iterable[Row]) -> None:
        """Copy ``rows`` into ``table`` (a name of ours, not from outside)."""
        try:
            async with self._conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    await copy.write_row(row)
        except psycopg.Error as exc:
            raise _error(exc) from None

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """The statements inside, committed together (rolled back on an error)."""
        try:
            async with self._conn.transaction():
                yield
        except psycopg.Error as exc:
            raise _error(exc) from None

    async def close(self) -> None:
        await self._conn.close()


def _options(settings: Mapping[str, object]) -> str:
    return " ".join(f"-c {name}={value}" for name, value in settings.items())


async def connect(
    url: str,
    *,
    connect_timeout: float,
    application_name: str,
    settings: Mapping[str, object] | None = None,
    keepalives: tuple[int, int, int] | None = None,
) -> Session:
    """A session at ``url`` (password from PGPASSWORD or ~/.pgpass, as libpq finds it), with the
    server's ``settings`` for it and, with ``keepalives`` (idle, interval, count in seconds), TCP
    keepalives on this side. Raises :class:`Lost` when the server cannot be reached."""
    extra: dict[str, Any] = {}
    if keepalives is not None:
        idle, interval, count = keepalives
        extra = {"keepalives": 1, "keepalives_idle": idle, "keepalives_interval": interval, "keepalives_count": count}
    if settings:
        extra["options"] = _options(settings)
    try:
        conn = await psycopg.AsyncConnection.connect(
            url,
            autocommit=True,
            connect_timeout=max(1, round(connect_timeout)),
            application_name=application_name,
            **extra,
        )
    except psycopg.Error as exc:
        raise _error(exc) from None
    return Session(conn)


@asynccontextmanager
async def listening(
    url: str, channel: str, *, connect_timeout: float, application_name: str
) -> AsyncIterator[AsyncIterator[str]]:
    """The payloads of ``channel``'s notifications, from the moment this is entered (LISTEN
    done) until it is left or the connection is lost (:class:`Lost`)."""
    session = await connect(url, connect_timeout=connect_timeout, application_name=application_name)
    conn = session._conn
    try:
        await session.execute(f"LISTEN {channel}")  # a name of ours

        async def payloads() -> AsyncIterator[str]:
            try:
                async for note in conn.notifies():
                    yield note.payload
            except psycopg.Error as exc:
                raise _error(exc) from None

        yield payloads()
    finally:
        with contextlib.suppress(psycopg.Error):
            await session.close()
