"""The MailPass dialect (seed 002): ``POST /api/v1/mail/send``, ``POST /api/v1/mail/send-batch``
and ``GET /api/v1/mail/status/{message_id}``, with ``Authorization: Bearer <API key>``.

Answers are ``{"success": true, "data": …}`` or ``{"success": false, "error": {"code",
"message"}}`` with MailPass's codes; ``docs/dialects/mailpass.md`` has the whole mapping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, field_validator

from posthorn.api.deps import ServicesDep, client_ip
from posthorn.api.errors import language_of
from posthorn.dialects.common import parse, read_json
from posthorn.domain.addresses import Address, AddressError, format_address, parse_address
from posthorn.domain.permissions import Permission
from posthorn.domain.statuses import Status
from posthorn.errors import (
    AuthenticationFailed,
    Conflict,
    InvalidRequest,
    LimitExceeded,
    NotFound,
    PermissionDenied,
    PosthornError,
    TooLarge,
)
from posthorn.messages import render
from posthorn.services.accounts import Principal
from posthorn.services.admission import Accepted
from posthorn.services.container import Services
from posthorn.services.emails import EmailDetail
from posthorn.services.intake import SendRequest, Tag

router = APIRouter(prefix="/api/v1/mail", tags=["dialect: MailPass"])
log = logging.getLogger(__name__)

SOURCE = "mailpass"
MAX_BATCH = 100  # the seed: "Upeo wa 100"
NO_PROVIDER = frozenset({"no_default_sender", "no_sending_provider"})
FIELD_NAMES = {"from": "from_email"}  # our field names → MailPass's, in messages
# Event types → the seed's event_type ("open"); the others keep their name.
EVENT_TYPES = {
    "opened": "open",
    "clicked": "click",
    "unsubscribed": "unsubscribe",
    "complained": "complaint",
}
FAILING = frozenset({Status.DEFERRED, Status.BOUNCED, Status.FAILED, Status.REJECTED})


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


class MailIn(BaseModel):
    """One message, as ``/send`` takes it and each item of ``/send-batch``."""

    to: str | list[str]
    subject: str
    html: str | None = None
    text: str | None = None
    from_email: str | None = None
    from_name: str | None = None
    reply_to: str | None = None
    cc: list[str] = Field(default_factory=list)
    bcc: list[str] = Field(default_factory=list)
    tags: list[str] = Field(default_factory=list)
    metadata: dict[str, Any] | None = None
    track_opens: bool = True
    track_clicks: bool = True

    _lists = field_validator("cc", "bcc", mode="before")(_as_list)


class BatchIn(BaseModel):
    messages: list[Any]
    from_email: str | None = None
    from_name: str | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    status: int
    code: str
    message: str
    headers: dict[str, str] = field(default_factory=dict)


def failure(exc: PosthornError, language: str) -> Failure:
    """A domain error as MailPass's HTTP status and error code."""
    name = FIELD_NAMES.get(exc.field or "", exc.field)
    message = render(exc.code, language, field=name, **exc.params)
    if isinstance(exc, LimitExceeded):
        return Failure(429, "SEND_LIMIT_EXCEEDED", message, {"Retry-After": str(exc.retry_after)})
    if isinstance(exc, AuthenticationFailed):
        return Failure(401, "UNAUTHORIZED", message)
    if isinstance(exc, PermissionDenied):
        if exc.code in NO_PROVIDER:
            return Failure(422, "NO_SMTP_PROVIDER", message)
        return Failure(403, "FORBIDDEN", message)
    if isinstance(exc, NotFound):
        return Failure(404, "NOT_FOUND", message)
    if isinstance(exc, InvalidRequest | TooLarge | Conflict):
        return Failure(400, "VALIDATION_ERROR", message)
    return Failure(500, "SEND_FAILED", message)


def _error(result: Failure) -> JSONResponse:
    body = {"success": False, "error": {"code": result.code, "message": result.message}}
    return JSONResponse(body, status_code=result.status, headers=result.headers)


async def _answer(request: Request, work: Callable[[], Awaitable[Any]]) -> JSONResponse:
    language = language_of(request)
    try:
        data = await work()
    except PosthornError as exc:
        return _error(failure(exc, language))
    except Exception:
        log.exception("mailpass: unexpected error on %s", request.url.path)
        return _error(Failure(500, "SEND_FAILED", render("internal", language)))
    return JSONResponse({"success": True, "data": data})


async def _caller(request: Request, svc: Services, needed: Permission) -> Principal:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    key = token.strip() if scheme.lower() == "bearer" else ""
    caller = await svc.accounts.authenticate(
        key or None, client_ip=client_ip(request, svc.settings)
    )
    caller.require(needed)
    return caller


def _from_header(address: str, name: str | None) -> str:
    if not name:
        return address
    try:
        parsed = parse_address(address)
    except AddressError:
        return address  # the intake says what is wrong with it
    return format_address(Address(email=parsed.email, name=name))


async def _submit(svc: Services, caller: Principal, mail: MailIn) -> tuple[Accepted, str]:
    """Queue one message; the answer and the bare From address."""
    from_email = mail.from_email or await svc.dialect_support.default_sender(caller.account_id)
    sender = _from_header(from_email, mail.from_name)
    accepted = await svc.dialect_support.submit(
        SendRequest(
            account_id=caller.account_id,
            api_key_id=caller.key_id,
            source=SOURCE,
            from_=sender,
            to=_as_list(mail.to),
            cc=mail.cc,
            bcc=mail.bcc,
            reply_to=mail.reply_to,
            subject=mail.subject,
            html=mail.html,
            text=mail.text,
            tags=[Tag(name=tag, value="") for tag in mail.tags],
            metadata=mail.metadata,
            track_opens=mail.track_opens,
            track_clicks=mail.track_clicks,
        )
    )
    return accepted, parse_address(sender).email


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


@router.post("/send", openapi_extra=_schema(MailIn))
async def send(request: Request, svc: ServicesDep) -> JSONResponse:
    """Send one email (queued at once; the worker delivers it)."""

    async def work() -> dict[str, Any]:
        caller = await _caller(request, svc, Permission.SENDING_ACCESS)
        mail = parse(MailIn, await read_json(request))
        accepted, from_email = await _submit(svc, caller, mail)
        return {
            "message_id": f"<{accepted.message_id}>",
            "status": str(accepted.status),
            "to": mail.to,
            "from": from_email,
            "id": accepted.id,
        }

    return await _answer(request, work)


@router.post("/send-batch", openapi_extra=_schema(BatchIn))
async def send_batch(request: Request, svc: ServicesDep) -> JSONResponse:
    """Queue up to 100 emails sharing ``from_email``/``from_name``; each is answered alone."""
    language = language_of(request)

    async def work() -> dict[str, Any]:
        caller = await _caller(request, svc, Permission.SENDING_ACCESS)
        batch = parse(BatchIn, await read_json(request))
        if not batch.messages:
            raise InvalidRequest("batch_empty", field="messages")
        if len(batch.messages) > MAX_BATCH:
            raise InvalidRequest(
                "batch_too_large", field="messages", limit=MAX_BATCH, count=len(batch.messages)
            )
        shared = {"from_email": batch.from_email, "from_name": batch.from_name}

        async def one(index: int, item: Any) -> dict[str, Any]:
            to = item.get("to") if isinstance(item, dict) else None
            try:
                if isinstance(item, dict):
                    item = {**item, **{k: v for k, v in shared.items() if item.get(k) is None}}
                mail = parse(MailIn, item, prefix=f"messages[{index}]")
                accepted, _ = await _submit(svc, caller, mail)
            except PosthornError as exc:
                problem = failure(exc, language)
                return {"to": to, "status": "failed", "error": _code(problem)}
            except Exception:
                log.exception("mailpass: unexpected error in a batch item")
                problem = Failure(500, "SEND_FAILED", render("internal", language))
                return {"to": to, "status": "failed", "error": _code(problem)}
            return {
                "to": to,
                "status": str(accepted.status),
                "queue_id": accepted.id,
                "message_id": f"<{accepted.message_id}>",
            }

        results = await asyncio.gather(*(one(i, m) for i, m in enumerate(batch.messages)))
        queued = sum(1 for r in results if r["status"] in (Status.QUEUED, Status.SCHEDULED))
        return {
            "total": len(results),
            "queued": queued,
            "failed": len(results) - queued,
            "messages": results,
        }

    return await _answer(request, work)


def _code(problem: Failure) -> dict[str, str]:
    return {"code": problem.code, "message": problem.message}


@router.get("/status/{message_id:path}")
async def status(message_id: str, request: Request, svc: ServicesDep) -> JSONResponse:
    """An email's status and its events, by Message-ID (with or without angle brackets)."""

    async def work() -> dict[str, Any]:
        caller = await _caller(request, svc, Permission.READ_ONLY)
        detail = await svc.dialect_support.email_by_message_id(caller.account_id, message_id)
        return {"message": _message(detail), "events": [_event(e) for e in detail.events]}

    return await _answer(request, work)


def _time(value: datetime | None) -> str | None:
    """The seed's form, ``2026-01-30T12:00:00``, in UTC."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S") if value else None


def _message(detail: EmailDetail) -> dict[str, Any]:
    email = detail.email
    left = [d["delivered_at"] for d in detail.deliveries if d["delivered_at"] is not None]
    return {
        "message_id": f"<{email['message_id']}>",
        "from_email": email["from_email"],
        "to_email": ", ".join(email["to_addrs"]),
        "subject": email["subject"],
        "status": email["status"],
        "error_message": _error_message(detail),
        "sent_at": _time(min(left)) if left else None,
        "created_at": _time(email["created_at"]),
    }


def _error_message(detail: EmailDetail) -> str | None:
    """The last SMTP reply of a recipient that has not (yet) been delivered, or why it was
    refused before sending."""
    for delivery in detail.deliveries:
        if Status(delivery["status"]) not in FAILING:
            continue
        if delivery["last_reply"]:
            code = delivery["last_code"]
            return f"{code} {delivery['last_reply']}" if code else str(delivery["last_reply"])
        for event in detail.events:
            if event["type"] == "rejected" and event["recipient"] == delivery["recipient"]:
                data = event["data"] or {}
                why = " ".join(str(data[k]) for k in ("reason", "suppression") if data.get(k))
                return f"{delivery['recipient']}: {why or 'rejected'}"
    return None


def _event(event: dict[str, Any]) -> dict[str, Any]:
    data = event["data"] or {}
    answer = {
        "event_type": EVENT_TYPES.get(event["type"], event["type"]),
        "recipient": event["recipient"],
        "ip_address": data.get("ip"),
        "user_agent": data.get("user_agent"),
        "created_at": _time(event["created_at"]),
    }
    if "url" in data:
        answer["url"] = data["url"]
    return answer
