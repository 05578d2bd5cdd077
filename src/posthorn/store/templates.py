"""Stored email templates."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import templates


@dataclass(frozen=True, slots=True)
class TemplateRow:
    id: str
    account_id: str
    name: str
    subject: str
    html: str | None
    text: str | None
    variables: list[str]
    created_at: datetime
    updated_at: datetime


_COLUMNS = [getattr(templates.c, name) for name in TemplateRow.__slots__]


async def insert_template(conn: AsyncConnection, row: TemplateRow) -> None:
    values: dict[str, Any] = {name: getattr(row, name) for name in TemplateRow.__slots__}
    await conn.execute(templates.insert().values(**values))


async def get_template(
    conn: AsyncConnection, account_id: str, template_id: str
) -> TemplateRow | None:
    found = (
        await conn.execute(
            select(*_COLUMNS).where(
                templates.c.id == template_id, templates.c.account_id == account_id
            )
        )
    ).first()
    return TemplateRow(**found._mapping) if found else None


async def list_templates(
    conn: AsyncConnection, account_id: str, *, offset: int, limit: int
) -> tuple[list[TemplateRow], int]:
    """A page of the account's templates, newest first, and how many there are."""
    where = templates.c.account_id == account_id
    total = (
        await conn.execute(select(func.count()).select_from(templates).where(where))
    ).scalar_one()
    rows = await conn.execute(
        select(*_COLUMNS)
        .where(where)
        .order_by(templates.c.created_at.desc(), templates.c.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [TemplateRow(**r._mapping) for r in rows], int(total)


async def update_template(
    conn: AsyncConnection, account_id: str, template_id: str, values: dict[str, Any]
) -> bool:
    result = await conn.execute(
        update(templates)
        .where(templates.c.id == template_id, templates.c.account_id == account_id)
        .values(**values)
    )
    return bool(result.rowcount)


async def delete_template(conn: AsyncConnection, account_id: str, template_id: str) -> bool:
    result = await conn.execute(
        delete(templates).where(templates.c.id == template_id, templates.c.account_id == account_id)
    )
    return bool(result.rowcount)
