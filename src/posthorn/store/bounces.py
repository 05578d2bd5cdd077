"""What a bounce or a complaint changes: the delivery it is about, its events, its email.

The caller holds one write transaction around these calls, so the delivery's new state, its
event (with the webhook messages ``insert_events`` adds) and the email's aggregate status are
committed together or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.domain.statuses import Status
from posthorn.store.events import insert_events
from posthorn.store.queue import refresh_email_status
from posthorn.store.tables import deliveries, emails, events


@dataclass(frozen=True, slots=True)
class ReportedDelivery:
    """The delivery a VERP return path named, with what its events copy from the email."""

    id: int
    email_id: str
    account_id: str
    recipient: str
    status: str
    sender: str  # the email's From address
    source: str  # api | smtp | ...


async def reported_delivery(conn: AsyncConnection, delivery_id: int) -> ReportedDelivery | None:
    """The delivery, locked for this transaction on PostgreSQL (two reports about the same
    delivery then apply one after the other); ``None`` once it is gone."""
    query = (
        select(
            deliveries.c.id,
            deliveries.c.email_id,
            deliveries.c.account_id,
            deliveries.c.recipient,
            deliveries.c.status,
            emails.c.from_email.label("sender"),
            emails.c.source,
        )
        .join(emails, emails.c.id == deliveries.c.email_id)
        .where(deliveries.c.id == delivery_id)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=deliveries)
    row = (await conn.execute(query)).first()
    return None if row is None else ReportedDelivery(**row._mapping)


async def group_deliveries(conn: AsyncConnection, lead_id: int) -> list[ReportedDelivery]:
    """The deliveries a group return path can speak for, locked as in
    :func:`reported_delivery`: those of the lead's email that shared its message (no personal
    copy) and its recipient domain, the receiving side that saw the return path, and that
    the receiver accepted (``delivered``; ``bounced`` for a report sent twice). Recipients
    at other domains, and mail not yet sent, are out of a report's reach."""
    lead = (
        await conn.execute(
            select(deliveries.c.email_id, deliveries.c.recipient).where(deliveries.c.id == lead_id)
        )
    ).first()
    if lead is None:
        return []
    query = (
        select(
            deliveries.c.id,
            deliveries.c.email_id,
            deliveries.c.account_id,
            deliveries.c.recipient,
            deliveries.c.status,
            emails.c.from_email.label("sender"),
            emails.c.source,
        )
        .join(emails, emails.c.id == deliveries.c.email_id)
        .where(
            deliveries.c.email_id == lead.email_id,
            func.length(deliveries.c.raw).is_(None),
            func.length(deliveries.c.personal).is_(None),
            deliveries.c.status.in_([str(Status.DELIVERED), str(Status.BOUNCED)]),
        )
        .order_by(deliveries.c.id)
    )
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(of=deliveries)
    domain = _domain_of(lead.recipient)
    rows = await conn.execute(query)
    return [ReportedDelivery(**r._mapping) for r in rows if _domain_of(r.recipient) == domain]


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2].lower()


async def mark_bounced(
    conn: AsyncConnection,
    delivery: ReportedDelivery,
    *,
    reply_code: int | None,
    reply: str,
    data: dict[str, Any],
    now: datetime,
) -> None:
    """The delivery failed after all: ``bounced``, off the queue (a worker holding a lease on
    it can no longer record a result), a ``bounced`` event, the email's status recomputed."""
    values: dict[str, Any] = {
        "status": str(Status.BOUNCED),
        "next_attempt_at": None,
        "lease_token": None,
        "last_reply": reply or None,
        "updated_at": now,
    }
    if reply_code is not None:
        values["last_code"] = reply_code
    await conn.execute(update(deliveries).where(deliveries.c.id == delivery.id).values(**values))
    await insert_events(conn, [_event(delivery, "bounced", data, now)])
    await refresh_email_status(conn, {delivery.email_id: now})


async def has_event(conn: AsyncConnection, delivery: ReportedDelivery, event_type: str) -> bool:
    """Whether the delivery already has an event of this type (a report sent twice)."""
    found = await conn.execute(
        select(events.c.id)
        .where(
            events.c.email_id == delivery.email_id,
            events.c.delivery_id == delivery.id,
            events.c.type == event_type,
        )
        .limit(1)
    )
    return found.first() is not None


async def record_complaint(
    conn: AsyncConnection, delivery: ReportedDelivery, *, data: dict[str, Any], now: datetime
) -> None:
    """A ``complained`` event; the delivery keeps its status (the mail was delivered)."""
    await insert_events(conn, [_event(delivery, "complained", data, now)])


def _event(
    delivery: ReportedDelivery, event_type: str, data: dict[str, Any], now: datetime
) -> dict[str, Any]:
    return {
        "account_id": delivery.account_id,
        "email_id": delivery.email_id,
        "delivery_id": delivery.id,
        "type": event_type,
        "recipient": delivery.recipient,
        "sender": delivery.sender,
        "source": delivery.source,
        "data": data,
        "created_at": now,
    }
