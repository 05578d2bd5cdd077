"""Users: the people who log in (the dashboard, BizMail's JWT auth, SMTP portal logins)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import accounts, users


@dataclass(frozen=True, slots=True)
class UserRow:
    id: str
    account_id: str
    username: str  # stored normalised (lower case), so the unique index is case-insensitive
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Credentials:
    user: UserRow
    password_hash: str


_COLUMNS = [getattr(users.c, name) for name in UserRow.__slots__]


async def insert_user(conn: AsyncConnection, row: UserRow, *, password_hash: str) -> None:
    await conn.execute(
        users.insert().values(
            id=row.id,
            account_id=row.account_id,
            username=row.username,
            password_hash=password_hash,
            created_at=row.created_at,
            updated_at=row.created_at,
        )
    )


async def account_exists(conn: AsyncConnection, account_id: str) -> bool:
    found = await conn.execute(select(accounts.c.id).where(accounts.c.id == account_id))
    return found.first() is not None


async def username_taken(conn: AsyncConnection, username: str) -> bool:
    found = await conn.execute(select(users.c.id).where(users.c.username == username))
    return found.first() is not None


async def find_credentials(conn: AsyncConnection, username: str) -> Credentials | None:
    found = (
        await conn.execute(
            select(*_COLUMNS, users.c.password_hash).where(users.c.username == username)
        )
    ).first()
    if found is None:
        return None
    values = dict(found._mapping)
    password_hash = values.pop("password_hash")
    return Credentials(user=UserRow(**values), password_hash=password_hash)


async def get_user(conn: AsyncConnection, user_id: str) -> UserRow | None:
    found = (await conn.execute(select(*_COLUMNS).where(users.c.id == user_id))).first()
    return UserRow(**found._mapping) if found else None
