"""Refresh tokens: one row per issued token, grouped in families that rotate.

``jti`` holds the SHA-256 of the opaque token, never the token itself, so a copy of the
database yields no usable refresh token. Rotation and reuse detection follow RFC 6819
§5.2.2.3 and the OAuth 2.0 Security BCP (RFC 9700 §4.14.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import refresh_tokens


@dataclass(frozen=True, slots=True)
class RefreshRow:
    jti: str
    family: str
    user_id: str
    expires_at: datetime
    used_at: datetime | None
    revoked_at: datetime | None
    created_at: datetime


_COLUMNS = [getattr(refresh_tokens.c, name) for name in RefreshRow.__slots__]


async def insert_token(conn: AsyncConnection, row: RefreshRow) -> None:
    await conn.execute(
        refresh_tokens.insert().values({name: getattr(row, name) for name in RefreshRow.__slots__})
    )


async def lock_token(conn: AsyncConnection, jti: str) -> RefreshRow | None:
    """The row, locked until the transaction ends (PostgreSQL; SQLite has one writer).

    Two requests presenting the same token are thus decided one after the other: the second
    sees the first's ``used_at`` and is treated as a reuse.
    """
    found = (
        await conn.execute(select(*_COLUMNS).where(refresh_tokens.c.jti == jti).with_for_update())
    ).first()
    return RefreshRow(**found._mapping) if found else None


async def mark_used(conn: AsyncConnection, jti: str, now: datetime) -> None:
    await conn.execute(
        update(refresh_tokens).where(refresh_tokens.c.jti == jti).values(used_at=now)
    )


async def revoke_family(conn: AsyncConnection, family: str, now: datetime) -> None:
    await conn.execute(
        update(refresh_tokens)
        .where(refresh_tokens.c.family == family, refresh_tokens.c.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def family_state(conn: AsyncConnection, family: str) -> tuple[int, int]:
    """How many tokens the family has, and how many of them are revoked."""
    counts = (
        await conn.execute(
            select(func.count(), func.count(refresh_tokens.c.revoked_at)).where(
                refresh_tokens.c.family == family
            )
        )
    ).one()
    return int(counts[0]), int(counts[1])


async def delete_expired(conn: AsyncConnection, user_id: str, now: datetime) -> None:
    """Forget a user's expired tokens: they can only ever be refused."""
    await conn.execute(
        refresh_tokens.delete().where(
            refresh_tokens.c.user_id == user_id, refresh_tokens.c.expires_at <= now
        )
    )
