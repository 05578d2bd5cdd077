"""The database handle: one async engine per process, SQLite or PostgreSQL.

SQLite runs in WAL mode so readers never wait for the writer, and every write transaction
starts with ``BEGIN IMMEDIATE``: taking the write lock up front means two writers queue on
``busy_timeout`` instead of failing with "database is locked" when a reader upgrades.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import ConnectionPoolEntry

SQLITE_BUSY_TIMEOUT_MS = 30_000


class Database:
    """Opens transactions. Repositories take the ``AsyncConnection`` these yield."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self.engine: AsyncEngine = create_async_engine(
                url, echo=echo, pool_size=pool_size, max_overflow=0, pool_timeout=60
            )
            _configure_sqlite(self.engine)
        else:
            self.engine = create_async_engine(
                url, echo=echo, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True
            )

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A read-write transaction, committed when the block exits without an error."""
        async with self.engine.connect() as conn:
            if self.is_sqlite:
                conn = await conn.execution_options(sqlite_begin="IMMEDIATE")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A transaction for reading: one consistent snapshot."""
        async with self.engine.connect() as conn, conn.begin():
            yield conn

    async def dispose(self) -> None:
        await self.engine.dispose()


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

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
