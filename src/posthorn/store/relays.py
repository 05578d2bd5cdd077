"""Upstream SMTP relays of an account."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import relays


async def insert_relay(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(relays.insert().values(**row))


async def get_relay(conn: AsyncConnection, account_id: str, relay_id: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(relays).where(relays.c.id == relay_id, relays.c.account_id == account_id)
        )
    ).first()
    return dict(row._mapping) if row else None


async def default_relay(conn: AsyncConnection, account_id: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(relays).where(relays.c.account_id == account_id, relays.c.is_default == 1)
        )
    ).first()
    return dict(row._mapping) if row else None


async def list_relays(
    conn: AsyncConnection, account_id: str, *, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    total = (
        await conn.execute(
            select(func.count()).select_from(relays).where(relays.c.account_id == account_id)
        )
    ).scalar_one()
    rows = await conn.execute(
        select(relays)
        .where(relays.c.account_id == account_id)
        .order_by(relays.c.created_at, relays.c.id)
        .offset(offset)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(total)


async def update_relay(conn: AsyncConnection, relay_id: str, values: dict[str, Any]) -> None:
    await conn.execute(update(relays).where(relays.c.id == relay_id).values(**values))


async def clear_default(conn: AsyncConnection, account_id: str) -> None:
    await conn.execute(update(relays).where(relays.c.account_id == account_id).values(is_default=0))


async def delete_relay(conn: AsyncConnection, relay_id: str) -> None:
    await conn.execute(delete(relays).where(relays.c.id == relay_id))
