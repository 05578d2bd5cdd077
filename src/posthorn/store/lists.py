"""Mailing lists and their contacts.

A contact is unsubscribed from a list when its own status says so *or* when its address is
suppressed in the list's scope (an unsubscribe link in a list email, ``unsubscribeEmail`` of
the v2 API): :func:`unsubscribed` is that one rule, as SQL, for listings, counts and the bulk
job snapshot alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, exists, func, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import contacts, lists, suppressions

SUBSCRIBED = "subscribed"
UNSUBSCRIBED = "unsubscribed"
CONTACT_STATUSES = (SUBSCRIBED, UNSUBSCRIBED)


def unsubscribed() -> ColumnElement[bool]:
    """True for a contact row that must not get the list's mail."""
    return or_(
        contacts.c.status == UNSUBSCRIBED,
        exists().where(
            suppressions.c.account_id == contacts.c.account_id,
            suppressions.c.address == contacts.c.email,
            suppressions.c.scope == contacts.c.list_id,
        ),
    )


def suppressed_everywhere() -> ColumnElement[bool]:
    """True for a contact whose address is on the account-wide suppression list."""
    return exists().where(
        suppressions.c.account_id == contacts.c.account_id,
        suppressions.c.address == contacts.c.email,
        suppressions.c.scope == "",
    )


def _insert(conn: AsyncConnection) -> Any:
    return postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# ── lists ───────────────────────────────────────────────────────────────────────────────


async def insert_list(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(lists.insert().values(**row))


async def get_list(conn: AsyncConnection, account_id: str, list_id: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(lists).where(lists.c.id == list_id, lists.c.account_id == account_id)
        )
    ).first()
    return dict(row._mapping) if row else None


async def page_lists(
    conn: AsyncConnection, account_id: str, *, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    where = lists.c.account_id == account_id
    total = (await conn.execute(select(func.count()).select_from(lists).where(where))).scalar_one()
    rows = await conn.execute(
        select(lists)
        .where(where)
        .order_by(lists.c.created_at.desc(), lists.c.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(total)


async def list_ids(conn: AsyncConnection, account_id: str, *, limit: int) -> list[str]:
    rows = await conn.execute(
        select(lists.c.id).where(lists.c.account_id == account_id).order_by(lists.c.id).limit(limit)
    )
    return [str(r) for r in rows.scalars()]


async def update_list(
    conn: AsyncConnection, account_id: str, list_id: str, values: dict[str, Any]
) -> bool:
    result = await conn.execute(
        update(lists)
        .where(lists.c.id == list_id, lists.c.account_id == account_id)
        .values(**values)
    )
    return bool(result.rowcount)


async def delete_list(conn: AsyncConnection, account_id: str, list_id: str) -> bool:
    await conn.execute(delete(contacts).where(contacts.c.list_id == list_id))
    result = await conn.execute(
        delete(lists).where(lists.c.id == list_id, lists.c.account_id == account_id)
    )
    return bool(result.rowcount)


async def contact_counts(
    conn: AsyncConnection, list_ids: Sequence[str]
) -> dict[str, tuple[int, int]]:
    """list id → (contacts, of which unsubscribed)."""
    if not list_ids:
        return {}
    rows = await conn.execute(
        select(
            contacts.c.list_id,
            func.count(),
            func.sum(case((unsubscribed(), 1), else_=0)),
        )
        .where(contacts.c.list_id.in_(list(list_ids)))
        .group_by(contacts.c.list_id)
    )
    return {list_id: (int(total), int(off or 0)) for list_id, total, off in rows}


# ── contacts ────────────────────────────────────────────────────────────────────────────


async def insert_contacts(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> set[str]:
    """Insert contacts, leaving addresses already on the list alone; the addresses added."""
    if not rows:
        return set()
    # executemany with RETURNING: SQLAlchemy batches it as "insertmanyvalues", and the
    # statement compiles once instead of once per row count.
    result = await conn.execute(
        _insert(conn)(contacts)
        .on_conflict_do_nothing(index_elements=["list_id", "email"])
        .returning(contacts.c.email),
        list(rows),
    )
    return {str(email) for email in result.scalars()}


def _contact_columns() -> list[Any]:
    state = case((unsubscribed(), UNSUBSCRIBED), else_=SUBSCRIBED).label("state")
    return [
        contacts.c.email,
        contacts.c.variables,
        state,
        contacts.c.created_at,
        contacts.c.updated_at,
    ]


async def get_contact(conn: AsyncConnection, list_id: str, email: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(*_contact_columns()).where(
                contacts.c.list_id == list_id, contacts.c.email == email
            )
        )
    ).first()
    return dict(row._mapping) if row else None


async def page_contacts(
    conn: AsyncConnection,
    list_id: str,
    *,
    search: str | None,
    status: str | None,
    offset: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    where: list[ColumnElement[bool]] = [contacts.c.list_id == list_id]
    if search:
        where.append(contacts.c.email.like(f"%{_escape_like(search.lower())}%", escape="\\"))
    if status == UNSUBSCRIBED:
        where.append(unsubscribed())
    elif status == SUBSCRIBED:
        where.append(~unsubscribed())
    total = (
        await conn.execute(select(func.count()).select_from(contacts).where(and_(*where)))
    ).scalar_one()
    rows = await conn.execute(
        select(*_contact_columns())
        .where(and_(*where))
        .order_by(contacts.c.id)
        .offset(offset)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(total)


async def update_contact(
    conn: AsyncConnection, list_id: str, email: str, values: dict[str, Any]
) -> bool:
    result = await conn.execute(
        update(contacts)
        .where(contacts.c.list_id == list_id, contacts.c.email == email)
        .values(**values)
    )
    return bool(result.rowcount)


async def set_status(
    conn: AsyncConnection,
    account_id: str,
    list_ids: Sequence[str],
    email: str,
    values: dict[str, Any],
) -> int:
    """Change the address's contact rows on several lists at once."""
    result = await conn.execute(
        update(contacts)
        .where(
            contacts.c.account_id == account_id,
            contacts.c.list_id.in_(list(list_ids)),
            contacts.c.email == email,
        )
        .values(**values)
    )
    return int(result.rowcount)


async def delete_contact(conn: AsyncConnection, list_id: str, email: str) -> bool:
    result = await conn.execute(
        delete(contacts).where(contacts.c.list_id == list_id, contacts.c.email == email)
    )
    return bool(result.rowcount)
