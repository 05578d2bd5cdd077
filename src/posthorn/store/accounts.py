"""Accounts and API keys."""

from __future__ import annotations

from collections.abc import Collection
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
    default_sender: str | None = None  # the From of a dialect request that names none
    timezone: str = "UTC"  # an IANA name: how the v2 API reads its local schedule times


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
_ACCOUNT_COLUMNS = [getattr(accounts.c, name) for name in AccountRow.__slots__]
ACCOUNT_SETTINGS = frozenset({"default_sender", "timezone"})  # what update_account may change


async def insert_account(conn: AsyncConnection, row: AccountRow) -> None:
    values: dict[str, Any] = {name: getattr(row, name) for name in AccountRow.__slots__}
    await conn.execute(accounts.insert().values(**values))


async def get_account(conn: AsyncConnection, account_id: str) -> AccountRow | None:
    result = await conn.execute(select(*_ACCOUNT_COLUMNS).where(accounts.c.id == account_id))
    found = result.first()
    return AccountRow(**found._mapping) if found else None


async def update_account(conn: AsyncConnection, account_id: str, values: dict[str, Any]) -> bool:
    """Set the account's settings (keys of :data:`ACCOUNT_SETTINGS`); ``False`` if there is
    no such account."""
    unknown = set(values) - ACCOUNT_SETTINGS
    if unknown:
        raise ValueError(f"not an account setting: {sorted(unknown)}")
    if not values:
        return await get_account(conn, account_id) is not None
    result = await conn.execute(
        update(accounts).where(accounts.c.id == account_id).values(**values)
    )
    return result.rowcount > 0


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


async def unusable_key_ids(conn: AsyncConnection, key_ids: Collection[str]) -> set[str]:
    """Those of ``key_ids`` that are revoked or gone."""
    if not key_ids:
        return set()
    rows = await conn.execute(
        select(api_keys.c.id).where(api_keys.c.id.in_(key_ids), api_keys.c.revoked_at.is_(None))
    )
    return set(key_ids) - {row.id for row in rows}


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
