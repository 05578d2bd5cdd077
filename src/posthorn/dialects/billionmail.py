"""The BillionMail dialect (seed 003): ``POST /api/batch_mail/api/send`` and
``POST /api/batch_mail/api/batch_send`` with ``X-API-Key: <send configuration key>``.

Every answer is BillionMail's envelope ``{"success", "code", "msg", "data"}``: code 0, or
1001 invalid key, 1002 IP not allowed, 1003 invalid recipient, 1004 template does not exist,
1005 sending failed. Like BillionMail, these come with HTTP 200 (the outcome is in the body);
only an unexpected server fault is a 500, with code 1005. See docs/dialects/billionmail.md.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from posthorn.api.deps import ServicesDep, client_ip
from posthorn.api.errors import language_of
from posthorn.dialects.common import parse, read_json
from posthorn.domain.statuses import Status
from posthorn.errors import (
    AuthenticationFailed,
    InvalidRequest,
    LimitExceeded,
    MalformedRequest,
    NotFound,
    PermissionDenied,
    PosthornError,
)
from posthorn.messages import render
from posthorn.services.admission import Accepted
from posthorn.services.container import Services
from posthorn.store.send_configs import SendConfigRow

router = APIRouter(prefix="/api/batch_mail/api", tags=["dialect: BillionMail"])
log = logging.getLogger(__name__)

OK = 0
INVALID_KEY = 1001
IP_NOT_ALLOWED = 1002
INVALID_RECIPIENT = 1003
NO_TEMPLATE = 1004
SEND_FAILED = 1005
MAX_BATCH = 500
# Fields whose problems are the recipient's: BillionMail's 1003.
RECIPIENT_FIELDS = frozenset({"recipient", "recipients", "to", "body"})
FIELD_NAMES = {"from": "addresser", "to": "recipient", "to[0]": "recipient"}  # in messages


class SendIn(BaseModel):
    recipient: str
    addresser: str | None = None
    attribs: dict[str, Any] | None = None


class RecipientIn(BaseModel):
    recipient: str
    attribs: dict[str, Any] | None = None


class BatchIn(BaseModel):
    recipients: list[Any]  # "a@b.c" or {"recipient": …, "attribs": {…}}, each checked alone
    addresser: str | None = None
    attribs: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Coded:
    code: int
    msg: str
    headers: dict[str, str] = field(default_factory=dict)


def coded(exc: PosthornError, language: str) -> Coded:
    """A domain error as one of BillionMail's codes."""
    name = FIELD_NAMES.get(exc.field or "", exc.field)
    message = render(exc.code, language, field=name, **exc.params)
    if isinstance(exc, AuthenticationFailed):
        return Coded(INVALID_KEY, message)
    if isinstance(exc, PermissionDenied) and exc.code == "ip_not_allowed":
        return Coded(IP_NOT_ALLOWED, message)
    if isinstance(exc, NotFound):
        return Coded(NO_TEMPLATE, message)
    if isinstance(exc, MalformedRequest):
        return Coded(INVALID_RECIPIENT, message)
    if isinstance(exc, InvalidRequest) and _field_name(exc.field) in RECIPIENT_FIELDS:
        return Coded(INVALID_RECIPIENT, message)
    if isinstance(exc, LimitExceeded):
        return Coded(SEND_FAILED, message, {"Retry-After": str(exc.retry_after)})
    return Coded(SEND_FAILED, message)


def _field_name(path: str | None) -> str:
    """``recipients[2].recipient`` → ``recipient``; ``to[0]`` → ``to``."""
    return (path or "").rsplit(".", 1)[-1].split("[", 1)[0]


def _envelope(
    code: int,
    msg: str,
    data: Any = None,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"success": code == OK, "code": code, "msg": msg, "data": data}
    return JSONResponse(body, status_code=status, headers=headers)


def _suppressed(accepted: Accepted, language: str) -> Coded | None:
    """An email refused before sending (the recipient is on the suppression list)."""
    if accepted.status is Status.REJECTED:
        value = ", ".join(accepted.rejected)
        return Coded(SEND_FAILED, render("recipient_suppressed", language, value=value))
    return None


async def _config(request: Request, svc: Services) -> SendConfigRow:
    return await svc.send_configs.authenticate(
        request.headers.get("x-api-key"), client_ip=client_ip(request, svc.settings)
    )


@router.post("/send")
async def send(request: Request, svc: ServicesDep) -> JSONResponse:
    """Send the configuration's template to one recipient."""
    language = language_of(request)
    try:
        config = await _config(request, svc)
        body = parse(SendIn, await read_json(request))
        accepted = await svc.send_configs.send(
            config,
            recipient=body.recipient,
            addresser=body.addresser or None,
            attribs=body.attribs,
        )
    except PosthornError as exc:
        problem = coded(exc, language)
        return _envelope(problem.code, problem.msg, headers=problem.headers)
    except Exception:
        log.exception("billionmail: unexpected error on send")
        return _envelope(SEND_FAILED, render("internal", language), status=500)
    refused = _suppressed(accepted, language)
    if refused is not None:
        return _envelope(refused.code, refused.msg)
    return _envelope(OK, "Email sent successfully")


@router.post("/batch_send")
async def batch_send(request: Request, svc: ServicesDep) -> JSONResponse:
    """Send the configuration's template to many recipients, each with its own variables
    (merged over the shared ``attribs``); one result per recipient, in order."""
    language = language_of(request)
    try:
        config = await _config(request, svc)
        batch = parse(BatchIn, await read_json(request))
        if not batch.recipients:
            raise InvalidRequest("batch_empty", field="recipients")
        if len(batch.recipients) > MAX_BATCH:
            raise InvalidRequest(
                "batch_too_large", field="recipients", limit=MAX_BATCH, count=len(batch.recipients)
            )
        results = await asyncio.gather(
            *(
                _one(svc, config, batch, index, item, language)
                for index, item in enumerate(batch.recipients)
            )
        )
    except PosthornError as exc:
        problem = coded(exc, language)
        return _envelope(problem.code, problem.msg, headers=problem.headers)
    except Exception:
        log.exception("billionmail: unexpected error on batch_send")
        return _envelope(SEND_FAILED, render("internal", language), status=500)
    queued = sum(1 for r in results if r["success"])
    data = {
        "total": len(results),
        "queued": queued,
        "failed": len(results) - queued,
        "results": results,
    }
    if queued:
        return _envelope(OK, f"Batch email send request accepted, {queued} emails queued", data)
    codes = {r["code"] for r in results}
    code = codes.pop() if len(codes) == 1 else SEND_FAILED
    return _envelope(code, "No email was queued", data)


async def _one(
    svc: Services, config: SendConfigRow, batch: BatchIn, index: int, item: Any, language: str
) -> dict[str, Any]:
    recipient: str | None = item if isinstance(item, str) else None
    try:
        own: dict[str, Any] = {}
        if not isinstance(item, str):
            parsed = parse(RecipientIn, item, prefix=f"recipients[{index}]")
            recipient, own = parsed.recipient, parsed.attribs or {}
        accepted = await svc.send_configs.send(
            config,
            recipient=recipient or "",
            addresser=batch.addresser or None,
            attribs={**(batch.attribs or {}), **own},
        )
    except PosthornError as exc:
        problem = coded(exc, language)
        return {"recipient": recipient, "success": False, "code": problem.code, "msg": problem.msg}
    except Exception:
        log.exception("billionmail: unexpected error in a batch item")
        msg = render("internal", language)
        return {"recipient": recipient, "success": False, "code": SEND_FAILED, "msg": msg}
    refused = _suppressed(accepted, language)
    if refused is not None:
        return {"recipient": recipient, "success": False, "code": refused.code, "msg": refused.msg}
    return {
        "recipient": recipient,
        "success": True,
        "code": OK,
        "msg": "queued",
        "message_id": f"<{accepted.message_id}>",
    }
