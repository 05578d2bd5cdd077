"""Schema upgrades with Alembic, on the same async engine the application uses."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection

from posthorn.store.database import Database

MIGRATIONS = Path(__file__).parent / "migrations"
# Any constant works: it only has to be the same in every process that migrates.
PG_MIGRATION_LOCK = 0x706F7374


def alembic_config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def migrate(db: Database, revision: str = "head") -> None:
    """Upgrade the schema; safe to run from several processes at once on PostgreSQL."""
    async with db.engine.begin() as conn:
        if not db.is_sqlite:
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_MIGRATION_LOCK}
            )
        await conn.run_sync(lambda sync: command.upgrade(alembic_config(sync), revision))


async def is_current(db: Database) -> bool:
    """Whether the database is at the newest revision."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    async with db.engine.connect() as conn:
        current = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    return current == head
