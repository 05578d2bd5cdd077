"""Reading emails back: lists with filters and status statistics, and one email in detail."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from posthorn.domain.statuses import Status
from posthorn.errors import Conflict, InvalidRequest, NotFound
from posthorn.store import emails as repo
from posthorn.store.database import Database
from posthorn.store.events import insert_events
from posthorn.store.queue import refresh_email_status
from posthorn.store.tables import utcnow

MAX_SCHEDULE_AHEAD = timedelta(days=30)

# The seed API lists "delayed" among the status filters; it is our "deferred".
STATUS_ALIASES = {"delayed": Status.DEFERRED}


@dataclass(frozen=True, slots=True)
class StatusCount:
    status: Status
    count: int
    percentage: float


@dataclass(frozen=True, slots=True)
class EmailPage:
    items: list[dict[str, Any]]
    total: int
    stats: list[StatusCount]


@dataclass(frozen=True, slots=True)
class EmailDetail:
    email: dict[str, Any]
    deliveries: list[dict[str, Any]]
    events: list[dict[str, Any]]


def parse_statuses(text: str | None) -> tuple[str, ...]:
    """A comma list of statuses (case-insensitive, "delayed" allowed) → status values."""
    if not text:
        return ()
    found: list[str] = []
    for part in text.split(","):
        word = part.strip().lower()
        if not word:
            continue
        try:
            status = STATUS_ALIASES.get(word) or Status(word)
        except ValueError as exc:
            raise InvalidRequest("invalid_filter", field="status", value=word[:40]) from exc
        found.append(str(status))
    return tuple(dict.fromkeys(found))


class Emails:
    def __init__(self, db: Database) -> None:
        self._db = db

    async def page(
        self,
        account_id: str,
        *,
        page: int,
        per_page: int,
        statuses: tuple[str, ...] = (),
        created_from: datetime | None = None,
        created_to: datetime | None = None,
    ) -> EmailPage:
        flt = repo.EmailFilter(
            account_id=account_id,
            statuses=statuses,
            created_from=created_from,
            created_to=created_to,
        )
        async with self._db.read() as conn:
            items, total = await repo.list_emails(
                conn, flt, offset=(page - 1) * per_page, limit=per_page
            )
            counts = await repo.count_by_status(conn, flt)
        return EmailPage(items=items, total=total, stats=_stats(counts))

    async def get(self, account_id: str, email_id: str) -> EmailDetail:
        async with self._db.read() as conn:
            email = await repo.get_email(conn, account_id, email_id)
            if email is None:
                raise NotFound(resource="email")
            deliveries = await repo.get_deliveries(conn, email_id)
            events = await repo.get_events(conn, email_id)
        return EmailDetail(email=email, deliveries=deliveries, events=events)

    async def cancel(self, account_id: str, email_id: str) -> EmailDetail:
        """Cancel what has not been sent yet; 409 when nothing is left to cancel."""
        now = utcnow()
        async with self._db.write() as conn:
            email = await repo.get_email(conn, account_id, email_id)
            if email is None:
                raise NotFound(resource="email")
            cancelled, _ = await repo.cancel_pending(conn, email_id, now)
            if not cancelled:
                raise Conflict("not_cancellable", status=email["status"])
            await insert_events(
                conn,
                [
                    {
                        "account_id": account_id,
                        "email_id": email_id,
                        "type": "cancelled",
                        "recipient": recipient,
                        "sender": email["from_email"],
                        "source": email["source"],
                        "data": {},
                        "created_at": now,
                    }
                    for recipient in cancelled
                ],
            )
            await refresh_email_status(conn, {email_id: now})
        return await self.get(account_id, email_id)

    async def reschedule(self, account_id: str, email_id: str, when: datetime) -> EmailDetail:
        now = utcnow()
        if when.tzinfo is None or when - now > MAX_SCHEDULE_AHEAD:
            raise InvalidRequest("schedule_too_far", field="scheduled_at", days=30)
        async with self._db.write() as conn:
            email = await repo.get_email(conn, account_id, email_id)
            if email is None:
                raise NotFound(resource="email")
            if not await repo.reschedule(conn, email_id, max(when, now), now):
                raise Conflict("not_cancellable", status=email["status"])
        return await self.get(account_id, email_id)


def _stats(counts: dict[str, int]) -> list[StatusCount]:
    total = sum(counts.values())
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [
        StatusCount(Status(status), count, round(100 * count / total, 1) if total else 0.0)
        for status, count in ordered
    ]
