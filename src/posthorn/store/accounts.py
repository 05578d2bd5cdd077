"""Accounts and API keys."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import accounts, api_keys


@dataclass(frozen=True, slots=True)
class AccountRow:
    id: str
    name: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    id: str
    account_id: str
    name: str
    display: str
    permission: str
    ip_allowlist: list[str] | None
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_at: datetime
    updated_at: datetime


_KEY_COLUMNS = [getattr(api_keys.c, name) for name in ApiKeyRow.__slots__]


async def insert_account(conn: AsyncConnection, row: AccountRow) -> None:
    await conn.execute(
        accounts.insert().values(id=row.id, name=row.name, created_at=row.created_at)
    )


async def get_account(conn: AsyncConnection, account_id: str) -> AccountRow | None:
    result = await conn.execute(
        select(accounts.c.id, accounts.c.name, accounts.c.created_at).where(
            accounts.c.id == account_id
        )
    )
    found = result.first()
    return AccountRow(**found._mapping) if found else None


async def insert_api_key(conn: AsyncConnection, row: ApiKeyRow, *, key_hash: str) -> None:
    values: dict[str, Any] = {name: getattr(row, name) for name in ApiKeyRow.__slots__}
    await conn.execute(api_keys.insert().values(key_hash=key_hash, **values))


async def find_api_key_by_hash(conn: AsyncConnection, key_hash: str) -> ApiKeyRow | None:
    result = await conn.execute(select(*_KEY_COLUMNS).where(api_keys.c.key_hash == key_hash))
    found = result.first()
    return ApiKeyRow(**found._mapping) if found else None


async def get_api_key(conn: AsyncConnection, account_id: str, key_id: str) -> ApiKeyRow | None:
    result = await conn.execute(
        select(*_KEY_COLUMNS).where(api_keys.c.id == key_id, api_keys.c.account_id == account_id)
    )
    found = result.first()
    return ApiKeyRow(**found._mapping) if found else None


async def list_api_keys(
    conn: AsyncConnection, account_id: str, *, offset: int, limit: int
) -> tuple[list[ApiKeyRow], int]:
    where = (api_keys.c.account_id == account_id, api_keys.c.revoked_at.is_(None))
    total = (
        await conn.execute(select(func.count()).select_from(api_keys).where(*where))
    ).scalar_one()
    rows = await conn.execute(
        select(*_KEY_COLUMNS)
        .where(*where)
        .order_by(api_keys.c.created_at.desc(), api_keys.c.id)
        .offset(offset)
        .limit(limit)
    )
    return [ApiKeyRow(**r._mapping) for r in rows], int(total)


async def revoke_api_key(
    conn: AsyncConnection, account_id: str, key_id: str, now: datetime
) -> bool:
    result = await conn.execute(
        update(api_keys)
        .where(
            api_keys.c.id == key_id,
            api_keys.c.account_id == account_id,
            api_keys.c.revoked_at.is_(None),
        )
        .values(revoked_at=now, updated_at=now)
    )
    return result.rowcount > 0
