"""How many bytes a test database takes on disk, to measure what one request stored."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

from sqlalchemy import text

from posthorn.store.database import Database

_PG_TABLES = text(
    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
)


async def stored_bytes(db: Database) -> int:
    """SQLite: the database file and its WAL after a checkpoint; PostgreSQL: every table of
    the schema with its indexes and TOAST (``pg_total_relation_size``)."""
    if db.is_sqlite:
        path = Path(db.url.split(":///", 1)[1].split("?", 1)[0])
        return await asyncio.to_thread(_sqlite_bytes, path)
    async with db.read() as conn:
        return int((await conn.execute(_PG_TABLES)).scalar_one())


def _sqlite_bytes(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    wal = path.with_name(path.name + "-wal")
    return path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
