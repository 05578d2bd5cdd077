"""Intake: the one path by which mail enters Posthorn, whatever door it came through.

The native API, every dialect, the SMTP server and the CLI turn what they received into a
:class:`SendRequest` (or, for SMTP, a :class:`RawSubmission`) and call :class:`Intake`. Intake
validates it, builds the MIME message once, and commits the email, one delivery per recipient
and a ``queued`` event per recipient in one transaction, before it answers. Concurrent
submissions share transactions (group commit); each caller waits for its own commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from posthorn.domain import quotas
from posthorn.domain.addresses import Address, AddressError, format_address, parse_address
from posthorn.domain.custom_headers import check_header
from posthorn.domain.statuses import Status
from posthorn.errors import InvalidRequest, LimitExceeded, PermissionDenied, PosthornError, TooLarge
from posthorn.mime.compose import Attachment, MessageSpec, compose
from posthorn.mime.parse import address_list, first, prepend_header, read_headers
from posthorn.services.domains import Domains
from posthorn.settings import Settings
from posthorn.store import usage
from posthorn.store.database import Database
from posthorn.store.emails import NewEmail, insert_emails
from posthorn.store.group_commit import GroupCommitter
from posthorn.store.tables import utcnow

MAX_SUBJECT_CHARS = 998  # RFC 5322 §2.1.1: a line is at most 998 characters
MAX_TAGS = 20
MAX_TAG_CHARS = 256


@dataclass(frozen=True, slots=True)
class Tag:
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class SendRequest:
    """One email as a client described it, before validation."""

    account_id: str
    source: str  # api | smtp | cli | a dialect's name
    from_: str
    to: Sequence[str]
    subject: str
    html: str | None = None
    text: str | None = None
    cc: Sequence[str] = ()
    bcc: Sequence[str] = ()
    reply_to: str | None = None
    attachments: Sequence[Attachment] = ()
    headers: dict[str, str] = field(default_factory=dict)
    tags: Sequence[Tag] = ()
    api_key_id: str | None = None
    extra_limits: Sequence[quotas.Limit] = ()  # e.g. an SMTP sender's own limits


@dataclass(frozen=True, slots=True)
class RawSubmission:
    """A complete message received over SMTP, with its envelope."""

    account_id: str
    source: str
    mail_from: str  # MAIL FROM (the envelope sender)
    recipients: Sequence[str]  # RCPT TO
    message: bytes  # CRLF line endings, a Received header already on top
    extra_limits: Sequence[quotas.Limit] = ()
    api_key_id: str | None = None


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the client is told once its email is durably queued."""

    id: str
    message_id: str
    from_: str
    to: tuple[str, ...]
    status: Status
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Prepared:
    accepted: Accepted
    rows: NewEmail
    sender: Address


@dataclass(frozen=True, slots=True)
class _Pending:
    """One email waiting for the group commit, with the quotas it must fit in."""

    rows: NewEmail
    limits: Sequence[quotas.Limit]


class Intake:
    def __init__(self, db: Database, settings: Settings, domains: Domains) -> None:
        self._db = db
        self._settings = settings
        self._domains = domains
        self._committer: GroupCommitter[_Pending, PosthornError | None] = GroupCommitter(
            db,
            _flush,
            max_batch=settings.intake_batch_size,
            max_wait=settings.intake_batch_wait_ms / 1000,
            name="intake",
        )

    async def submit(self, request: SendRequest) -> Accepted:
        """Validate, build and durably queue one email.

        Raises :class:`InvalidRequest` for a bad field, :class:`PermissionDenied` when the
        From domain is not a verified domain of the account, :class:`LimitExceeded` when a
        quota is reached (then nothing is queued).
        """
        prepared = self.prepare(request)
        limits = await self._sending_limits(request.account_id, prepared.sender)
        error = await self._committer.submit(
            _Pending(prepared.rows, [*limits, *request.extra_limits])
        )
        if error is not None:
            raise error
        return prepared.accepted

    async def submit_raw(self, submission: RawSubmission) -> Accepted:
        """Queue a message that arrived whole (SMTP): checked like any other, sent as written.

        Only a missing Message-ID is added (RFC 5322 §3.6.4 says it SHOULD be there).
        """
        prepared = self.prepare_raw(submission)
        limits = await self._sending_limits(submission.account_id, prepared.sender)
        error = await self._committer.submit(
            _Pending(prepared.rows, [*limits, *submission.extra_limits])
        )
        if error is not None:
            raise error
        return prepared.accepted

    def prepare_raw(self, submission: RawSubmission, *, now: datetime | None = None) -> Prepared:
        now = now or utcnow()
        if len(submission.message) > self._settings.max_message_bytes:
            raise TooLarge(limit=self._settings.max_message_bytes)
        headers = read_headers(submission.message)
        from_header = first(headers, "from")
        if from_header is None:
            raise InvalidRequest("from_missing", field="from")
        sender = _address("from", from_header)
        envelope = _addresses("to", submission.recipients)
        if not envelope:
            raise InvalidRequest("recipients_required", field="to")
        if len(envelope) > self._settings.max_recipients:
            raise InvalidRequest(
                "too_many_recipients",
                field="to",
                count=len(envelope),
                limit=self._settings.max_recipients,
            )
        email_id = str(uuid.uuid4())
        message = submission.message
        message_id = (first(headers, "message-id") or "").strip().strip("<>")
        if not message_id:
            message_id = f"{email_id}@{self._settings.hostname}"
            message = prepend_header(message, "Message-ID", f"<{message_id}>")
        to_header = [a.lower() for a in address_list(headers, "to")]
        cc_header = [a.lower() for a in address_list(headers, "cc")]
        kinds: dict[str, tuple[Address, ...]] = {"to": (), "cc": (), "bcc": ()}
        for address in envelope:
            kind = (
                "to"
                if address.email.lower() in to_header
                else "cc"
                if address.email.lower() in cc_header
                else "bcc"
            )
            kinds[kind] = (*kinds[kind], address)
        request = SendRequest(
            account_id=submission.account_id,
            source=submission.source,
            from_=from_header,
            to=[],
            subject=(first(headers, "subject") or "")[:MAX_SUBJECT_CHARS],
            api_key_id=submission.api_key_id,
        )
        rows = _rows(
            email_id=email_id,
            message_id=message_id,
            request=request,
            sender=sender,
            recipients=kinds,
            reply_to=None,
            tags=[],
            raw=message,
            now=now,
        )
        rows.email["reply_to"] = first(headers, "reply-to")
        accepted = Accepted(
            id=email_id,
            message_id=message_id,
            from_=format_address(sender),
            to=tuple(a.email for a in envelope),
            status=Status.QUEUED,
            created_at=now,
        )
        return Prepared(accepted=accepted, rows=rows, sender=sender)

    async def _sending_limits(self, account_id: str, sender: Address) -> list[quotas.Limit]:
        domain = await self._domains.sending_domain(account_id, sender.domain)
        if domain is None:
            raise PermissionDenied("domain_not_verified", field="from", domain=sender.domain)
        return self._domains.limits(domain)

    async def close(self) -> None:
        await self._committer.close()

    def prepare(self, request: SendRequest, *, now: datetime | None = None) -> Prepared:
        """Everything but the commit: pure apart from the clock and the id generator."""
        now = now or utcnow()
        sender = _address("from", request.from_)
        to = _addresses("to", request.to)
        cc = _addresses("cc", request.cc)
        bcc = _addresses("bcc", request.bcc)
        reply_to = _address("reply_to", request.reply_to) if request.reply_to else None
        if not to:
            raise InvalidRequest("recipients_required", field="to")
        count = len(to) + len(cc) + len(bcc)
        if count > self._settings.max_recipients:
            raise InvalidRequest(
                "too_many_recipients", field="to", count=count, limit=self._settings.max_recipients
            )
        if not request.html and not request.text:
            raise InvalidRequest("body_required", field="html")
        subject = request.subject
        if len(subject) > MAX_SUBJECT_CHARS or any(c in subject for c in "\r\n\x00"):
            raise InvalidRequest("subject_invalid", field="subject")
        for name, value in request.headers.items():
            problem = check_header(name, value)
            if problem:
                raise InvalidRequest(problem, field="headers", name=name)
        tags = _check_tags(request.tags)

        email_id = str(uuid.uuid4())
        message_id = f"{email_id}@{self._settings.hostname}"
        raw = compose(
            MessageSpec(
                from_address=sender,
                to=to,
                cc=cc,
                reply_to=reply_to,
                subject=subject,
                message_id=message_id,
                date=now,
                html=request.html,
                text=request.text,
                attachments=tuple(request.attachments),
                headers=tuple(request.headers.items()),
            )
        )
        if len(raw) > self._settings.max_message_bytes:
            raise TooLarge(limit=self._settings.max_message_bytes)
        rows = _rows(
            email_id=email_id,
            message_id=message_id,
            request=request,
            sender=sender,
            recipients={"to": to, "cc": cc, "bcc": bcc},
            reply_to=reply_to,
            tags=tags,
            raw=raw,
            now=now,
        )
        accepted = Accepted(
            id=email_id,
            message_id=message_id,
            from_=format_address(sender),
            to=tuple(a.email for a in to),
            status=Status.QUEUED,
            created_at=now,
        )
        return Prepared(accepted=accepted, rows=rows, sender=sender)


async def _flush(conn: AsyncConnection, batch: Sequence[_Pending]) -> list[PosthornError | None]:
    """Check each email against its quotas in arrival order, queue those that fit, and count
    them, all in the one transaction (so a quota is never overrun by a concurrent batch)."""
    now = utcnow()
    keys = sorted({quotas.key(limit, now) for item in batch for limit in item.limits})
    used = await usage.read_counts(conn, keys, lock=True)
    added: dict[quotas.Key, int] = {}
    results: list[PosthornError | None] = []
    accepted: list[NewEmail] = []
    for item in batch:
        wanted = len(item.rows.deliveries)
        exceeded = quotas.check(item.limits, used, wanted, now)
        if exceeded is not None:
            results.append(
                LimitExceeded(
                    "quota_exceeded",
                    retry_after=exceeded.retry_after,
                    label=exceeded.limit.label,
                    limit=exceeded.limit.limit,
                )
            )
            continue
        for limit in item.limits:
            k = quotas.key(limit, now)
            used[k] = used.get(k, 0) + wanted
            added[k] = added.get(k, 0) + wanted
        accepted.append(item.rows)
        results.append(None)
    if accepted:
        await insert_emails(conn, accepted)
    await usage.increment(conn, added)
    return results


def _address(field_name: str, text: str) -> Address:
    try:
        return parse_address(text)
    except AddressError as exc:
        raise InvalidRequest("invalid_address", field=field_name, value=text[:100]) from exc


def _addresses(field_name: str, items: Sequence[str]) -> tuple[Address, ...]:
    return tuple(_address(f"{field_name}[{i}]", item) for i, item in enumerate(items))


def _check_tags(tags: Sequence[Tag]) -> list[dict[str, str]]:
    if len(tags) > MAX_TAGS:
        raise InvalidRequest(field="tags")
    for index, tag in enumerate(tags):
        if not tag.name or len(tag.name) > MAX_TAG_CHARS or len(tag.value) > MAX_TAG_CHARS:
            raise InvalidRequest(field=f"tags[{index}]")
    return [{"name": t.name, "value": t.value} for t in tags]


def _rows(
    *,
    email_id: str,
    message_id: str,
    request: SendRequest,
    sender: Address,
    recipients: dict[str, tuple[Address, ...]],
    reply_to: Address | None,
    tags: list[dict[str, str]],
    raw: bytes,
    now: datetime,
) -> NewEmail:
    email: dict[str, Any] = {
        "id": email_id,
        "account_id": request.account_id,
        "api_key_id": request.api_key_id,
        "source": request.source,
        "message_id": message_id,
        "from_header": format_address(sender),
        "from_email": sender.email,
        "to_addrs": [a.email for a in recipients["to"]],
        "cc_addrs": [a.email for a in recipients["cc"]],
        "bcc_addrs": [a.email for a in recipients["bcc"]],
        "reply_to": format_address(reply_to) if reply_to else None,
        "subject": request.subject,
        "html": request.html,
        "text": request.text,
        "headers": dict(request.headers),
        "tags": tags,
        "attachments": [
            {"filename": a.filename, "content_type": a.content_type, "size": len(a.content)}
            for a in request.attachments
        ],
        "status": str(Status.QUEUED),
        "size": len(raw),
        "raw": raw,
        "created_at": now,
        "updated_at": now,
    }
    deliveries: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    seen: set[str] = set()
    for kind, addresses in recipients.items():
        for address in addresses:
            key = address.email.lower()
            if key in seen:  # one copy per mailbox, however often it was listed
                continue
            seen.add(key)
            deliveries.append(
                {
                    "email_id": email_id,
                    "account_id": request.account_id,
                    "recipient": address.email,
                    "kind": kind,
                    "status": str(Status.QUEUED),
                    "attempts": 0,
                    "next_attempt_at": now,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            events.append(
                {
                    "account_id": request.account_id,
                    "email_id": email_id,
                    "type": "queued",
                    "recipient": address.email,
                    "sender": sender.email,
                    "source": request.source,
                    "data": {"source": request.source},
                    "created_at": now,
                }
            )
    return NewEmail(email=email, deliveries=deliveries, events=events)
