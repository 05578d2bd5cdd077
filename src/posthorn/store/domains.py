"""Sending domains and their DKIM keys."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import dkim_keys, domains


async def insert_domain(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(domains.insert().values(**row))


async def verified_owner(conn: AsyncConnection, name: str) -> str | None:
    """The account whose claim of ``name`` is verified (at most one: the partial unique index
    ``uq_domains_verified_name``), or ``None``."""
    found = await conn.execute(
        select(domains.c.account_id).where(domains.c.name == name, domains.c.status == "verified")
    )
    value = found.scalar_one_or_none()
    return None if value is None else str(value)


def _verified_elsewhere() -> Any:
    """Whether another account's claim of the row's name is verified (a column expression)."""
    other = domains.alias("other")
    return (
        exists()
        .where(
            other.c.name == domains.c.name,
            other.c.status == "verified",
            other.c.account_id != domains.c.account_id,
        )
        .label("verified_elsewhere")
    )


async def get_domain(
    conn: AsyncConnection, account_id: str, domain_id: str
) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(domains, _verified_elsewhere()).where(
                domains.c.id == domain_id, domains.c.account_id == account_id
            )
        )
    ).first()
    return dict(row._mapping) if row else None


async def find_domain(conn: AsyncConnection, account_id: str, name: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(domains).where(domains.c.name == name, domains.c.account_id == account_id)
        )
    ).first()
    return dict(row._mapping) if row else None


async def list_domains(
    conn: AsyncConnection, account_id: str, *, search: str | None, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int, int]:
    """A page of domains, the number matching, and how many of those are verified."""
    where = [domains.c.account_id == account_id]
    if search:
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(domains.c.name.like(f"%{escaped}%", escape="\\"))
    counts = (
        await conn.execute(
            select(func.count(), func.count().filter(domains.c.status == "verified")).where(
                and_(*where)
            )
        )
    ).one()
    rows = await conn.execute(
        select(domains, _verified_elsewhere())
        .where(and_(*where))
        .order_by(domains.c.name)
        .offset(offset)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(counts[0]), int(counts[1])


async def update_domain(conn: AsyncConnection, domain_id: str, values: dict[str, Any]) -> None:
    await conn.execute(update(domains).where(domains.c.id == domain_id).values(**values))


async def delete_domain(conn: AsyncConnection, domain_id: str) -> None:
    # DKIM keys and senders go with it (ON DELETE CASCADE, deleted explicitly too so that
    # SQLite databases opened without foreign keys behave the same); emails stay.
    from posthorn.store.tables import senders

    await conn.execute(delete(dkim_keys).where(dkim_keys.c.domain_id == domain_id))
    await conn.execute(delete(senders).where(senders.c.domain_id == domain_id))
    await conn.execute(delete(domains).where(domains.c.id == domain_id))


async def release(conn: AsyncConnection, domain_id: str, now: datetime) -> None:
    """A verified claim whose name has changed hands: pending again, and its senders (SMTP
    credentials for addresses it no longer owns, which would keep those addresses from the
    new owner) gone."""
    from posthorn.store.tables import senders

    await conn.execute(delete(senders).where(senders.c.domain_id == domain_id))
    await conn.execute(
        update(domains)
        .where(domains.c.id == domain_id)
        .values(status="pending", verified_at=None, updated_at=now)
    )


async def insert_key(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(dkim_keys.insert().values(**row))


async def keys_for(conn: AsyncConnection, domain_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(dkim_keys).where(dkim_keys.c.domain_id == domain_id).order_by(dkim_keys.c.id)
    )
    return [dict(r._mapping) for r in rows]


async def set_key_states(conn: AsyncConnection, changes: Sequence[tuple[int, str]]) -> None:
    for key_id, state in changes:
        await conn.execute(update(dkim_keys).where(dkim_keys.c.id == key_id).values(state=state))


async def signing_keys(conn: AsyncConnection, domain_name: str) -> list[dict[str, Any]]:
    """The active keys of the verified domain of that name (what the worker signs with); the
    keys of other accounts' pending claims of the name never sign."""
    rows = await conn.execute(
        select(
            dkim_keys.c.selector, dkim_keys.c.algorithm, dkim_keys.c.private_key, domains.c.ed25519
        )
        .join(domains, domains.c.id == dkim_keys.c.domain_id)
        .where(
            domains.c.name == domain_name,
            domains.c.status == "verified",
            dkim_keys.c.state == "active",
        )
        .order_by(dkim_keys.c.id)
    )
    return [dict(r._mapping) for r in rows]


async def touch(conn: AsyncConnection, domain_id: str, now: datetime) -> None:
    await conn.execute(update(domains).where(domains.c.id == domain_id).values(updated_at=now))
