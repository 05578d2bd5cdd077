"""The delivery queue: rows plus a lock protocol.

A delivery is due when ``next_attempt_at <= now``. Claiming moves ``next_attempt_at`` forward
by the lease and stamps a fresh ``lease_token``; recording a result only succeeds while the
token still matches, so a worker whose lease ran out (and whose deliveries another worker took
over) cannot overwrite the newer state. On PostgreSQL the claim skips rows that another
worker is claiming at the same moment (``FOR UPDATE SKIP LOCKED``); SQLite has one writer at a
time (``BEGIN IMMEDIATE``), which serialises claims by itself.

Leases are short (``worker_lease_seconds``, 30 s by default) and renewed by their holder's
heartbeat (:func:`extend_leases`) every third of a lease while the send is in flight, so a
slow SMTP transaction keeps its deliveries for as long as its worker lives, and a crashed
worker's come due again within one lease, with no record of which workers are alive. A
renewal, like a result, touches a row only while its token still matches: a worker that lost
a lease can neither take it back nor record over the new holder. Lease times are the workers'
clocks, so hosts sharing a queue must agree on the time to well within a lease.

Deliveries that can share one SMTP transaction (same email, the email's own message, same
recipient domain) are claimed together: :func:`claim_companions` adds the due ones a claim
left behind, under the same lease token, so they are leased, extended and recorded exactly
like the rest.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, or_, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.domain.statuses import aggregate
from posthorn.store import suppressions
from posthorn.store.events import insert_events
from posthorn.store.tables import deliveries, emails


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: int
    email_id: str
    account_id: str
    recipient: str
    attempts: int
    lease_token: str
    created_at: datetime
    # The recipient gets the email's own message (no tracking links, no unsubscribe URL of
    # its own): it may share a transaction with the email's other such recipients.
    shared: bool = True


def destination_of(recipient: str) -> str:
    """The recipient's domain, case-folded: deliveries of an email to one domain share a
    route, and so may share a transaction."""
    return recipient.rpartition("@")[2].lower()


_CLAIMED = (
    deliveries.c.id,
    deliveries.c.email_id,
    deliveries.c.account_id,
    deliveries.c.recipient,
    deliveries.c.attempts,
    deliveries.c.lease_token,
    deliveries.c.created_at,
    # NULL when the recipient gets the email's message. Not ``raw IS NULL``: on SQLite 3.40
    # (through aiosqlite) an UPDATE's RETURNING answers it with 0 for a NULL too.
    func.coalesce(func.length(deliveries.c.raw), func.length(deliveries.c.personal)).label(
        "own_message_size"
    ),
)


def _claimed(rows: Any) -> list[ClaimedDelivery]:
    claimed: list[ClaimedDelivery] = []
    for row in rows:
        values = dict(row._mapping)
        values["shared"] = values.pop("own_message_size") is None
        claimed.append(ClaimedDelivery(**values))
    return claimed


@dataclass(frozen=True, slots=True)
class RecordedOutcome:
    """The new state of one delivery after an attempt, and the event that tells of it."""

    delivery_id: int
    lease_token: str
    email_id: str
    account_id: str
    recipient: str
    sender: str
    source: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_code: int | None
    last_reply: str | None
    remote_host: str | None
    delivered_at: datetime | None
    event_type: str
    event_data: dict[str, Any]
    now: datetime
    suppress_reason: str | None = None  # put the recipient on the suppression list


async def claim(
    conn: AsyncConnection,
    *,
    now: datetime,
    lease_until: datetime,
    token: str,
    limit: int,
    for_update: bool,
) -> list[ClaimedDelivery]:
    due = (
        select(deliveries.c.id)
        .where(deliveries.c.next_attempt_at <= now)
        .order_by(deliveries.c.next_attempt_at)
        .limit(limit)
    )
    if for_update:
        due = due.with_for_update(skip_locked=True)
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=lease_until, lease_token=token)
        .returning(*_CLAIMED)
    )
    return _claimed(result)


async def claim_companions(
    conn: AsyncConnection,
    claimed: Sequence[ClaimedDelivery],
    *,
    now: datetime,
    lease_until: datetime,
    token: str,
    per_transaction: int,
    for_update: bool,
) -> list[ClaimedDelivery]:
    """Claim, in the same transaction as :func:`claim`, the due deliveries that could share
    an SMTP transaction with a shared one in ``claimed`` (same email, same recipient domain)
    but were left out by its limit; at most ``per_transaction`` per email and domain in all.

    Rows another worker holds are skipped, as in :func:`claim`.
    """
    counts = Counter(
        (item.email_id, destination_of(item.recipient)) for item in claimed if item.shared
    )
    room = {key: per_transaction - n for key, n in counts.items() if n < per_transaction}
    if not room:
        return []
    rows = await conn.execute(
        select(deliveries.c.id, deliveries.c.email_id, deliveries.c.recipient)
        .where(
            deliveries.c.email_id.in_({email_id for email_id, _ in room}),
            deliveries.c.next_attempt_at <= now,
            deliveries.c.raw.is_(None),
            deliveries.c.personal.is_(None),
        )
        .order_by(deliveries.c.id)
    )
    wanted: list[int] = []
    for row in rows:
        key = (row.email_id, destination_of(row.recipient))
        if room.get(key, 0) > 0:
            room[key] -= 1
            wanted.append(int(row.id))
    if not wanted:
        return []
    due = select(deliveries.c.id).where(
        deliveries.c.id.in_(wanted), deliveries.c.next_attempt_at <= now
    )
    if for_update:
        due = due.with_for_update(skip_locked=True)
    result = await conn.execute(
        update(deliveries)
        .where(deliveries.c.id.in_(due.scalar_subquery()))
        .values(next_attempt_at=lease_until, lease_token=token)
        .returning(*_CLAIMED)
    )
    return _claimed(result)


@dataclass(frozen=True, slots=True)
class QueuedMessage:
    sender: str  # the From address, also the envelope sender for now
    source: str
    raw: bytes


async def load_messages(
    conn: AsyncConnection, email_ids: Sequence[str]
) -> dict[str, QueuedMessage]:
    """The sender, source and raw message of each email."""
    rows = await conn.execute(
        select(emails.c.id, emails.c.from_email, emails.c.source, emails.c.raw).where(
            emails.c.id.in_(set(email_ids))
        )
    )
    return {row.id: QueuedMessage(row.from_email, row.source, row.raw) for row in rows}


@dataclass(frozen=True, slots=True)
class PersonalMessage:
    """What one recipient's own message is made of: the message itself (queued by earlier
    versions), or the plan to make it from the email's message, html and text."""

    raw: bytes | None
    plan: str | None
    html: str | None = None
    text: str | None = None


async def load_personal_messages(
    conn: AsyncConnection, delivery_ids: Sequence[int]
) -> dict[int, PersonalMessage]:
    """The own message of each delivery that has one (tracking links, unsubscribe URL)."""
    if not delivery_ids:
        return {}
    rows = (
        await conn.execute(
            select(
                deliveries.c.id, deliveries.c.email_id, deliveries.c.raw, deliveries.c.personal
            ).where(
                deliveries.c.id.in_(list(delivery_ids)),
                or_(deliveries.c.raw.is_not(None), deliveries.c.personal.is_not(None)),
            )
        )
    ).all()
    planned = {r.email_id for r in rows if r.raw is None}
    bodies: dict[str, tuple[str | None, str | None]] = {}
    if planned:
        found = await conn.execute(
            select(emails.c.id, emails.c.html, emails.c.text).where(emails.c.id.in_(planned))
        )
        bodies = {r.id: (r.html, r.text) for r in found}
    return {
        int(r.id): (
            PersonalMessage(r.raw, None)
            if r.raw is not None
            else PersonalMessage(None, r.personal, *bodies.get(r.email_id, (None, None)))
        )
        for r in rows
    }


async def extend_leases(
    conn: AsyncConnection, ids_and_tokens: Sequence[tuple[int, str]], lease_until: datetime
) -> list[int]:
    """Heartbeat: keep in-flight deliveries leased until ``lease_until``; the ids of those
    whose lease was still held (the others were taken over, or their result recorded)."""
    if not ids_and_tokens:
        return []
    held = list(ids_and_tokens)
    result = await conn.execute(
        update(deliveries)
        .where(
            # The id list alone picks the rows by primary key; the pairs keep the held ones.
            deliveries.c.id.in_([delivery_id for delivery_id, _ in held]),
            tuple_(deliveries.c.id, deliveries.c.lease_token).in_(held),
        )
        .values(next_attempt_at=lease_until)
        .returning(deliveries.c.id)
    )
    return sorted(int(delivery_id) for delivery_id in result.scalars())


async def record_outcomes(conn: AsyncConnection, outcomes: Sequence[RecordedOutcome]) -> list[bool]:
    """Store results; ``False`` for one whose lease was lost (its result is dropped)."""
    recorded: list[bool] = []
    event_rows: list[dict[str, Any]] = []
    touched_emails: dict[str, datetime] = {}
    for item in outcomes:
        result = await conn.execute(
            update(deliveries)
            .where(
                deliveries.c.id == item.delivery_id, deliveries.c.lease_token == item.lease_token
            )
            .values(
                status=item.status,
                attempts=item.attempts,
                next_attempt_at=item.next_attempt_at,
                lease_token=None,
                last_code=item.last_code,
                last_reply=item.last_reply,
                remote_host=item.remote_host,
                delivered_at=item.delivered_at,
                updated_at=item.now,
            )
        )
        ok = result.rowcount > 0
        recorded.append(ok)
        if not ok:
            continue
        touched_emails[item.email_id] = item.now
        event_rows.append(
            {
                "account_id": item.account_id,
                "email_id": item.email_id,
                "delivery_id": item.delivery_id,
                "type": item.event_type,
                "recipient": item.recipient,
                "sender": item.sender,
                "source": item.source,
                "data": item.event_data,
                "created_at": item.now,
            }
        )
    await insert_events(conn, event_rows)
    for item, ok in zip(outcomes, recorded, strict=True):
        if ok and item.suppress_reason is not None:
            await suppressions.add(
                conn,
                account_id=item.account_id,
                address=item.recipient,
                reason=item.suppress_reason,
                detail=item.last_reply,
                email_id=item.email_id,
                now=item.now,
            )
    if touched_emails:
        await refresh_email_status(conn, touched_emails)
    return recorded


async def refresh_email_status(conn: AsyncConnection, touched: dict[str, datetime]) -> None:
    """Recompute each email's aggregate status from its deliveries."""
    rows = await conn.execute(
        select(deliveries.c.email_id, deliveries.c.status).where(
            deliveries.c.email_id.in_(list(touched))
        )
    )
    by_email: dict[str, list[str]] = {}
    for email_id, status in rows:
        by_email.setdefault(email_id, []).append(status)
    await conn.execute(
        update(emails)
        .where(emails.c.id == bindparam("b_id"))
        .values(status=bindparam("b_status"), updated_at=bindparam("b_now")),
        [
            {"b_id": email_id, "b_status": str(aggregate(statuses)), "b_now": touched[email_id]}
            # A fixed order keeps two workers' transactions from locking emails crosswise.
            for email_id, statuses in sorted(by_email.items())
        ],
    )
