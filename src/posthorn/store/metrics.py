"""Figures for monitoring: queue depth and how deliveries stand."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import deliveries, webhook_messages


async def delivery_counts(conn: AsyncConnection) -> dict[str, int]:
    rows = await conn.execute(
        select(deliveries.c.status, func.count()).group_by(deliveries.c.status)
    )
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
