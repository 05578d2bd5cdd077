"""The reads that tracking and unsubscribe requests need: the email, the recipient's delivery
and the recipient's recent clicks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import deliveries, emails, events


@dataclass(frozen=True, slots=True)
class TrackedEmail:
    id: str
    account_id: str
    sender: str
    source: str
    html: str | None
    delivery_id: int | None  # the recipient's delivery, when it still exists
    delivered_at: datetime | None


async def tracked_email(
    conn: AsyncConnection,
    *,
    account_id: str,
    email_id: str,
    recipient: str,
    with_html: bool = False,
) -> TrackedEmail | None:
    """The email (of that account) and the recipient's delivery; ``None`` if there is none."""
    columns = [emails.c.id, emails.c.account_id, emails.c.from_email, emails.c.source]
    if with_html:
        columns.append(emails.c.html)
    email = (
        await conn.execute(
            select(*columns).where(emails.c.id == email_id, emails.c.account_id == account_id)
        )
    ).first()
    if email is None:
        return None
    delivery = (
        await conn.execute(
            select(deliveries.c.id, deliveries.c.delivered_at)
            .where(
                deliveries.c.email_id == email_id,
                func.lower(deliveries.c.recipient) == recipient.lower(),
            )
            .limit(1)
        )
    ).first()
    return TrackedEmail(
        id=email.id,
        account_id=email.account_id,
        sender=email.from_email,
        source=email.source,
        html=email.html if with_html else None,
        delivery_id=delivery.id if delivery else None,
        delivered_at=delivery.delivered_at if delivery else None,
    )


async def recent_clicks(
    conn: AsyncConnection, *, email_id: str, recipient: str, since: datetime
) -> list[tuple[str, datetime]]:
    """The recipient's clicks on the email's links since ``since``, as ``(url, when)``."""
    rows = await conn.execute(
        select(events.c.data, events.c.created_at).where(
            events.c.email_id == email_id,
            events.c.type == "clicked",
            events.c.recipient == recipient,
            events.c.created_at >= since,
        )
    )
    return [(str(data.get("url", "")), created_at) for data, created_at in rows]
