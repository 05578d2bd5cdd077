"""The suppression list: addresses an account must not send to, and why."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, func, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.events import insert_events
from posthorn.store.tables import suppressions


async def suppressed(
    conn: AsyncConnection, account_id: str, addresses: Sequence[str], scope: str = ""
) -> dict[str, str]:
    """Which of ``addresses`` are suppressed for the account (account-wide or in ``scope``),
    with the reason."""
    if not addresses:
        return {}
    scopes = {"", scope}
    rows = await conn.execute(
        select(suppressions.c.address, suppressions.c.reason).where(
            suppressions.c.account_id == account_id,
            suppressions.c.address.in_({a.lower() for a in addresses}),
            suppressions.c.scope.in_(scopes),
        )
    )
    return {address: reason for address, reason in rows}


async def reasons(conn: AsyncConnection, account_id: str, address: str) -> set[str]:
    """Why the address is suppressed, in any scope (empty when it is not)."""
    rows = await conn.execute(
        select(suppressions.c.reason).where(
            suppressions.c.account_id == account_id, suppressions.c.address == address.lower()
        )
    )
    return {str(reason) for (reason,) in rows}


async def suppressed_many(
    conn: AsyncConnection, wanted: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """(account, address) → reason, for the pairs on an account-wide suppression list."""
    if not wanted:
        return {}
    rows = await conn.execute(
        _SUPPRESSED_MANY,
        {
            "accounts": sorted({a for a, _ in wanted}),
            "addresses": sorted({address.lower() for _, address in wanted}),
        },
    )
    return {(a, address): reason for a, address, reason in rows}


# Built once: intake runs it for every group commit, and a statement built anew each time
# costs more than running it (SQLAlchemy derives its cache key on every construction).
_SUPPRESSED_MANY = select(
    suppressions.c.account_id, suppressions.c.address, suppressions.c.reason
).where(
    suppressions.c.account_id.in_(bindparam("accounts", expanding=True)),
    suppressions.c.address.in_(bindparam("addresses", expanding=True)),
    suppressions.c.scope == "",
)


async def add(
    conn: AsyncConnection,
    *,
    account_id: str,
    address: str,
    reason: str,
    now: datetime,
    scope: str = "",
    detail: str | None = None,
    email_id: str | None = None,
) -> bool:
    """Suppress an address; ``False`` when it already was. Writes ``suppression.created``."""
    values = {
        "account_id": account_id,
        "address": address.lower(),
        "reason": reason,
        "scope": scope,
        "detail": detail,
        "email_id": email_id,
        "created_at": now,
    }
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    result = await conn.execute(
        insert(suppressions)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["account_id", "address", "scope"])
    )
    if result.rowcount == 0:
        return False
    await insert_events(
        conn,
        [
            {
                "account_id": account_id,
                "email_id": email_id or "",
                "type": "suppression.created",
                "recipient": address.lower(),
                "data": {"reason": reason, "scope": scope or None, "detail": detail},
                "created_at": now,
            }
        ],
    )
    return True


async def remove(
    conn: AsyncConnection, account_id: str, address: str, now: datetime, scope: str | None = None
) -> int:
    """Lift a suppression (in one scope, or all of them); writes ``suppression.deleted``."""
    where = [suppressions.c.account_id == account_id, suppressions.c.address == address.lower()]
    if scope is not None:
        where.append(suppressions.c.scope == scope)
    result = await conn.execute(delete(suppressions).where(and_(*where)))
    if result.rowcount:
        await insert_events(
            conn,
            [
                {
                    "account_id": account_id,
                    "email_id": "",
                    "type": "suppression.deleted",
                    "recipient": address.lower(),
                    "data": {"scope": scope or None},
                    "created_at": now,
                }
            ],
        )
    return int(result.rowcount)


async def page(
    conn: AsyncConnection,
    account_id: str,
    *,
    reason: str | None,
    search: str | None,
    offset: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    where = [suppressions.c.account_id == account_id]
    if reason:
        where.append(suppressions.c.reason == reason)
    if search:
        escaped = search.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(or_(suppressions.c.address.like(f"%{escaped}%", escape="\\")))
    total = (
        await conn.execute(select(func.count()).select_from(suppressions).where(and_(*where)))
    ).scalar_one()
    rows = await conn.execute(
        select(suppressions)
        .where(and_(*where))
        .order_by(suppressions.c.created_at.desc(), suppressions.c.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(total)
