"""Applying a report to the delivery its return path names, in one write transaction.

A permanent bounce marks the delivery ``bounced`` with a ``bounced`` event and refreshes the
email's status; a complaint adds a ``complained`` event and leaves the delivery as it was (the
mail was delivered; someone did not want it). Either may suppress the address too. A report
that arrives twice (the sending MTA did not see our reply and tried again) records nothing the
second time.

A group return path names one transaction that carried the message to several recipients of
an email; a report to it is applied to each delivery of that email whose recipient it names
(RFC 3464 §2.3.2 Final-Recipient, RFC 5965 §3.2 Original-Rcpt-To). A failure naming none of
them cannot be told apart from another recipient's and is left alone (``unmatched``).
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.domain.bounces import (
    Bounce,
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
    UNMATCHED = "unmatched"  # a group's report names no recipient of the email


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


async def apply_group_report(
    db: Database, lead_id: int, report: Report, *, now: datetime
) -> list[tuple[int | None, Outcome]]:
    """Record what ``report`` says about the recipients of the group that delivery ``lead_id``
    led: the delivery each outcome is about (None when it names none) and what was done."""
    if isinstance(report, Ignored):
        return [(None, Outcome.IGNORED)]
    if isinstance(report, DeliveryReport) and not any(b.permanent for b in report.bounces):
        return [(None, Outcome.DELAYED)]
    async with db.write() as conn:
        members = await store.group_deliveries(conn, lead_id)
        if not members:
            return [(None, Outcome.UNKNOWN_DELIVERY)]
        by_mailbox = {_mailbox(d.recipient): d for d in members}
        if isinstance(report, Complaint):
            # The returned message's To names the person complaining only when nobody else
            # (a Cc, a Bcc) shared the transaction; otherwise only Original-Rcpt-To will do.
            guessed = not report.recipient_stated and len(members) > 1
            named = None if guessed else by_mailbox.get(_mailbox(report.recipient or ""))
            if named is None:
                return [(None, Outcome.UNMATCHED)]
            return [(named.id, await _complaint(conn, named, report, now))]
        outcomes: list[tuple[int | None, Outcome]] = []
        done: set[int] = set()
        for bounce in report.bounces:
            if not bounce.permanent:
                continue
            delivery = by_mailbox.get(_mailbox(bounce.recipient))
            if delivery is None:
                outcomes.append((None, Outcome.UNMATCHED))
            elif delivery.id not in done:  # a report may name a recipient twice
                done.add(delivery.id)
                outcomes.append((delivery.id, await _bounce(conn, delivery, report, now, bounce)))
        return outcomes


def _mailbox(address: str) -> str:
    """An address as the matching key: case folded (as :func:`for_recipient` compares), the
    domain in A-labels since it went on the wire that way (RFC 5890)."""
    local, at, domain = address.strip().strip("<>").lower().rpartition("@")
    if not at:
        return domain
    with contextlib.suppress(UnicodeError):
        domain = domain.encode("idna").decode("ascii")
    return f"{local}@{domain}"


async def _bounce(
    conn: AsyncConnection,
    delivery: store.ReportedDelivery,
    report: DeliveryReport,
    now: datetime,
    bounce: Bounce | None = None,
) -> Outcome:
    bounce = bounce or for_recipient(report, delivery.recipient)
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
