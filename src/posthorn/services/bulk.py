"""Bulk jobs: one email per recipient, queued at a steady pace by the bulk runner.

A job holds its recipients as rows (given inline, or a snapshot of a list's contacts taken
when the job is made), each ``pending`` until ``bulk_runner`` queues its email through the
ordinary intake. Problems with one recipient (a bad address, a suppressed or unsubscribed
one) are recorded on its row and never stop the rest.

Permissions: creating and cancelling need ``sending_access``; reading needs any key.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from posthorn.domain.addresses import AddressError, format_address, parse_address
from posthorn.domain.permissions import Permission
from posthorn.errors import Conflict, InvalidRequest, NotFound, PermissionDenied, TooLarge
from posthorn.mime.compose import Attachment
from posthorn.services.accounts import Principal
from posthorn.services.domains import Domains
from posthorn.services.email_rows import check_schedule
from posthorn.services.templates import Templates
from posthorn.settings import Settings
from posthorn.store import bulk as repo
from posthorn.store import lists as lists_repo
from posthorn.store import numeric_ids
from posthorn.store.database import Database
from posthorn.store.tables import utcnow

KINDS = ("bulk", "personal", "list")
MAX_RECIPIENTS = 100_000
MAX_SUBJECT_CHARS = 998  # RFC 5322 §2.1.1
INVALID_ADDRESS = "The recipient's email address is incorrect"
PERSONAL_INCOMPLETE = "subject and message are required for each personal letter"


@dataclass(frozen=True, slots=True)
class NewRecipient:
    email: str
    variables: dict[str, Any] | None = None  # data for {{ variables }}
    subject: str | None = None  # a personal letter's own subject and HTML
    html: str | None = None


@dataclass(frozen=True, slots=True)
class NewJob:
    kind: str  # bulk | personal | list
    from_: str
    name: str | None = None
    subject: str | None = None
    html: str | None = None
    text: str | None = None
    template_id: str | None = None
    recipients: Sequence[NewRecipient] = ()
    list_id: str | None = None
    track_opens: bool = False
    track_clicks: bool = False
    unsubscribe: bool = False
    personalize: bool = True  # render {{ variables }} in subject and body
    scheduled_at: datetime | None = None
    attachments: Sequence[Attachment] = ()
    source: str = "api"
    api_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class RecipientReport:
    """One recipient with what became of its email, for status pages and dialects."""

    position: int
    email: str
    status: str  # the recipient row's: pending | queued | skipped | invalid | failed | …
    error: str | None
    email_id: str | None
    delivery_status: str | None = None  # the delivery's, once queued
    last_reply: str | None = None
    events: frozenset[str] = field(default_factory=frozenset)  # opened, clicked, …
    number: int | None = None  # the email's numeric id


class Bulk:
    def __init__(
        self, db: Database, settings: Settings, domains: Domains, templates: Templates
    ) -> None:
        self._db = db
        self._settings = settings
        self._domains = domains
        self._templates = templates

    async def create(self, caller: Principal, job: NewJob) -> dict[str, Any]:
        """Check the job, store it with its recipients, and leave it for the runner."""
        caller.require(Permission.SENDING_ACCESS)
        params = await self._params(caller, job)
        rows = _recipient_rows(job)
        now = utcnow()
        # Now when not scheduled; a time already past means now too.
        when = check_schedule(job.scheduled_at, now) or now
        job_id = "blk_" + str(uuid.uuid4())
        row = {
            "id": job_id,
            "account_id": caller.account_id,
            "name": (job.name or "").strip()[:200] or f"Mailing {now:%Y-%m-%d %H:%M}",
            "kind": job.kind,
            "status": "queued",
            "params": params,
            "list_id": job.list_id,
            "next_run_at": when,
            "created_at": now,
            "updated_at": now,
        }
        async with self._db.write() as conn:
            owner = caller.account_id
            if job.list_id and await lists_repo.get_list(conn, owner, job.list_id) is None:
                raise NotFound(resource="list")
            await repo.insert_job(conn, row)
            if job.list_id is not None:
                await repo.snapshot_list(conn, job_id, job.list_id)
            else:
                await repo.insert_recipients(conn, [{"job_id": job_id, **r} for r in rows])
            counts = (await repo.status_counts(conn, [job_id])).get(job_id, {})
            total = sum(counts.values())
            await repo.set_totals(
                conn, job_id, total=total, processed=total - counts.get(repo.PENDING, 0)
            )
            await numeric_ids.ensure(conn, "bulk", job_id)
        return await self.get(caller.account_id, job_id)

    async def _params(self, caller: Principal, job: NewJob) -> dict[str, Any]:
        if job.kind not in KINDS:
            raise InvalidRequest("invalid_filter", field="kind", value=job.kind[:40])
        try:
            sender = parse_address(job.from_)
        except AddressError as exc:
            raise InvalidRequest("invalid_address", field="from", value=job.from_[:100]) from exc
        if await self._domains.sending_domain(caller.account_id, sender.domain) is None:
            raise PermissionDenied("domain_not_verified", field="from", domain=sender.domain)
        if (job.list_id is None) == (not job.recipients) or (job.kind == "list") != bool(
            job.list_id
        ):
            raise InvalidRequest("bulk_recipients_required")
        if len(job.recipients) > MAX_RECIPIENTS:
            raise InvalidRequest("too_many_items", field="recipients", limit=MAX_RECIPIENTS)
        if job.template_id is not None:
            await self._templates.get(caller.account_id, job.template_id)
        elif job.kind != "personal":
            if not (job.subject or "").strip():
                raise InvalidRequest("field_required", field="subject")
            if not job.html and not job.text:
                raise InvalidRequest("body_required", field="html")
        subject = job.subject or ""
        if len(subject) > MAX_SUBJECT_CHARS or any(c in subject for c in "\r\n\x00"):
            raise InvalidRequest("subject_invalid", field="subject")
        if job.personalize and job.template_id is None:
            # Inline sources are rendered as templates: the same size cap and parse (off the
            # event loop) as stored ones; a personal letter's body has the size cap.
            await self._templates.variables(subject, job.html, job.text)
            for position, recipient in enumerate(job.recipients):
                # Parsed when sent: a syntax error fails that letter only.
                self._templates.check_sizes(**{f"recipients[{position}].html": recipient.html})
        if sum(len(a.content) for a in job.attachments) > self._settings.max_message_bytes:
            raise TooLarge(limit=self._settings.max_message_bytes)
        return {
            "from": format_address(sender),
            "subject": job.subject,
            "html": job.html,
            "text": job.text,
            "template_id": job.template_id,
            "track_opens": job.track_opens,
            "track_clicks": job.track_clicks,
            "unsubscribe": job.unsubscribe,
            "personalize": job.personalize,
            "source": job.source,
            "api_key_id": job.api_key_id or caller.key_id,
            "attachments": [
                {
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "content": base64.b64encode(a.content).decode(),
                }
                for a in job.attachments
            ],
        }

    async def get(self, account_id: str, job_id: str) -> dict[str, Any]:
        async with self._db.read() as conn:
            row = await repo.get_job(conn, account_id, job_id)
            if row is None:
                raise NotFound(resource="bulk job")
            counts = await repo.status_counts(conn, [job_id])
            number = await numeric_ids.numbers(conn, "bulk", [job_id])
        return _with_totals(row, counts.get(job_id, {}), number.get(job_id))

    async def page(
        self, account_id: str, *, page: int, per_page: int
    ) -> tuple[list[dict[str, Any]], int]:
        async with self._db.read() as conn:
            rows, total = await repo.page_jobs(
                conn, account_id, offset=(page - 1) * per_page, limit=per_page
            )
            ids = [r["id"] for r in rows]
            counts = await repo.status_counts(conn, ids)
            numbers = await numeric_ids.numbers(conn, "bulk", ids)
        return [_with_totals(r, counts.get(r["id"], {}), numbers.get(r["id"])) for r in rows], total

    async def recipients(
        self, account_id: str, job_id: str, *, status: str | None, page: int, per_page: int
    ) -> tuple[list[dict[str, Any]], int]:
        if status is not None and status not in repo.RECIPIENT_STATUSES:
            raise InvalidRequest("invalid_filter", field="status", value=status[:40])
        async with self._db.read() as conn:
            if await repo.get_job(conn, account_id, job_id) is None:
                raise NotFound(resource="bulk job")
            return await repo.page_recipients(
                conn, job_id, status=status, offset=(page - 1) * per_page, limit=per_page
            )

    async def report(
        self, account_id: str, job_id: str, *, after: int = 0, limit: int = 1000
    ) -> list[RecipientReport]:
        """Recipients after position ``after`` with their emails' delivery state and tracking
        events; numbers for the emails are allocated on the way (for the v2 API)."""
        async with self._db.write() as conn:
            if await repo.get_job(conn, account_id, job_id) is None:
                raise NotFound(resource="bulk job")
            rows = await repo.recipients_after(conn, job_id, after=after, limit=limit)
            email_ids = [r["email_id"] for r in rows if r["email_id"]]
            states = await repo.delivery_states(conn, email_ids)
            numbers = await numeric_ids.ensure_many(conn, "email", email_ids)
        reports = []
        for row in rows:
            state = states.get((row["email_id"], row["email"].lower()))
            reports.append(
                RecipientReport(
                    position=row["position"],
                    email=row["email"],
                    status=row["status"],
                    error=row["error"],
                    email_id=row["email_id"],
                    delivery_status=state.status if state else None,
                    last_reply=state.last_reply if state else None,
                    events=state.events if state else frozenset(),
                    number=numbers.get(row["email_id"]) if row["email_id"] else None,
                )
            )
        return reports

    async def email_report(self, account_id: str, email_id: str) -> list[RecipientReport]:
        """The same view of one ordinary email's recipients."""
        async with self._db.read() as conn:
            states = await repo.delivery_states(conn, [email_id], account_id=account_id)
            number = await numeric_ids.numbers(conn, "email", [email_id])
        return [
            RecipientReport(
                position=index,
                email=state.recipient,
                status=repo.QUEUED,
                error=None,
                email_id=email_id,
                delivery_status=state.status,
                last_reply=state.last_reply,
                events=state.events,
                number=number.get(email_id),
            )
            for index, state in enumerate(states.values(), start=1)
        ]

    async def cancel(self, caller: Principal, job_id: str) -> dict[str, Any]:
        caller.require(Permission.SENDING_ACCESS)
        async with self._db.write() as conn:
            row = await repo.get_job(conn, caller.account_id, job_id)
            if row is None:
                raise NotFound(resource="bulk job")
            if row["status"] not in repo.ACTIVE:
                raise Conflict("not_cancellable", status=row["status"])
            await repo.cancel(conn, job_id, utcnow())
        return await self.get(caller.account_id, job_id)

    async def timezone(self, account_id: str) -> ZoneInfo:
        """The account's time zone (UTC when unset or unknown)."""
        async with self._db.read() as conn:
            name = await repo.account_timezone(conn, account_id)
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo("UTC")

    async def number(self, kind: str, ref_id: str) -> int:
        """The numeric id of an object, allocated on first use (the v2 API's ids)."""
        async with self._db.write() as conn:
            return await numeric_ids.ensure(conn, kind, ref_id)

    async def numbers(self, kind: str, ref_ids: Sequence[str]) -> dict[str, int]:
        async with self._db.write() as conn:
            return await numeric_ids.ensure_many(conn, kind, ref_ids)

    async def resolve(self, number: int) -> tuple[str, str] | None:
        """(kind, id) behind a numeric id. Callers check that the object is the caller's."""
        async with self._db.read() as conn:
            return await numeric_ids.resolve(conn, number)


def _recipient_rows(job: NewJob) -> list[dict[str, Any]]:
    """Rows for inline recipients: bad addresses are ``invalid`` from the start, and a
    repeated address in a ``bulk`` job is ``skipped`` (one letter per mailbox)."""
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for position, item in enumerate(job.recipients, start=1):
        status, error = repo.PENDING, None
        try:
            email = parse_address(item.email).email
        except AddressError:
            email, status, error = item.email.strip()[:320], repo.INVALID, INVALID_ADDRESS
        variables = dict(item.variables or {})
        if job.kind == "personal":
            variables |= {"subject": item.subject, "html": item.html}
            if status == repo.PENDING and not (item.subject and item.html):
                status, error = repo.INVALID, PERSONAL_INCOMPLETE
        elif status == repo.PENDING and email.lower() in seen:
            status, error = repo.SKIPPED, "duplicate"
        seen.add(email.lower())
        rows.append(
            {
                "position": position,
                "email": email,
                "variables": variables or None,
                "status": status,
                "error": error,
            }
        )
    return rows


def _with_totals(row: dict[str, Any], counts: dict[str, int], number: int | None) -> dict[str, Any]:
    total = int(row["total"])
    processed = int(row["processed"])
    return {
        **{k: v for k, v in row.items() if k not in ("params", "lease_token")},
        "numeric_id": number,
        "from": row["params"].get("from"),
        "subject": row["params"].get("subject"),
        "totals": {
            "total": total,
            "processed": processed,
            **{status: counts.get(status, 0) for status in repo.RECIPIENT_STATUSES},
        },
        "progress": round(100 * processed / total, 1) if total else 100.0,
    }
