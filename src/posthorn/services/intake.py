"""Intake: the one path by which mail enters Posthorn, whatever door it came through.

The native API, every dialect, the SMTP server and the CLI turn what they received into a
:class:`SendRequest` (or, for SMTP, a :class:`RawSubmission`) and call :class:`Intake`. Intake
validates it, builds the MIME message once, and commits the email, one delivery per recipient
and a ``queued`` event per recipient in one transaction, before it answers. Concurrent
submissions share transactions (group commit); each caller waits for its own commit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError

from posthorn.domain import quotas
from posthorn.domain.addresses import Address, AddressError, format_address, parse_address
from posthorn.domain.custom_headers import check_header
from posthorn.domain.ids import new_email_id
from posthorn.domain.send_defaults import DomainSendDefaults, resolve
from posthorn.domain.statuses import Status
from posthorn.errors import InvalidRequest, PermissionDenied, PosthornError, TooLarge
from posthorn.mime.compose import Attachment, MessageSpec, compose
from posthorn.mime.parse import address_list, first, prepend_header, read_headers
from posthorn.services.admission import Accepted, Outcome, Pending, admit
from posthorn.services.domains import Domains
from posthorn.services.email_rows import (
    check_address,
    check_addresses,
    check_metadata,
    check_schedule,
    check_tags,
    email_rows,
    request_hash,
)
from posthorn.services.personal_copies import CopyPlan
from posthorn.services.templates import Templates
from posthorn.settings import Settings
from posthorn.store.database import Database
from posthorn.store.emails import NewEmail
from posthorn.store.group_commit import GroupCommitter
from posthorn.store.tables import utcnow

MAX_SUBJECT_CHARS = 998  # RFC 5322 §2.1.1: a line is at most 998 characters
UNSUBSCRIBE_PLACEHOLDER = "{{ unsubscribe_url }}"


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
    # Refuse the email if that key is revoked by the time it is queued; off for work that
    # was accepted earlier (a bulk job's recipients), which a later revocation must not lose.
    check_key: bool = True
    extra_limits: Sequence[quotas.Limit] = ()  # e.g. an SMTP sender's own limits
    scheduled_at: datetime | None = None
    metadata: dict[str, Any] | None = None
    # None: not said, the From domain's setting decides (domain/send_defaults.py).
    track_opens: bool | None = None
    track_clicks: bool | None = None
    unsubscribe: bool | None = None  # add List-Unsubscribe (RFC 8058) and {{ unsubscribe_url }}
    list_id: str | None = None  # the list this email went to: unsubscribes are scoped to it
    template_id: str | None = None  # subject, html and text come from this template…
    template_data: dict[str, Any] | None = None  # …rendered with these variables
    rendered_from: str | None = None  # a template the caller rendered itself (recorded only)


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
class Prepared:
    accepted: Accepted
    rows: NewEmail
    sender: Address


class Intake:
    def __init__(
        self,
        db: Database,
        settings: Settings,
        domains: Domains,
        templates: Templates | None = None,
    ) -> None:
        self._db = db
        self._settings = settings
        self._domains = domains
        self._templates = templates
        self._committer: GroupCommitter[Pending, Outcome] = GroupCommitter(
            db,
            admit,
            max_batch=settings.intake_batch_size,
            max_wait=settings.intake_batch_wait_ms / 1000,
            name="intake",
        )

    async def submit(self, request: SendRequest, *, idempotency_key: str | None = None) -> Accepted:
        """Validate, build and durably queue one email.

        Raises :class:`InvalidRequest` for a bad field, :class:`PermissionDenied` when the
        From domain is not a verified domain of the account, :class:`LimitExceeded` when a
        quota is reached (then nothing is queued), :class:`Conflict` when the idempotency key
        was used for a different request. With a key used before for the same request, the
        first answer comes back and nothing new is queued.
        """
        idem = (idempotency_key, request_hash(request)) if idempotency_key else None
        domain = await self._from_domain(request)
        request = _with_send_defaults(request, domain)
        request = await self._render_template(request)
        prepared = self.prepare(request)
        limits = self._limits(domain, prepared.sender)
        return await self._commit(
            Pending(
                prepared.rows,
                prepared.accepted,
                [*limits, *request.extra_limits],
                idem,
                key_id=request.api_key_id if request.check_key else None,
            )
        )

    async def _commit(self, pending: Pending) -> Accepted:
        try:
            outcome = await self._committer.submit(pending)
        except IntegrityError:
            if pending.idempotency is None:
                raise
            # Another process committed the same key between our look-up and our insert:
            # its answer is now stored, and a second pass replays it (or says 409).
            outcome = await self._committer.submit(pending)
        if isinstance(outcome, PosthornError):
            raise outcome
        return outcome

    async def submit_raw(self, submission: RawSubmission) -> Accepted:
        """Queue a message that arrived whole (SMTP): checked like any other, sent as written.

        Only a missing Message-ID is added (RFC 5322 §3.6.4 says it SHOULD be there), and
        the unsubscribe fields when the From domain forces them: each recipient then gets its
        own copy. Tracking is not added: that would mean rewriting the author's MIME bodies.
        """
        prepared = self.prepare_raw(submission)
        domain = await self._domains.sending_domain(submission.account_id, prepared.sender.domain)
        limits = self._limits(domain, prepared.sender)
        if DomainSendDefaults.of(domain).force_unsubscribe:
            self._add_unsubscribe(prepared)
        return await self._commit(
            Pending(
                prepared.rows,
                prepared.accepted,
                [*limits, *submission.extra_limits],
                key_id=submission.api_key_id,
            )
        )

    def prepare_raw(self, submission: RawSubmission, *, now: datetime | None = None) -> Prepared:
        now = now or utcnow()
        if len(submission.message) > self._settings.max_message_bytes:
            raise TooLarge(limit=self._settings.max_message_bytes)
        headers = read_headers(submission.message)
        from_header = first(headers, "from")
        if from_header is None:
            raise InvalidRequest("from_missing", field="from")
        sender = check_address("from", from_header)
        envelope = check_addresses("to", submission.recipients)
        if not envelope:
            raise InvalidRequest("recipients_required", field="to")
        if len(envelope) > self._settings.max_recipients:
            raise InvalidRequest(
                "too_many_recipients",
                field="to",
                count=len(envelope),
                limit=self._settings.max_recipients,
            )
        email_id = new_email_id()
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
        rows = email_rows(
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

    @staticmethod
    def _copy_plan(request: SendRequest) -> CopyPlan | None:
        """How each recipient's copy differs, when it carries tracking links or an
        unsubscribe URL of its own; None when every recipient gets the email's message.
        The copies are made at send time (services/personal_copies.py)."""
        if not (request.track_opens or request.track_clicks or request.unsubscribe):
            return None
        return CopyPlan(
            track_opens=bool(request.track_opens),
            track_clicks=bool(request.track_clicks),
            unsubscribe=bool(request.unsubscribe),
            list_id=request.list_id if request.unsubscribe else None,
        )

    async def _from_domain(self, request: SendRequest) -> dict[str, Any] | None:
        """The verified domain of the request's From, if it has one (a bad From address is
        refused by :meth:`prepare`, with the other field errors)."""
        try:
            name = parse_address(request.from_).domain
        except AddressError:
            return None
        return await self._domains.sending_domain(request.account_id, name)

    async def _render_template(self, request: SendRequest) -> SendRequest:
        """A request naming a template gets its subject and bodies from it."""
        if request.template_id is None:
            return request
        if self._templates is None:
            raise InvalidRequest(field="template_id")
        data = dict(request.template_data or {})
        if request.unsubscribe:
            # Left as a placeholder: each recipient's own URL goes in when it is personalised.
            data.setdefault("unsubscribe_url", UNSUBSCRIBE_PLACEHOLDER)
        rendered = await self._templates.render(request.account_id, request.template_id, data)
        return dataclasses.replace(
            request, subject=rendered.subject, html=rendered.html, text=rendered.text
        )

    def _add_unsubscribe(self, prepared: Prepared) -> None:
        """Give each recipient of a raw message its own List-Unsubscribe, made at send time."""
        plan = CopyPlan(unsubscribe=True, bodies=False).dumps()
        for delivery in prepared.rows.deliveries:
            delivery["personal"] = plan

    def _limits(self, domain: dict[str, Any] | None, sender: Address) -> list[quotas.Limit]:
        """The From domain's quotas; only a verified domain of the account may send."""
        if domain is None:
            raise PermissionDenied("domain_not_verified", field="from", domain=sender.domain)
        return self._domains.limits(domain)

    async def close(self) -> None:
        await self._committer.close()

    def prepare(self, request: SendRequest, *, now: datetime | None = None) -> Prepared:
        """Everything but the commit: pure apart from the clock and the id generator."""
        now = now or utcnow()
        sender = check_address("from", request.from_)
        to = check_addresses("to", request.to)
        cc = check_addresses("cc", request.cc)
        bcc = check_addresses("bcc", request.bcc)
        reply_to = check_address("reply_to", request.reply_to) if request.reply_to else None
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
        if not subject.strip():
            raise InvalidRequest("field_required", field="subject")
        if len(subject) > MAX_SUBJECT_CHARS or any(c in subject for c in "\r\n\x00"):
            raise InvalidRequest("subject_invalid", field="subject")
        for name, value in request.headers.items():
            problem = check_header(name, value)
            if problem:
                raise InvalidRequest(problem, field="headers", name=name)
        tags = check_tags(request.tags)
        scheduled_at = check_schedule(request.scheduled_at, now)
        check_metadata(request.metadata)

        email_id = new_email_id()
        message_id = f"{email_id}@{self._settings.hostname}"
        spec = MessageSpec(
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
        raw = compose(spec)
        if len(raw) > self._settings.max_message_bytes:
            raise TooLarge(limit=self._settings.max_message_bytes)
        plan = self._copy_plan(request)
        rows = email_rows(
            email_id=email_id,
            message_id=message_id,
            request=request,
            sender=sender,
            recipients={"to": to, "cc": cc, "bcc": bcc},
            reply_to=reply_to,
            tags=tags,
            raw=raw,
            now=now,
            scheduled_at=scheduled_at,
            personal=plan.dumps() if plan is not None else None,
        )
        accepted = Accepted(
            id=email_id,
            message_id=message_id,
            from_=format_address(sender),
            to=tuple(a.email for a in to),
            status=Status.SCHEDULED if scheduled_at else Status.QUEUED,
            created_at=now,
        )
        return Prepared(accepted=accepted, rows=rows, sender=sender)


def _with_send_defaults(request: SendRequest, domain: dict[str, Any] | None) -> SendRequest:
    """Tracking switches the request left unsaid come from its From domain, which may also
    force the unsubscribe (domain/send_defaults.py)."""
    switches = resolve(
        DomainSendDefaults.of(domain),
        track_opens=request.track_opens,
        track_clicks=request.track_clicks,
        unsubscribe=request.unsubscribe,
    )
    return dataclasses.replace(
        request,
        track_opens=switches.track_opens,
        track_clicks=switches.track_clicks,
        unsubscribe=switches.unsubscribe,
    )
