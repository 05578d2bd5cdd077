"""Webhook endpoints, and their outbox: rows plus the lease protocol of the delivery queue.

``insert_events`` writes one ``webhook_messages`` row per event and subscribed endpoint. A
message is due when ``next_attempt_at <= now``; claiming pushes ``next_attempt_at`` forward by
the lease and stamps a fresh ``lease_token``, and recording an attempt only changes the
message while the token still matches (see ``queue.py``). A pending message whose
``next_attempt_at`` is NULL is *parked*: its endpoint is disabled, and it goes out when the
endpoint is enabled again.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.domain.webhook_retry import disable_reason
from posthorn.store.tables import webhook_attempts, webhook_messages, webhooks

# A claim reads this many candidates per free slot, so that one endpoint's backlog at the
# head of the queue does not hide the messages of other endpoints behind it.
CANDIDATES_PER_SLOT = 4


@dataclass(frozen=True, slots=True)
class WebhookRow:
    id: str
    account_id: str
    url: str
    events: list[str]
    enabled: bool
    secret: str  # sealed
    previous_secret: str | None  # sealed
    previous_secret_until: datetime | None
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


def _row(mapping: Mapping[Any, Any]) -> WebhookRow:
    values = dict(mapping)
    values["enabled"] = bool(values["enabled"])
    values["events"] = list(values["events"] or [])
    return WebhookRow(**values)


async def insert_webhook(conn: AsyncConnection, row: WebhookRow) -> None:
    values = {name: getattr(row, name) for name in WebhookRow.__slots__}
    values["enabled"] = int(row.enabled)
    await conn.execute(webhooks.insert().values(**values))


async def get_webhook(conn: AsyncConnection, account_id: str, webhook_id: str) -> WebhookRow | None:
    found = (
        await conn.execute(
            select(webhooks).where(webhooks.c.id == webhook_id, webhooks.c.account_id == account_id)
        )
    ).first()
    return _row(found._mapping) if found else None


async def list_webhooks(
    conn: AsyncConnection, account_id: str, *, offset: int, limit: int
) -> tuple[list[WebhookRow], int]:
    where = webhooks.c.account_id == account_id
    total = (await conn.execute(select(func.count()).where(where))).scalar_one()
    rows = await conn.execute(
        select(webhooks)
        .where(where)
        .order_by(webhooks.c.created_at.desc(), webhooks.c.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [_row(r._mapping) for r in rows], int(total)


async def update_webhook(conn: AsyncConnection, webhook_id: str, values: dict[str, Any]) -> None:
    if "enabled" in values:
        values = {**values, "enabled": int(values["enabled"])}
    await conn.execute(update(webhooks).where(webhooks.c.id == webhook_id).values(**values))


async def delete_webhook(conn: AsyncConnection, webhook_id: str) -> None:
    # ON DELETE CASCADE removes these too; deleting them explicitly keeps SQLite files opened
    # without foreign keys consistent.
    await conn.execute(delete(webhook_attempts).where(webhook_attempts.c.webhook_id == webhook_id))
    await conn.execute(delete(webhook_messages).where(webhook_messages.c.webhook_id == webhook_id))
    await conn.execute(delete(webhooks).where(webhooks.c.id == webhook_id))


async def park_messages(conn: AsyncConnection, webhook_id: str) -> None:
    """Take a disabled endpoint's pending messages out of the queue (in-flight ones excepted:
    their attempt records their state, and the claim skips disabled endpoints)."""
    await conn.execute(
        update(webhook_messages)
        .where(
            webhook_messages.c.webhook_id == webhook_id,
            webhook_messages.c.status == "pending",
            webhook_messages.c.lease_token.is_(None),
        )
        .values(next_attempt_at=None)
    )


async def unpark_messages(conn: AsyncConnection, webhook_id: str, now: datetime) -> None:
    """An endpoint enabled again gets its pending messages now."""
    await conn.execute(
        update(webhook_messages)
        .where(
            webhook_messages.c.webhook_id == webhook_id,
            webhook_messages.c.status == "pending",
            webhook_messages.c.lease_token.is_(None),
        )
        .values(next_attempt_at=now, updated_at=now)
    )


async def insert_message(conn: AsyncConnection, row: dict[str, Any]) -> None:
    await conn.execute(webhook_messages.insert().values(**row))


async def get_message(
    conn: AsyncConnection, webhook_id: str, message_id: str
) -> dict[str, Any] | None:
    found = (
        await conn.execute(
            select(webhook_messages).where(
                webhook_messages.c.id == message_id, webhook_messages.c.webhook_id == webhook_id
            )
        )
    ).first()
    return dict(found._mapping) if found else None


async def requeue_message(conn: AsyncConnection, message_id: str, now: datetime) -> None:
    """Make a message due now, whatever its state; a lease still running is dropped, so an
    attempt in flight cannot overwrite the new state."""
    await conn.execute(
        update(webhook_messages)
        .where(webhook_messages.c.id == message_id)
        .values(status="pending", next_attempt_at=now, lease_token=None, updated_at=now)
    )


async def list_attempts(
    conn: AsyncConnection, webhook_id: str, *, offset: int, limit: int
) -> tuple[list[dict[str, Any]], int]:
    """Attempts at one endpoint, newest first, with their message's event type and state."""
    a, m = webhook_attempts, webhook_messages
    where = a.c.webhook_id == webhook_id
    total = (await conn.execute(select(func.count()).select_from(a).where(where))).scalar_one()
    rows = await conn.execute(
        select(
            a.c.id,
            a.c.message_id,
            m.c.event_type,
            m.c.status.label("message_status"),
            a.c.status_code,
            a.c.latency_ms,
            a.c.response_excerpt,
            a.c.error,
            a.c.created_at,
        )
        .select_from(a.join(m, m.c.id == a.c.message_id))
        .where(where)
        .order_by(a.c.created_at.desc(), a.c.id.desc())
        .offset(offset)
        .limit(limit)
    )
    return [dict(r._mapping) for r in rows], int(total)


# ── the outbox protocol ──────────────────────────────────────────────────────────────────


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    id: str
    webhook_id: str
    account_id: str
    event_type: str
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
    lease_token: str
    url: str
    secret: str  # sealed
    previous_secret: str | None  # sealed
    previous_secret_until: datetime | None


async def claim(
    conn: AsyncConnection,
    *,
    now: datetime,
    lease_until: datetime,
    token: str,
    limit: int,
    room: Mapping[str, int],
    default_room: int,
    for_update: bool,
) -> list[ClaimedMessage]:
    """Lease up to ``limit`` due messages of enabled endpoints, oldest first, at most
    ``room[webhook]`` (else ``default_room``) per endpoint: the caller's per-endpoint limit
    minus what it already has in flight there."""
    m, w = webhook_messages, webhooks
    full = [webhook_id for webhook_id, left in room.items() if left <= 0]
    due = (
        select(m.c.id, m.c.webhook_id)
        .select_from(m.join(w, w.c.id == m.c.webhook_id))
        .where(m.c.next_attempt_at <= now, m.c.status == "pending", w.c.enabled == 1)
        .order_by(m.c.next_attempt_at)
        .limit(limit * CANDIDATES_PER_SLOT)
    )
    if full:
        due = due.where(m.c.webhook_id.not_in(full))
    if for_update:
        due = due.with_for_update(skip_locked=True, of=m)
    left = dict(room)
    picked: list[str] = []
    for message_id, webhook_id in (await conn.execute(due)).all():
        available = left.get(webhook_id, default_room)
        if available <= 0:
            continue
        left[webhook_id] = available - 1
        picked.append(message_id)
        if len(picked) >= limit:
            break
    if not picked:
        return []
    await conn.execute(
        update(m).where(m.c.id.in_(picked)).values(next_attempt_at=lease_until, lease_token=token)
    )
    rows = await conn.execute(
        select(
            m.c.id,
            m.c.webhook_id,
            m.c.account_id,
            m.c.event_type,
            m.c.payload,
            m.c.attempts,
            m.c.created_at,
            m.c.lease_token,
            w.c.url,
            w.c.secret,
            w.c.previous_secret,
            w.c.previous_secret_until,
        )
        .select_from(m.join(w, w.c.id == m.c.webhook_id))
        .where(m.c.id.in_(picked))
        .order_by(m.c.next_attempt_at, m.c.created_at)
    )
    return [ClaimedMessage(**r._mapping) for r in rows]


async def next_due(conn: AsyncConnection) -> datetime | None:
    """When the earliest unleased pending message of an enabled endpoint comes due."""
    m, w = webhook_messages, webhooks
    found = await conn.execute(
        select(func.min(m.c.next_attempt_at))
        .select_from(m.join(w, w.c.id == m.c.webhook_id))
        .where(m.c.status == "pending", m.c.lease_token.is_(None), w.c.enabled == 1)
    )
    value: datetime | None = found.scalar_one_or_none()
    return value


@dataclass(frozen=True, slots=True)
class RecordedAttempt:
    """One attempt and the message's new state."""

    message_id: str
    lease_token: str
    webhook_id: str
    status: str  # pending | delivered | failed
    attempts: int
    next_attempt_at: datetime | None
    status_code: int | None
    latency_ms: int | None
    response_excerpt: str | None
    error: str | None
    now: datetime
    endpoint_ok: bool
    disable_after: timedelta


async def record_attempts(conn: AsyncConnection, items: Sequence[RecordedAttempt]) -> list[bool]:
    """Store attempts; ``False`` for one whose lease was lost (the attempt is kept in the
    history, the message's state is not changed). Also keeps the endpoint's health: a
    success clears ``failing_since``, a failure starts it, and the endpoint is disabled on
    410 Gone or after failing for too long."""
    recorded: list[bool] = []
    for item in items:
        result = await conn.execute(
            update(webhook_messages)
            .where(
                webhook_messages.c.id == item.message_id,
                webhook_messages.c.lease_token == item.lease_token,
            )
            .values(
                status=item.status,
                attempts=item.attempts,
                next_attempt_at=item.next_attempt_at,
                lease_token=None,
                updated_at=item.now,
            )
        )
        ok = result.rowcount > 0
        recorded.append(ok)
        if not ok and not await _message_exists(conn, item.message_id):
            continue  # the endpoint was deleted while the attempt was in flight
        await conn.execute(
            webhook_attempts.insert().values(
                message_id=item.message_id,
                webhook_id=item.webhook_id,
                status_code=item.status_code,
                latency_ms=item.latency_ms,
                response_excerpt=item.response_excerpt,
                error=item.error,
                created_at=item.now,
            )
        )
        await _track_health(conn, item)
    return recorded


async def _message_exists(conn: AsyncConnection, message_id: str) -> bool:
    found = await conn.execute(
        select(webhook_messages.c.id).where(webhook_messages.c.id == message_id)
    )
    return found.first() is not None


async def _track_health(conn: AsyncConnection, item: RecordedAttempt) -> None:
    w = webhooks
    if item.endpoint_ok:
        await conn.execute(
            update(w)
            .where(w.c.id == item.webhook_id, w.c.failing_since.is_not(None))
            .values(failing_since=None)
        )
        return
    await conn.execute(
        update(w)
        .where(w.c.id == item.webhook_id, w.c.failing_since.is_(None))
        .values(failing_since=item.now)
    )
    state = (
        await conn.execute(select(w.c.enabled, w.c.failing_since).where(w.c.id == item.webhook_id))
    ).first()
    if state is None or not state.enabled:
        return
    reason = disable_reason(
        status_code=item.status_code,
        failing_since=state.failing_since,
        now=item.now,
        disable_after=item.disable_after,
    )
    if reason is not None:
        await conn.execute(
            update(w)
            .where(w.c.id == item.webhook_id)
            .values(enabled=0, disabled_reason=reason, updated_at=item.now)
        )
        await park_messages(conn, item.webhook_id)
