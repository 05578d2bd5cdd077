"""Reading the event history as a delivery log."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.domain.webhook_payloads import build_payload, wanted
from posthorn.store.fast_insert import FastInsert
from posthorn.store.tables import emails, events, webhook_messages, webhooks

_EVENTS = FastInsert(events)
# Built once, as it runs in every transaction that records events.
_SUBSCRIBED = select(webhooks.c.id, webhooks.c.account_id, webhooks.c.events).where(
    webhooks.c.account_id.in_(bindparam("accounts", expanding=True)), webhooks.c.enabled == 1
)


async def insert_events(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Write events, and one webhook outbox message per event and subscribed endpoint, in the
    caller's transaction: an event is never recorded without its webhooks, nor the reverse.
    Every event of Posthorn is written through here."""
    if not rows:
        return
    await _EVENTS.run(conn, rows)
    accounts = {row["account_id"] for row in rows}
    hooks = (await conn.execute(_SUBSCRIBED, {"accounts": sorted(accounts)})).all()
    if not hooks:
        return
    by_account: dict[str, list[Any]] = {}
    for hook in hooks:
        by_account.setdefault(hook.account_id, []).append(hook)
    email_ids = {r["email_id"] for r in rows if r["account_id"] in by_account and r["email_id"]}
    info = {
        row.id: row
        for row in await conn.execute(
            select(emails.c.id, emails.c.tags, emails.c.metadata).where(emails.c.id.in_(email_ids))
        )
    }
    messages = []
    for row in rows:
        for hook in by_account.get(row["account_id"], []):
            if not wanted(hook.events, row["type"]):
                continue
            email = info.get(row["email_id"])
            messages.append(
                {
                    "id": "msg_" + uuid.uuid4().hex,
                    "webhook_id": hook.id,
                    "account_id": row["account_id"],
                    "event_type": row["type"],
                    "payload": build_payload(
                        event_type=row["type"],
                        created_at=row["created_at"],
                        email_id=row["email_id"] or None,
                        recipient=row.get("recipient"),
                        tags=email.tags if email else None,
                        metadata=email.metadata if email else None,
                        detail=row.get("data") or {},
                    ),
                    "status": "pending",
                    "attempts": 0,
                    "next_attempt_at": row["created_at"],
                    "created_at": row["created_at"],
                    "updated_at": row["created_at"],
                }
            )
    if messages:
        await conn.execute(webhook_messages.insert(), messages)


SORTABLE = {
    "timestamp": events.c.created_at,
    "action": events.c.type,
    "sender": events.c.sender,
    "recipient": events.c.recipient,
    "message_id": events.c.email_id,
    "source": events.c.source,
}


@dataclass(frozen=True, slots=True)
class LogFilter:
    account_id: str
    types: tuple[str, ...]
    after: datetime | None = None
    before: datetime | None = None
    sender: str | None = None
    recipient: str | None = None
    email_id: str | None = None
    sources: tuple[str, ...] = ()


def _where(flt: LogFilter, types: Sequence[str]) -> ColumnElement[bool]:
    where: list[ColumnElement[bool]] = [
        events.c.account_id == flt.account_id,
        events.c.type.in_(types),
    ]
    if flt.after is not None:
        where.append(events.c.created_at >= flt.after)
    if flt.before is not None:
        where.append(events.c.created_at <= flt.before)
    if flt.sender:
        where.append(events.c.sender == flt.sender)
    if flt.recipient:
        where.append(events.c.recipient == flt.recipient)
    if flt.email_id:
        where.append(events.c.email_id == flt.email_id)
    if flt.sources:
        where.append(events.c.source.in_(flt.sources))
    return and_(*where)


async def list_log(
    conn: AsyncConnection,
    flt: LogFilter,
    *,
    sorts: Sequence[tuple[str, bool]],
    offset: int,
    limit: int,
) -> tuple[list[dict[str, Any]], int]:
    where = _where(flt, flt.types)
    total = (await conn.execute(select(func.count()).select_from(events).where(where))).scalar_one()
    order = [SORTABLE[name].desc() if desc else SORTABLE[name].asc() for name, desc in sorts]
    order.append(events.c.id.desc() if not sorts or sorts[0][1] else events.c.id.asc())
    rows = await conn.execute(
        select(
            events.c.email_id,
            events.c.type,
            events.c.sender,
            events.c.recipient,
            events.c.created_at,
            events.c.source,
        )
        .where(where)
        .order_by(*order)
        .offset(offset)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(total)


async def count_by_type(
    conn: AsyncConnection, flt: LogFilter, types: Sequence[str]
) -> dict[str, int]:
    rows = await conn.execute(
        select(events.c.type, func.count()).where(_where(flt, types)).group_by(events.c.type)
    )
    return {t: int(n) for t, n in rows}
