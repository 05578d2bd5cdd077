"""Applying a report to the delivery its return path names, in one write transaction.

A permanent bounce marks the delivery ``bounced`` with a ``bounced`` event and refreshes the
email's status; a complaint adds a ``complained`` event and leaves the delivery as it was (the
mail was delivered; someone did not want it). Either may suppress the address too. A report
that arrives twice (the sending MTA did not see our reply and tried again) records nothing the
second time.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.domain.bounces import (
    Complaint,
    DeliveryReport,
    Ignored,
    Report,
    for_recipient,
    suppresses,
)
from posthorn.domain.statuses import Status
from posthorn.store import bounces as store
from posthorn.store import suppressions
from posthorn.store.database import Database

MAX_DETAIL = 500  # characters of a diagnostic kept in a suppression's detail


class Outcome(StrEnum):
    BOUNCED = "bounced"
    BOUNCED_AND_SUPPRESSED = "bounced_and_suppressed"
    COMPLAINED = "complained"
    DUPLICATE = "duplicate"
    DELAYED = "delayed"  # a warning only (RFC 3464 §2.3.3 "delayed"): nothing to record
    IGNORED = "ignored"
    UNKNOWN_DELIVERY = "unknown_delivery"  # the token verified, but the delivery is gone


async def apply_report(db: Database, delivery_id: int, report: Report, *, now: datetime) -> Outcome:
    """Record what ``report`` says about delivery ``delivery_id``; what was done."""
    if isinstance(report, Ignored):
        return Outcome.IGNORED
    if isinstance(report, DeliveryReport) and not any(b.permanent for b in report.bounces):
        return Outcome.DELAYED
    async with db.write() as conn:
        delivery = await store.reported_delivery(conn, delivery_id)
        if delivery is None:
            return Outcome.UNKNOWN_DELIVERY
        if isinstance(report, Complaint):
            return await _complaint(conn, delivery, report, now)
        return await _bounce(conn, delivery, report, now)


async def _bounce(
    conn: AsyncConnection, delivery: store.ReportedDelivery, report: DeliveryReport, now: datetime
) -> Outcome:
    bounce = for_recipient(report, delivery.recipient)
    if bounce is None or not bounce.permanent:
        return Outcome.DELAYED
    suppress = suppresses(bounce)
    duplicate = delivery.status == Status.BOUNCED
    if not duplicate:
        data: dict[str, Any] = {
            "status": bounce.status,
            "diagnostic": bounce.diagnostic,
            "action": bounce.action,
            "source": report.source,
            "code": bounce.reply_code,
            "reporting_mta": report.reporting_mta,
            "suppressed": suppress,
        }
        await store.mark_bounced(
            conn,
            delivery,
            reply_code=bounce.reply_code,
            reply=bounce.diagnostic or bounce.status,
            data=data,
            now=now,
        )
    added = False
    if suppress:
        added = await suppressions.add(
            conn,
            account_id=delivery.account_id,
            address=delivery.recipient,
            reason="bounce",
            now=now,
            detail=(bounce.diagnostic or bounce.status)[:MAX_DETAIL],
            email_id=delivery.email_id,
        )
    if duplicate and not added:
        return Outcome.DUPLICATE
    return Outcome.BOUNCED_AND_SUPPRESSED if suppress else Outcome.BOUNCED


async def _complaint(
    conn: AsyncConnection, delivery: store.ReportedDelivery, report: Complaint, now: datetime
) -> Outcome:
    if await store.has_event(conn, delivery, "complained"):
        return Outcome.DUPLICATE
    await store.record_complaint(
        conn,
        delivery,
        data={"feedback_type": report.feedback_type, "user_agent": report.user_agent},
        now=now,
    )
    await suppressions.add(
        conn,
        account_id=delivery.account_id,
        address=delivery.recipient,
        reason="complaint",
        now=now,
        detail=f"Feedback-Type: {report.feedback_type}",
        email_id=delivery.email_id,
    )
    return Outcome.COMPLAINED
