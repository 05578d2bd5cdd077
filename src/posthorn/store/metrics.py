"""Figures for monitoring: queue depth and how the unfinished deliveries stand.

Every query here reads an index over the queue only (``ix_deliveries_queue``,
``ix_deliveries_due``, ``ix_webhook_messages_due``): a scrape costs as much as the backlog,
never as much as the history of finished deliveries, which may be tens of millions of rows.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import deliveries, webhook_messages

# The predicate of ix_deliveries_queue, written the same way: SQLite uses a partial index
# only for a query whose WHERE clause contains the index's own terms.
IN_QUEUE = deliveries.c.next_attempt_at.is_not(None)
QUEUE_COUNTS = (
    select(deliveries.c.status, func.count()).where(IN_QUEUE).group_by(deliveries.c.status)
)


async def queue_counts(conn: AsyncConnection) -> dict[str, int]:
    """Unfinished deliveries (queued, scheduled, deferred) by status."""
    rows = await conn.execute(QUEUE_COUNTS)
    return {status: int(n) for status, n in rows}


async def due_now(conn: AsyncConnection, now: datetime) -> tuple[int, datetime | None]:
    """How many deliveries are due, and since when the oldest has been waiting."""
    row = (
        await conn.execute(
            select(func.count(), func.min(deliveries.c.next_attempt_at)).where(
                deliveries.c.next_attempt_at <= now
            )
        )
    ).one()
    return int(row[0]), row[1]


async def webhook_backlog(conn: AsyncConnection, now: datetime) -> int:
    return int(
        (
            await conn.execute(
                select(func.count()).where(webhook_messages.c.next_attempt_at <= now)
            )
        ).scalar_one()
    )
