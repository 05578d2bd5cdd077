"""Idempotency keys: the first answer to a keyed request, replayed for 24 hours."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import idempotency_keys


async def lookup(
    conn: AsyncConnection, keys: Sequence[tuple[str, str]], *, since: datetime
) -> dict[tuple[str, str], tuple[str, dict[str, Any]]]:
    """(account, key) → (request hash, stored response), for keys used after ``since``."""
    if not keys:
        return {}
    rows = await conn.execute(
        select(idempotency_keys).where(
            or_(
                *(
                    and_(idempotency_keys.c.account_id == a, idempotency_keys.c.key == k)
                    for a, k in set(keys)
                )
            ),
            idempotency_keys.c.created_at >= since,
        )
    )
    return {(r.account_id, r.key): (r.request_hash, r.response) for r in rows}


async def store(
    conn: AsyncConnection, rows: Sequence[dict[str, Any]], *, expired_before: datetime
) -> None:
    """Remember answers; an expired entry with the same key is replaced."""
    if not rows:
        return
    for row in rows:
        await conn.execute(
            delete(idempotency_keys).where(
                idempotency_keys.c.account_id == row["account_id"],
                idempotency_keys.c.key == row["key"],
                idempotency_keys.c.created_at < expired_before,
            )
        )
    await conn.execute(idempotency_keys.insert(), list(rows))
