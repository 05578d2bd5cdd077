"""Emails, their deliveries and events: inserting accepted mail, and reading it back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.events import insert_events
from posthorn.store.fast_insert import FastInsert
from posthorn.store.tables import deliveries, emails, events


@dataclass(frozen=True, slots=True)
class NewEmail:
    """Everything intake writes for one accepted email, in one go."""

    email: dict[str, Any]
    deliveries: list[dict[str, Any]]
    events: list[dict[str, Any]]


_EMAILS = FastInsert(emails)
_DELIVERIES = FastInsert(deliveries)


async def insert_emails(conn: AsyncConnection, batch: Sequence[NewEmail]) -> None:
    """Insert many emails with their deliveries and events, as three multi-row statements."""
    await _EMAILS.run(conn, [item.email for item in batch])
    await _DELIVERIES.run(conn, [row for item in batch for row in item.deliveries])
    await insert_events(conn, [row for item in batch for row in item.events])


@dataclass(frozen=True, slots=True)
class EmailFilter:
    account_id: str
    statuses: tuple[str, ...] = ()
    created_from: datetime | None = None
    created_to: datetime | None = None


_SUMMARY_COLUMNS = (
    emails.c.id,
    emails.c.from_header,
    emails.c.to_addrs,
    emails.c.subject,
    emails.c.status,
    emails.c.created_at,
)


def _conditions(flt: EmailFilter, *, with_status: bool) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = [emails.c.account_id == flt.account_id]
    if with_status and flt.statuses:
        where.append(emails.c.status.in_(flt.statuses))
    if flt.created_from is not None:
        where.append(emails.c.created_at >= flt.created_from)
    if flt.created_to is not None:
        where.append(emails.c.created_at <= flt.created_to)
    return where


async def list_emails(
    conn: AsyncConnection, flt: EmailFilter, *, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    where = and_(*_conditions(flt, with_status=True))
    total = (await conn.execute(select(func.count()).select_from(emails).where(where))).scalar_one()
    rows = await conn.execute(
        select(*_SUMMARY_COLUMNS)
        .where(where)
        .order_by(emails.c.created_at.desc(), emails.c.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(total)


async def count_by_status(conn: AsyncConnection, flt: EmailFilter) -> dict[str, int]:
    """How many emails are in each status, within the filter's time range."""
    rows = await conn.execute(
        select(emails.c.status, func.count())
        .where(and_(*_conditions(flt, with_status=False)))
        .group_by(emails.c.status)
    )
    return {status: int(count) for status, count in rows}


async def get_email(conn: AsyncConnection, account_id: str, email_id: str) -> dict[str, Any] | None:
    columns = [c for c in emails.c if c.name != "raw"]
    row = (
        await conn.execute(
            select(*columns).where(emails.c.id == email_id, emails.c.account_id == account_id)
        )
    ).first()
    return dict(row._mapping) if row else None


async def get_deliveries(conn: AsyncConnection, email_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(deliveries).where(deliveries.c.email_id == email_id).order_by(deliveries.c.id)
    )
    return [dict(r._mapping) for r in rows]


async def get_events(conn: AsyncConnection, email_id: str) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(events.c.type, events.c.recipient, events.c.data, events.c.created_at)
        .where(events.c.email_id == email_id)
        .order_by(events.c.id)
    )
    return [dict(r._mapping) for r in rows]


async def cancel_pending(
    conn: AsyncConnection, email_id: str, now: datetime
) -> tuple[list[str], list[str]]:
    """Cancel the deliveries of an email that have not been tried or are waiting to retry,
    and are not leased by a worker right now. Returns (cancelled, left alone) recipients."""
    rows = (
        await conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.recipient,
                deliveries.c.status,
                deliveries.c.lease_token,
                deliveries.c.account_id,
            ).where(deliveries.c.email_id == email_id)
        )
    ).all()
    cancellable = [
        r for r in rows if r.status in ("queued", "scheduled", "deferred") and r.lease_token is None
    ]
    if cancellable:
        await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.id.in_([r.id for r in cancellable]),
                deliveries.c.lease_token.is_(None),
            )
            .values(status="cancelled", next_attempt_at=None, updated_at=now)
        )
    kept = [r.recipient for r in rows if r not in cancellable]
    return [r.recipient for r in cancellable], kept


async def reschedule(conn: AsyncConnection, email_id: str, when: datetime, now: datetime) -> int:
    """Move the scheduled deliveries of an email to ``when``."""
    result = await conn.execute(
        update(deliveries)
        .where(
            deliveries.c.email_id == email_id,
            deliveries.c.status == "scheduled",
            deliveries.c.lease_token.is_(None),
        )
        .values(next_attempt_at=when, updated_at=now)
    )
    await conn.execute(
        update(emails).where(emails.c.id == email_id).values(scheduled_at=when, updated_at=now)
    )
    return int(result.rowcount)
