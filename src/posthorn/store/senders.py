"""Senders: SMTP credentials bound to a verified domain."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import domains, senders

_COLUMNS = (*senders.c, domains.c.name.label("domain"))


def _joined() -> Any:
    return select(*_COLUMNS).join(domains, domains.c.id == senders.c.domain_id)


async def insert_sender(conn: AsyncConnection, row: dict[str, Any]) -> int:
    result = await conn.execute(senders.insert().values(**row).returning(senders.c.id))
    return int(result.scalar_one())


async def address_taken(conn: AsyncConnection, address: str) -> bool:
    found = await conn.execute(
        select(senders.c.id).where(func.lower(senders.c.address) == address.lower())
    )
    return found.first() is not None


async def get_sender(
    conn: AsyncConnection, account_id: str, sender_id: int
) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            _joined().where(senders.c.id == sender_id, senders.c.account_id == account_id)
        )
    ).first()
    return dict(row._mapping) if row else None


async def find_by_address(conn: AsyncConnection, address: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(_joined().where(func.lower(senders.c.address) == address.lower()))
    ).first()
    return dict(row._mapping) if row else None


async def list_senders(
    conn: AsyncConnection, account_id: str, *, search: str | None, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    where = [senders.c.account_id == account_id]
    if search:
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(func.lower(senders.c.address).like(f"%{escaped}%", escape="\\"))
    total = (
        await conn.execute(select(func.count()).select_from(senders).where(and_(*where)))
    ).scalar_one()
    rows = await conn.execute(
        _joined().where(and_(*where)).order_by(senders.c.id.desc()).offset(offset).limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(total)


async def update_sender(conn: AsyncConnection, sender_id: int, values: dict[str, Any]) -> None:
    await conn.execute(update(senders).where(senders.c.id == sender_id).values(**values))


async def delete_sender(conn: AsyncConnection, sender_id: int) -> None:
    await conn.execute(delete(senders).where(senders.c.id == sender_id))
