"""Bulk jobs and their recipients: rows plus the lease protocol of the delivery queue.

A job is due when ``next_run_at <= now``. A runner claims it by moving ``next_run_at``
forward by the lease and stamping ``lease_token``; at the end of its tick it sets the next
tick's time, but only while the token still matches (a runner that stalled past its lease
has lost the job to another). A recipient is ``pending`` until its email is queued; the
update that records it is guarded by ``status = 'pending'``, so a recipient is counted once
even when two runners raced for it (intake's idempotency keys keep it to one email).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.lists import suppressed_everywhere, unsubscribed
from posthorn.store.tables import accounts, bulk_jobs, bulk_recipients, contacts, deliveries, events

PENDING = "pending"
QUEUED = "queued"
SKIPPED = "skipped"
INVALID = "invalid"
FAILED = "failed"
CANCELLED = "cancelled"
RECIPIENT_STATUSES = (PENDING, QUEUED, SKIPPED, INVALID, FAILED, CANCELLED)
ACTIVE = ("queued", "running")  # job statuses the runner works on
INSERT_CHUNK = 500
ENGAGEMENT = ("opened", "clicked", "unsubscribed", "complained")  # events after delivery


@dataclass(frozen=True, slots=True)
class DeliveryState:
    recipient: str
    status: str
    last_reply: str | None
    events: frozenset[str]


async def insert_job(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(bulk_jobs.insert().values(**row))


async def insert_recipients(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    for start in range(0, len(rows), INSERT_CHUNK):
        await conn.execute(bulk_recipients.insert(), list(rows[start : start + INSERT_CHUNK]))


async def snapshot_list(conn: AsyncConnection, job_id: str, list_id: str) -> None:
    """Copy a list's contacts into the job, in one statement; those already unsubscribed or
    suppressed start as ``skipped``."""
    skipped = case(
        (unsubscribed(), literal("unsubscribed")),
        (suppressed_everywhere(), literal("suppressed")),
        else_=literal(None),
    )
    query = select(
        literal(job_id),
        func.row_number().over(order_by=contacts.c.id),
        contacts.c.email,
        contacts.c.variables,
        case((skipped.is_(None), literal(PENDING)), else_=literal(SKIPPED)),
        skipped,
    ).where(contacts.c.list_id == list_id)
    columns = ["job_id", "position", "email", "variables", "status", "error"]
    await conn.execute(bulk_recipients.insert().from_select(columns, query))


async def status_counts(conn: AsyncConnection, job_ids: Sequence[str]) -> dict[str, dict[str, int]]:
    """job id → recipient status → how many."""
    if not job_ids:
        return {}
    rows = await conn.execute(
        select(bulk_recipients.c.job_id, bulk_recipients.c.status, func.count())
        .where(bulk_recipients.c.job_id.in_(list(job_ids)))
        .group_by(bulk_recipients.c.job_id, bulk_recipients.c.status)
    )
    found: dict[str, dict[str, int]] = {}
    for job_id, status, count in rows:
        found.setdefault(job_id, {})[status] = int(count)
    return found


async def set_totals(conn: AsyncConnection, job_id: str, *, total: int, processed: int) -> None:
    await conn.execute(
        update(bulk_jobs).where(bulk_jobs.c.id == job_id).values(total=total, processed=processed)
    )


async def claim(
    conn: AsyncConnection,
    *,
    now: datetime,
    lease_until: datetime,
    token: str,
    limit: int,
    for_update: bool,
) -> list[dict[str, Any]]:
    due = (
        select(bulk_jobs.c.id)
        .where(bulk_jobs.c.next_run_at <= now, bulk_jobs.c.status.in_(ACTIVE))
        .order_by(bulk_jobs.c.next_run_at)
        .limit(limit)
    )
    if for_update:
        due = due.with_for_update(skip_locked=True)
    result = await conn.execute(
        update(bulk_jobs)
        .where(bulk_jobs.c.id.in_(due.scalar_subquery()))
        .values(next_run_at=lease_until, lease_token=token, status="running", updated_at=now)
        .returning(*bulk_jobs.c)
    )
    return [dict(row._mapping) for row in result]


async def pending(conn: AsyncConnection, job_id: str, *, limit: int) -> list[dict[str, Any]]:
    rows = await conn.execute(
        select(bulk_recipients)
        .where(bulk_recipients.c.job_id == job_id, bulk_recipients.c.status == PENDING)
        .order_by(bulk_recipients.c.position)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


async def record(conn: AsyncConnection, job_id: str, outcomes: Sequence[dict[str, Any]]) -> int:
    """Store recipients' outcomes (``id``, ``status``, ``error``, ``email_id``); how many left
    ``pending`` now. The job's ``processed`` grows by that many, whoever holds its lease."""
    changed = 0
    for item in outcomes:
        result = await conn.execute(
            update(bulk_recipients)
            .where(bulk_recipients.c.id == item["id"], bulk_recipients.c.status == PENDING)
            .values(status=item["status"], error=item.get("error"), email_id=item.get("email_id"))
        )
        changed += result.rowcount
    if changed:
        await conn.execute(
            update(bulk_jobs)
            .where(bulk_jobs.c.id == job_id)
            .values(processed=bulk_jobs.c.processed + changed)
        )
    return changed


async def has_pending(conn: AsyncConnection, job_id: str) -> bool:
    row = await conn.execute(
        select(bulk_recipients.c.id)
        .where(bulk_recipients.c.job_id == job_id, bulk_recipients.c.status == PENDING)
        .limit(1)
    )
    return row.first() is not None


async def release(
    conn: AsyncConnection, job_id: str, token: str, *, next_run_at: datetime | None, now: datetime
) -> bool:
    """End a tick: the job comes due again at ``next_run_at``, or is done when that is None.
    ``False`` when the lease was lost or the job was cancelled meanwhile."""
    values: dict[str, Any] = {"next_run_at": next_run_at, "lease_token": None, "updated_at": now}
    if next_run_at is None:
        values["status"] = "done"
    result = await conn.execute(
        update(bulk_jobs)
        .where(
            bulk_jobs.c.id == job_id,
            bulk_jobs.c.lease_token == token,
            bulk_jobs.c.status == "running",
        )
        .values(**values)
    )
    return bool(result.rowcount)


async def get_job(conn: AsyncConnection, account_id: str, job_id: str) -> dict[str, Any] | None:
    row = (
        await conn.execute(
            select(bulk_jobs).where(bulk_jobs.c.id == job_id, bulk_jobs.c.account_id == account_id)
        )
    ).first()
    return dict(row._mapping) if row else None


async def page_jobs(
    conn: AsyncConnection, account_id: str, *, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    where = bulk_jobs.c.account_id == account_id
    total = (
        await conn.execute(select(func.count()).select_from(bulk_jobs).where(where))
    ).scalar_one()
    rows = await conn.execute(
        select(bulk_jobs)
        .where(where)
        .order_by(bulk_jobs.c.created_at.desc(), bulk_jobs.c.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(total)


async def page_recipients(
    conn: AsyncConnection, job_id: str, *, status: str | None, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    where = [bulk_recipients.c.job_id == job_id]
    if status:
        where.append(bulk_recipients.c.status == status)
    total = await conn.execute(select(func.count()).select_from(bulk_recipients).where(*where))
    rows = await conn.execute(
        select(bulk_recipients)
        .where(*where)
        .order_by(bulk_recipients.c.position)
        .offset(offset)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(total.scalar_one())


async def recipients_after(
    conn: AsyncConnection, job_id: str, *, after: int, limit: int
) -> list[dict[str, Any]]:
    """Recipients in position order from just after ``after`` (keyset paging, for reading a
    whole job in pieces)."""
    rows = await conn.execute(
        select(bulk_recipients)
        .where(bulk_recipients.c.job_id == job_id, bulk_recipients.c.position > after)
        .order_by(bulk_recipients.c.position)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows]


async def cancel(conn: AsyncConnection, job_id: str, now: datetime) -> int:
    """Stop a job; its pending recipients become ``cancelled``. How many were cancelled."""
    await conn.execute(
        update(bulk_jobs)
        .where(bulk_jobs.c.id == job_id)
        .values(status="cancelled", next_run_at=None, lease_token=None, updated_at=now)
    )
    result = await conn.execute(
        update(bulk_recipients)
        .where(bulk_recipients.c.job_id == job_id, bulk_recipients.c.status == PENDING)
        .values(status=CANCELLED)
    )
    return int(result.rowcount)


async def list_members(
    conn: AsyncConnection, list_id: str, emails: Sequence[str]
) -> dict[str, str]:
    """address → ``subscribed`` | ``unsubscribed`` for the addresses still on the list."""
    if not emails:
        return {}
    state = case((unsubscribed(), literal("unsubscribed")), else_=literal("subscribed"))
    rows = await conn.execute(
        select(contacts.c.email, state).where(
            contacts.c.list_id == list_id, contacts.c.email.in_(list(emails))
        )
    )
    return {str(email): str(status) for email, status in rows}


async def account_timezone(conn: AsyncConnection, account_id: str) -> str:
    """The account's IANA time zone, for schedules given as local wall-clock times."""
    row = await conn.execute(select(accounts.c.timezone).where(accounts.c.id == account_id))
    return str(row.scalar_one_or_none() or "UTC")


async def delivery_states(
    conn: AsyncConnection, email_ids: Sequence[str], *, account_id: str | None = None
) -> dict[tuple[str, str], DeliveryState]:
    """(email id, recipient in lower case) → the delivery's status, last reply and the
    engagement events recorded for it."""
    states: dict[tuple[str, str], DeliveryState] = {}
    ids = list(dict.fromkeys(email_ids))
    for start in range(0, len(ids), INSERT_CHUNK):
        part = ids[start : start + INSERT_CHUNK]
        where: list[ColumnElement[bool]] = [deliveries.c.email_id.in_(part)]
        if account_id is not None:
            where.append(deliveries.c.account_id == account_id)
        rows = await conn.execute(
            select(
                deliveries.c.email_id,
                deliveries.c.recipient,
                deliveries.c.status,
                deliveries.c.last_reply,
            )
            .where(*where)
            .order_by(deliveries.c.id)
        )
        seen: dict[tuple[str, str], set[str]] = {}
        for row in rows:
            seen[(row.email_id, row.recipient.lower())] = set()
            states[(row.email_id, row.recipient.lower())] = DeliveryState(
                row.recipient, row.status, row.last_reply, frozenset()
            )
        found = await conn.execute(
            select(events.c.email_id, events.c.recipient, events.c.type).where(
                events.c.email_id.in_(part), events.c.type.in_(ENGAGEMENT)
            )
        )
        for email_id, recipient, kind in found:
            key = (email_id, (recipient or "").lower())
            if key in seen:
                seen[key].add(kind)
        for key, kinds in seen.items():
            if kinds:
                old = states[key]
                states[key] = DeliveryState(
                    old.recipient, old.status, old.last_reply, frozenset(kinds)
                )
    return states


async def next_due(conn: AsyncConnection) -> datetime | None:
    """When the next active job comes due (None when no job is active)."""
    row = await conn.execute(
        select(func.min(bulk_jobs.c.next_run_at)).where(bulk_jobs.c.status.in_(ACTIVE))
    )
    found: datetime | None = row.scalar_one_or_none()
    return found
