"""Reads the dialects need and the native API does not: an email by its Message-ID, and the
address to send from when a request names none."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.store.tables import accounts, emails, senders


async def email_id_by_message_id(
    conn: AsyncConnection, account_id: str, message_id: str
) -> str | None:
    """The account's email with that Message-ID (stored without angle brackets). A client may
    reuse a Message-ID over SMTP; the newest email wins."""
    row = (
        await conn.execute(
            select(emails.c.id)
            .where(emails.c.account_id == account_id, emails.c.message_id == message_id)
            .order_by(emails.c.created_at.desc(), emails.c.id)
            .limit(1)
        )
    ).first()
    return str(row.id) if row else None


async def account_default_sender(conn: AsyncConnection, account_id: str) -> str | None:
    found = await conn.execute(select(accounts.c.default_sender).where(accounts.c.id == account_id))
    value = found.scalar_one_or_none()
    return str(value) if value else None


async def oldest_sender(conn: AsyncConnection, account_id: str) -> str | None:
    """The address of the account's first active sender."""
    found = await conn.execute(
        select(senders.c.address)
        .where(senders.c.account_id == account_id, senders.c.active == 1)
        .order_by(senders.c.created_at, senders.c.id)
        .limit(1)
    )
    value = found.scalar_one_or_none()
    return str(value) if value else None
