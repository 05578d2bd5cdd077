"""Reading the event history as a delivery log."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import events

SORTABLE = {
    "timestamp": events.c.created_at,
    "action": events.c.type,
    "sender": events.c.sender,
    "recipient": events.c.recipient,
    "message_id": events.c.email_id,
    "source": events.c.source,
}


@dataclass(frozen=True, slots=True)
class LogFilter:
    account_id: str
    types: tuple[str, ...]
    after: datetime | None = None
    before: datetime | None = None
    sender: str | None = None
    recipient: str | None = None
    email_id: str | None = None
    sources: tuple[str, ...] = ()


def _where(flt: LogFilter, types: Sequence[str]) -> ColumnElement[bool]:
    where: list[ColumnElement[bool]] = [
        events.c.account_id == flt.account_id,
        events.c.type.in_(types),
    ]
    if flt.after is not None:
        where.append(events.c.created_at >= flt.after)
    if flt.before is not None:
        where.append(events.c.created_at <= flt.before)
    if flt.sender:
        where.append(events.c.sender == flt.sender)
    if flt.recipient:
        where.append(events.c.recipient == flt.recipient)
    if flt.email_id:
        where.append(events.c.email_id == flt.email_id)
    if flt.sources:
        where.append(events.c.source.in_(flt.sources))
    return and_(*where)


async def list_log(
    conn: AsyncConnection,
    flt: LogFilter,
    *,
    sorts: Sequence[tuple[str, bool]],
    offset: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    where = _where(flt, flt.types)
    total = (await conn.execute(select(func.count()).select_from(events).where(where))).scalar_one()
    order = [SORTABLE[name].desc() if desc else SORTABLE[name].asc() for name, desc in sorts]
    order.append(events.c.id.desc() if not sorts or sorts[0][1] else events.c.id.asc())
    rows = await conn.execute(
        select(
            events.c.email_id,
            events.c.type,
            events.c.sender,
            events.c.recipient,
            events.c.created_at,
            events.c.source,
        )
        .where(where)
        .order_by(*order)
        .offset(offset)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(total)


async def count_by_type(
    conn: AsyncConnection, flt: LogFilter, types: Sequence[str]
) -> dict[str, int]:
    rows = await conn.execute(
        select(events.c.type, func.count()).where(_where(flt, types)).group_by(events.c.type)
    )
    return {t: int(n) for t, n in rows}
