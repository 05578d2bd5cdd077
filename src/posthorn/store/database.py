"""The database handle: one async engine per process, SQLite or PostgreSQL.

SQLite runs in WAL mode so readers never wait for the writer, and every write transaction
starts with ``BEGIN IMMEDIATE``: taking the write lock up front means two writers queue on
``busy_timeout`` instead of failing with "database is locked" when a reader upgrades.

On SQLite every statement of the async engine is a round trip to the driver's thread (about
0.3 ms, most of it waiting). :meth:`Database.run_write` avoids that for the hot write path
(the group commits): the whole transaction runs on one writer thread over a blocking
connection, in a single hop, driving the same async repository code synchronously. A process
that does nothing but commit (``posthorn smtp``'s parent) runs those transactions on its event
loop instead (:meth:`Database.write_on_loop`): no thread hop, and no second thread to hand the
GIL to and win it back from between every statement.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar, cast

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import Connection, Dialect, Result
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 30_000

R = TypeVar("R")
Work = Callable[[AsyncConnection], Coroutine[Any, Any, R]]


class Database:
    """Opens transactions. Repositories take the ``AsyncConnection`` these yield."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self._on_loop = False
        if self.is_sqlite:
            self.engine: AsyncEngine = create_async_engine(
                url, echo=echo, pool_size=pool_size, max_overflow=0, pool_timeout=60
            )
            _configure_sqlite(self.engine.sync_engine)
            # The writer thread's own blocking engine: one connection, kept open.
            self._blocking: Engine | None = create_engine(
                url.replace("+aiosqlite", "", 1), echo=echo, pool_size=1, max_overflow=0
            )
            _configure_sqlite(self._blocking)
            self._writer: ThreadPoolExecutor | None = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="sqlite-writer"
            )
        else:
            self._blocking = None
            self._writer = None
            self.engine = create_async_engine(
                url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )

    def write_on_loop(self) -> None:
        """Run :meth:`run_write` transactions on the calling event loop (SQLite).

        Only for a process whose loop has nothing better to do while a transaction runs: the
        loop stops for each one (a few milliseconds; longer while another process holds the
        write lock).
        """
        if self._writer is not None:
            self._on_loop = True

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction, committed when the block exits without an error."""
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
            async with conn.begin():
                yield conn

    async def run_write(self, work: Work[R]) -> R:
        """``await work(conn)`` in one write transaction, committed if it returns.

        ``work`` may only wait for the database: on SQLite it runs on the writer thread, where
        its ``await conn.execute(...)`` calls complete at once over a blocking connection.
        """
        if self._writer is None:
            async with self.write() as conn:
                return await work(conn)
        if self._on_loop:
            return self._write_blocking(work)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._writer, self._write_blocking, work)

    def _write_blocking(self, work: Work[R]) -> R:
        assert self._blocking is not None
        with self._blocking.connect() as conn:
            conn = conn.execution_options(sqlite_begin="IMMEDIATE")
            with conn.begin():
                return _complete(work(cast(AsyncConnection, _BlockingConnection(conn))))

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A transaction for reading: one consistent snapshot."""
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    async def dispose(self) -> None:
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await asyncio.to_thread(writer.shutdown)  # the last write may be waiting on a lock
        if self._blocking is not None:
            self._blocking.dispose()
        await self.engine.dispose()


class _BlockingConnection:
    """The part of :class:`AsyncConnection` the repositories use, over a blocking one."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    @property
    def dialect(self) -> Dialect:
        return self._conn.dialect

    async def execute(self, statement: Any, parameters: Any = None, **kwargs: Any) -> Result[Any]:
        return self._conn.execute(statement, parameters, **kwargs)

    async def exec_driver_sql(self, statement: str, parameters: Any = None) -> Result[Any]:
        return self._conn.exec_driver_sql(statement, parameters)


def _complete(coroutine: Coroutine[Any, Any, R]) -> R:
    """Run a coroutine that never suspends to its end, here and now."""
    try:
        coroutine.send(None)
    except StopIteration as finished:
        return cast(R, finished.value)
    coroutine.close()
    raise RuntimeError("a blocking write transaction tried to wait for the event loop")


def _configure_sqlite(sync_engine: Engine) -> None:
    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL syncs the WAL at every commit, so an email we answered 200 for survives a
        # power loss too (NORMAL only survives a process crash). Group commit pays for it.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")
