"""``/v1/webhooks``: endpoints, their signing secret (shown once), tests, attempts, retries."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from posthorn.api.bodies import StrictModel
from posthorn.api.deps import PrincipalDep, ServicesDep
from posthorn.api.formats import timestamp
from posthorn.api.guard import GuardedRoute
from posthorn.api.paging import Page, PerPage
from posthorn.domain.ssrf import MAX_URL_LENGTH
from posthorn.domain.webhook_payloads import WEBHOOK_EVENTS, webhook_type
from posthorn.services.webhooks import WebhookView, WithSecret

router = APIRouter(prefix="/v1/webhooks", route_class=GuardedRoute, tags=["webhooks"])

EVENTS_DOC = "Event types to receive, from: " + ", ".join(WEBHOOK_EVENTS) + ". Empty: all."


class CreateWebhookIn(StrictModel):
    url: str = Field(max_length=MAX_URL_LENGTH, description="http(s) URL on a public address")
    events: list[str] = Field(default_factory=list, max_length=100, description=EVENTS_DOC)
    enabled: bool = True


class UpdateWebhookIn(StrictModel):
    url: str | None = Field(None, max_length=MAX_URL_LENGTH)
    events: list[str] | None = Field(None, max_length=100, description=EVENTS_DOC)
    enabled: bool | None = Field(
        None, description="true sends the messages held while it was disabled"
    )


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    enabled: bool
    disabled_reason: str | None = Field(description="why Posthorn disabled it, if it did")
    failing_since: str | None = Field(description="start of the current run of failures")
    previous_secret_expires_at: str | None = Field(
        description="until then the previous secret also signs (after a rotation)"
    )
    created_at: str
    updated_at: str


class WebhookWithSecretOut(WebhookOut):
    secret: str = Field(description="whsec_…: shown in this answer only")


class WebhookListOut(BaseModel):
    data: list[WebhookOut]
    total: int
    page: int
    per_page: int


class MessageOut(BaseModel):
    id: str = Field(description="the webhook-id header, the same on every attempt")
    webhook_id: str
    event_type: str
    status: str = Field(description="pending, delivered or failed")
    attempts: int
    next_attempt_at: str | None
    created_at: str


class AttemptOut(BaseModel):
    id: int
    message_id: str
    event_type: str
    message_status: str
    status_code: int | None
    latency_ms: int | None
    response: str | None = Field(description="the start of the response body (500 characters)")
    error: str | None
    created_at: str


class AttemptListOut(BaseModel):
    data: list[AttemptOut]
    total: int
    page: int
    per_page: int


class DeletedOut(BaseModel):
    id: str
    deleted: bool


def _out(view: WebhookView) -> dict[str, Any]:
    return {
        "id": view.id,
        "url": view.url,
        "events": view.events,
        "enabled": view.enabled,
        "disabled_reason": view.disabled_reason,
        "failing_since": timestamp(view.failing_since),
        "previous_secret_expires_at": timestamp(view.previous_secret_until),
        "created_at": timestamp(view.created_at),
        "updated_at": timestamp(view.updated_at),
    }


def _with_secret(made: WithSecret) -> dict[str, Any]:
    return {**_out(made.view), "secret": made.secret}


def _message(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "webhook_id": row["webhook_id"],
        "event_type": webhook_type(row["event_type"]),
        "status": row["status"],
        "attempts": row["attempts"],
        "next_attempt_at": timestamp(row["next_attempt_at"]),
        "created_at": timestamp(row["created_at"]),
    }


@router.post("", response_model=WebhookWithSecretOut)
async def create_webhook(
    body: CreateWebhookIn, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Register an endpoint. The signing secret is in this answer only: store it safely."""
    made = await svc.webhooks.create(caller, url=body.url, events=body.events, enabled=body.enabled)
    return _with_secret(made)


@router.get("", response_model=WebhookListOut)
async def list_webhooks(
    svc: ServicesDep, caller: PrincipalDep, page: Page = 1, per_page: PerPage = 20
) -> dict[str, Any]:
    views, total = await svc.webhooks.page(caller.account_id, page=page, per_page=per_page)
    return {"data": [_out(v) for v in views], "total": total, "page": page, "per_page": per_page}


@router.get("/{webhook_id}", response_model=WebhookOut)
async def get_webhook(webhook_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    return _out(await svc.webhooks.get(caller.account_id, webhook_id))


@router.patch("/{webhook_id}", response_model=WebhookOut)
async def update_webhook(
    webhook_id: str, body: UpdateWebhookIn, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    view = await svc.webhooks.update(
        caller, webhook_id, url=body.url, events=body.events, enabled=body.enabled
    )
    return _out(view)


@router.delete("/{webhook_id}", response_model=DeletedOut)
async def delete_webhook(webhook_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    await svc.webhooks.delete(caller, webhook_id)
    return {"id": webhook_id, "deleted": True}


@router.post("/{webhook_id}/test", response_model=MessageOut)
async def test_webhook(webhook_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """Queue a ``webhook.test`` event for this endpoint; its attempts show in deliveries."""
    return _message(await svc.webhooks.send_test(caller, webhook_id))


@router.post("/{webhook_id}/rotate-secret", response_model=WebhookWithSecretOut)
async def rotate_secret(webhook_id: str, svc: ServicesDep, caller: PrincipalDep) -> dict[str, Any]:
    """A new secret, shown once. For 24 hours both secrets sign every message (two ``v1,``
    signatures in ``webhook-signature``), so receivers can switch without a gap."""
    return _with_secret(await svc.webhooks.rotate_secret(caller, webhook_id))


@router.get("/{webhook_id}/deliveries", response_model=AttemptListOut)
async def list_deliveries(
    webhook_id: str,
    svc: ServicesDep,
    caller: PrincipalDep,
    page: Page = 1,
    per_page: PerPage = 20,
) -> dict[str, Any]:
    """Every attempt at this endpoint, newest first."""
    rows, total = await svc.webhooks.attempts(
        caller.account_id, webhook_id, page=page, per_page=per_page
    )
    data = [
        {
            "id": r["id"],
            "message_id": r["message_id"],
            "event_type": webhook_type(r["event_type"]),
            "message_status": r["message_status"],
            "status_code": r["status_code"],
            "latency_ms": r["latency_ms"],
            "response": r["response_excerpt"],
            "error": r["error"],
            "created_at": timestamp(r["created_at"]),
        }
        for r in rows
    ]
    return {"data": data, "total": total, "page": page, "per_page": per_page}


@router.post("/{webhook_id}/deliveries/{message_id}/retry", response_model=MessageOut)
async def retry_message(
    webhook_id: str, message_id: str, svc: ServicesDep, caller: PrincipalDep
) -> dict[str, Any]:
    """Send this message again now."""
    return _message(await svc.webhooks.retry(caller, webhook_id, message_id))
