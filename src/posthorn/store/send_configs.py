"""Send configurations (a BillionMail "API"): a template, a subject, a default sender and an
IP allowlist bound to a key of their own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import send_configs


@dataclass(frozen=True, slots=True)
class SendConfigRow:
    id: str
    account_id: str
    name: str
    display: str
    template_id: str | None
    subject: str | None
    addresser: str | None
    ip_allowlist: list[str] | None
    track_opens: bool
    track_clicks: bool
    unsubscribe: bool
    created_at: datetime
    updated_at: datetime


_COLUMNS = [getattr(send_configs.c, name) for name in SendConfigRow.__slots__]
FLAGS = ("track_opens", "track_clicks", "unsubscribe")


def _row(found: Any) -> SendConfigRow:
    values = dict(found._mapping)
    for flag in FLAGS:
        values[flag] = bool(values[flag])
    return SendConfigRow(**values)


def _stored(values: dict[str, Any]) -> dict[str, Any]:
    return {k: int(v) if k in FLAGS else v for k, v in values.items()}


async def insert_config(conn: AsyncConnection, row: SendConfigRow, *, key_hash: str) -> None:
    values = {name: getattr(row, name) for name in SendConfigRow.__slots__}
    await conn.execute(send_configs.insert().values(key_hash=key_hash, **_stored(values)))


async def get_config(
    conn: AsyncConnection, account_id: str, config_id: str
) -> SendConfigRow | None:
    found = (
        await conn.execute(
            select(*_COLUMNS).where(
                send_configs.c.id == config_id, send_configs.c.account_id == account_id
            )
        )
    ).first()
    return _row(found) if found else None


async def find_by_hash(conn: AsyncConnection, key_hash: str) -> SendConfigRow | None:
    found = (
        await conn.execute(select(*_COLUMNS).where(send_configs.c.key_hash == key_hash))
    ).first()
    return _row(found) if found else None


async def list_configs(
    conn: AsyncConnection, account_id: str, *, offset: int, limit: int
) -> tuple[list[SendConfigRow], int]:
    """A page of the account's configurations, newest first, and how many there are."""
    where = send_configs.c.account_id == account_id
    total = (
        await conn.execute(select(func.count()).select_from(send_configs).where(where))
    ).scalar_one()
    rows = await conn.execute(
        select(*_COLUMNS)
        .where(where)
        .order_by(send_configs.c.created_at.desc(), send_configs.c.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [_row(r) for r in rows], int(total)


async def update_config(
    conn: AsyncConnection, account_id: str, config_id: str, values: dict[str, Any]
) -> bool:
    result = await conn.execute(
        update(send_configs)
        .where(send_configs.c.id == config_id, send_configs.c.account_id == account_id)
        .values(**_stored(values))
    )
    return bool(result.rowcount)


async def delete_config(conn: AsyncConnection, account_id: str, config_id: str) -> bool:
    result = await conn.execute(
        delete(send_configs).where(
            send_configs.c.id == config_id, send_configs.c.account_id == account_id
        )
    )
    return bool(result.rowcount)
