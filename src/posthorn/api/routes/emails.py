"""``/v1/emails``: send, list and look up emails."""

from __future__ import annotations

import asyncio
import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, SenderDep, ServicesDep, requires
from posthorn.api.errors import field_path, language_of, status_for
from posthorn.api.formats import parse_timestamp, timestamp
from posthorn.api.guard import GuardedRoute, message_body
from posthorn.api.paging import Page, PerPage
from posthorn.domain.permissions import Permission
from posthorn.domain.statuses import PENDING, Status, label
from posthorn.errors import InvalidRequest, PosthornError
from posthorn.messages import render
from posthorn.mime.compose import Attachment
from posthorn.services.accounts import Principal
from posthorn.services.admission import Accepted
from posthorn.services.emails import EmailDetail, parse_statuses
from posthorn.services.intake import SendRequest, Tag

router = APIRouter(prefix="/v1/emails", route_class=GuardedRoute, tags=["emails"])

# Sending uses the cached key look-up (intake re-checks revocation when it queues);
# changing an email already queued checks the key in full.
Sender = SenderDep
Scheduler = Annotated[Principal, requires(Permission.SENDING_ACCESS)]


# RFC 6838 §4.2 type/subtype names (ASCII only), then parameters of printable ASCII.
MEDIA_TYPE = r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*(;[ -~]*)?$"


class AttachmentIn(StrictModel):
    filename: str = Field(min_length=1, max_length=255)
    content: str = Field(description="The file's bytes, base64-encoded.")
    content_type: str = Field(
        "application/octet-stream", max_length=255, pattern=MEDIA_TYPE, examples=["text/csv"]
    )


class TagIn(StrictModel):
    name: str
    value: str = ""


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class SendEmailIn(StrictModel):
    model_config = ConfigDict(populate_by_name=True)

    from_: str = Field(alias="from", description='"Name <email@domain.com>" or "email@domain.com"')
    to: list[str] = Field(description="Recipient addresses.")
    subject: str = ""
    html: str | None = None
    text: str | None = None
    template_id: str | None = Field(
        None, description="Take subject, html and text from this template instead."
    )
    template_data: dict[str, Any] | None = Field(None, description="The template's variables.")
    # Left out (or null), the From domain's settings decide (PATCH /v1/domains/{id}).
    track_opens: bool | None = Field(
        None, description="Count opens with a 1×1 image. Default: the domain's setting (off)."
    )
    track_clicks: bool | None = Field(
        None,
        description="Count clicks through redirecting links. Default: the domain's setting (off).",
    )
    unsubscribe: bool | None = Field(
        None,
        description="Add one-click List-Unsubscribe (RFC 8058) and {{ unsubscribe_url }}. "
        "Default off; always on when the domain has force_unsubscribe.",
    )
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    reply_to: str | None = None
    attachments: list[AttachmentIn] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)
    tags: list[TagIn] = Field(default_factory=list)
    scheduled_at: datetime | None = Field(
        None, description="ISO-8601 time (with zone) to send at, up to 30 days ahead."
    )
    metadata: dict[str, Any] | None = Field(
        None, description="Your own key/values, returned in webhooks (≤ 50 keys, 4 KB)."
    )

    _lists = field_validator("to", "cc", "bcc", mode="before")(_as_list)


class SendEmailOut(BaseModel):
    id: str
    from_: str = Field(serialization_alias="from")
    to: list[str]
    status: str
    created_at: str


class StatOut(BaseModel):
    label: str
    count: int
    percentage: float


class EmailSummaryOut(BaseModel):
    id: str
    from_: str = Field(serialization_alias="from")
    to: list[str]
    subject: str
    status: str
    created_at: str


class EmailListOut(BaseModel):
    data: list[EmailSummaryOut]
    total: int
    page: int
    per_page: int
    stats: list[StatOut]


class DeliveryOut(BaseModel):
    recipient: str
    type: str
    status: str
    attempts: int
    last_code: int | None
    last_reply: str | None
    remote_host: str | None
    next_attempt_at: str | None
    delivered_at: str | None


class EventOut(BaseModel):
    type: str
    recipient: str | None
    created_at: str
    data: dict[str, Any]


class BatchOut(BaseModel):
    data: list[dict[str, Any]]
    total: int
    queued: int
    failed: int


class EmailDetailOut(BaseModel):
    id: str
    message_id: str
    from_: str = Field(serialization_alias="from")
    to: list[str]
    cc: list[str]
    bcc: list[str]
    reply_to: str | None
    subject: str
    html: str | None
    text: str | None
    tags: list[dict[str, str]]
    headers: dict[str, str]
    attachments: list[dict[str, Any]]
    source: str
    scheduled_at: str | None
    metadata: dict[str, Any] | None
    status: str
    created_at: str
    delivered_at: str | None
    deliveries: list[DeliveryOut]
    events: list[EventOut]


def _decode(index: int, attachment: AttachmentIn) -> Attachment:
    try:
        content = base64.b64decode(attachment.content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest("attachment_invalid", field="attachments", index=index) from exc
    try:
        return Attachment(
            filename=attachment.filename, content=content, content_type=attachment.content_type
        )
    except ValueError as exc:
        raise InvalidRequest(field=f"attachments[{index}].content_type") from exc


def _request(body: SendEmailIn, caller: Principal) -> SendRequest:
    return SendRequest(
        account_id=caller.account_id,
        api_key_id=caller.key_id,
        source="api",
        from_=body.from_,
        to=body.to,
        cc=body.cc,
        bcc=body.bcc,
        reply_to=body.reply_to,
        subject=body.subject,
        html=body.html,
        text=body.text,
        attachments=[_decode(i, a) for i, a in enumerate(body.attachments)],
        headers=body.headers,
        tags=[Tag(name=t.name, value=t.value) for t in body.tags],
        scheduled_at=body.scheduled_at,
        metadata=body.metadata,
        template_id=body.template_id,
        template_data=body.template_data,
        track_opens=body.track_opens,
        track_clicks=body.track_clicks,
        unsubscribe=body.unsubscribe,
    )


def _sent(accepted: Accepted) -> dict[str, Any]:
    return {
        "id": accepted.id,
        "from_": accepted.from_,
        "to": list(accepted.to),
        "status": str(accepted.status),
        "created_at": timestamp(accepted.created_at),
    }


IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        max_length=255,
        description="Repeat a request safely: the same key and body within 24 h return the "
        "first answer; the same key with another body is a 409.",
    ),
]


@router.post("", response_model=SendEmailOut, response_model_by_alias=True)
@message_body
async def send_email(
    body: SendEmailIn, svc: ServicesDep, caller: Sender, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Send a transactional email to one or more recipients (or schedule it)."""
    accepted = await svc.intake.submit(_request(body, caller), idempotency_key=idempotency_key)
    return _sent(accepted)


MAX_BATCH = 500


@router.post("/batch", response_model=BatchOut, response_model_by_alias=True)
@message_body
async def send_batch(
    request: Request,
    body: Annotated[list[dict[str, Any]], Body(max_length=MAX_BATCH)],
    svc: ServicesDep,
    caller: Sender,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Up to 500 independent emails; each is validated on its own and the answer lists, in
    order, the email's id and status or the error that refused it."""
    language = language_of(request)

    async def one(index: int, item: dict[str, Any]) -> dict[str, Any]:
        key = f"{idempotency_key}#{index}" if idempotency_key else None
        try:
            parsed = SendEmailIn.model_validate(item)
            accepted = await svc.intake.submit(_request(parsed, caller), idempotency_key=key)
        except ValidationError as exc:
            problem = exc.errors()[0]
            detail = render(
                "field_type",
                language,
                field=field_path(problem.get("loc", ())),
                reason=problem.get("msg", "invalid"),
            )
            return {"error": {"status": 422, "detail": detail}}
        except PosthornError as exc:
            return {"error": {"status": status_for(exc), "detail": exc.message(language)}}
        return {"id": accepted.id, "status": str(accepted.status)}

    results = await asyncio.gather(*(one(i, item) for i, item in enumerate(body)))
    return {
        "data": results,
        "total": len(results),
        "queued": sum(1 for r in results if "id" in r),
        "failed": sum(1 for r in results if "error" in r),
    }


@router.post("/{email_id}/cancel", response_model=EmailDetailOut, response_model_by_alias=True)
async def cancel_email(email_id: str, svc: ServicesDep, caller: Scheduler) -> dict[str, Any]:
    """Cancel a scheduled or still-queued email (409 when it has already gone out)."""
    return _detail(await svc.emails.cancel(caller.account_id, email_id))


class RescheduleIn(StrictModel):
    scheduled_at: datetime


@router.patch("/{email_id}", response_model=EmailDetailOut, response_model_by_alias=True)
async def reschedule_email(
    email_id: str, body: RescheduleIn, svc: ServicesDep, caller: Scheduler
) -> dict[str, Any]:
    """Move a scheduled email to another time."""
    return _detail(await svc.emails.reschedule(caller.account_id, email_id, body.scheduled_at))


def time_filter(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise InvalidRequest("invalid_filter", field=name, value=value[:40]) from exc


@router.get("", response_model=EmailListOut, response_model_by_alias=True)
async def list_emails(
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
    status: Annotated[str | None, Query(description="Comma list of statuses")] = None,
    created_at_from: str | None = None,
    created_at_to: str | None = None,
) -> dict[str, Any]:
    """List sent emails, newest first, with a breakdown by status."""
    result = await svc.emails.page(
        caller.account_id,
        page=page,
        per_page=per_page,
        statuses=parse_statuses(status),
        created_from=time_filter("created_at_from", created_at_from),
        created_to=time_filter("created_at_to", created_at_to),
    )
    return {
        "data": [
            {
                "id": row["id"],
                "from_": row["from_header"],
                "to": row["to_addrs"],
                "subject": row["subject"],
                "status": label(row["status"]),
                "created_at": timestamp(row["created_at"]),
            }
            for row in result.items
        ],
        "total": result.total,
        "page": page,
        "per_page": per_page,
        "stats": [
            {"label": label(s.status), "count": s.count, "percentage": s.percentage}
            for s in result.stats
        ],
    }


@router.get("/{email_id}", response_model=EmailDetailOut, response_model_by_alias=True)
async def get_email(email_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """One email with per-recipient delivery detail and its events."""
    return _detail(await svc.emails.get(caller.account_id, email_id))


def _detail(detail: EmailDetail) -> dict[str, Any]:
    email = detail.email
    delivered = [d["delivered_at"] for d in detail.deliveries if d["delivered_at"] is not None]
    return {
        "id": email["id"],
        "message_id": f"<{email['message_id']}>",
        "from_": email["from_header"],
        "to": email["to_addrs"],
        "cc": email["cc_addrs"],
        "bcc": email["bcc_addrs"],
        "reply_to": email["reply_to"],
        "subject": email["subject"],
        "html": email["html"],
        "text": email["text"],
        "tags": email["tags"],
        "headers": email["headers"],
        "attachments": email["attachments"],
        "source": email["source"],
        "scheduled_at": timestamp(email["scheduled_at"]),
        "metadata": email["metadata"],
        "status": label(email["status"]),
        "created_at": timestamp(email["created_at"]),
        "delivered_at": timestamp(max(delivered)) if delivered else None,
        "deliveries": [
            {
                "recipient": d["recipient"],
                "type": d["kind"],
                "status": Status(d["status"]).value,
                "attempts": d["attempts"],
                "last_code": d["last_code"],
                "last_reply": d["last_reply"],
                "remote_host": d["remote_host"],
                "next_attempt_at": timestamp(d["next_attempt_at"])
                if Status(d["status"]) in PENDING
                else None,
                "delivered_at": timestamp(d["delivered_at"]),
            }
            for d in detail.deliveries
        ],
        "events": [
            {
                "type": e["type"],
                "recipient": e["recipient"],
                "created_at": timestamp(e["created_at"]),
                "data": e["data"],
            }
            for e in detail.events
        ],
    }
