"""Failed logins per client network and time bucket (the table ``login_failures``).

Every process of a deployment counts into the same rows, so a login throttle holds for the
whole deployment, not per process (``services/login_throttle.py``). Reads are one indexed
range; a failure is one upsert; old buckets are pruned by the callers now and then.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import login_failures

CLIENT_CHARS = 64  # an IPv6 /64 is at most 43 characters


async def buckets(
    conn: AsyncConnection, *, scope: str, client: str, since: int
) -> list[tuple[int, int]]:
    """``(bucket start, failures)`` of ``client`` from ``since`` on."""
    rows = await conn.execute(
        select(login_failures.c.bucket, login_failures.c.failures).where(
            login_failures.c.scope == scope,
            login_failures.c.client == client[:CLIENT_CHARS],
            login_failures.c.bucket >= since,
        )
    )
    return [(int(bucket), int(failures)) for bucket, failures in rows]


async def add_failure(conn: AsyncConnection, *, scope: str, client: str, bucket: int) -> None:
    """Count one failure of ``client`` in ``bucket``; processes may do so at the same time."""
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    statement = insert(login_failures).values(
        scope=scope, client=client[:CLIENT_CHARS], bucket=bucket, failures=1
    )
    await conn.execute(
        statement.on_conflict_do_update(
            index_elements=["scope", "client", "bucket"],
            set_={"failures": login_failures.c.failures + 1},
        )
    )


async def prune(conn: AsyncConnection, *, scope: str, before: int) -> None:
    """Forget the buckets of ``scope`` that start before ``before``."""
    await conn.execute(
        delete(login_failures).where(
            login_failures.c.scope == scope, login_failures.c.bucket < before
        )
    )
